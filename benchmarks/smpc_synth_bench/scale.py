"""How cost grows with parties and rows: ``smpc-synth bench scale``.

Each cell (a mode and generator: the MPC VAE epoch, the MPC gaussian, a federated round) runs
as a real simulated session for every party count, row count (the built-in table resampled)
and network profile, through the benchmark grid (so ``runs.jsonl`` resumes an interrupted
suite, and ``--ray`` spreads it). No holdout is kept and nothing is evaluated: only costs
are measured. For each cell and network it fits

    cost = c * rows^a * parties^b

by least squares on the logarithms, for time, bytes and rounds per data party, and every
member's peak memory (the dealer's and the aggregator's load are members too), and prints
and plots the exponents. A member whose peak memory grows faster than linearly in rows
(exponent above 1 + :data:`MEMORY_SLACK`) is reported as such and the suite exits 1.

Default: a reduced grid that a loaded 2-core machine finishes in about an hour; ``--full``:
parties 2, 3, 5, 8 x rows 1k, 5k, 20k, 50k x loopback, LAN, WAN.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smpc_synth.errors import InputError
from smpc_synth_bench.grid import GridSpec, read_section, run_grid, run_key, with_networks

MEMORY_SLACK = 0.1  # exponents up to 1.1 pass: a few MB of allocator noise on small tables


@dataclass(frozen=True)
class Cell:
    """A mode and generator, the record's field that is its time, and its extra options."""

    mode: str
    generator: str
    timed: str
    options: dict[str, Any] = field(default_factory=dict)


# The time is the last epoch (the VAE), the last round (federated), or the whole fit (the
# gaussian, whose "epoch" is only its last secure sum; MST, selection and measurements)
CELLS: dict[str, Cell] = {
    "mpc:vae": Cell("mpc", "vae", "last_epoch_seconds"),
    "mpc:gaussian": Cell("mpc", "gaussian", "train_seconds"),
    "federated+ckks:vae": Cell("federated+ckks", "vae", "last_epoch_seconds"),
    "mpc:mst": Cell("mpc", "mst", "train_seconds", {"dp": {"epsilon": 1.0}}),
}
METRICS: dict[str, str] = {
    "seconds": "time (s)",
    "bytes_per_party": "bytes sent per data party",
    "rounds_per_party": "rounds per data party",
}
SERVICES = ("dealer", "aggregator")


@dataclass
class ScaleSpec:
    """The suite's grid; a TOML file with these keys (under ``[scale]``) overrides them."""

    cells: list[str] = field(default_factory=lambda: list(CELLS))
    parties: list[int] = field(default_factory=lambda: [2, 3])
    rows: list[int] = field(default_factory=lambda: [1000, 5000])
    networks: list[str] = field(default_factory=lambda: ["loopback"])
    dataset: str = "fair"
    epochs: int = 1  # the VAE's time is that of its last epoch; federated: of its last round
    seed: int = 0
    sample_rows: int = 1000  # synthetic rows drawn at the end (not what is measured)

    @classmethod
    def full(cls) -> ScaleSpec:
        return cls(
            parties=[2, 3, 5, 8],
            rows=[1000, 5000, 20000, 50000],
            networks=["loopback", "lan", "wan"],
        )

    @classmethod
    def load(cls, path: Path) -> ScaleSpec:
        spec = cls(**read_section(path, "scale", set(cls.__dataclass_fields__)))
        for cell in spec.cells:
            if cell not in CELLS:
                raise InputError(
                    f"{path}: key 'scale.cells': unknown cell {cell!r} (known: {', '.join(CELLS)})"
                )
        return spec

    def grids(self) -> list[GridSpec]:
        """One benchmark grid per cell, sharing the suite's ledger."""
        options = {"holdout_fraction": 0.0, "sample_rows": self.sample_rows}
        return [
            GridSpec(
                modes=[CELLS[cell].mode],
                generators=[CELLS[cell].generator],
                datasets=[self.dataset],
                parties=list(self.parties),
                seeds=[self.seed],
                epochs=self.epochs,
                options={**options, **CELLS[cell].options},
                networks=list(self.networks),
                rows=list(self.rows),
            )
            for cell in self.cells
        ]


