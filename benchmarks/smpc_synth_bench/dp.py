"""``smpc-synth bench dp``: AIM and MST across privacy budgets and modes, with an independent
reference at the same budget.

- The grid: epsilon in {0.3, 1, 3, 10} x {aim, mst} x {plaintext, mpc, federated} on ``fair``
  (3 parties, delta 1e-9), each a real simulated session from start to ``synthetic.csv``:
  quality, TSTR, DCR, wall time, bytes and rounds. Federated mode draws the noise in
  per-party shares and selects from noisy sums of the parties' own scores (not the
  exponential mechanism on pooled counts: docs/marginal-generators.md).
- The reference: smartnoise-synth's AIM and MST (1.0.8, on Private-PGM 1.x: an independent
  implementation), installed by this script into a virtualenv of its own (it pins packages
  the project does not use; only the packages AIM and MST import are installed), fitted at the
  same epsilon and delta to the same binned training table (the same public bins, no budget
  spent on preprocessing), decoded and evaluated exactly as ours.
- Scaling: MST and AIM in MPC at epsilon 1 on 5,000 and 50,000 rows resampled from ``fair``:
  the cost follows the marginals' domains, not the rows.

``--config FILE.toml`` narrows the grid (any field of :class:`DpGridSpec`), e.g. epsilon 1
only, or the reference alone. With ``debug_seed`` the grid's sessions draw their noise from
that seed (the dealer's debug keys in MPC, the same key in plaintext): an MPC run then must
select what the plaintext run selects, and the table compares the two (no privacy: tests and
benchmarks only; the protocol and its cost are unchanged).

Writes ``dp.jsonl`` (one line per run, resumable), ``dp.md`` and ``utility_vs_epsilon.png``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DATASET = "fair"
PARTIES = 3
DELTA = 1e-9
EPSILONS = (0.3, 1.0, 3.0, 10.0)
GENERATORS = ("aim", "mst")
MODES = ("plaintext", "mpc", "federated")
SCALING_ROWS = (5_000, 50_000)
REFERENCE = "smartnoise-synth==1.0.8"
# what smartnoise-synth's AIM and MST import (it also pins opacus and pac-synth for other
# synthesizers; installing smartnoise-synth with --no-deps keeps torch out)
REFERENCE_DEPS = (
    "smartnoise-sql==1.0.10",
    "mbi>=1.1,<2",
    "disjoint-set>=0.9,<0.10",
    "Faker>=17",
    "PyYAML>=6.0.1,<7",
    "antlr4-python3-runtime==4.9.3",
    "graphviz>=0.17,<1",
    "opendp>=0.14.1,<0.15",
    "pandas>=2.0.1,<3",
    "sqlalchemy>=2,<3",
    "networkx",
    "scipy",
)
# The reference is given our public domain (every bin of every column, not the values the
# rows happen to hold) and its fitted model is sampled i.i.d.: smartnoise-synth's own
# sample() uses mbi 1.1's randomised rounding, which correlates columns that share parents
# in the model (mutual information of had_affair with religious 0.38 in its tables, 0.01 in
# the rows and in the model; mbi 2.0 shuffles within each parent group to fix this).
REFERENCE_SCRIPT = """
import json, sys, time
import numpy as np, pandas as pd
from snsynth import Synthesizer
from snsynth.transform.table import TableTransformer
job = json.load(open(sys.argv[1]))
codes = pd.read_csv(job["codes"]).astype(int)
width = max(job["shape"])
domain = pd.DataFrame({c: np.arange(width) % k for c, k in zip(codes.columns, job["shape"])})
names = list(codes.columns)
transformer = TableTransformer.create(domain, style="cube", categorical_columns=names,
                                      nullable=False)
transformer.fit(domain, epsilon=0.0)
np.random.seed(job["seed"])
started = time.perf_counter()
synth = Synthesizer.create(job["generator"], epsilon=job["epsilon"], delta=job["delta"])
synth.fit(codes, transformer=transformer, preprocessor_eps=0.0)
data = synth.synthesizer.synthetic_data(rows=job["rows"], method="sample")
if hasattr(synth, "undo_compress_fn"):  # MST's merged rare values
    data = synth.undo_compress_fn(data)
