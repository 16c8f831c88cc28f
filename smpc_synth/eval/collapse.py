"""Collapse indicators: signs that a generator lost the real table's spread, tails or modes.

Model collapse shows first as vanishing tails and shrinking variance (Shumailov et al. 2024)
and as falling recall / coverage (Alemohammad et al. 2024). Each indicator is 1 (or near it)
for a faithful synthetic table and falls towards 0 as it collapses, except
``correlation_error`` (0 is best).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors

from smpc_synth.eval.columns import NUMERIC_KINDS, Kind
from smpc_synth.eval.defaults import MAX_DISTANCE_ROWS, PRDC_K, TAIL_QUANTILES
from smpc_synth.eval.space import subsample


def collapse_metrics(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    kinds: dict[str, Kind],
    real_x: np.ndarray,
    synthetic_x: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """Per-column spread and coverage indicators, PRDC and correlation error."""
    per_column: dict[str, dict[str, float | None]] = {}
    for col, kind in kinds.items():
        if kind in NUMERIC_KINDS:
            per_column[col] = _numeric_column(real[col].dropna(), synthetic[col].dropna())
        else:
            per_column[col] = _category_column(real[col].dropna(), synthetic[col].dropna())
    numeric = [per_column[c] for c, k in kinds.items() if k in NUMERIC_KINDS]
    categorical = [per_column[c] for c, k in kinds.items() if k not in NUMERIC_KINDS]
    ratios = _present(numeric, "variance_ratio")
    real_tails = _present(numeric, "real_tail_share")
    rng = np.random.default_rng(seed)
    n = min(len(real_x), len(synthetic_x), MAX_DISTANCE_ROWS)
    return {
        "variance_ratio_min": min(ratios) if ratios else None,
        "variance_ratio_median": float(np.median(ratios)) if ratios else None,
        "category_coverage": _pooled_coverage(categorical),
        "category_coverage_min": min(_present(categorical, "category_coverage"), default=None),
        "range_coverage": _mean(_present(numeric, "range_coverage")),
        "tail_mass": (
            _mean(_present(numeric, "synthetic_tail_share")) / _mean(real_tails)
            if real_tails and _mean(real_tails) > 0
            else None
        ),
        **prdc(subsample(real_x, n, rng), subsample(synthetic_x, n, rng), PRDC_K),
        "prdc_k": PRDC_K,
        "correlation_error": correlation_error(real_x, synthetic_x),
        "per_column": per_column,
    }


def _numeric_column(real: pd.Series, syn: pd.Series) -> dict[str, float | None]:
    """Variance ratio, share of the real range covered, and tail shares beyond the real
    5th/95th percentiles (real share kept so tail mass can be taken relative to it)."""
    if real.empty or syn.empty:
        return {"variance_ratio": None, "range_coverage": None}
    lo, hi = real.min(), real.max()
    # ratios do not depend on the scale: bring values near 1 so that 1e300 squared does
    # not overflow nor 1e-300 squared vanish
    scale = float(max(abs(lo), abs(hi), syn.abs().max())) or 1.0
    var_real = (real / scale).var()
    low_q, high_q = real.quantile(list(TAIL_QUANTILES))
    overlap = max(0.0, min(hi, syn.max()) - max(lo, syn.min()))
    return {
        "variance_ratio": float((syn / scale).var() / var_real) if var_real > 0 else None,
        "range_coverage": float(overlap / (hi - lo)) if hi > lo else None,
        "synthetic_tail_share": float(((syn < low_q) | (syn > high_q)).mean()),
        "real_tail_share": float(((real < low_q) | (real > high_q)).mean()),
    }


def _category_column(real: pd.Series, syn: pd.Series) -> dict[str, float | None]:
    categories = set(real.unique())
    present = categories & set(syn.unique())
    return {
        "category_coverage": len(present) / len(categories) if categories else None,
        "categories_real": len(categories),
        "categories_present": len(present),
    }


def _pooled_coverage(columns: list[dict[str, Any]]) -> float | None:
    """Share of all real categories (over all categorical columns) present in synthetic."""
    total = sum(c.get("categories_real", 0) for c in columns)
    present = sum(c.get("categories_present", 0) for c in columns)
    return present / total if total else None


def _present(columns: list[dict[str, Any]], key: str) -> list[float]:
    return [c[key] for c in columns if c.get(key) is not None]


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def prdc(real_x: np.ndarray, synthetic_x: np.ndarray, k: int) -> dict[str, float | None]:
    """Precision, recall, density and coverage of Naeem et al. (2020), k-NN balls.

    A ball of radius zero (k duplicates) still contains its own centre (``<=``), so copies of
    discrete rows count as covered.
    """
    if min(len(real_x), len(synthetic_x)) <= k:
        return dict.fromkeys(("prdc_precision", "prdc_recall", "prdc_density", "prdc_coverage"))
    real_radii = _knn_radii(real_x, k)
    syn_radii = _knn_radii(synthetic_x, k)
    dist = pairwise_distances(real_x, synthetic_x)  # real rows x synthetic rows
    inside_real = dist <= real_radii[:, None]
    return {
        "prdc_precision": float(inside_real.any(axis=0).mean()),
        "prdc_recall": float((dist <= syn_radii[None, :]).any(axis=1).mean()),
        "prdc_density": float(inside_real.sum(axis=0).mean() / k),
        "prdc_coverage": float((dist.min(axis=1) <= real_radii).mean()),
    }


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row."""
    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, k]


def correlation_error(real_x: np.ndarray, synthetic_x: np.ndarray) -> float | None:
    """Mean absolute difference of the Pearson correlation matrices in the encoded space.

    Pairs undefined in the real table (a constant column) are skipped; a constant synthetic
    column counts as uncorrelated with everything.
    """
    if real_x.shape[1] < 2:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        real_c = np.corrcoef(real_x, rowvar=False)
        syn_c = np.nan_to_num(np.corrcoef(synthetic_x, rowvar=False), nan=0.0)
    upper = np.triu_indices_from(real_c, k=1)
    diff = np.abs(real_c[upper] - syn_c[upper])
    diff = diff[~np.isnan(real_c[upper])]
    return float(diff.mean()) if diff.size else None
