"""``smpc-synth bench dp-sgd``: utility against epsilon in every mode, and what DP costs MPC.

For each mode (plaintext, federated per record, MPC) and each budget (epsilon 1, 3, 10 and
none), one simulated session of the VAE on the same table, evaluated against the same
holdout. Prints and writes a table (``dp_sgd.md``), the runs (``dp_sgd.jsonl``, resumable: a
finished run is not repeated) and a plot of quality and utility against epsilon
(``dp_sgd_utility.png``);
then the MPC epoch with DP against the MPC epoch without, measured in the same suite.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODES = ("plaintext", "federated", "mpc")
EPSILONS: tuple[float | None, ...] = (1.0, 3.0, 10.0, None)  # None: no DP


@dataclass
class DpBenchSpec:
    """The suite's settings (``--config FILE.toml`` overrides any of them)."""

    dataset: str = "fair"
    generator: str = "vae"
    parties: int = 2
    epochs: int = 5
    seed: int = 0
    delta: float = 1e-6
    modes: list[str] = field(default_factory=lambda: list(MODES))
    epsilons: list[float | None] = field(default_factory=lambda: list(EPSILONS))

    @classmethod
    def load(cls, path: Path | None) -> DpBenchSpec:
        if path is None:
            return cls()
        raw = tomllib.loads(Path(path).read_text())
        if "epsilons" in raw:  # TOML has no null: "inf" means no DP
            raw["epsilons"] = [None if math.isinf(float(e)) else float(e) for e in raw["epsilons"]]
        return cls(**raw)


def _key(mode: str, epsilon: float | None) -> str:
    return f"{mode}/{'inf' if epsilon is None else f'{epsilon:g}'}"


def run_one(spec: DpBenchSpec, mode: str, epsilon: float | None, out: Path) -> dict[str, Any]:
    """One session; its quality, utility, privacy record and cost."""
    from smpc_synth.config import RunConfig
    from smpc_synth.runtime.simulate import simulate

    raw: dict[str, Any] = {
        "mode": mode,
        "generator": spec.generator,
        "epochs": spec.epochs,
        "seed": spec.seed,
    }
    if epsilon is not None:
        raw["dp"] = {"epsilon": epsilon, "delta": spec.delta}
    run_dir = out / "runs" / _key(mode, epsilon).replace("/", "-")
    result = simulate(
        spec.parties,
        dataset=spec.dataset,
        out=run_dir,
        config=RunConfig.from_dict(raw, source="bench dp-sgd"),
        show_progress=False,
        override_gate=True,
    )
    metrics = result.metrics
    evaluation = metrics.get("evaluation", {})
    parties = [m for m in metrics.get("parties", {}).values() if m.get("role") == "data"]
    epochs = next((m["training"]["epochs"] for m in parties if m["training"].get("epochs")), [])
    seconds = epoch_seconds(epochs)
    privacy = metrics.get("privacy") or {}
    first = next((m for m in parties if m.get("party") == "alice"), parties[0] if parties else {})
    first_epochs = first.get("training", {}).get("epochs", []) if first else []
    cpu = [
        e.get("cpu_seconds", 0.0) + e.get("dealer_cpu_seconds", 0.0)
        for e in first_epochs
        if "cpu_seconds" in e
    ]
    return {
        "key": _key(mode, epsilon),
        "mode": mode,
        "epsilon_budget": epsilon,
        "exit_code": result.exit_code,
        "epsilon": privacy.get("epsilon"),
        "delta": privacy.get("delta"),
        "parts": privacy.get("parts", []),
        "quality_score": evaluation.get("fidelity", {}).get("quality_score"),
        "tstr_auc": evaluation.get("utility", {}).get("tstr_auc"),
        "trtr_auc": evaluation.get("utility", {}).get("trtr_auc"),
        "epoch_seconds": seconds,
        "epoch_cpu_seconds": cpu,  # MPC: party 0's and the dealer's, each epoch
        "bytes_per_party": sum(m["traffic"]["bytes_sent"] for m in parties) / max(len(parties), 1),
        "spec": asdict(spec),
    }