def run_scale(out: Path, spec: ScaleSpec, runner=None, ray: str | None = None) -> dict[str, Any]:
    """Run (or resume) every cell, then fit, print, plot and write ``scale.json``/``.md``."""
    keys = set()
    records: list[dict[str, Any]] = []
    for grid in spec.grids():
        keys |= {run_key(run) for run in grid.runs()}
        records = run_grid(grid, out, runner=runner, ray=ray)
    mine = [r for r in records if run_key(r["run"]) in keys]
    points = cost_points(mine)
    fits = fit_all(points)
    report = {"spec": asdict(spec), "points": points, "fits": fits}
    (out / "scale.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = format_report(points, fits)
    (out / "scale.md").write_text(text + "\n")
    plots = write_plots(points, fits, out)
    print(text)
    print("plots: " + ", ".join(plots))
    return report


def cost_points(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per successful run: its cell, network, parties, rows, and its costs, with
    every member's peak memory and CPU (by role for the dealer and aggregator)."""
    points = []
    for record in records:
        if record.get("exit_code") != 0:
            continue
        run, metrics = record["run"], record["metrics"]
        cell = f"{run['mode']}:{run['generator']}"
        timed = CELLS[cell].timed if cell in CELLS else "last_epoch_seconds"
        seconds = metrics.get(timed) or metrics.get("train_seconds")
        members = metrics.get("members") or {}
        data = [m for m in members.values() if m.get("role") == "data"]
        point = {
            "cell": cell,
            "network": Path(str(run.get("network") or "loopback")).stem,
            "parties": run["parties"],
            "rows": run["rows"],
            "seconds": seconds,
            "bytes_per_party": metrics.get("bytes_per_party"),
            "rounds_per_party": metrics.get("rounds_per_party"),
            "peak_memory_mb": {n: m.get("peak_memory_mb") for n, m in members.items()},
            "data_peak_memory_mb": max(
                (m.get("peak_memory_mb") or 0.0 for m in data), default=None
            ),
            "load_average": (record.get("environment") or {}).get("load_average"),
        }
        for role in SERVICES:
            service = next((m for m in members.values() if m.get("role") == role), None)
            if service:
                point[f"{role}_peak_memory_mb"] = service.get("peak_memory_mb")
                point[f"{role}_cpu_seconds"] = service.get("cpu_seconds")
                point[f"{role}_bytes_sent"] = service.get("bytes_sent")
        points.append(point)
    return points


def fit_power_law(
    rows: list[float], parties: list[float], values: list[float]
) -> dict[str, float] | None:
    """Least squares of log(value) = log(c) + a log(rows) + b log(parties); an exponent is
    left out (None) when its variable takes a single value. None if nothing can be fitted."""
    triples = [
        (r, p, v)
        for r, p, v in zip(rows, parties, values)
        if _positive(r) and _positive(p) and _positive(v)
    ]
    if len(triples) < 2:
        return None
    r, p, v = (np.log(np.array(column, dtype=float)) for column in zip(*triples))
    columns, names = [np.ones_like(v)], ["log_c"]
    for name, x in (("rows", r), ("parties", p)):
        if np.ptp(x) > 0:
            columns.append(x)
            names.append(name)
    if len(columns) == 1:
        return None
    design = np.stack(columns, axis=1)
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    predicted = design @ coef
    spread = float(np.sum((v - v.mean()) ** 2))
    fitted = dict(zip(names, (float(c) for c in coef)))
    return {
        "rows": fitted.get("rows"),
        "parties": fitted.get("parties"),
        "c": math.exp(fitted["log_c"]),
        "r2": 1 - float(np.sum((v - predicted) ** 2)) / spread if spread > 0 else 1.0,
        "points": len(triples),
    }


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0 and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fit_all(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exponents for each (cell, network) and metric, each member's peak memory included."""
    fits = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for point in points:
        groups.setdefault((point["cell"], point["network"]), []).append(point)
    for (cell, network), group in groups.items():
        rows = [p["rows"] for p in group]
        parties = [p["parties"] for p in group]
        series = {metric: [p[metric] for p in group] for metric in METRICS}
        members = sorted({name for p in group for name in p["peak_memory_mb"]})
        for name in members:
            series[f"peak_memory_mb:{name}"] = [p["peak_memory_mb"].get(name) for p in group]
        for role in SERVICES:
            for what in ("cpu_seconds", "bytes_sent"):
                key = f"{role}_{what}"
                if any(key in p for p in group):
                    series[key] = [p.get(key) for p in group]
        for metric, values in series.items():
            fit = fit_power_law(rows, parties, values)
            if fit is not None:
                fits.append({"cell": cell, "network": network, "metric": metric, **fit})
    return fits


def superlinear_memory(fits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fits of a member's peak memory that grow faster than linearly in rows."""
    return [
        f
        for f in fits
        if f["metric"].startswith("peak_memory_mb:")
        and f["rows"] is not None
        and f["rows"] > 1 + MEMORY_SLACK
    ]


def format_report(points: list[dict[str, Any]], fits: list[dict[str, Any]]) -> str:
    """The measured points and the fitted exponents, as Markdown tables."""

    def num(value: Any, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    lines = [
        "| cell | network | parties | rows | seconds | MB/party | rounds/party | "
        "max data-party MB | dealer MB | aggregator MB | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: (p["cell"], p["network"], p["parties"], p["rows"])):
        load = p.get("load_average")
        lines.append(
            f"| {p['cell']} | {p['network']} | {p['parties']} | {p['rows']:,} | "
            f"{num(p['seconds'], '.2f')} | {num((p['bytes_per_party'] or 0) / 1e6, '.2f')} | "
            f"{num(p['rounds_per_party'], '.0f')} | {num(p['data_peak_memory_mb'], '.0f')} | "
            f"{num(p.get('dealer_peak_memory_mb'), '.0f')} | "
            f"{num(p.get('aggregator_peak_memory_mb'), '.0f')} | "
            f"{num(load[0] if load else None, '.1f')} |"
        )
    lines += [
        "",
        "Fitted cost = c · rows^a · parties^b (least squares on logarithms):",
        "",
        "| cell | network | metric | a (rows) | b (parties) | R² | points |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in fits:
        lines.append(
            f"| {f['cell']} | {f['network']} | {_metric_label(f['metric'])} | "
            f"{num(f['rows'], '.2f')} | {num(f['parties'], '.2f')} | {f['r2']:.2f} | "
            f"{f['points']} |"
        )
    flagged = superlinear_memory(fits)
    lines.append("")
    if flagged:
        lines.append(
            "Peak memory growing faster than linearly in rows: "
            + ", ".join(
                f"{f['metric'].split(':', 1)[1]} in {f['cell']} ({f['rows']:.2f})" for f in flagged
            )
        )
    else:
        lines.append(
            f"No member's peak memory grows faster than linearly in rows (every exponent a "
            f"<= {1 + MEMORY_SLACK:g})."
        )
    return "\n".join(lines)


def _metric_label(metric: str) -> str:
    if metric.startswith("peak_memory_mb:"):
        return f"peak memory of {metric.split(':', 1)[1]}"
    return METRICS.get(metric, metric.replace("_", " "))


def write_plots(points: list[dict[str, Any]], fits: list[dict[str, Any]], out: Path) -> list[str]:
    """time and bytes against rows and parties (log-log, one line per cell, network and the
    other variable), and the dealer's and aggregator's peak memory and CPU against
    parties."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    for x, other, name in (
        ("rows", "parties", "cost_vs_rows"),
        ("parties", "rows", "cost_vs_parties"),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
        for ax, metric in zip(axes[0], ("seconds", "bytes_per_party")):
            lines = _lines(points, x, other, metric)
            for label, xs, ys in lines:
                style = _style(label, [line[0] for line in lines])
                ax.plot(xs, ys, marker="o", label=label, **style)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(x)
            ax.set_ylabel(METRICS[metric])
            ax.set_title(f"{METRICS[metric]} vs {x}")
            if lines:
                ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=120)
        plt.close(fig)
        drawn.append(f"{name}.png")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    for ax, (what, unit) in zip(axes[0], (("peak_memory_mb", "peak MB"), ("cpu_seconds", "CPU s"))):
        series = [
            (f"{role}: {label}", xs, ys)
            for role in SERVICES
            for label, xs, ys in _lines(points, "parties", "rows", f"{role}_{what}")
        ]
        for label, xs, ys in series:
            ax.plot(xs, ys, marker="o", label=label, **_style(label, [s[0] for s in series]))
        ax.set_xlabel("parties")
        ax.set_ylabel(unit)
        ax.set_title(f"dealer and aggregator: {unit} vs parties")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "service_load.png", dpi=120)
    plt.close(fig)
    drawn.append("service_load.png")
    return drawn


def _style(label: str, labels: list[str]) -> dict[str, Any]:
    """One colour per series but its network, one line style per network."""
    import matplotlib.pyplot as plt

    def colour_key(text: str) -> str:
        parts = text.split(" · ")
        return " · ".join([parts[0], *parts[2:]])

    keys = sorted({colour_key(other) for other in labels})
    colours = plt.get_cmap("tab10").colors
    network = label.split(" · ")[1]
    return {
        "color": colours[keys.index(colour_key(label)) % len(colours)],
        "linestyle": {"loopback": "-", "lan": "--", "wan": ":"}.get(network, "-."),
    }


def _lines(points, x: str, other: str, metric: str) -> list[tuple[str, list, list]]:
    series: dict[tuple, list[tuple[float, float]]] = {}
    for p in points:
        value = p.get(metric)
        if _positive(value):
            series.setdefault((p["cell"], p["network"], p[other]), []).append((p[x], value))
    lines = []
    for (cell, network, fixed), pairs in sorted(series.items(), key=lambda kv: str(kv[0])):
        if len(pairs) >= 2:
            pairs.sort()
            unit = "rows" if other == "rows" else "parties"
            lines.append(
                (
                    f"{cell} · {network} · {fixed:,} {unit}",
                    [a for a, _ in pairs],
                    [b for _, b in pairs],
                )
            )
    return lines


def main(
    out: Path,
    config: Path | None = None,
    full: bool = False,
    network: str | None = None,
    ray: str | None = None,
) -> int:
    """``smpc-synth bench scale [--full] [--config FILE] [--network lan,wan] [--ray ADDR]``."""
    if config is not None and full:
        raise InputError("bench scale: give --config or --full, not both")
    spec = ScaleSpec.load(config) if config else ScaleSpec.full() if full else ScaleSpec()
    report = run_scale(out, with_networks(spec, network), ray=ray)
    return 1 if superlinear_memory(report["fits"]) else 0
