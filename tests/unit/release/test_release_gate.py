"""The release gate on real evaluation reports: good data passes, collapsed or copied data fails."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from smpc_synth.config import GateConfig, RunConfig
from smpc_synth.data.datasets import load_builtin
from smpc_synth.errors import ReleaseRefused
from smpc_synth.eval import evaluate
from smpc_synth.release import check_release, enforce, publish, release_run, verify_manifest


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    """Disjoint real rows of a mixed table: training, holdout and an 'ideal generator' sample."""
    data = load_builtin("fair")
    rows = data.frame.sample(900, random_state=0).reset_index(drop=True)
    return {
        "train": rows.iloc[:400],
        "holdout": rows.iloc[400:600],
        "fresh": rows.iloc[600:],
        "target": data.target,
    }


def _report(tables, synthetic: pd.DataFrame) -> dict:
    with threadpool_limits(1):
        return evaluate(
            tables["train"], synthetic, holdout=tables["holdout"], target=tables["target"]
        )


def _collapsed(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Every row near the centre: numeric columns at their median (tiny jitter), one category."""
    out = frame.copy()
    jitter = pd.Series(range(len(out)), index=out.index) % 3 * 1e-3
    for col in out.columns:
        if pd.api.types.is_bool_dtype(out[col]) or not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].mode().iloc[0]
        else:
            out[col] = out[col].median() + jitter
    return out


@pytest.fixture(scope="module")
def good_report(tables) -> dict:
    return _report(tables, tables["fresh"])


@pytest.fixture(scope="module")
def collapsed_report(tables) -> dict:
    return _report(tables, _collapsed(tables["fresh"]))


def test_gate_passes_fresh_real_rows(good_report):
    decision = check_release(good_report, GateConfig())
    assert decision.passed and decision.released, decision.describe()
    assert decision.failures == []
    assert set(decision.checked) >= {"quality_score", "variance_ratio_min", "exact_copy_rate"}


def test_gate_blocks_collapsed_table_naming_each_metric(collapsed_report):
    policy = GateConfig()
    decision = check_release(collapsed_report, policy)
    assert not decision.passed and not decision.released
    failed = {f.metric: f for f in decision.failures}
    assert {"category_coverage", "variance_ratio_min"} <= set(failed)
    coverage = failed["category_coverage"]
    assert coverage.value == collapsed_report["collapse"]["category_coverage"]
    assert coverage.threshold == policy.min_category_coverage and coverage.rule == ">="
    text = decision.describe()
    for failure in decision.failures:
        assert failure.metric in text and f"{failure.threshold:.4g}" in text


def test_gate_blocks_copied_training_rows(tables):
    report = _report(tables, tables["train"].sample(200, random_state=1))
    failed = {f.metric for f in check_release(report, GateConfig()).failures}
    assert {"exact_copy_rate", "dcr_ratio"} <= failed


def test_thresholds_come_from_the_policy(good_report):
    quality = good_report["fidelity"]["quality_score"]
    strict = replace(GateConfig(), min_quality_score=quality + 0.01)
    lenient = replace(GateConfig(), min_quality_score=quality - 0.01)
    assert [f.metric for f in check_release(good_report, strict).failures] == ["quality_score"]
    assert check_release(good_report, lenient).passed


def test_enforce_raises_exit_code_3_unless_overridden(collapsed_report):
    refused = check_release(collapsed_report, GateConfig())
    with pytest.raises(ReleaseRefused) as caught:
        enforce(refused)
    assert caught.value.exit_code == 3
    for failure in refused.failures:
        assert failure.metric in str(caught.value)
    overridden = check_release(collapsed_report, GateConfig(), override=True)
    enforce(overridden)  # no exception
    assert overridden.released and not overridden.passed
    assert overridden.to_dict()["override"] is True and overridden.to_dict()["failures"]


def test_disabled_gate_releases_and_says_so(collapsed_report):
    decision = check_release(collapsed_report, replace(GateConfig(), enabled=False))
    assert decision.released and not decision.enabled
    assert "disabled" in decision.describe()


def test_missing_metric_fails_closed_inapplicable_one_is_skipped(good_report):
    broken = json.loads(json.dumps(good_report))
    broken["fidelity"]["quality_score"] = None
    failed = {f.metric: f.value for f in check_release(broken, GateConfig()).failures}
    assert failed == {"quality_score": None}

    numeric_only = json.loads(json.dumps(good_report))
    kinds = numeric_only["meta"]["column_kinds"]
    numeric_only["meta"]["column_kinds"] = dict.fromkeys(kinds, "numeric")
    numeric_only["collapse"]["category_coverage"] = None
    decision = check_release(numeric_only, GateConfig())
    assert decision.passed and "category_coverage" in decision.skipped


def test_release_run_withholds_refused_data_but_writes_report(tmp_path, tables, collapsed_report):
    cfg = RunConfig()
    pending = tmp_path / "synthetic.pending.csv"
    _collapsed(tables["fresh"]).to_csv(pending, index=False)
    metrics = {"evaluation": collapsed_report}
    decision = release_run(
        tmp_path,
        candidate=pending,
        report=collapsed_report,
        policy=cfg.gate,
        config=cfg.to_dict(),
        metrics=metrics,
    )
    assert not decision.released
    assert not pending.exists() and not (tmp_path / "synthetic.csv").exists()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["gate"]["failures"] and written["gate"]["released"] is False
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["gate"] == written["gate"] and "synthetic.csv" not in manifest["files"]
    result = verify_manifest(tmp_path / "manifest.json", allow_unsigned=True)
    assert result.ok and any("UNSIGNED" in note for note in result.notes)
    assert [c.item for c in verify_manifest(tmp_path / "manifest.json").failures] == ["signatures"]
    (tmp_path / "synthetic.csv").write_text("smuggled in later\n")
    failures = verify_manifest(tmp_path / "manifest.json", allow_unsigned=True).failures
    assert [c.item for c in failures] == ["gate"]


def test_publish_renames_released_candidate(tmp_path, good_report):
    pending = tmp_path / "synthetic.pending.csv"
    pending.write_text("a,b\n1,2\n")
    target = publish(pending, tmp_path, check_release(good_report, GateConfig()))
    assert target == tmp_path / "synthetic.csv" and target.read_text() == "a,b\n1,2\n"
    assert not pending.exists()
