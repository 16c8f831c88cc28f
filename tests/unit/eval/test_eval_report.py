"""Quality evaluation on a real built-in table (breast cancer), end to end through evaluate()."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from smpc_synth.errors import InputError
from smpc_synth.eval import evaluate, format_report

TARGET = "target"
SECTIONS = {
    "fidelity": ["quality_score", "column_shapes", "column_pair_trends", "per_column"],
    "utility": ["tstr_auc", "trtr_auc", "gap", "models", "notes", "reason"],
    "privacy": ["dcr_synthetic_median", "dcr_holdout_median", "exact_copy_rate"],
    "collapse": [
        "variance_ratio_min",
        "category_coverage",
        "range_coverage",
        "tail_mass",
        "prdc_coverage",
        "correlation_error",
    ],
    "meta": ["rows", "columns", "seconds", "seed"],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with threadpool_limits(1):
        yield


def labelled(loader) -> pd.DataFrame:
    """A built-in sklearn table with its class names (a categorical column) as target."""
    data = loader(as_frame=True)
    return data.frame.assign(**{TARGET: data.target_names[data.target]})


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    table = labelled(load_breast_cancer)
    train, holdout = train_test_split(table, test_size=0.25, random_state=0, stratify=table[TARGET])
    return train, holdout


@pytest.fixture(scope="module")
def identity(split) -> dict:
    train, holdout = split
    return evaluate(train, train.copy(), holdout, target=TARGET)


@pytest.fixture(scope="module")
def collapsed(split) -> dict:
    """Every synthetic row is the real mean, with the majority class."""
    train, holdout = split
    synthetic = pd.DataFrame([train.mean(numeric_only=True)] * len(train))
    synthetic[TARGET] = train[TARGET].mode()[0]
    return evaluate(train, synthetic.astype(train.dtypes), holdout, target=TARGET)


def shuffled_columns(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Each column permuted on its own: same marginals, no dependence between columns."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: rng.permutation(table[c].to_numpy()) for c in table.columns})


def test_report_has_every_key_and_is_json(identity):
    for section, keys in SECTIONS.items():
        missing = [k for k in keys if k not in identity[section]]
        assert not missing, f"{section} lacks {missing}"
    json.dumps(identity, allow_nan=False)
    assert set(identity["fidelity"]["per_column"]) == set(identity["meta"]["column_kinds"])


def test_identity_synthetic_is_a_perfect_copy(identity, split):
    train, _ = split
    assert identity["fidelity"]["quality_score"] > 0.95
    assert identity["privacy"]["exact_copy_rate"] == pytest.approx(1.0)
    assert identity["privacy"]["dcr_synthetic_median"] == pytest.approx(0.0, abs=1e-9)
    assert identity["privacy"]["dcr_holdout_median"] > 0.0
    assert identity["collapse"]["variance_ratio_min"] == pytest.approx(1.0)
    assert identity["collapse"]["prdc_coverage"] == pytest.approx(1.0)
    assert identity["collapse"]["correlation_error"] == pytest.approx(0.0, abs=1e-9)
    assert identity["meta"]["rows"]["synthetic"] == len(train)


def test_tstr_on_the_training_rows_equals_trtr(identity):
    utility = identity["utility"]
    assert utility["reason"] is None
    assert set(utility["models"]) == {"logistic_regression", "hist_gradient_boosting"}
    assert utility["tstr_auc"] == pytest.approx(utility["trtr_auc"])
    assert utility["gap"] == pytest.approx(0.0, abs=1e-12)


def test_tstr_on_other_real_rows_is_close_to_trtr(split):
    train, holdout = split
    columns = [*train.columns[:8], TARGET]  # fewer columns keep SDMetrics' pair loop short
    half_a, half_b = train_test_split(train[columns], test_size=0.5, random_state=1)
    report = evaluate(half_a, half_b, holdout[columns], target=TARGET)
    utility = report["utility"]
    assert utility["tstr_auc"] > 0.9
    assert abs(utility["gap"]) < 0.05
    assert report["privacy"]["exact_copy_rate"] == 0.0


def test_shuffled_columns_keep_shapes_but_lose_pair_trends(identity, split):
    train, holdout = split
    report = evaluate(train, shuffled_columns(train, seed=3), holdout, target=TARGET)
    fidelity = report["fidelity"]
    assert fidelity["column_shapes"] == pytest.approx(identity["fidelity"]["column_shapes"])
    assert fidelity["column_pair_trends"] < identity["fidelity"]["column_pair_trends"] - 0.2
    assert fidelity["worst_pairs"], "weak pairs should be listed"
    assert fidelity["worst_pairs"][0]["score"] <= fidelity["column_pair_trends"]
    assert report["collapse"]["correlation_error"] > 0.1
    assert report["utility"]["tstr_auc"] < identity["utility"]["tstr_auc"]


def test_collapsed_synthetic_shows_in_every_collapse_indicator(collapsed, identity):
    got, ref = collapsed["collapse"], identity["collapse"]
    assert got["variance_ratio_min"] == pytest.approx(0.0, abs=1e-12)
    assert got["category_coverage"] < ref["category_coverage"]
    assert got["prdc_coverage"] < 0.1
    assert got["prdc_recall"] < 0.1
    assert got["range_coverage"] < 0.01
    assert got["tail_mass"] < 0.01
    assert got["correlation_error"] > ref["correlation_error"] + 0.5


def test_single_class_synthetic_is_recorded_not_fatal(collapsed):
    utility = collapsed["utility"]
    assert any("lacks class" in note for note in utility["notes"])
    assert utility["tstr_auc"] == pytest.approx(0.5)
    assert utility["gap"] > 0.4


def test_missing_class_in_multiclass_target_scores_what_it_can():
    table = labelled(load_wine)
    train, holdout = train_test_split(table, test_size=0.3, random_state=0, stratify=table[TARGET])
    top = train[TARGET].max()
    report = evaluate(train, train[train[TARGET] != top], holdout, target=TARGET)
    utility = report["utility"]
    assert utility["task"] == "multiclass"
    assert utility["classes"] == 3
    assert any(str(top) in note for note in utility["notes"])
    assert utility["tstr_auc"] < utility["trtr_auc"]
    assert report["collapse"]["category_coverage"] < 1.0


def test_holdout_is_split_off_deterministically(split, capsys):
    train = split[0][[*split[0].columns[:6], TARGET]]  # few columns: SDMetrics cost is per pair
    first = evaluate(train, train.copy(), target=TARGET, seed=7)
    second = evaluate(train, train.copy(), target=TARGET, seed=7)
    rows = first["meta"]["rows"]
    assert rows["real"] + rows["holdout"] == len(train)
    for section in ("fidelity", "utility", "privacy", "collapse"):
        assert first[section] == second[section]
    assert capsys.readouterr().out == "", "evaluation must not print"
    # synthetic holds every real row: the split-off holdout rows are the only non-copies
    assert first["privacy"]["exact_copy_rate"] == pytest.approx(rows["real"] / len(train))
    assert first["privacy"]["holdout_exact_copy_rate"] == 0.0


def test_without_target_utility_says_why(split):
    train, holdout = (t.iloc[:, :6] for t in split)
    report = evaluate(train, train.copy(), holdout)
    assert report["utility"]["tstr_auc"] is None
    assert "target" in report["utility"]["reason"]
    assert "target" in format_report(report)


def test_mixed_types_and_missing_values(split):
    train, holdout = split
    rng = np.random.default_rng(0)

    def with_site(table: pd.DataFrame) -> pd.DataFrame:
        out = table.copy()
        site = rng.choice(["north", "south", "east"], size=len(out)).astype(object)
        site[rng.random(len(out)) < 0.1] = None
        out["site"] = site
        out.iloc[::17, 0] = np.nan
        return out

    codes = {"malignant": 0, "benign": 1}
    real, hold = (
        with_site(t[[*t.columns[:6], TARGET]]).assign(**{TARGET: t[TARGET].map(codes)})
        for t in (train, holdout)
    )
    synthetic = real.copy()
    synthetic[TARGET] = synthetic[TARGET].astype(float)  # 1.0 must match the real 1
    report = evaluate(real, synthetic, hold, target=TARGET)
    assert report["meta"]["column_kinds"]["site"] == "categorical"
    assert report["meta"]["column_kinds"][TARGET] == "integer"
    assert report["privacy"]["exact_copy_rate"] == pytest.approx(1.0)
    assert report["collapse"]["category_coverage"] == pytest.approx(1.0)
    assert report["utility"]["gap"] == pytest.approx(0.0, abs=1e-12)


def test_mismatched_columns_are_named(split):
    train, holdout = split
    synthetic = train.drop(columns=["mean radius"]).assign(extra=1.0)
    with pytest.raises(InputError, match="mean radius") as caught:
        evaluate(train, synthetic, holdout)
    assert "extra" in str(caught.value)
    with pytest.raises(InputError, match=r"holdout.*worst area"):
        evaluate(train, train, holdout.drop(columns=["worst area"]))
    with pytest.raises(InputError, match="'label'"):
        evaluate(train, train, holdout, target="label")


def test_non_numeric_cell_is_named(split):
    train, holdout = split
    synthetic = train.astype({"mean area": object})
    row = synthetic.index[4]
    synthetic.loc[row, "mean area"] = "big"
    with pytest.raises(InputError, match=rf"synthetic.*'mean area'.*row {row}.*'big'"):
        evaluate(train, synthetic, holdout)


def test_format_puts_headline_first(identity):
    text = format_report(identity)
    quality = f"{identity['fidelity']['quality_score']:.3f}"
    assert quality in text
    assert text.index("Quality score") < text.index("Details")
    for label in ("TSTR / TRTR AUC", "DCR synthetic / holdout", "Exact copies", "PRDC coverage"):
        assert label in text
    assert "\x1b[" not in text  # plain text, no colour codes


@pytest.mark.slow
def test_five_thousand_rows_use_capped_subsamples():
    """A 5,000-row table: distances on capped subsamples; prints the time (no assertion)."""
    from smpc_synth.eval.defaults import MAX_DISTANCE_ROWS

    table = labelled(load_breast_cancer)
    rng = np.random.default_rng(0)

    def jittered(n: int) -> pd.DataFrame:
        rows = table.sample(n, replace=True, random_state=int(rng.integers(1 << 31)))
        numeric = rows.columns.drop(TARGET)  # the target holds class names
        noise = rng.normal(0, 0.05, (n, len(numeric))) * table[numeric].std().to_numpy()
        return rows.assign(**{c: rows[c] + noise[:, i] for i, c in enumerate(numeric)})

    report = evaluate(jittered(5000), jittered(5000), jittered(1000), target=TARGET)
    assert report["privacy"]["query_rows"] <= MAX_DISTANCE_ROWS
    assert report["utility"]["reason"] is None
    print(f"5,000 rows x {report['meta']['columns']} columns: {report['meta']['seconds']:.2f} s")
