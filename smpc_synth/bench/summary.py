"""Turn benchmark records into paper tables (CSV, Markdown, LaTeX booktabs) and plots."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from smpc_synth.bench.netem import PROFILES, NetworkProfile, netem_unavailable_reason

TIMING_KEYS = ("epoch", "seconds", "epoch_seconds")  # in an epoch record, but not losses
GROUP = ["mode", "generator", "dataset", "parties"]
# column -> (header, format); the order is the order of the tables
COLUMNS: dict[str, tuple[str, str]] = {
    "quality_score": ("quality", "{:.3f}"),
    "tstr_auc": ("TSTR AUC", "{:.3f}"),
    "tstr_gap": ("TRTR-TSTR", "{:.3f}"),
    "dcr_synthetic_median": ("DCR", "{:.3f}"),
    "train_seconds": ("train s", "{:.2f}"),
    "time_ratio": ("train ×pt", "{:.1f}"),
    "seconds_per_epoch": ("s/epoch", "{:.2f}"),
    "bytes_per_party": ("MB/party", "{:.2f}"),
    "rounds_per_party": ("rounds", "{:.0f}"),
    "peak_memory_mb": ("peak MB", "{:.0f}"),
    "lan_seconds": ("LAN s*", "{:.1f}"),
    "wan_seconds": ("WAN s*", "{:.1f}"),
    "epsilon": ("ε", "{:.2f}"),
}


def with_ratios(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per successful run, with cost ratios to plaintext on the same cell and seed."""
    rows = []
    for record in records:
        if record.get("exit_code") != 0:
            continue
        row = dict(record["run"])
        row.update({k: v for k, v in record["metrics"].items() if k != "loss_curve"})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    keys = ["generator", "dataset", "parties", "seed"]
    base = frame[frame["mode"] == "plaintext"].set_index(keys)
    ratios = {
        "train_seconds": "time_ratio",
        "seconds_per_epoch": "epoch_time_ratio",
        "bytes_per_party": "bytes_ratio",
        "wall_seconds": "wall_ratio",
    }
    for metric, ratio in ratios.items():
        frame[ratio] = [
            _ratio(row[metric], base[metric].get(tuple(row[k] for k in keys)))
            if metric in base
            else None
            for _, row in frame.iterrows()
        ]
    for name, profile in PROFILES.items():
        frame[f"{name}_seconds"] = [
            modelled_seconds(
                row["train_seconds"], row["rounds_per_party"], row["bytes_per_party"], profile
            )
            for _, row in frame.iterrows()
        ]
    frame["bytes_per_party"] = frame["bytes_per_party"].astype(float) / 1e6
    return frame


def modelled_seconds(seconds, rounds, nbytes, profile: NetworkProfile) -> float | None:
    """Loopback time plus what ``profile`` adds: a round trip per round, bytes at its rate.

    The lower-bound model (bytes / bandwidth + rounds x latency + compute),
    used where links cannot be emulated; marked * in the tables.
    """
    try:
        seconds, rounds, nbytes = float(seconds), float(rounds), float(nbytes)
    except (TypeError, ValueError):
        return None
    if any(math.isnan(v) for v in (seconds, rounds, nbytes)):
        return None
    return seconds + rounds * 2 * profile.delay_ms / 1e3 + nbytes * 8 / (profile.rate_mbit * 1e6)


