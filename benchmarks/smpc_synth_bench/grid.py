"""The benchmark grid: modes x generators x data sets x parties x seeds, as paper tables.

Every run is a real simulated session (separate processes, gRPC + TLS). Each cost is also
reported as a ratio to plaintext on the same data set, generator, party count and seed.
``runs.jsonl`` is appended one line per finished run, so an interrupted grid resumes where
it stopped.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smpc_synth.errors import InputError
from smpc_synth.runtime.network import (
    LOOPBACK,
    PROFILES,
    NetworkProfile,
    load_profile,
    require_emulation,
)
from smpc_synth.runtime.outdir import fresh_path
from smpc_synth_bench.environment import describe_environment
from smpc_synth_bench.summary import write_summaries

log = logging.getLogger(__name__)

# Benchmark mode name -> simulate options. The order is the order of the tables.
MODE_OPTIONS: dict[str, dict[str, Any]] = {
    "plaintext": {"mode": "plaintext"},
    "federated": {"mode": "federated", "federated": {"he": "none", "masking": False}},
    "federated+ckks": {"mode": "federated", "federated": {"he": "ckks"}},
    "federated+ckks+dp": {"mode": "federated", "federated": {"he": "ckks"}, "dp": {"epsilon": 8.0}},
    "mpc": {"mode": "mpc"},
}
BASELINE = "plaintext"


@dataclass
class GridSpec:
    """One grid; ``benchmarks/configs/*.toml`` hold these as TOML tables.

    The defaults are the quick grid of ``smpc-synth bench quick`` (the README's headline).
    """

    modes: list[str] = field(default_factory=lambda: ["plaintext", "federated+ckks", "mpc"])
    generators: list[str] = field(default_factory=lambda: ["gaussian", "vae"])
    datasets: list[str] = field(default_factory=lambda: ["breast_cancer"])
    parties: list[int] = field(default_factory=lambda: [2])
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int | None = 3  # neural generators; the quick grid shows cost, not final quality
    options: dict[str, Any] = field(default_factory=dict)  # extra RunConfig fields
    # network profiles (names or TOML files), each a dimension of the grid
    networks: list[str] = field(default_factory=lambda: [LOOPBACK])
    # resample each data set to these many rows (cost curves); None = the table as it is
    rows: list[int | None] = field(default_factory=lambda: [None])

    def runs(self) -> Iterator[dict[str, Any]]:
        """Every run of the grid; the baseline mode first so ratios can be computed."""
        modes = sorted(self.modes, key=lambda m: m != BASELINE)
        dimensions = (self.networks, self.datasets, self.rows, self.generators, self.parties)
        for network, dataset, rows, generator, parties, seed, mode in itertools.product(
            *dimensions, self.seeds, modes
        ):
            yield {
                "mode": mode,
                "generator": generator,
                "dataset": dataset,
                "parties": parties,
                "seed": seed,
                "network": network,
                "rows": rows,
            }

    def profiles(self) -> dict[str, NetworkProfile]:
        """Each network of the grid by name, checked usable here (exit code 2 if not)."""
        profiles = {}
        for spec in self.networks:
            profile = load_profile(spec)
            require_emulation(profile, "grid.networks:")
            profiles[spec] = profile
        return profiles

    @classmethod
    def load(cls, path: Path) -> GridSpec:
        spec = cls(**read_section(path, "grid", set(cls.__dataclass_fields__)))
        for mode in spec.modes:
            if mode not in MODE_OPTIONS:
                raise InputError(f"{path}: key 'grid.modes': unknown mode {mode!r}")
        for rows in spec.rows:
            if rows is not None and (not isinstance(rows, int) or rows < 1):
                raise InputError(f"{path}: key 'grid.rows': {rows!r} is not a positive count")
        spec.networks = [_beside(path, name) for name in spec.networks]
        for name in spec.networks:
            try:
                load_profile(name)
            except InputError as exc:
                raise InputError(f"{path}: key 'grid.networks': {exc}") from None
        if BASELINE not in spec.modes:
            spec.modes.insert(0, BASELINE)  # every ratio needs its baseline
        return spec


def read_section(path: Path, section: str, known: set[str]) -> dict[str, Any]:
    """The ``[section]`` of a benchmark's TOML file (or the whole file), whose keys must be
    ``known``; InputError naming the file and key otherwise."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    table = raw.get(section, raw)
    for key in table:
        if key not in known:
            raise InputError(f"{path}: unknown key '{section}.{key}' (known: {sorted(known)})")
    return table


def _beside(grid_file: Path, network: str) -> str:
    """A profile file named relative to the grid file that names it."""
    if network in PROFILES or Path(network).is_absolute():
        return network
    nearby = Path(grid_file).parent / network
    return str(nearby) if nearby.is_file() else network


def run_key(run: dict[str, Any]) -> str:
    """The run's identity in ``runs.jsonl``; loopback and unresampled runs keep the short
    key older ledgers used, so they resume."""
    key = "{mode}|{generator}|{dataset}|{parties}|{seed}".format(**run)
    if run.get("network", LOOPBACK) != LOOPBACK:
        key += f"|net={Path(run['network']).stem}"
    if run.get("rows") is not None:
        key += f"|rows={run['rows']}"
    return key


Runner = Callable[..., Any]


def run_grid(
    spec: GridSpec, out: Path, runner: Runner | None = None, ray: str | None = None
) -> list[dict[str, Any]]:
    """Run every missing run of ``spec`` into ``out``; returns all records (old and new).

    With ``ray`` (a cluster address, or ``local``) each run is a Ray task
    (:mod:`smpc_synth_bench.ray_grid`); the ledger, tables and plots are the same."""
    from rich.progress import Progress

    from smpc_synth.runtime.simulate import simulate

    if ray is not None:
        from smpc_synth_bench.ray_grid import require_ray

        require_ray()  # refused before anything runs
        if runner is not None:
            raise ValueError("a grid on Ray runs simulate; it takes no other runner")
    runner = runner or simulate
    profiles = spec.profiles()  # refused before anything runs
    out.mkdir(parents=True, exist_ok=True)
    ledger = out / "runs.jsonl"
    records = _read_ledger(ledger)
    if ledger.is_file():  # rewrite without torn lines, so appends start on a fresh line
        ledger.write_text("".join(json.dumps(r, default=str) + "\n" for r in records))
    done = {run_key(r["run"]) for r in records}
    todo = [run for run in spec.runs() if run_key(run) not in done]
    if done:
        log.info("resuming: %d runs done, %d to go", len(done), len(todo))
    if ray is None:
        environment = describe_environment()
        results: Iterator[dict[str, Any]] = (
            one_run(run, spec, out, runner, environment, profiles) for run in todo
        )
    else:
        from smpc_synth_bench.ray_grid import run_on_ray

        results = run_on_ray(ray, todo, spec, out, profiles, lambda run: members_of(run, spec))
    with Progress(transient=False) as progress:
        task = progress.add_task("benchmark grid", total=len(todo))
        for record in results:
            progress.update(task, description=f"{run_key(record['run'])}")
            with ledger.open("a") as sink:
                sink.write(json.dumps(record, default=str) + "\n")
            records.append(record)
            progress.advance(task)
            if record["exit_code"] != 0:
                log.error(
                    "%s failed (exit code %s): logs in %s",
                    run_key(record["run"]),
                    record["exit_code"],
                    Path(record["run_dir"]) / "logs",
                )
    write_summaries(records, out)
    return records


def members_of(run: dict[str, Any], spec: GridSpec) -> int:
    """Processes one run starts: its data parties, and the dealer or aggregator its mode
    needs."""
    options = run_options(run, spec)
    mode = options.get("mode")
    provider = options.get("mpc", {}).get("provider", "dealer")
    services = int(mode == "federated") + int(mode == "mpc" and provider == "dealer")
    return int(run["parties"]) + services


def _read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping a torn line (the run will be repeated)", path)
    return records


def run_options(run: dict[str, Any], spec: GridSpec) -> dict[str, Any]:
    """The RunConfig fields of one run of ``spec``."""
    from smpc_synth.models import trains_in_epochs

    options = _merge(dict(spec.options), MODE_OPTIONS[run["mode"]])
    if spec.epochs is not None and trains_in_epochs(run["generator"]):
        options["epochs"] = spec.epochs
    return options


def run_dir_name(run: dict[str, Any]) -> str:
    return run_key(run).replace("|", "_").replace("+", "-").replace("=", "")


def one_run(
    run, spec: GridSpec, out: Path, runner: Runner, environment, profiles
) -> dict[str, Any]:
    """Run one cell of ``spec`` with ``runner`` (simulate) and make its ledger record."""
    options = run_options(run, spec)
    # an attempt interrupted before it reached the ledger keeps its folder; this one is new
    run_dir = fresh_path(out / "runs" / run_dir_name(run))
    extra = {}
    if run.get("rows") is not None:
        extra["rows"] = run["rows"]
    if profiles[run["network"]].emulated:
        extra["network"] = profiles[run["network"]]
    result = runner(
        run["parties"],
        dataset=run["dataset"],
        out=run_dir,
        show_progress=False,
        generator=run["generator"],
        seed=run["seed"],
        **extra,
        **options,
    )
    return make_record(run, options, result.exit_code, result.metrics, environment, run_dir)


def make_record(run, options, exit_code: int, metrics, environment, run_dir) -> dict[str, Any]:
    """One line of ``runs.jsonl``."""
    return {
        "run": run,
        "options": options,
        "exit_code": exit_code,
        "metrics": extract_metrics(metrics),
        "environment": {**environment, "load_average": _load_average()},
        "run_dir": str(run_dir),
    }


def _load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load when the run ended (figures from a busy machine
    read differently)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def extract_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The flat figures a table needs from a run's ``metrics.json``."""
    evaluation = metrics.get("evaluation", {})
    parties = {
        name: m for name, m in metrics.get("parties", {}).items() if m.get("role", "data") == "data"
    }
    traffic = [m.get("traffic", {}) for m in parties.values()]
    epochs = next(
        (m["training"]["epochs"] for m in parties.values() if m.get("training", {}).get("epochs")),
        [],
    )
    seconds = [e["seconds"] for e in epochs if "seconds" in e]
    per_epoch = [b - a for a, b in zip([0.0, *seconds[:-1]], seconds)]
    flat = {
        "quality_score": _get(evaluation, "fidelity", "quality_score"),
        "tstr_auc": _get(evaluation, "utility", "tstr_auc"),
        "trtr_auc": _get(evaluation, "utility", "trtr_auc"),
        "dcr_synthetic_median": _get(evaluation, "privacy", "dcr_synthetic_median"),
        "dcr_holdout_median": _get(evaluation, "privacy", "dcr_holdout_median"),
        "exact_copy_rate": _get(evaluation, "privacy", "exact_copy_rate"),
        "variance_ratio_min": _get(evaluation, "collapse", "variance_ratio_min"),
        "category_coverage": _get(evaluation, "collapse", "category_coverage"),
        "prdc_coverage": _get(evaluation, "collapse", "prdc_coverage"),
        "wall_seconds": metrics.get("wall_seconds"),
        "train_seconds": max(
            (m.get("training", {}).get("train_seconds") or 0.0 for m in parties.values()),
            default=None,
        ),
        "seconds_per_epoch": sum(per_epoch) / len(per_epoch) if per_epoch else None,
        "last_epoch_seconds": per_epoch[-1] if per_epoch else None,
        "bytes_per_party": _mean([t.get("bytes_sent") for t in traffic]),
        "rounds_per_party": _mean([t.get("rounds") for t in traffic]),
        "peak_memory_mb": max(
            (m.get("peak_memory_mb", 0.0) or 0.0 for m in metrics.get("parties", {}).values()),
            default=None,
        ),
        "epsilon": (metrics.get("privacy") or {}).get("epsilon"),
        "loss_curve": [{k: v for k, v in e.items() if isinstance(v, int | float)} for e in epochs],
        "members": {
            name: {
                "role": m.get("role", "data"),
                "bytes_sent": m.get("traffic", {}).get("bytes_sent"),
                "bytes_received": m.get("traffic", {}).get("bytes_received"),
                "rounds": m.get("traffic", {}).get("rounds"),
                "peak_memory_mb": m.get("peak_memory_mb"),
                "cpu_seconds": m.get("cpu_seconds"),
                "wall_seconds": m.get("wall_seconds"),
            }
            for name, m in metrics.get("parties", {}).items()
        },
        "link": metrics.get("network"),
    }
    if flat["tstr_auc"] is not None and flat["trtr_auc"] is not None:
        flat["tstr_gap"] = flat["trtr_auc"] - flat["tstr_auc"]
    return flat


def _get(tree: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _mean(values: list[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, int | float)]
    return sum(numbers) / len(numbers) if numbers else None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(dict(base[key]), value)
        else:
            base[key] = value
    return base


def run_quick(
    out: Path, config: Path | None = None, network: str | None = None, ray: str | None = None
) -> int:
    """``smpc-synth bench quick``: the default :class:`GridSpec`, about ten minutes."""
    spec = GridSpec.load(config) if config else GridSpec()
    records = run_grid(with_networks(spec, network), out, ray=ray)
    return 0 if all(r["exit_code"] == 0 for r in records) else 1


def run_paper(
    out: Path, config: Path | None = None, network: str | None = None, ray: str | None = None
) -> int:
    """``smpc-synth bench paper --config benchmarks/configs/NAME.toml [--ray ADDRESS]``."""
    if config is None:
        raise InputError("bench paper needs --config benchmarks/configs/NAME.toml")
    records = run_grid(with_networks(GridSpec.load(config), network), out, ray=ray)
    return 0 if all(r["exit_code"] == 0 for r in records) else 1


def with_networks(spec: Any, network: str | None) -> Any:
    """``spec`` on the networks of ``--network`` (comma-separated), if given."""
    if network:
        spec.networks = [name.strip() for name in network.split(",") if name.strip()]
    return spec


__all__ = ["MODE_OPTIONS", "GridSpec", "extract_metrics", "run_grid", "run_key"]
