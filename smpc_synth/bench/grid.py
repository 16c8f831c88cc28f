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
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smpc_synth.bench.environment import describe_environment
from smpc_synth.bench.summary import write_summaries
from smpc_synth.errors import InputError
from smpc_synth.runtime.outdir import fresh_path

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

    def runs(self) -> Iterator[dict[str, Any]]:
        """Every run of the grid; the baseline mode first so ratios can be computed."""
        modes = sorted(self.modes, key=lambda m: m != BASELINE)
        for dataset, generator, parties, seed, mode in itertools.product(
            self.datasets, self.generators, self.parties, self.seeds, modes
        ):
            yield {
                "mode": mode,
                "generator": generator,
                "dataset": dataset,
                "parties": parties,
                "seed": seed,
            }

    @classmethod
    def load(cls, path: Path) -> GridSpec:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: not valid TOML ({exc})") from None
        grid = raw.get("grid", raw)
        known = {f for f in cls.__dataclass_fields__}
        for key in grid:
            if key not in known:
                raise InputError(f"{path}: unknown key 'grid.{key}' (known: {sorted(known)})")
        spec = cls(**grid)
        for mode in spec.modes:
            if mode not in MODE_OPTIONS:
                raise InputError(f"{path}: key 'grid.modes': unknown mode {mode!r}")
        if BASELINE not in spec.modes:
            spec.modes.insert(0, BASELINE)  # every ratio needs its baseline
        return spec


def run_key(run: dict[str, Any]) -> str:
    return "{mode}|{generator}|{dataset}|{parties}|{seed}".format(**run)


Runner = Callable[..., Any]


def run_grid(spec: GridSpec, out: Path, runner: Runner | None = None) -> list[dict[str, Any]]:
    """Run every missing run of ``spec`` into ``out``; returns all records (old and new)."""
    from rich.progress import Progress

    from smpc_synth.runtime.simulate import simulate

    runner = runner or simulate
    out.mkdir(parents=True, exist_ok=True)
    ledger = out / "runs.jsonl"
    records = _read_ledger(ledger)
    if ledger.is_file():  # rewrite without torn lines, so appends start on a fresh line
        ledger.write_text("".join(json.dumps(r, default=str) + "\n" for r in records))
    done = {run_key(r["run"]) for r in records}
    todo = [run for run in spec.runs() if run_key(run) not in done]
    if done:
        log.info("resuming: %d runs done, %d to go", len(done), len(todo))
    environment = describe_environment()
    with Progress(transient=False) as progress:
        task = progress.add_task("benchmark grid", total=len(todo))
        for run in todo:
            progress.update(task, description=f"{run_key(run)}")
            record = _one_run(run, spec, out, runner, environment)
            with ledger.open("a") as sink:
                sink.write(json.dumps(record, default=str) + "\n")
            records.append(record)
            progress.advance(task)
            if record["exit_code"] != 0:
                log.error(
                    "%s failed (exit code %s): logs in %s",
                    run_key(run),
                    record["exit_code"],
                    Path(record["run_dir"]) / "logs",
                )
    write_summaries(records, out)
    return records


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


def _one_run(run, spec: GridSpec, out: Path, runner: Runner, environment) -> dict[str, Any]:
    from smpc_synth.models import trains_in_epochs

    options = _merge(dict(spec.options), MODE_OPTIONS[run["mode"]])
    if spec.epochs is not None and trains_in_epochs(run["generator"]):
        options["epochs"] = spec.epochs
    # an attempt interrupted before it reached the ledger keeps its folder; this one is new
    run_dir = fresh_path(out / "runs" / run_key(run).replace("|", "_").replace("+", "-"))
    result = runner(
        run["parties"],
        dataset=run["dataset"],
        out=run_dir,
        show_progress=False,
        generator=run["generator"],
        seed=run["seed"],
        **options,
    )
    return {
        "run": run,
        "options": options,
        "exit_code": result.exit_code,
        "metrics": extract_metrics(result.metrics),
        "environment": environment,
        "run_dir": str(run_dir),
    }


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
        "bytes_per_party": _mean([t.get("bytes_sent") for t in traffic]),
        "rounds_per_party": _mean([t.get("rounds") for t in traffic]),
        "peak_memory_mb": max(
            (m.get("peak_memory_mb", 0.0) or 0.0 for m in metrics.get("parties", {}).values()),
            default=None,
        ),
        "epsilon": (metrics.get("privacy") or {}).get("epsilon"),
        "loss_curve": [{k: v for k, v in e.items() if isinstance(v, int | float)} for e in epochs],
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


def run_quick(out: Path, config: Path | None = None) -> int:
    """``smpc-synth bench quick``: the default :class:`GridSpec`, about ten minutes."""
    spec = GridSpec.load(config) if config else GridSpec()
    records = run_grid(spec, out)
    return 0 if all(r["exit_code"] == 0 for r in records) else 1


def run_paper(out: Path, config: Path | None = None) -> int:
    """``smpc-synth bench paper --config benchmarks/configs/NAME.toml``: a full grid."""
    if config is None:
        raise InputError("bench paper needs --config benchmarks/configs/NAME.toml")
    records = run_grid(GridSpec.load(config), out)
    return 0 if all(r["exit_code"] == 0 for r in records) else 1


__all__ = ["MODE_OPTIONS", "GridSpec", "extract_metrics", "run_grid", "run_key"]
