"""Holdout and party splits: sizes, disjointness, reproducibility, measurable non-IID skew."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpc_synth.data import holdout_split, load_builtin, split_parties
from smpc_synth.data.defaults import MIN_ROWS
from smpc_synth.errors import InputError


def _table(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "rid": np.arange(n),
            "label": rng.choice(["a", "b", "c", "d"], size=n, p=[0.4, 0.3, 0.2, 0.1]),
            "x": rng.normal(size=n),
            "flag": rng.random(n) < 0.3,
        }
    )


def _total_variation(parts: list[pd.DataFrame], column: str) -> float:
    """Mean total-variation distance between each party's and the pooled distribution."""
    pooled = pd.concat(parts)[column].value_counts(normalize=True)
    dists = []
    for part in parts:
        share = part[column].value_counts(normalize=True).reindex(pooled.index, fill_value=0)
        dists.append(0.5 * float(np.abs(share - pooled).sum()))
    return float(np.mean(dists))


@pytest.mark.parametrize("stratify", [None, "label", "x"])
def test_holdout_sizes_disjoint_reproducible(stratify):
    df = _table()
    train, hold = holdout_split(df, 0.2, seed=3, stratify=stratify)
    assert len(hold) == round(0.2 * len(df)) and len(train) + len(hold) == len(df)
    assert set(train.rid).isdisjoint(hold.rid)
    assert set(train.rid) | set(hold.rid) == set(df.rid)
    _, again_hold = holdout_split(df, 0.2, seed=3, stratify=stratify)
    pd.testing.assert_frame_equal(again_hold, hold)
    other = holdout_split(df, 0.2, seed=4, stratify=stratify)[1]
    assert set(other.rid) != set(hold.rid)


def test_stratified_holdout_keeps_class_shares():
    df = _table()
    _, hold = holdout_split(df, 0.1, seed=0, stratify="label")
    want = df.label.value_counts(normalize=True)
    got = hold.label.value_counts(normalize=True).reindex(want.index)
    np.testing.assert_allclose(got, want, atol=0.01)


def test_holdout_edge_cases():
    df = _table(50)
    train, hold = holdout_split(df, 0.0, seed=0)
    assert len(train) == 50 and hold.empty and list(hold.columns) == list(df.columns)
    tiny = df.iloc[:5].assign(label=["a", "b", "c", "d", "e"])
    train, hold = holdout_split(tiny, 0.2, seed=0, stratify="label")  # falls back, no crash
    assert len(hold) == 1
    with pytest.raises(InputError, match="'nope'"):
        holdout_split(df, 0.2, seed=0, stratify="nope")
    with pytest.raises(InputError):
        holdout_split(df, 1.0, seed=0)


@pytest.mark.parametrize("how", ["iid", "noniid:label", "noniid:x", "noniid:flag"])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_party_split_partitions_the_table(how, n):
    df = _table()
    parts = split_parties(df, n, how=how, seed=7)
    assert len(parts) == n
    ids = np.concatenate([p.rid.to_numpy() for p in parts])
    assert len(ids) == len(df) and set(ids) == set(df.rid)  # disjoint and complete
    assert min(len(p) for p in parts) >= 10
    assert all(list(p.index) == list(range(len(p))) for p in parts)
    again = split_parties(df, n, how=how, seed=7)
    assert all(a.equals(b) for a, b in zip(parts, again))
    if how == "iid":
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_seed_changes_iid_split():
    df = _table()
    a = split_parties(df, 3, seed=0)
    b = split_parties(df, 3, seed=1)
    assert set(a[0].rid) != set(b[0].rid)


def test_noniid_label_skew_is_measurable():
    df = _table()
    iid = np.mean([_total_variation(split_parties(df, 4, seed=s), "label") for s in range(5)])
    skew = np.mean(
        [_total_variation(split_parties(df, 4, "noniid:label", seed=s), "label") for s in range(5)]
    )
    assert iid < 0.05
    assert skew > 4 * iid and skew > 0.15


def test_noniid_numeric_gives_disjoint_ranges():
    df = _table()
    parts = split_parties(df, 3, how="noniid:x", seed=0)
    ranges = sorted((p.x.min(), p.x.max()) for p in parts)
    assert all(ranges[i][1] <= ranges[i + 1][0] for i in range(len(ranges) - 1))


def test_noniid_on_builtin_target_keeps_every_party_fed():
    frame = load_builtin("wine").frame
    for seed in range(10):
        parts = split_parties(frame, 5, how="noniid:cultivar", seed=seed)
        assert min(len(p) for p in parts) >= 10
        assert sum(len(p) for p in parts) == len(frame)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((3, "noniid:nope"), "'nope'"),
        ((3, "random"), "'random'"),
        ((0, "iid"), "at least 1"),
        ((99999, "iid"), "cannot be shared"),
    ],
)
def test_bad_split_requests(args, fragment):
    with pytest.raises(InputError) as err:
        split_parties(_table(100), *args)
    assert fragment in str(err.value)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(labels=st.integers(1, 3000), parties=st.integers(2, 4), seed=st.integers(0, 99))
def test_noniid_split_on_an_id_like_column_partitions_and_feeds_every_party(labels, parties, seed):
    rows = 3000
    frame = pd.DataFrame({"id": [f"k{i % labels}" for i in range(rows)], "x": range(rows)})
    shares = split_parties(frame, parties, "noniid:id", seed=seed)
    taken = sorted(x for share in shares for x in share["x"])
    assert taken == list(range(rows))
    assert min(len(share) for share in shares) >= MIN_ROWS