def _ratio(value: Any, baseline: Any) -> float | None:
    try:
        value, baseline = float(value), float(baseline)
    except (TypeError, ValueError):
        return None
    if math.isnan(value) or math.isnan(baseline) or baseline <= 0:
        return None
    return value / baseline


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds for each cell of the grid."""
    metrics = [c for c in COLUMNS if c in frame.columns]
    numeric = frame[GROUP + metrics].copy()
    for column in metrics:
        numeric[column] = pd.to_numeric(numeric[column], errors="coerce")
    grouped = numeric.groupby(GROUP, sort=False)
    mean = grouped.mean().add_suffix("_mean")
    std = grouped.std(ddof=0).add_suffix("_std")
    seeds = grouped.size().rename("seeds")
    return pd.concat([mean, std, seeds], axis=1).reset_index()


def _cell(summary_row: pd.Series, column: str, latex: bool) -> str:
    mean = summary_row.get(f"{column}_mean")
    if mean is None or pd.isna(mean):
        return "–"
    fmt = COLUMNS[column][1]
    std = summary_row.get(f"{column}_std")
    text = fmt.format(mean)
    if std is not None and not pd.isna(std) and summary_row.get("seeds", 1) > 1:
        text += (r" $\pm$ " if latex else " ± ") + fmt.format(std)
    return text


def to_markdown(summary: pd.DataFrame) -> str:
    metrics = [c for c in COLUMNS if f"{c}_mean" in summary.columns]
    header = GROUP + [COLUMNS[c][0] for c in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in summary.iterrows():
        cells = [str(row[g]) for g in GROUP] + [_cell(row, c, latex=False) for c in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(summary: pd.DataFrame) -> str:
    metrics = [c for c in COLUMNS if f"{c}_mean" in summary.columns]
    header = GROUP + [COLUMNS[c][0].replace("×", r"$\times$") for c in metrics]
    header = [h.replace("ε", r"$\varepsilon$").replace("_", r"\_") for h in header]
    lines = [
        r"\begin{tabular}{" + "l" * len(GROUP) + "r" * len(metrics) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for _, row in summary.iterrows():
        cells = [str(row[g]).replace("_", r"\_").replace("+", r"{+}") for g in GROUP]
        cells += [_cell(row, c, latex=True) for c in metrics]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_summaries(records: list[dict[str, Any]], out: Path) -> pd.DataFrame:
    """summary.csv / .md / .tex and the PNG plots; returns the summary table."""
    frame = with_ratios(records)
    if frame.empty:
        (out / "summary.md").write_text("No successful runs.\n")
        return frame
    summary = summarise(frame)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(to_markdown(summary) + _network_note())
    (out / "summary.tex").write_text(to_latex(summary))
    write_plots(frame, records, out)
    return summary


def _network_note() -> str:
    reason = netem_unavailable_reason()
    profiles = ", ".join(
        f"{p.name} {2 * p.delay_ms:g} ms RTT {p.rate_mbit:g} Mbit/s" for p in PROFILES.values()
    )
    how = f"not emulated here ({reason})" if reason else "emulation available"
    return (
        f"\n\\* LAN/WAN columns are modelled from the measured loopback time, rounds and bytes "
        f"({profiles}); link {how}.\n"
    )


def write_plots(frame: pd.DataFrame, records: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with _figure(plt, out / "quality_vs_time.png", "Quality vs time cost") as ax:
        for mode, group in frame.groupby("mode", sort=False):
            ax.scatter(group["time_ratio"], group["quality_score"], label=mode)
        ax.set_xscale("log")
        ax.set_xlabel("training time (× plaintext, log scale)")
        ax.set_ylabel("quality score (SDMetrics)")

    with _figure(plt, out / "bytes_vs_parties.png", "Traffic per party") as ax:
        for mode, group in frame.groupby("mode", sort=False):
            means = group.groupby("parties")["bytes_per_party"].mean()
            ax.plot(means.index, means.values, marker="o", label=mode)
        ax.set_xlabel("parties")
        ax.set_ylabel("MB sent per party")
        ax.set_yscale("symlog")

    with _figure(plt, out / "loss_curves.png", "Loss per epoch") as ax:
        _loss_curves(ax, records)


def _loss_curves(ax, records: list[dict[str, Any]]) -> None:
    """The first run's loss curve of each mode (its first loss term)."""
    shown = set()
    for record in records:
        curve = record.get("metrics", {}).get("loss_curve") or []
        mode = record["run"]["mode"]
        if not curve or mode in shown:
            continue
        loss_key = next((k for k in curve[0] if k not in TIMING_KEYS), None)
        if loss_key is None:
            continue
        ax.plot(
            [e["epoch"] for e in curve], [e[loss_key] for e in curve], label=f"{mode} ({loss_key})"
        )
        shown.add(mode)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")


@contextmanager
def _figure(plt, path: Path, title: str) -> Iterator[Any]:
    """One small titled plot, with a legend if anything was labelled, saved to ``path``."""
    fig, ax = plt.subplots(figsize=(5, 4))
    try:
        yield ax
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