def epoch_seconds(epochs: list[dict[str, Any]]) -> list[float]:
    """Each epoch's seconds: MPC records them, the other modes a running total."""
    if epochs and all("epoch_seconds" in e for e in epochs):
        return [float(e["epoch_seconds"]) for e in epochs]
    totals = [float(e["seconds"]) for e in epochs if "seconds" in e]
    return [b - a for a, b in zip([0.0, *totals], totals)]


def main(out: Path, config: Path | None = None, **_: Any) -> int:
    spec = DpBenchSpec.load(config)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / "dp_sgd.jsonl"
    done = {}
    if runs_file.is_file():
        for line in runs_file.read_text().splitlines():
            record = json.loads(line)
            if record["spec"] == asdict(spec):
                done[record["key"]] = record
    for mode in spec.modes:
        for epsilon in spec.epsilons:
            key = _key(mode, epsilon)
            if key in done:
                continue
            print(f"bench dp-sgd: {key} ...", flush=True)
            record = run_one(spec, mode, epsilon, out)
            done[key] = record
            with runs_file.open("a") as handle:
                handle.write(json.dumps(record, default=str) + "\n")
    records = [done[_key(m, e)] for m in spec.modes for e in spec.epsilons if _key(m, e) in done]
    table = format_table(records)
    cost = mpc_cost(records)
    (out / "dp_sgd.md").write_text(table + "\n\n" + cost + "\n")
    plot(records, out / "dp_sgd_utility.png")
    print(table)
    print(cost)
    return 0 if all(r["exit_code"] == 0 for r in records) else 1


def format_table(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per (mode, budget)."""
    lines = [
        "| mode | budget epsilon | epsilon reported | quality score | TSTR AUC | TRTR AUC "
        "| s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        budget = "inf (no DP)" if r["epsilon_budget"] is None else f"{r['epsilon_budget']:g}"
        reported = "-" if r["epsilon"] is None else f"{r['epsilon']:.3f}"
        seconds = _median(r["epoch_seconds"])
        lines.append(
            f"| {r['mode']} | {budget} | {reported} | {_fmt(r['quality_score'])} | "
            f"{_fmt(r['tstr_auc'])} | {_fmt(r['trtr_auc'])} | {_fmt(seconds, '.1f')} |"
        )
    return "\n".join(lines)


def mpc_cost(records: list[dict[str, Any]]) -> str:
    """The MPC epoch with DP over the MPC epoch without, from runs of this suite."""
    plain = next((r for r in records if r["mode"] == "mpc" and r["epsilon_budget"] is None), None)
    private = [r for r in records if r["mode"] == "mpc" and r["epsilon_budget"] is not None]
    if plain is None or not private or not plain["epoch_seconds"]:
        return "MPC epoch with DP / without: not measured (run the mpc mode with and without DP)"
    base = _median(plain["epoch_seconds"])
    base_cpu = _median(plain.get("epoch_cpu_seconds", []))
    lines = [
        f"MPC epoch without DP: {base:.1f} s wall, "
        f"{_fmt(base_cpu, '.1f')} s CPU of party 0 and the dealer (median of "
        f"{len(plain['epoch_seconds'])} epochs)"
    ]
    for r in private:
        seconds = _median(r["epoch_seconds"])
        cpu = _median(r.get("epoch_cpu_seconds", []))
        cpu_ratio = "-" if cpu is None or not base_cpu else f"{cpu / base_cpu:.2f}x"
        ratio = r["bytes_per_party"] / plain["bytes_per_party"]
        lines.append(
            f"MPC epoch with DP (epsilon {r['epsilon_budget']:g}): {seconds:.1f} s wall "
            f"({seconds / base:.2f}x), CPU {cpu_ratio}; bytes per party {ratio:.2f}x"
        )
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    finite = sorted({r["epsilon_budget"] for r in records if r["epsilon_budget"] is not None})
    positions = {e: i for i, e in enumerate([*finite, None])}
    labels = [f"{e:g}" for e in finite] + ["no DP"]
    for metric, ax in zip(("quality_score", "tstr_auc"), axes, strict=True):
        for mode in MODES:
            rows = [r for r in records if r["mode"] == mode and r[metric] is not None]
            rows.sort(key=lambda r: positions[r["epsilon_budget"]])
            xs = [positions[r["epsilon_budget"]] for r in rows]
            ax.plot(xs, [r[metric] for r in rows], marker="o", label=mode)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("epsilon (delta 1e-6)")
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)
