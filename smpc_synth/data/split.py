"""Splitting a table: a holdout that no party trains on, and shares for simulated parties.

``split_parties(how="noniid:COLUMN")`` makes parties differ the way real sites do: for a
categorical or boolean column each class is spread over parties by Dirichlet proportions
(label skew, the usual federated-learning benchmark), for a numeric column each party gets a
contiguous range of its sorted values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from smpc_synth.data.defaults import MIN_ROWS, NONIID_ALPHA, STRATIFY_BINS, STRATIFY_MAX_LEVELS
from smpc_synth.errors import InputError


def holdout_split(
    df: pd.DataFrame, fraction: float, seed: int, stratify: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off ``fraction`` of the rows as a holdout, stratified by a column if given.

    A numeric stratify column with many values is stratified by quantile bins; classes too
    rare to stratify are pooled. Both parts get a fresh 0-based index.
    """
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"holdout fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return df.reset_index(drop=True), df.iloc[:0].reset_index(drop=True)
    n_holdout = round(len(df) * fraction)
    if n_holdout == 0 or n_holdout == len(df):
        raise InputError(
            f"a holdout fraction of {fraction} of {len(df)} rows leaves one side empty"
        )
    strata = _strata(df, _column(df, stratify), n_holdout) if stratify else None
    train, holdout = train_test_split(
        df, test_size=n_holdout, random_state=seed, shuffle=True, stratify=strata
    )
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def _strata(df: pd.DataFrame, column: str, n_holdout: int) -> np.ndarray | None:
    values = df[column]
    if _is_numeric(values) and values.nunique() > STRATIFY_MAX_LEVELS:
        labels = pd.qcut(values.rank(method="first"), STRATIFY_BINS, labels=False)
    else:
        labels = values.astype(str)
    counts = labels.value_counts()
    labels = labels.where(~labels.isin(counts[counts < 2].index), "__rare__").astype(str)
    counts = labels.value_counts()
    feasible = counts.min() >= 2 and len(counts) <= min(n_holdout, len(df) - n_holdout)
    return labels.to_numpy() if feasible and len(counts) > 1 else None


def split_parties(df: pd.DataFrame, n: int, how: str = "iid", seed: int = 0) -> list[pd.DataFrame]:
    """Share rows among ``n`` parties: ``"iid"`` (random, equal sizes) or ``"noniid:COLUMN"``.

    Every party gets at least min(MIN_ROWS, len(df) // n) rows; each share is shuffled and
    has a fresh 0-based index.
    """
    if n < 1:
        raise InputError(f"number of parties must be at least 1, got {n}")
    if len(df) < n:
        raise InputError(f"{len(df)} rows cannot be shared among {n} parties")
    rng = np.random.default_rng(seed)
    if how == "iid":
        shares = np.array_split(rng.permutation(len(df)), n)
    elif how.startswith("noniid:"):
        values = df[_column(df, how.removeprefix("noniid:"))]
        if _is_numeric(values):
            shares = _by_range(values, n, rng)
        else:
            shares = _by_label(values, n, rng, floor=min(MIN_ROWS, len(df) // n))
    else:
        raise InputError(f"split {how!r}: use 'iid' or 'noniid:COLUMN'")
    return [df.iloc[rng.permutation(s)].reset_index(drop=True) for s in shares]


def _by_range(values: pd.Series, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    tiebreak = rng.random(len(values))
    order = np.lexsort((tiebreak, values.to_numpy(dtype=float)))
    return np.array_split(order, n)


def _by_label(values: pd.Series, n: int, rng: np.random.Generator, floor: int) -> list[np.ndarray]:
    codes = pd.factorize(values.astype(str))[0]
    owner = np.empty(len(values), dtype=int)
    # rows grouped by label in one sort: a scan per label would take rows x labels steps
    grouped = np.argsort(codes, kind="stable")
    ends = np.cumsum(np.bincount(codes))
    for end, size in zip(ends, np.bincount(codes), strict=True):
        rows = rng.permutation(grouped[end - size : end])
        shares = rng.dirichlet(np.full(n, NONIID_ALPHA))
        cuts = np.round(np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for party, part in enumerate(np.split(rows, cuts)):
            owner[part] = party
    sizes = np.bincount(owner, minlength=n)
    while sizes.min() < floor:
        # top up a starved party with random rows of the largest one (weakens skew a little)
        party, donor = int(sizes.argmin()), int(sizes.argmax())
        need = min(floor - sizes[party], sizes[donor] - floor)
        moved = rng.choice(np.flatnonzero(owner == donor), size=need, replace=False)
        owner[moved] = party
        sizes = np.bincount(owner, minlength=n)
    return [np.flatnonzero(owner == p) for p in range(n)]


def _column(df: pd.DataFrame, name: str) -> str:
    if name not in df.columns:
        raise InputError(f"no column '{name}' (columns: {', '.join(map(str, df.columns))})")
    return name


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
