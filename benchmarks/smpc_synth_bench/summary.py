"""Turn benchmark records into paper tables (CSV, Markdown, LaTeX booktabs) and plots."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from smpc_synth.runtime.network import LOOPBACK, PROFILES, NetworkProfile
from smpc_synth.runtime.progress import loss_terms

GROUP = ["mode", "generator", "dataset", "parties"]
# grid dimensions shown only when a grid varies them
OPTIONAL_GROUP = {"network": LOOPBACK, "rows": None}
NESTED = ("loss_curve", "members", "link")  # per-run detail kept out of the tables
MODELLED = [name for name, profile in PROFILES.items() if profile.emulated]
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
        row = {**dict.fromkeys(OPTIONAL_GROUP), **record["run"]}
        row["network"] = _network_name(row["network"])
        row.update({k: v for k, v in record["metrics"].items() if k not in NESTED})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    keys = ["generator", "dataset", "parties", "seed", "network", "rows"]
    frame["rows"] = frame["rows"].astype(object).where(frame["rows"].notna(), -1)
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
    for name in MODELLED:
        frame[f"{name}_seconds"] = [
            modelled_seconds(
                row["train_seconds"],
                row["rounds_per_party"],
                row["bytes_per_party"],
                PROFILES[name],
            )
            if row["network"] == LOOPBACK
            else None
            for _, row in frame.iterrows()
        ]
    frame["bytes_per_party"] = frame["bytes_per_party"].astype(float) / 1e6
    frame["rows"] = frame["rows"].map(lambda r: None if r == -1 else r)
    return frame


def _network_name(network: Any) -> str:
    """A grid's network entry (a profile name or a TOML file) as the tables name it."""
    if network in (None, LOOPBACK):
        return LOOPBACK
    return str(network) if str(network) in PROFILES else Path(str(network)).stem


def group_columns(frame: pd.DataFrame) -> list[str]:
    """The grid dimensions a table shows: the usual four, and network and rows where the
    grid set them."""
    extra = [
        column
        for column, default in OPTIONAL_GROUP.items()
        if column in frame.columns
        and any(value != default and not pd.isna(value) for value in frame[column])
    ]
    return GROUP + extra


def modelled_seconds(seconds, rounds, nbytes, profile: NetworkProfile) -> float | None:
    """Loopback time plus what ``profile`` adds: a round trip per round, bytes at its rate.

    The lower-bound model (bytes / bandwidth + rounds x latency + compute), shown for
    loopback runs (marked * in the tables); runs over ``--network`` are measured.
    """
    try:
        seconds, rounds, nbytes = float(seconds), float(rounds), float(nbytes)
    except (TypeError, ValueError):
        return None
    if any(math.isnan(v) for v in (seconds, rounds, nbytes)):
        return None
    return seconds + rounds * profile.rtt_ms / 1e3 + nbytes * 8 / (profile.bandwidth_mbit * 1e6)


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
    group = group_columns(frame)
    numeric = frame[group + metrics].copy()
    for column in metrics:
        numeric[column] = pd.to_numeric(numeric[column], errors="coerce")
    grouped = numeric.groupby(group, sort=False, dropna=False)
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