columns = ["col" + str(i) for i in range(transformer.output_width)]
out = transformer.inverse_transform([tuple(t[1:]) for t in data.df[columns].itertuples()])
json.dump({"seconds": time.perf_counter() - started}, open(job["result"], "w"))
out.to_csv(job["sample"], index=False)
"""


@dataclass
class DpGridSpec:
    """What the suite runs (``--config FILE.toml`` overrides any field)."""

    epsilons: list[float] = field(default_factory=lambda: list(EPSILONS))
    generators: list[str] = field(default_factory=lambda: list(GENERATORS))
    # "reference": the independent implementation at the same budget
    modes: list[str] = field(default_factory=lambda: [*MODES, "reference"])
    seeds: list[int] | None = None  # default (0,), or (0, 1, 2) with --full
    scaling_generators: list[str] = field(default_factory=lambda: list(GENERATORS))
    scaling_rows: list[int] = field(default_factory=lambda: list(SCALING_ROWS))
    # "plaintext" too: the same mechanism on one table, for the ratio in the same run
    scaling_modes: list[str] = field(default_factory=lambda: ["mpc"])
    scaling_debug_seed: int | None = None  # as debug_seed: the same noise in both modes
    debug_seed: int | None = None  # grid sessions only: same noise in plaintext and MPC
    reference_timeout_s: float | None = None  # a reference fit still running then is stopped
    generator_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None, full: bool = False) -> DpGridSpec:
        spec = cls(**tomllib.loads(Path(path).read_text())) if path else cls()
        if spec.seeds is None:
            spec.seeds = [0, 1, 2] if full else [0]
        return spec


def main(out: Path, config: Path | None = None, full: bool = False) -> int:
    """The grid, the reference and the scaling runs; one table and one plot."""
    from smpc_synth_bench.environment import describe_environment

    spec = DpGridSpec.load(config, full)
    out.mkdir(parents=True, exist_ok=True)
    # sessions (with their keys and data), the reference's virtualenv and its inputs stay local
    (out / ".gitignore").write_text(".reference-venv/\nruns/\nreference/\ndata/\n")
    ledger = out / "dp.jsonl"
    # a run that failed (not refused: exit 2) is run again, and one stopped at its timeout
    # when the config now allows it longer
    latest = {r["key"]: r for r in _read(ledger)}  # the table shows failures too
    done = {key: r for key, r in latest.items() if not _again(r, spec)}
    environment = describe_environment()
    # the invocation: times and ratios compare only runs of the same one (a shared machine)
    bench_run = f"{(config or Path('default')).stem} {time.strftime('%Y-%m-%dT%H:%M:%S')}"
    for key, job in _jobs(spec):
        if key in done:
            continue
        started = time.perf_counter()
        # the job's own fields (its budget, mode, rows) win over same-named measurements
        record = {"key": key, **job_result(job, out), **job, "environment": environment}
        record["bench_run"] = bench_run
        record["bench_seconds"] = time.perf_counter() - started
        with ledger.open("a") as sink:
            sink.write(json.dumps(record, default=str) + "\n")
        done[key] = latest[key] = record
        log.info("%s: %s", key, {k: record.get(k) for k in ("quality_score", "wall_seconds")})
    records = [_with_cpu(r, out) for r in latest.values()]
    (out / "dp.md").write_text(to_markdown(records))
    write_plot(records, out / "utility_vs_epsilon.png")
    print(to_markdown(records))
    return 0


def _again(record: dict[str, Any], spec: DpGridSpec) -> bool:
    if record.get("exit_code") == 124:
        limit = spec.reference_timeout_s
        return limit is None or limit > (record.get("timeout_s") or 0)
    return record.get("exit_code") not in (0, 2)


def _jobs(spec: DpGridSpec):
    """Epsilon 1 first (the headline), then the scaling runs, then the other budgets."""
    order = sorted(spec.epsilons, key=lambda e: e != 1.0)
    debug = spec.debug_seed
    for index, epsilon in enumerate(order):
        for seed in spec.seeds or (0,):
            for generator in spec.generators:
                params = spec.generator_params.get(generator, {})
                for mode in spec.modes:
                    job = {"kind": "grid", "generator": generator, "epsilon": epsilon}
                    job |= {"mode": mode, "seed": seed, "rows": None}
                    job |= {"debug_seed": debug, "generator_params": params}
                    job |= {"timeout_s": spec.reference_timeout_s} if mode == "reference" else {}
                    suffix = "" if debug is None or mode == "reference" else f"|debug{debug}"
                    suffix += f"|{json.dumps(params, sort_keys=True)}" if params else ""
                    yield f"grid|{generator}|{epsilon}|{mode}|{seed}{suffix}", job
        if index == 0:
            for generator in spec.scaling_generators:
                params = spec.generator_params.get(generator, {})
                for rows in spec.scaling_rows:
                    for mode in spec.scaling_modes:
                        seed = spec.scaling_debug_seed
                        job = {"kind": "scaling", "generator": generator, "epsilon": 1.0}
                        job |= {"mode": mode, "seed": 0, "rows": rows}
                        job |= {"debug_seed": seed, "generator_params": params}
                        suffix = "" if mode == "mpc" else f"|{mode}"
                        suffix += "" if seed is None else f"|debug{seed}"
                        suffix += f"|{json.dumps(params, sort_keys=True)}" if params else ""
                        yield f"scaling|{generator}|{rows}{suffix}", job


def job_result(job: dict[str, Any], out: Path) -> dict[str, Any]:
    if job["mode"] == "reference":
        return run_reference(job, out)
    return run_session(job, out)


def run_session(job: dict[str, Any], out: Path) -> dict[str, Any]:
    """One simulated session; a refusal (exit 2) is recorded with its message."""
    from smpc_synth.errors import InputError
    from smpc_synth.runtime.simulate import simulate
    from smpc_synth_bench.grid import extract_metrics

    name = _run_name(job)
    options: dict[str, Any] = {}
    if job["rows"]:
        options |= _resampled(job["rows"], out)
    else:
        options["dataset"] = DATASET
    dp: dict[str, Any] = {"epsilon": job["epsilon"], "delta": DELTA}
    if job.get("debug_seed") is not None:  # the plaintext key the dealer's debug seed gives
        dp["insecure_debug_seed"] = job["debug_seed"]
        options["mpc"] = {"insecure_dev": True, "debug_seed": job["debug_seed"]}
    if job.get("generator_params"):
        options["generator_params"] = job["generator_params"]
    try:
        result = simulate(
            PARTIES,
            mode=job["mode"],
            generator=job["generator"],
            dp=dp,
            seed=job["seed"],
            out=out / "runs" / name,
            show_progress=False,
            override_gate=True,
            **options,
        )
    except InputError as exc:
        return {"exit_code": 2, "refused": str(exc)}
    metrics = extract_metrics(result.metrics)
    dp = result.metrics.get("privacy", {})
    training = next(
        (
            p["training"]
            for p in result.metrics.get("parties", {}).values()
            if "privacy" in p.get("training", {})
        ),
        {},
    )
    cpu = [p.get("cpu_seconds") for p in result.metrics.get("parties", {}).values()]
    cpu = [c for c in cpu if isinstance(c, int | float)]
    return {
        "exit_code": result.exit_code,
        **{k: v for k, v in metrics.items() if k != "loss_curve"},
        "cpu_seconds_max": max(cpu, default=None),  # the busiest member (the leader)
        "cpu_seconds_total": sum(cpu) if cpu else None,
        "dcr_ratio": _ratio(metrics.get("dcr_synthetic_median"), metrics.get("dcr_holdout_median")),
        "rho_spent": dp.get("rho_spent"),
        "epsilon_spent": dp.get("epsilon"),
        "delta_tails": dp.get("delta_tails"),
        "selected": training.get("selected"),
        "train_seconds": training.get("train_seconds"),
        "train_rows": result.metrics.get("split", {}).get("rows"),
    }


def _run_name(job: dict[str, Any]) -> str:
    name = f"{job['kind']}-{job['generator']}-{job['epsilon']}-{job['mode']}-{job['seed']}"
    if job.get("rows"):
        name += f"-{job['rows']}rows"
    if job.get("debug_seed") is not None:
        name += f"-debug{job['debug_seed']}"
    return name


def _with_cpu(record: dict[str, Any], out: Path) -> dict[str, Any]:
    """A session's CPU seconds from its members' metrics, for runs recorded without them."""
    if record.get("cpu_seconds_max") is not None or record["mode"] == "reference":
        return record
    path = out / "runs" / _run_name(record) / "metrics.json"
    if not path.is_file():
        return record
    parties = json.loads(path.read_text()).get("parties", {}).values()
    cpu = [p["cpu_seconds"] for p in parties if isinstance(p.get("cpu_seconds"), int | float)]
    return {**record, "cpu_seconds_max": max(cpu, default=None)}


def _resampled(rows: int, out: Path) -> dict[str, Any]:
    """``fair`` resampled (with replacement, seed 0) to ``rows`` rows, with the schema of the
    public built-in table (so no budget goes to bounds or categories)."""
    from smpc_synth.data import infer_schema, load_builtin

    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    path, schema_path = folder / f"fair-{rows}.csv", folder / "fair-schema.toml"
    builtin = load_builtin(DATASET)
    if not schema_path.is_file():
        infer_schema(builtin.frame, target=builtin.target).save(schema_path)
    if not path.is_file():
        # the holdout takes a fifth: scale up so the parties train on ``rows`` rows
        total = round(rows / 0.8)
        frame = builtin.frame.sample(total, replace=True, random_state=0)
        frame.to_csv(path, index=False)
    return {"data": path, "schema": schema_path, "target": builtin.target}


def reference_python(out: Path) -> Path:
    """The reference's own virtualenv (created once, reused): smartnoise-synth without the
    dependencies AIM and MST do not use."""
    venv = out / ".reference-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.is_file():
        return python
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", REFERENCE, REFERENCE_DEPS[0]], check=True)
    subprocess.run([*pip, *REFERENCE_DEPS[1:]], check=True)
    marker.write_text(REFERENCE + "\n")
    return python


def run_reference(job: dict[str, Any], out: Path) -> dict[str, Any]:
    """smartnoise-synth at the same epsilon and delta on the same binned training rows."""
    from smpc_synth.data import holdout_split, infer_schema, load_builtin, validate
    from smpc_synth.eval import evaluate
    from smpc_synth.models import get_generator

    try:
        python = reference_python(out)
    except (subprocess.CalledProcessError, OSError) as exc:
        return {"exit_code": 1, "refused": f"could not install {REFERENCE}: {exc}"}
    builtin = load_builtin(DATASET)
    schema = infer_schema(builtin.frame, target=builtin.target)
    frame = validate(builtin.frame, schema, DATASET)
    train, holdout = holdout_split(frame, 0.2, job["seed"], stratify=builtin.target)
    gen_cls = get_generator(job["generator"])
    encoder = gen_cls.make_encoder(schema).fit_public()
    model = gen_cls(encoder.layout)
    codes = model.codes(encoder.transform(train))
    work = out / "reference" / f"{job['generator']}-{job['epsilon']}-{job['seed']}"
    work.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    pd.DataFrame(codes, columns=model.columns).to_csv(work / "codes.csv", index=False)
    spec = {
        "codes": str(work / "codes.csv"),
        "generator": job["generator"],
        "epsilon": job["epsilon"],
        "delta": DELTA,
        "rows": len(train),
        "shape": [int(k) for k in model.shape],
        "seed": job["seed"],
        "sample": str(work / "sample.csv"),
        "result": str(work / "result.json"),
    }
    (work / "job.json").write_text(json.dumps(spec))
    (work / "run.py").write_text(REFERENCE_SCRIPT)
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_before = before.ru_utime + before.ru_stime
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    try:
        done = subprocess.run(
            [str(python), str(work / "run.py"), str(work / "job.json")],
            capture_output=True,
            text=True,
            env=env,
            timeout=job.get("timeout_s"),
        )
    except subprocess.TimeoutExpired:
        return {"exit_code": 124, "unfinished": f"still running after {job['timeout_s']:g} s"}
    wall = time.perf_counter() - started
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        return {"exit_code": done.returncode, "refused": done.stderr[-2000:]}
    sampled = pd.read_csv(work / "sample.csv")[model.columns].to_numpy(dtype=np.int64)
    rng = np.random.default_rng(job["seed"])
    synthetic = encoder.inverse_transform(model.encode_codes(sampled, rng))
    report = evaluate(
        train, synthetic, holdout=holdout, target=builtin.target, schema=schema, seed=job["seed"]
    )
    privacy = report.get("privacy", {})
    return {
        "exit_code": 0,
        "quality_score": report["fidelity"]["quality_score"],
        "tstr_auc": report["utility"]["tstr_auc"],
        "trtr_auc": report["utility"]["trtr_auc"],
        "dcr_ratio": _ratio(privacy.get("dcr_synthetic_median"), privacy.get("dcr_holdout_median")),
        "wall_seconds": wall,
        "cpu_seconds_max": cpu.ru_utime + cpu.ru_stime - children_before,
        "reference": REFERENCE,
    }


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(records: list[dict[str, Any]]) -> str:
    """The grid (with each MPC run's time as a ratio to plaintext), then the scaling runs."""
    grid = [r for r in records if r["kind"] == "grid"]
    plain = {(r["generator"], r["epsilon"], r["seed"]): r for r in grid if r["mode"] == "plaintext"}
    same_run = {
        (r["generator"], r["epsilon"], r["seed"], r.get("bench_run")): r
        for r in grid
        if r["mode"] == "plaintext"
    }
    lines = [
        f"AIM and MST on {DATASET}, {PARTIES} parties, delta {DELTA:g}: quality (SDMetrics), "
        "TSTR AUC, DCR ratio, end-to-end wall seconds (ratio to the plaintext run of the same "
        "benchmark invocation), bytes and rounds per party.",
        "",
        "| generator | epsilon | seed | mode | quality | TSTR | DCR ratio | wall s | x plaintext "
        "| busiest member's CPU s | MB/party | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(grid, key=lambda r: (r["generator"], r["epsilon"], r["seed"], r["mode"])):
        head = f"{r['generator']} | {r['epsilon']:g} | {r['seed']} | {r['mode']}"
        if r.get("exit_code") not in (0, 2, 124):
            note = f"failed (exit code {r.get('exit_code')})"
            lines.append(f"| {head} | {note} ||||||||")
            continue
        if r.get("refused") or r.get("unfinished"):
            reason = (r.get("refused") or "").splitlines()[0][:80] if r.get("refused") else ""
            note = f"refused: {reason}" if r.get("refused") else f"stopped: {r['unfinished']}"
            lines.append(f"| {head} | {note} ||||||||")
            continue
        base = same_run.get((r["generator"], r["epsilon"], r["seed"], r.get("bench_run")), {})
        ratio = _ratio(r.get("wall_seconds"), base.get("wall_seconds"))
        mb = r.get("bytes_per_party")
        cells = [
            head,
            _fmt(r.get("quality_score")),
            _fmt(r.get("tstr_auc")),
            _fmt(r.get("dcr_ratio")),
            _fmt(r.get("wall_seconds"), 1),
            _fmt(ratio, 2),
            _fmt(r.get("cpu_seconds_max"), 1),
            _fmt(mb / 1e6 if mb else None, 2),
            _fmt(r.get("rounds_per_party"), 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _parity_lines(grid, plain)
    lines += _scaling_lines([r for r in records if r["kind"] == "scaling"])
    return "\n".join(lines) + "\n"


def _scaling_lines(scaling: list[dict[str, Any]]) -> list[str]:
    """The scaling runs: each against the fewest rows in its mode, and MPC against plaintext
    on the same rows (with the same noise when the runs share a debug seed), within one
    benchmark invocation."""
    if not scaling:
        return []
    lines = [
        "",
        "Scaling (epsilon 1): wall seconds by training rows; marginals: how many the mechanism "
        "measured after the one-way ones (AIM's rounds); training and busiest member's CPU "
        "seconds per marginal; CPU seconds of each member (data parties, then the dealer).",
        "",
        "| generator | rows | mode | wall s | x fewest rows | x plaintext | train s "
        "| busiest member's CPU s | MB/party | rounds | marginals | train s / marginal "
        "| CPU s / marginal | CPU s per member |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok = [r for r in scaling if not r.get("exit_code")]
    fewest: dict[tuple, dict[str, Any]] = {}
    for r in sorted(ok, key=lambda r: r["rows"]):
        fewest.setdefault((r["generator"], r["mode"], r.get("debug_seed"), r.get("bench_run")), r)
    plain = {
        (r["generator"], r["rows"], r.get("debug_seed"), r.get("bench_run")): r
        for r in ok
        if r["mode"] == "plaintext"
    }
    order = sorted(scaling, key=lambda r: (r["generator"], r["rows"], r["mode"] != "mpc"))
    for r in order:
        head = f"{r['generator']} | {r['rows']} | {r['mode']}"
        if r.get("exit_code"):
            lines.append(
                f"| {head} | stopped after {_fmt(r.get('bench_seconds'), 0)} s "
                f"(exit code {r['exit_code']}) |||||||||||"
            )
            continue
        run = r.get("bench_run")
        group = (r["generator"], r["mode"], r.get("debug_seed"), run)
        base = plain.get((r["generator"], r["rows"], r.get("debug_seed"), run), {})
        marginals = len(r["selected"]) if r.get("selected") is not None else None
        mb = r.get("bytes_per_party")
        members = r.get("members") or {}
        cpu = ", ".join(
            f"{name} {_fmt(m.get('cpu_seconds'), 1)}"
            for name, m in sorted(members.items(), key=lambda kv: kv[1].get("role") == "dealer")
        )
        cells = [
            head,
            _fmt(r.get("wall_seconds"), 1),
            _fmt(_ratio(r.get("wall_seconds"), fewest[group].get("wall_seconds")), 2),
            _fmt(_ratio(r.get("wall_seconds"), base.get("wall_seconds")), 2)
            if r["mode"] != "plaintext"
            else "–",
            _fmt(r.get("train_seconds"), 1),
            _fmt(r.get("cpu_seconds_max"), 1),
            _fmt(mb / 1e6 if mb else None, 2),
            _fmt(r.get("rounds_per_party"), 0),
            _fmt(marginals),
            _fmt(_ratio(r.get("train_seconds"), marginals), 2),
            _fmt(_ratio(r.get("cpu_seconds_max"), marginals), 2),
            cpu or "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _parity_lines(grid: list[dict[str, Any]], plain: dict[tuple, dict[str, Any]]) -> list[str]:
    """Each MPC run against the plaintext run with the same seed and the same noise."""
    lines = []
    for r in sorted(grid, key=lambda r: (r["generator"], r["epsilon"], r["seed"])):
        base = plain.get((r["generator"], r["epsilon"], r["seed"]))
        if r["mode"] != "mpc" or r.get("exit_code") or not base or r.get("debug_seed") is None:
            continue
        if base.get("debug_seed") != r["debug_seed"]:
            continue
        diff = {
            m: abs(r[m] - base[m])
            for m in ("quality_score", "tstr_auc")
            if isinstance(r.get(m), float) and isinstance(base.get(m), float)
        }
        same = r.get("selected") is not None and r.get("selected") == base.get("selected")
        lines.append(
            f"- {r['generator']}, epsilon {r['epsilon']:g}, seed {r['seed']}: MPC selected "
            f"{'the same' if same else 'different'} marginals as plaintext "
            f"({len(r.get('selected') or [])}); |quality difference| "
            f"{_fmt(diff.get('quality_score'), 4)}, |TSTR difference| "
            f"{_fmt(diff.get('tstr_auc'), 4)}"
        )
    if lines:
        lines = [
            "",
            "MPC against plaintext with the same seed and the same noise (the dealer's debug "
            "seed; otherwise the same protocol):",
            "",
            *lines,
        ]
    return lines


def write_plot(records: list[dict[str, Any]], path: Path) -> None:
    """Quality and TSTR against epsilon, one line per generator and mode (and reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [r for r in records if r["kind"] == "grid" and r.get("exit_code") == 0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, label in (
        (axes[0], "quality_score", "quality"),
        (axes[1], "tstr_auc", "TSTR AUC"),
    ):
        for generator in GENERATORS:
            for mode in (*MODES, "reference"):
                points = sorted(
                    (r["epsilon"], r[metric])
                    for r in grid
                    if r["generator"] == generator
                    and r["mode"] == mode
                    and r.get(metric) is not None
                )
                if points:
                    style = "--" if mode == "reference" else "-"
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, style, marker="o", label=f"{generator} {mode}")
        ax.set_xscale("log")
        ax.set_xlabel("epsilon (delta 1e-9)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Utility against epsilon on {DATASET} ({PARTIES} parties)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
