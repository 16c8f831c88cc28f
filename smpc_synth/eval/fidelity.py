"""Fidelity: how closely the synthetic table's marginals and pairwise trends match the real.

A thin, quiet wrapper over SDMetrics' QualityReport (Column Shapes: KS / TV complement per
column; Column Pair Trends: correlation / contingency similarity per pair, averaged over the
pairs SDMetrics deems meaningful in the real table).
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd
from sdmetrics.reports import QualityReport

from smpc_synth.eval.columns import NUMERIC_KINDS, Kind
from smpc_synth.eval.defaults import WORST_PAIRS

_TABLE = "table"
_SHAPES = "Column Shapes"
_PAIRS = "Column Pair Trends"


def fidelity_metrics(
    real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, Kind]
) -> dict[str, Any]:
    """Overall quality score, the two property scores, and compact per-column details."""
    columns = {
        c: {"sdtype": "numerical" if k in NUMERIC_KINDS else "categorical"}
        for c, k in kinds.items()
    }
    metadata = {"tables": {_TABLE: {"columns": columns}}}
    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate({_TABLE: real}, {_TABLE: synthetic}, metadata, verbose=False)
    properties = dict(report.get_properties().itertuples(index=False, name=None))
    shapes = report.get_details(_SHAPES, _TABLE)
    pairs = report.get_details(_PAIRS, _TABLE)
    return {
        "quality_score": report.get_score(),
        "column_shapes": properties[_SHAPES],
        "column_pair_trends": properties[_PAIRS],
        "per_column": _per_column(shapes, pairs, list(kinds)),
        "worst_pairs": _worst_pairs(pairs),
        "pairs_scored": int(_counted(pairs).sum()),
        "pairs_total": len(pairs),
        "errors": _errors(shapes, pairs),
    }


def _counted(pairs: pd.DataFrame) -> pd.Series:
    """Pairs that enter the Column Pair Trends average (SDMetrics' real-strength threshold)."""
    if "Meets Threshold?" not in pairs:
        return pairs["Score"].notna()
    return pairs["Meets Threshold?"].astype("boolean").fillna(False) & pairs["Score"].notna()


def _per_column(
    shapes: pd.DataFrame, pairs: pd.DataFrame, names: list[str]
) -> dict[str, dict[str, Any]]:
    """Each column's shape score and metric, and the mean score of the counted pairs with it."""
    counted = pairs[_counted(pairs)]
    long = pd.concat(
        [
            counted[["Column 1", "Score"]].rename(columns={"Column 1": "Column"}),
            counted[["Column 2", "Score"]].rename(columns={"Column 2": "Column"}),
        ]
    )
    pair_means = long.groupby("Column")["Score"].mean()
    by_column = shapes.set_index("Column")
    return {
        name: {
            "shape": by_column["Score"].get(name),
            "shape_metric": by_column["Metric"].get(name),
            "pair_trends": pair_means.get(name),
        }
        for name in names
    }


def _worst_pairs(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    worst = pairs[_counted(pairs)].nsmallest(WORST_PAIRS, "Score")
    return [
        {
            "columns": [row["Column 1"], row["Column 2"]],
            "metric": row["Metric"],
            "score": row["Score"],
        }
        for _, row in worst.iterrows()
    ]


def _errors(shapes: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, str]:
    """Columns or pairs SDMetrics could not score, with its reason."""
    errors: dict[str, str] = {}
    if "Error" in shapes:
        for _, row in shapes[shapes["Error"].notna()].iterrows():
            errors[row["Column"]] = str(row["Error"])
    if "Error" in pairs:
        for _, row in pairs[pairs["Error"].notna()].iterrows():
            errors[f"{row['Column 1']} / {row['Column 2']}"] = str(row["Error"])
    return errors
