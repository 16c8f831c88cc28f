"""A tiny collapse run: files are written and indicators are taken relative to generation 1."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from smpc_synth.errors import InputError
from smpc_synth_bench.collapse import (
    INDICATORS,
    REGIMES,
    CollapseConfig,
    Table,
    budget_epochs,
    load_table,
    main,
    training_set,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("collapse")
    code = main(out, None, rows=300, generations=2, generators=["gaussian"], secure_modes=[])
    records = [json.loads(line) for line in (out / "collapse.jsonl").read_text().splitlines()]
    return code, out, records


def test_files_are_written(tiny_run):
    code, out, records = tiny_run
    assert code == 0
    assert (out / "collapse.md").read_text().count("| plaintext | gaussian |") == len(REGIMES)
    png = (out / "collapse_plaintext_gaussian.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    keys = {(r["regime"], r["generation"]) for r in records}
    assert keys == {(regime, t) for regime in REGIMES for t in (1, 2)}


def test_indicators_are_relative_to_generation_1(tiny_run):
    _, _, records = tiny_run
    first = {r["regime"]: r for r in records if r["generation"] == 1}
    assert len({json.dumps(r["prdc_coverage"]) for r in first.values()}) == 1  # trained once
    for r in records:
        base = first[r["regime"]]
        for _, metric, _ in INDICATORS:
            value, rel = r[metric], r["relative"][metric]
            if value is None or not base[metric]:
                assert rel is None
            else:
                assert rel == pytest.approx(value / base[metric])
    second = [r for r in records if r["generation"] == 2]
    assert any(r["relative"]["prdc_coverage"] != 1.0 for r in second)


def test_training_sets_follow_the_regime():
    real = pd.DataFrame({"x": range(100), "src": "real"})
    history = [pd.DataFrame({"x": range(100), "src": f"gen{t}"}) for t in (1, 2)]
    table = Table(real, real.iloc[:0], None, None, "toy")
    replace = training_set("replace", table, history, 0.1, seed=0)
    assert set(replace["src"]) == {"gen2"} and len(replace) == 100
    accumulate = training_set("accumulate", table, history, 0.1, seed=0)
    assert accumulate["src"].value_counts().to_dict() == {"real": 100, "gen1": 100, "gen2": 100}
    fresh = training_set("fresh", table, history, 0.1, seed=0)
    assert fresh["src"].value_counts().to_dict() == {"gen2": 90, "real": 10}


def test_budget_keeps_row_visits_fixed():
    cfg = CollapseConfig()
    base = cfg.epochs["vae"]
    assert budget_epochs("vae", cfg, 1000, 1000) == base
    assert budget_epochs("vae", cfg, 1000, 3000) * 3000 == pytest.approx(base * 1000, rel=0.02)
    assert budget_epochs("gaussian", cfg, 1000, 3000) is None


def test_config_rejects_unknown_keys_and_regimes(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('[collapse]\nregims = ["replace"]\n')
    with pytest.raises(InputError, match="regims"):
        CollapseConfig.load(bad)
    with pytest.raises(InputError, match="mixed"):
        CollapseConfig.load(None, regimes=["mixed"])
    good = tmp_path / "g.toml"
    good.write_text("generations = 12\n")
    assert CollapseConfig.load(good).generations == 12


def test_experiment_table_keeps_a_disjoint_holdout():
    table = load_table(CollapseConfig(rows=300))
    assert len(table.train) + len(table.holdout) == 300
    assert table.target in table.train.columns


@pytest.mark.slow
def test_federated_series_trains_through_simulated_sessions(tmp_path):
    code = main(
        tmp_path,
        None,
        rows=300,
        generators=[],
        secure_modes=["federated"],
        secure_parties=2,
        secure_regimes=["replace"],
        secure_generations=2,
    )
    records = [json.loads(line) for line in (tmp_path / "collapse.jsonl").read_text().splitlines()]
    assert code == 0
    assert [(r["mode"], r["generation"]) for r in records] == [("federated", 1), ("federated", 2)]
    assert records[1]["prdc_coverage"] is not None
    assert (tmp_path / "collapse_federated_gaussian.png").is_file()