def _summary_group(summary: pd.DataFrame) -> list[str]:
    return GROUP + [c for c in OPTIONAL_GROUP if c in summary.columns]


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_markdown(summary: pd.DataFrame) -> str:
    metrics = [c for c in COLUMNS if f"{c}_mean" in summary.columns]
    group = _summary_group(summary)
    header = group + [COLUMNS[c][0] for c in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in summary.iterrows():
        cells = [_show(row[g]) for g in group] + [_cell(row, c, latex=False) for c in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(summary: pd.DataFrame) -> str:
    metrics = [c for c in COLUMNS if f"{c}_mean" in summary.columns]
    group = _summary_group(summary)
    header = group + [COLUMNS[c][0].replace("×", r"$\times$") for c in metrics]
    header = [h.replace("ε", r"$\varepsilon$").replace("_", r"\_") for h in header]
    lines = [
        r"\begin{tabular}{" + "l" * len(group) + "r" * len(metrics) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for _, row in summary.iterrows():
        cells = [_show(row[g]).replace("_", r"\_").replace("+", r"{+}") for g in group]
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
    plots = write_plots(frame, records, out)
    note = _network_note(frame)
    (out / "summary.md").write_text(to_markdown(summary) + note + _plots_note(plots))
    (out / "summary.tex").write_text(to_latex(summary))
    return summary


def _network_note(frame: pd.DataFrame) -> str:
    profiles = ", ".join(
        f"{name} {PROFILES[name].rtt_ms:g} ms RTT {PROFILES[name].bandwidth_mbit:g} Mbit/s"
        for name in MODELLED
    )
    measured = sorted(set(frame["network"]) - {LOOPBACK}) if "network" in frame else []
    text = (
        f"\n\\* LAN/WAN columns of loopback runs are modelled from their time, rounds and "
        f"bytes ({profiles}): a lower bound."
    )
    if measured:
        text += f" Runs on network {', '.join(measured)} are measured over emulated links."
    else:
        text += " Measured figures: run the grid with `--network lan,wan`."
    return text + "\n"


def _plots_note(plots: dict[str, str | None]) -> str:
    drawn = [f"{name}.png" for name, why in plots.items() if why is None]
    lines = ["", "Plots: " + (", ".join(drawn) if drawn else "none") + "."]
    lines += [f"{name}.png not drawn: {why}." for name, why in plots.items() if why is not None]
    return "\n".join(lines) + "\n"


@dataclass
class Series:
    """One labelled series of a plot: a line, a set of scatter points, or one bar."""

    label: str
    x: list[Any]
    y: list[float]
    panel: str = ""  # plots with one panel per generator name it here


@dataclass
class PlotData:
    """What one plot shows; ``kind`` is "scatter", "line" or "bar"."""

    kind: str
    series: list[Series]
    xlabel: str
    ylabel: str

    @property
    def points(self) -> int:
        return sum(len(s.y) for s in self.series)


def plot_data(frame: pd.DataFrame, records: list[dict[str, Any]]) -> dict[str, PlotData]:
    """The data behind each plot. Every series is one (mode, generator[, data set]) cell,
    never an average across generators; a line has at least two points (with a single
    party count, traffic is drawn as bars, and a cell seen at one party count only is left
    to the tables); loss curves show loss terms only."""
    label = _labeller(frame)
    cell = ["mode", "generator", "dataset", *group_columns(frame)[len(GROUP) :]]
    quality = []
    for key, group in frame.groupby(cell, sort=False, dropna=False):
        pairs = [
            (float(t), float(q))
            for t, q in zip(group["time_ratio"], group["quality_score"])
            if _number(t) and _number(q)
        ]
        if pairs:
            quality.append(Series(label(*key), [p[0] for p in pairs], [p[1] for p in pairs]))
    traffic = []
    for key, group in frame.groupby(cell, sort=False, dropna=False):
        means = (
            pd.to_numeric(group["bytes_per_party"], errors="coerce")
            .groupby(group["parties"])
            .mean()
        )
        means = means.dropna()
        if len(means):
            traffic.append(Series(label(*key), list(means.index), list(means.values)))
    several = frame["parties"].nunique() > 1
    if several:  # a line per cell that ran at two party counts or more
        traffic = [s for s in traffic if len(s.y) >= 2]
    else:  # one party count: a bar per cell, not a line of one point
        traffic = [Series(s.label, [s.label], s.y) for s in traffic]
    return {
        "quality_vs_time": PlotData(
            "scatter", quality, "training time (× plaintext, log scale)", "quality (SDMetrics)"
        ),
        "bytes_vs_parties": PlotData(
            "line" if several else "bar",
            traffic,
            "parties" if several else f"{int(frame['parties'].iloc[0])} parties",
            "MB sent per party",
        ),
        "loss_curves": PlotData("line", _loss_series(records, label), "epoch", "training loss"),
    }


def _labeller(frame: pd.DataFrame):
    datasets = frame["dataset"].nunique() > 1
    extras = group_columns(frame)[len(GROUP) :]

    def label(mode: str, generator: str, dataset: str, *rest: Any) -> str:
        text = f"{mode} · {generator}" + (f" · {dataset}" if datasets else "")
        for column, value in zip(extras, rest):
            if column == "rows" and _number(value):
                text += f" · {int(value):,} rows"
            elif column == "network":
                text += f" · {value}"
        return text

    return label


def _number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _loss_series(records: list[dict[str, Any]], label) -> list[Series]:
    """The first successful run's curve of each (mode, generator, data set): its first
    loss term per epoch, where it has two epochs or more."""
    series: dict[tuple, Series] = {}
    for record in records:
        run = record["run"]
        key = (run["mode"], run["generator"], run["dataset"])
        curve = record.get("metrics", {}).get("loss_curve") or []
        if record.get("exit_code") != 0 or key in series or len(curve) < 2:
            continue
        terms = loss_terms(curve[0])
        if not terms:
            continue
        term = next(iter(terms))
        points = [(e["epoch"], e[term]) for e in curve if _number(e.get(term))]
        if len(points) >= 2:
            series[key] = Series(
                f"{label(*key)} ({term})",
                [p[0] for p in points],
                [float(p[1]) for p in points],
                panel=run["generator"],
            )
    return list(series.values())


def write_plots(
    frame: pd.DataFrame, records: list[dict[str, Any]], out: Path
) -> dict[str, str | None]:
    """Draw each plot that has something to show; returns plot name -> None if drawn, else
    why not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {
        "quality_vs_time": "Quality vs time cost",
        "bytes_vs_parties": "Traffic per party",
        "loss_curves": "Loss per epoch",
    }
    result: dict[str, str | None] = {}
    for name, data in plot_data(frame, records).items():
        if data.kind == "line" and not data.series:
            result[name] = "no series has two points or more"
            continue
        if data.points < 2:
            result[name] = "fewer than two points to compare"
            continue
        panels = sorted({s.panel for s in data.series})
        with _figure(plt, out / f"{name}.png", titles[name], len(panels)) as axes:
            for ax, panel in zip(axes, panels):
                _draw(ax, data, [s for s in data.series if s.panel == panel])
                if panel:
                    ax.set_title(f"{titles[name]}: {panel}")
        result[name] = None
    return result


def _draw(ax, data: PlotData, series: list[Series]) -> None:
    if data.kind == "scatter":
        for s in series:
            ax.scatter(s.x, s.y, label=s.label)
        ax.set_xscale("log")
    elif data.kind == "bar":
        ax.bar([s.label for s in series], [s.y[0] for s in series])
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.set_yscale("symlog")
    else:
        for s in series:
            ax.plot(s.x, s.y, marker="o", label=s.label)
        if any(max(s.y) > 100 * max(min(s.y), 1e-9) for s in series if s.y):
            ax.set_yscale("symlog")
    ax.set_xlabel(data.xlabel)
    ax.set_ylabel(data.ylabel)


@contextmanager
def _figure(plt, path: Path, title: str, panels: int = 1) -> Iterator[Any]:
    """Small titled plots side by side, each with a legend if anything was labelled, saved
    to ``path``; yields the list of axes."""
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    axes = list(axes[0])
    try:
        for ax in axes:
            ax.set_title(title)
        yield axes
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
