"""What larger batches cost in quality: ``smpc-synth bench batch-schedule``.

A WAN epoch of MPC training is mostly rounds, and an epoch's rounds grow with its steps, so
larger batches over the same rows make it shorter (``docs/scale.md``). This suite measures
what they do to the model: the VAE trained in plaintext (whose batching, initialisation and
step order are the MPC trainer's; the parity tests bound the gap to MPC training) on a
built-in table with the default batch and with ``k`` times larger ones, the learning rate
kept (x1) or scaled by ``sqrt(k)`` or ``k``, at the same number of epochs (the same rows
seen) and at twice the epochs (the same WAN time for ``k = 5``, whose epoch takes half as
long). Quality and TSTR are the project's evaluation against the holdout; each
configuration is run for several seeds, and the suite prints the mean and spread.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DATASET = "fair"
EPOCHS = 100  # of the default batch (the VAE's own default, 300, triples the suite's time)
RULES = {"x1": lambda k: 1.0, "sqrt": math.sqrt, "k": lambda k: float(k)}


@dataclass(frozen=True)
class Cell:
    """One configuration: batch size, learning-rate rule and epochs."""

    batch: int
    rule: str
    epochs: int


def cells(default_batch: int, epochs: int, factors=(2, 5), long_factor: int = 5) -> list[Cell]:
    """The default batch, each factor with each rule at equal epochs, and ``long_factor``
    with each rule at twice the epochs."""
    grid = [Cell(default_batch, "x1", epochs)]
    for k in factors:
        grid += [Cell(default_batch * k, rule, epochs) for rule in RULES]
    grid += [Cell(default_batch * long_factor, rule, 2 * epochs) for rule in RULES]
    return grid


def run_batch_schedule(
    out: Path,
    seeds=(0, 1),
    dataset: str = DATASET,
    epochs: int = EPOCHS,
    grid: list[Cell] | None = None,
) -> list[dict[str, Any]]:
    """Train, sample and evaluate every cell of ``grid`` (default: :func:`cells`) for each
    seed; writes the records as they come and prints a summary."""
    import torch

    from smpc_synth.data import holdout_split, infer_schema, load_builtin
    from smpc_synth.eval import evaluate
    from smpc_synth.models import Synthesizer
    from smpc_synth.models.vae import VAEParams

    torch.set_num_threads(1)
    defaults = VAEParams()
    builtin = load_builtin(dataset)
    schema = infer_schema(builtin.frame, target=builtin.target)
    train, holdout = holdout_split(builtin.frame, 0.2, 0, stratify=builtin.target)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"batch_schedule_{dataset}_seeds{'-'.join(map(str, seeds))}.json"
    records: list[dict[str, Any]] = []
    for seed in seeds:  # seed-major: a stopped run still covers every configuration
        for cell in grid or cells(defaults.batch_size, epochs):
            k = cell.batch / defaults.batch_size
            lr = defaults.lr * RULES[cell.rule](k)
            started = time.perf_counter()
            model = Synthesizer.fit(
                train,
                schema,
                generator="vae",
                epochs=cell.epochs,
                seed=seed,
                params={"batch_size": cell.batch, "lr": lr},
            )
            synthetic = model.sample(len(train), seed=seed)
            report = evaluate(
                train, synthetic, holdout=holdout, target=builtin.target, schema=schema, seed=seed
            )
            records.append(
                {
                    "dataset": dataset,
                    "rows": len(train),
                    **asdict(cell),
                    "lr": lr,
                    "steps_per_epoch": len(train) // min(cell.batch, len(train)),
                    "seed": seed,
                    "quality_score": report["fidelity"]["quality_score"],
                    "tstr_auc": report["utility"]["tstr_auc"],
                    "seconds": time.perf_counter() - started,
                }
            )
            path.write_text(json.dumps(records, indent=2) + "\n")
            print(format_line(records[-1]), flush=True)
    print(format_summary(records))
    return records


def format_line(r: dict[str, Any]) -> str:
    return (
        f"batch {r['batch']:>5} lr {r['rule']:>4} ({r['lr']:.2e}) epochs {r['epochs']:>4} "
        f"seed {r['seed']}: quality {r['quality_score']:.3f}, TSTR {r['tstr_auc']:.3f} "
        f"({r['seconds']:.0f} s)"
    )


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and range of quality and TSTR over seeds, per configuration, in run order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["batch"], r["rule"], r["epochs"]), []).append(r)
    rows = []
    for (batch, rule, epochs), rs in groups.items():
        row: dict[str, Any] = {"batch": batch, "rule": rule, "epochs": epochs, "seeds": len(rs)}
        for key in ("quality_score", "tstr_auc"):
            values = [r[key] for r in rs]
            row[key] = statistics.mean(values)
            row[key + "_range"] = (min(values), max(values))
        rows.append(row)
    return rows


def format_summary(records: list[dict[str, Any]]) -> str:
    lines = [f"{'batch':>6} {'lr rule':>7} {'epochs':>6} {'quality':>16} {'TSTR':>16} seeds"]
    for s in summarize(records):
        q, t = s["quality_score_range"], s["tstr_auc_range"]
        lines.append(
            f"{s['batch']:>6} {s['rule']:>7} {s['epochs']:>6} "
            f"{s['quality_score']:.3f} ({q[0]:.3f}-{q[1]:.3f}) "
            f"{s['tstr_auc']:.3f} ({t[0]:.3f}-{t[1]:.3f}) {s['seeds']:>5}"
        )
    return "\n".join(lines)


def main(out: Path, config: Path | None = None, full: bool = False) -> int:
    run_batch_schedule(out, seeds=(0, 1, 2) if full else (0, 1))
    return 0
