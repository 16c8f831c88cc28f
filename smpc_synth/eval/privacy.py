"""Privacy: how close synthetic rows sit to the real rows the generator was trained on.

Distance to closest record (DCR) of synthetic rows is compared with the same distance for
real holdout rows the generator never saw: a generator that does not memorise should place
its rows no closer to the training rows than fresh real rows are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from smpc_synth.eval.defaults import COPY_DECIMALS, MAX_DISTANCE_ROWS, MAX_REFERENCE_ROWS
from smpc_synth.eval.space import subsample


def privacy_metrics(
    train_x: np.ndarray, synthetic_x: np.ndarray, holdout_x: np.ndarray, seed: int
) -> dict[str, Any]:
    """DCR medians and 5th percentiles, their ratio, and exact-copy rates (encoded rows)."""
    rng = np.random.default_rng(seed)
    reference = subsample(train_x, MAX_REFERENCE_ROWS, rng)
    queries = min(len(synthetic_x), len(holdout_x), MAX_DISTANCE_ROWS)
    index = NearestNeighbors(n_neighbors=1).fit(reference)
    dcr_syn = index.kneighbors(subsample(synthetic_x, queries, rng))[0][:, 0]
    dcr_hold = index.kneighbors(subsample(holdout_x, queries, rng))[0][:, 0]
    syn_median, hold_median = float(np.median(dcr_syn)), float(np.median(dcr_hold))
    return {
        "dcr_synthetic_median": syn_median,
        "dcr_holdout_median": hold_median,
        "dcr_ratio": syn_median / hold_median if hold_median > 0 else None,
        "dcr_synthetic_p05": float(np.quantile(dcr_syn, 0.05)),
        "dcr_holdout_p05": float(np.quantile(dcr_hold, 0.05)),
        "exact_copy_rate": copy_rate(synthetic_x, train_x),
        "holdout_exact_copy_rate": copy_rate(holdout_x, train_x),
        "reference_rows": len(reference),
        "query_rows": queries,
    }


def copy_rate(rows: np.ndarray, train_x: np.ndarray) -> float:
    """Share of ``rows`` equal to some training row (all rows, not a subsample)."""
    return float(np.mean(_row_hashes(rows).isin(_row_hashes(train_x))))


def _row_hashes(x: np.ndarray) -> pd.Series:
    rounded = np.round(x, COPY_DECIMALS) + 0.0  # + 0.0 folds -0.0 into 0.0
    return pd.util.hash_pandas_object(pd.DataFrame(rounded), index=False)
