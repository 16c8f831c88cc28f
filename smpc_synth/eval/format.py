"""A readable terminal rendering of an evaluation report: headline figures, then details."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from smpc_synth.eval.defaults import WEAK_PAIR_SCORE

_WIDTH = 120

Row = tuple[str, Callable[[dict[str, Any]], str], str]


def _get(report: dict[str, Any], path: str) -> Any:
    value: Any = report
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _num(path: str, digits: int = 3) -> Callable[[dict[str, Any]], str]:
    def show(report: dict[str, Any]) -> str:
        value = _get(report, path)
        return "n/a" if value is None else f"{value:.{digits}f}"

    return show


def _pct(path: str) -> Callable[[dict[str, Any]], str]:
    def show(report: dict[str, Any]) -> str:
        value = _get(report, path)
        return "n/a" if value is None else f"{100 * value:.1f}%"

    return show


def _pair(first: str, second: str) -> Callable[[dict[str, Any]], str]:
    return lambda report: f"{_num(first)(report)} / {_num(second)(report)}"


HEADLINE: list[Row] = [
    (
        "Quality score",
        _num("fidelity.quality_score"),
        "SDMetrics shapes + pair trends vs real (1 = same)",
    ),
    (
        "TSTR / TRTR AUC",
        _pair("utility.tstr_auc", "utility.trtr_auc"),
        "trained on synthetic / on real, tested on holdout (close = useful)",
    ),
    (
        "DCR synthetic / holdout",
        _pair("privacy.dcr_synthetic_median", "privacy.dcr_holdout_median"),
        "median distance to nearest training row; syn << holdout = copying",
    ),
    (
        "Exact copies",
        _pct("privacy.exact_copy_rate"),
        "synthetic rows identical to a training row",
    ),
    (
        "Variance ratio (min)",
        _num("collapse.variance_ratio_min"),
        "smallest var(syn)/var(real) of numeric columns; ~0 = collapsed",
    ),
    (
        "Category coverage",
        _pct("collapse.category_coverage"),
        "real categories that appear in the synthetic table",
    ),
    (
        "PRDC coverage",
        _num("collapse.prdc_coverage"),
        "real rows with a synthetic row in their k-NN ball (recall of modes)",
    ),
]

DETAILS: list[tuple[str, list[Row]]] = [
    (
        "Fidelity",
        [
            ("Column shapes", _num("fidelity.column_shapes"), "per-column KS / TV complement"),
            (
                "Column pair trends",
                _num("fidelity.column_pair_trends"),
                "correlation similarity of strongly related real pairs",
            ),
        ],
    ),
    (
        "Utility",
        [
            ("TRTR - TSTR gap", _num("utility.gap"), "AUC lost by training on synthetic"),
            (
                "Logistic regression",
                _pair(
                    "utility.models.logistic_regression.tstr_auc",
                    "utility.models.logistic_regression.trtr_auc",
                ),
                "TSTR / TRTR AUC",
            ),
            (
                "Gradient boosting",
                _pair(
                    "utility.models.hist_gradient_boosting.tstr_auc",
                    "utility.models.hist_gradient_boosting.trtr_auc",
                ),
                "TSTR / TRTR AUC",
            ),
        ],
    ),
    (
        "Privacy",
        [
            (
                "DCR ratio",
                _num("privacy.dcr_ratio"),
                "median DCR syn / holdout (1 = as far as unseen rows)",
            ),
            (
                "DCR 5th pct syn / holdout",
                _pair("privacy.dcr_synthetic_p05", "privacy.dcr_holdout_p05"),
                "the closest synthetic rows vs the closest unseen real rows",
            ),
            (
                "Holdout exact copies",
                _pct("privacy.holdout_exact_copy_rate"),
                "baseline: unseen real rows that equal a training row",
            ),
        ],
    ),
    (
        "Collapse",
        [
            (
                "Range coverage",
                _num("collapse.range_coverage"),
                "share of each real min-max range the synthetic values span",
            ),
            (
                "Tail mass",
                _num("collapse.tail_mass"),
                "mass beyond real 5th/95th pct, relative to real (1 = kept)",
            ),
            (
                "PRDC precision / recall",
                _pair("collapse.prdc_precision", "collapse.prdc_recall"),
                "syn rows on real manifold / real rows on syn manifold",
            ),
            (
                "Correlation error",
                _num("collapse.correlation_error"),
                "mean |corr real - corr syn| of encoded columns (0 = same)",
            ),
        ],
    ),
]


def _table(title: str, sections: list[tuple[str, list[Row]]], report: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("Measure", no_wrap=True)
    table.add_column("Value", justify="right", no_wrap=True)
    table.add_column("What it means")
    for i, (section, rows) in enumerate(sections):
        if section:
            table.add_row(f"[bold]{section}[/bold]", "", "", end_section=False)
        for j, (label, show, meaning) in enumerate(rows):
            last = j == len(rows) - 1 and i < len(sections) - 1
            table.add_row(label, show(report), meaning, end_section=last)
    return table


def _notes(report: dict[str, Any]) -> list[str]:
    utility = report.get("utility", {})
    notes = list(utility.get("notes") or [])
    if utility.get("reason"):
        notes.insert(0, f"utility: {utility['reason']}")
    for name, error in (_get(report, "fidelity.errors") or {}).items():
        notes.append(f"fidelity could not score {name}: {error}")
    worst = [p for p in _get(report, "fidelity.worst_pairs") or [] if p["score"] < WEAK_PAIR_SCORE]
    if worst:
        shown = ", ".join(f"{a}~{b} {p['score']:.2f}" for p in worst for a, b in [p["columns"]])
        notes.append(f"weakest pair trends: {shown}")
    return notes


def format_report(report: dict[str, Any]) -> str:
    """The report as plain text tables (no colour codes), headline figures first."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=_WIDTH, color_system=None, force_terminal=False)
    console.print(_table("Synthetic data quality", [("", HEADLINE)], report))
    console.print(_table("Details", DETAILS, report))
    for note in _notes(report):
        console.print(f"note: {note}", highlight=False)
    meta = report.get("meta", {})
    rows = meta.get("rows", {})
    console.print(
        f"rows real {rows.get('real')}, synthetic {rows.get('synthetic')}, holdout "
        f"{rows.get('holdout')} ({meta.get('holdout')}); {meta.get('columns')} columns; "
        f"seed {meta.get('seed')}; {meta.get('seconds', 0):.1f} s",
        highlight=False,
    )
    return buffer.getvalue()
