"""The distance and collapse building blocks on point sets whose answers follow from geometry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpc_synth.data.schema import ColumnSpec, Schema
from smpc_synth.errors import InputError
from smpc_synth.eval.collapse import _numeric_column, correlation_error, prdc
from smpc_synth.eval.columns import canonical, column_kinds, labels
from smpc_synth.eval.privacy import copy_rate, privacy_metrics
from smpc_synth.eval.space import encode


@pytest.fixture
def cloud() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(400, 4))


def test_prdc_of_a_set_with_itself_is_complete(cloud):
    scores = prdc(cloud, cloud.copy(), k=5)
    assert scores["prdc_precision"] == 1.0
    assert scores["prdc_recall"] == 1.0
    assert scores["prdc_coverage"] == 1.0


def test_prdc_of_a_far_away_set_is_empty(cloud):
    scores = prdc(cloud, cloud + 100.0, k=5)
    assert scores["prdc_precision"] == 0.0
    assert scores["prdc_coverage"] == 0.0
    assert scores["prdc_density"] == 0.0


def test_prdc_of_one_mode_covers_little(cloud):
    """Half the real cloud shifted away: a synthetic set of one mode misses it."""
    real = np.vstack([cloud[:200], cloud[200:] + 20.0])
    scores = prdc(real, cloud[:200].copy(), k=5)
    assert scores["prdc_precision"] == 1.0
    assert scores["prdc_coverage"] == pytest.approx(0.5)


def test_prdc_needs_more_rows_than_k(cloud):
    assert prdc(cloud[:3], cloud[:3], k=5)["prdc_coverage"] is None


def test_copy_rate_counts_rows_found_in_training(cloud):
    synthetic = np.vstack([cloud[:100], cloud[:100] + 0.5])
    assert copy_rate(synthetic, cloud) == pytest.approx(0.5)


def test_dcr_of_training_rows_is_zero_and_of_fresh_rows_is_not(cloud):
    rng = np.random.default_rng(1)
    fresh = rng.normal(size=cloud.shape)
    result = privacy_metrics(cloud, cloud.copy(), fresh, seed=0)
    assert result["dcr_synthetic_median"] == 0.0
    assert result["dcr_holdout_median"] > 0.0
    assert result["dcr_ratio"] == 0.0


def test_correlation_error_sees_broken_dependence(cloud):
    real = np.column_stack([cloud[:, 0], cloud[:, 0] + 0.1 * cloud[:, 1], cloud[:, 2]])
    independent = np.column_stack(
        [real[:, 0], np.random.default_rng(2).permutation(real[:, 1]), real[:, 2]]
    )
    assert correlation_error(real, real.copy()) == pytest.approx(0.0, abs=1e-12)
    assert correlation_error(real, independent) > 0.2


def test_labels_unify_number_spellings():
    assert labels(pd.Series([1, 2, None], dtype="Int64")).tolist() == ["1", "2", None]
    assert labels(pd.Series([1.0, 2.0, np.nan])).tolist() == ["1", "2", None]
    assert labels(pd.Series([0.5, 2.0])).tolist() == ["0.5", "2"]
    assert labels(pd.Series(["a", None])).tolist() == ["a", None]


def test_encoding_scales_by_the_real_range():
    real = pd.DataFrame({"x": [0.0, 5.0, 10.0], "c": ["a", "b", "a"]})
    kinds = column_kinds(real)
    other = canonical(pd.DataFrame({"x": [20.0], "c": ["z"]}), kinds, "synthetic")
    real_x, other_x = encode(canonical(real, kinds, "real"), kinds, other)
    assert real_x[:, 0].tolist() == [0.0, 0.5, 1.0]
    assert other_x[0, 0] == 2.0  # outside the real range, still on its scale
    assert other_x[0, 1:].tolist() == [0.0, 0.0]  # unseen category: no real category


def test_truth_spellings_share_one_label():
    real = pd.DataFrame({"flag": [True, False, True]})
    kinds = column_kinds(real)
    assert kinds == {"flag": "boolean"}
    other = pd.DataFrame({"flag": ["TRUE", "0", None]})
    assert canonical(other, kinds, "synthetic")["flag"].tolist() == ["true", "false", None]
    assert canonical(real, kinds, "real")["flag"].tolist() == ["true", "false", "true"]


def test_kinds_follow_a_given_schema_and_name_what_it_lacks():
    real = pd.DataFrame({"x": [1, 2, 3], "c": ["a", "b", "a"]})
    schema = Schema((ColumnSpec("x", "numeric", min=0, max=10),))
    with pytest.raises(InputError, match="'c'"):
        column_kinds(real, schema)
    wide = Schema((*schema.columns, ColumnSpec("c", "categorical", categories=("a", "b"))))
    assert column_kinds(real, wide) == {"x": "numeric", "c": "categorical"}


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**16),
    exponent=st.sampled_from([-300, -150, 0, 150, 300]),
    spread=st.floats(0.1, 10.0),
)
def test_variance_ratio_does_not_depend_on_the_scale(seed, exponent, spread):
    rng = np.random.default_rng(seed)
    real = pd.Series(rng.normal(0, 1, 60))
    syn = pd.Series(rng.normal(0, spread, 60))
    unit = _numeric_column(real, syn)
    scaled = _numeric_column(real * 10.0**exponent, syn * 10.0**exponent)
    assert scaled["variance_ratio"] == pytest.approx(unit["variance_ratio"], rel=1e-9)
    assert scaled["range_coverage"] == pytest.approx(unit["range_coverage"], rel=1e-9)
