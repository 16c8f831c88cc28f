"""AIM and MST in plaintext: the accountant, the budget, the released model, the refusals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpc_synth.config import DpConfig
from smpc_synth.data import Schema
from smpc_synth.data.schema import ColumnSpec
from smpc_synth.dp import zcdp
from smpc_synth.dp.budget import Budget, Ledger, check_budget
from smpc_synth.errors import InputError
from smpc_synth.models import Synthesizer

# Printed by the authors' reference code for the conversion (cdp2adp.py of "The Discrete
# Gaussian for Differential Privacy", Canonne, Kamath and Steinke 2020): cdp_delta(0.025, 1),
# cdp_eps(0.025, 1e-6), cdp_rho(1, 1e-6).
PUBLISHED = {"delta": 1.3361319064032213e-06, "eps": 1.014074254726128, "rho": 0.024355970359538372}


def test_conversion_matches_the_published_reference_values():
    assert zcdp.cdp_delta(0.025, 1.0) == pytest.approx(PUBLISHED["delta"], rel=1e-9)
    assert zcdp.cdp_epsilon(0.025, 1e-6) == pytest.approx(PUBLISHED["eps"], rel=1e-9)
    assert zcdp.cdp_rho(1.0, 1e-6) == pytest.approx(PUBLISHED["rho"], rel=1e-9)


def _gaussian_delta(sigma: float, eps: float) -> float:
    """The exact privacy profile of the Gaussian mechanism (Balle and Wang 2018)."""
    phi = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731
    return phi(-eps * sigma + 1 / (2 * sigma)) - math.exp(eps) * phi(-eps * sigma - 1 / (2 * sigma))


@settings(max_examples=40, deadline=None)
@given(eps=st.floats(0.05, 20), log_delta=st.floats(-14, -3))
def test_rho_lies_between_the_classic_bound_and_the_gaussian_mechanisms_truth(eps, log_delta):
    """cdp_rho is at least what Bun-Steinke's eps = rho + 2 sqrt(rho log(1/delta)) allows, and
    the Gaussian mechanism with that rho is (eps, delta)-DP by its exact profile: the CKS
    bound is valid and tighter than the classic one."""
    delta = 10.0**log_delta
    rho = zcdp.cdp_rho(eps, delta)
    root = -math.sqrt(math.log(1 / delta)) + math.sqrt(math.log(1 / delta) + eps)
    assert rho >= root * root * (1 - 1e-9)
    assert _gaussian_delta(math.sqrt(1 / (2 * rho)), eps) <= delta * (1 + 1e-6)
    assert zcdp.cdp_delta(rho, eps) <= delta * (1 + 1e-9)
    assert zcdp.cdp_epsilon(rho, delta) == pytest.approx(eps, rel=1e-6)


@pytest.mark.parametrize(
    ("epsilon", "delta", "flag"),
    [
        (0.0, 1e-9, "--epsilon"),
        (-1.0, 1e-9, "--epsilon"),
        (math.nan, 1e-9, "--epsilon"),
        (math.inf, 1e-9, "--epsilon"),
        (1.0, 0.0, "--delta"),
        (1.0, 1.0, "--delta"),
        (1.0, math.nan, "--delta"),
        (1.0, None, "--delta"),
    ],
)
def test_bad_budgets_are_refused_naming_the_flag(epsilon, delta, flag):
    with pytest.raises(InputError, match=flag):
        check_budget(epsilon, delta, epsilon_name="--epsilon", delta_name="--delta")


def test_the_ledger_refuses_to_overspend_in_rho_or_in_tails():
    plan = zcdp.RhoPlan(Ledger(Budget(1.0, 1e-9, "zcdp")))
    plan.measure("measure:a", 1 / plan.rho, "half the budget")  # rho = plan.rho / 2
    assert plan.spent == pytest.approx(plan.rho / 2)
    with pytest.raises(InputError, match="over the budget"):
        plan.measure("measure:b", 1 / (2 * plan.rho), "the whole budget again")
    with pytest.raises(InputError, match="over the budget"):  # tails beyond delta's room
        plan.select("select:x", 0.01, 0.0, 1e-9, "a tail as large as delta")
    assert [m.label for m in plan.ledger.mechanisms] == ["measure:a"]


def test_the_zcdp_accountant_refuses_poisson_sampled_steps():
    with pytest.raises(InputError, match=r"dp\.accountant"):
        Ledger(Budget(1.0, 1e-6, "zcdp")).sgd("training", 0.01, 100, 1.0, "DP-SGD")


def _table(rows: int, seed: int = 0) -> tuple[pd.DataFrame, Schema]:
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], rows, p=[0.6, 0.3, 0.1])
    size = np.where(colour == "red", rng.normal(20, 3, rows), rng.normal(60, 10, rows))
    count = rng.integers(0, 6, rows)
    flag = (count > 2) ^ (rng.random(rows) < 0.1)
    frame = pd.DataFrame(
        {"colour": colour, "size": np.clip(size, 0, 100), "count": count, "flag": flag}
    )
    schema = Schema(
        (
            ColumnSpec("colour", "categorical", categories=("blue", "green", "red")),
            ColumnSpec("size", "numeric", min=0.0, max=100.0),
            ColumnSpec("count", "integer", min=0, max=5),
            ColumnSpec("flag", "boolean"),
        ),
        target="flag",
    )
    return frame, schema


@pytest.mark.parametrize("generator", ["mst", pytest.param("aim", marks=pytest.mark.slow)])
def test_a_fit_spends_its_budget_and_keeps_the_data_s_structure(generator, tmp_path):
    frame, schema = _table(3000)
    params = (
        {"rounds_per_column": 3, "iters": 200, "final_iters": 300} if generator == "aim" else {}
    )
    dp = DpConfig(epsilon=2.0, delta=1e-7, accountant="zcdp", insecure_debug_seed=5)
    model = Synthesizer.fit(frame, schema, generator=generator, params=params, dp=dp)
    report = model.meta["dp"]
    assert report["rho_spent"] == pytest.approx(report["rho_budget"], rel=1e-6)
    assert report["delta"] == 1e-7 and report["delta_tails"] <= 1e-7 * zcdp.SLACK_SHARE
    assert report["epsilon"] == pytest.approx(2.0, rel=1e-3) and report["epsilon"] <= 2.0
    assert report["accountant"] == "zcdp"
    kinds = {part["kind"] for part in report["parts"]}
    assert "discrete gaussian" in kinds and "exponential (gumbel-max)" in kinds
    assert abs(model.meta["train_rows"] - 3000) < 300  # a noisy estimate, not the count
    synthetic = model.sample(4000, seed=1)
    assert list(synthetic.columns) == list(frame.columns)
    assert set(synthetic["colour"]) <= {"blue", "green", "red"}
    assert synthetic["count"].between(0, 5).all() and synthetic["size"].between(0, 100).all()
    # the strong dependence colour -> size survives
    red = synthetic.loc[synthetic["colour"] == "red", "size"].mean()
    other = synthetic.loc[synthetic["colour"] != "red", "size"].mean()
    assert other - red > 20
    path = model.save(tmp_path)
    again = Synthesizer.load(path)
    pd.testing.assert_frame_equal(again.sample(500, seed=3), model.sample(500, seed=3))
    assert again.generator.privacy_report == report


@pytest.mark.slow
def test_the_same_noise_key_gives_the_same_model_and_another_key_another():
    frame, schema = _table(2000)
    fits = [
        Synthesizer.fit(
            frame,
            schema,
            generator="mst",
            dp=DpConfig(epsilon=1.0, delta=1e-8, accountant="zcdp", insecure_debug_seed=seed),
        )
        for seed in (1, 1, 2)
    ]
    samples = [f.sample(300, seed=0) for f in fits]
    pd.testing.assert_frame_equal(samples[0], samples[1])
    assert not samples[0].equals(samples[2])


def test_dp_generators_need_a_budget():
    from smpc_synth.config import RunConfig

    frame, schema = _table(200)
    with pytest.raises(InputError, match="--epsilon"):
        Synthesizer.fit(frame, schema, generator="aim")
    with pytest.raises(InputError, match="--epsilon"):
        RunConfig.from_dict({"generator": "mst"}, source="test")
    with pytest.raises(InputError, match=r"dp\.accountant"):
        RunConfig.from_dict({"generator": "aim", "dp": {"epsilon": 1, "accountant": "rdp"}})


def test_bins_follow_the_schema_alone():
    from smpc_synth.models import get_generator

    _, schema = _table(10)
    encoder = get_generator("mst").make_encoder(schema)
    assert not encoder.needs_data
    encoder.fit_public()
    values = pd.DataFrame({"colour": ["red"], "size": [37.5], "count": [4], "flag": [True]})
    decoded = encoder.inverse_transform(encoder.transform(values))
    assert decoded["size"].iloc[0] == pytest.approx(37.5)
    assert decoded["count"].iloc[0] == 4


def test_the_release_gate_can_require_an_epsilon():
    from smpc_synth.config import GateConfig
    from smpc_synth.release.gate import check_release

    def epsilon_failures(report, limit):
        decision = check_release(report, GateConfig(max_epsilon=limit))
        return [f for f in decision.failures if f.metric == "epsilon"]

    assert epsilon_failures({"dp": {"epsilon": 0.5}}, 1.0) == []
    assert epsilon_failures({"dp": {"epsilon": 3.0}}, 1.0)[0].value == 3.0
    assert epsilon_failures({}, 1.0)[0].value is None  # no DP: fails closed
    assert epsilon_failures({}, None) == []  # no limit set: not checked


def test_under_dp_the_gate_reads_only_the_ledger_s_epsilon():
    from smpc_synth.config import GateConfig
    from smpc_synth.release.gate import check_private_release

    within = check_private_release({"epsilon": 0.9}, GateConfig(max_epsilon=1.0))
    over = check_private_release({"epsilon": 3.0}, GateConfig(max_epsilon=1.0))
    unset = check_private_release({"epsilon": 3.0}, GateConfig(), reason="not applied")
    assert within.released and within.checked == {"epsilon": 0.9}
    assert "dcr_ratio" in within.skipped  # the rules that read real rows do not decide
    assert not over.released and over.failures[0].metric == "epsilon"
    assert unset.released and not unset.enabled and unset.reason == "not applied"


def test_projections_equal_private_pgm_s_own():
    """project_many (independent parts as products, the rest by one belief propagation)
    gives Private-PGM's own marginals of the model, in the order asked for."""
    from smpc_synth.data.layout import Layout, Span
    from smpc_synth.models.marginal import Measurement
    from smpc_synth.models.mst import MSTGenerator

    widths = [3, 4, 2, 5, 3]
    spans, start = [], 0
    for i, w in enumerate(widths):
        spans.append(Span(f"c{i}", start, w, "onehot"))
        start += w
    model = MSTGenerator(Layout(tuple(spans)))
    rng = np.random.default_rng(0)
    measured = [((0,), 1), ((1,), 1), ((2,), 1), ((3,), 1), ((4,), 1), ((0, 1), 2), ((1, 3), 2)]
    measurements = [
        Measurement(cl, rng.random(int(np.prod([widths[c] for c in cl]))) * 50 + 5, 4.0)
        for cl, _ in measured
    ]
    fitted = model.estimate(measurements, 200)
    queries = [(0, 1), (0, 3), (3, 0), (2, 4), (0, 2), (1, 2, 4), (4,), (2, 3)]
    ours = model.project_many(fitted, queries)
    for clique, got in zip(queries, ours, strict=True):
        names = tuple(model.columns[c] for c in clique)
        want = np.asarray(fitted.project(names).datavector(), dtype=np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=str(clique))


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0.01, 10), sigma=st.floats(0.5, 200), tail=st.floats(0, 1e-8))
def test_both_accountants_compose_marginal_mechanisms_from_one_record(eps, sigma, tail):
    """A selection's mechanism carries its zCDP (eps^2 / 8, bounded range) and a measurement
    its Gaussian's; the zcdp accountant converts their sum at delta less the tails, and
    the RDP accountant, reading the same records, gives the same Gaussian curve."""
    from smpc_synth.dp.accountant import DISCRETE_GAUSSIAN, EXPONENTIAL, Mechanism, get_accountant

    select = Mechanism("select", EXPONENTIAL, 2.0 / eps, tail=tail)
    measure = Mechanism("measure", DISCRETE_GAUSSIAN, sigma)
    assert select.rho == pytest.approx(eps * eps / 8)
    assert measure.rho == pytest.approx(zcdp.gaussian_rho(sigma * sigma))
    delta = 1e-6
    got = get_accountant("zcdp").epsilon([select, measure], delta)
    assert got == pytest.approx(zcdp.cdp_epsilon(select.rho + measure.rho, delta - tail))
    rdp = get_accountant("rdp").epsilon([select, measure], delta)
    assert 0 < rdp < math.inf and rdp <= got * 1.05  # RDP's conversion is at least as tight


def _aim_run(gen_cls, frame, schema, params, key_seed):
    """Fit ``gen_cls`` (AIM or a variant) on ``frame``: its selections, its measurements'
    cliques computed by ``_project_many``, and a sampled table as CSV text."""
    from smpc_synth.models.marginal import Privacy

    encoder = gen_cls.make_encoder(schema).fit_public()
    computed: list[tuple[int, ...]] = []

    class Counting(gen_cls):
        def _project_many(self, model, cliques):
            computed.extend(tuple(c) for c in cliques)
            return super()._project_many(model, cliques)

    model = Counting(encoder.layout, **params)
    dp = DpConfig(epsilon=1.0, delta=1e-9, accountant="zcdp", insecure_debug_seed=key_seed)
    model.fit(encoder.transform(frame), privacy=Privacy.from_run(dp))
    table = encoder.inverse_transform(model.sample(len(frame), seed=key_seed))
    return model.selected, computed, table.to_csv(index=False), model.privacy_report


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_aim_reusing_its_projections_selects_and_samples_exactly_as_computing_them(seed):
    """AIM asks the model again for the marginal it selected; the kept estimate is the very
    array a fresh computation gives, so the reference path (every projection computed
    afresh) and the default select the same marginals and sample the same bytes."""
    from smpc_synth.models.aim import AIMGenerator

    class Reference(AIMGenerator):
        reuse_projections = False

    frame, schema = _table(2000, seed)
    params = {"rounds_per_column": 2, "iters": 100, "final_iters": 100}
    want = _aim_run(Reference, frame, schema, params, seed + 3)
    got = _aim_run(AIMGenerator, frame, schema, params, seed + 3)
    assert got[0] == want[0] and len(got[0]) >= 2
    assert got[2] == want[2]
    assert got[3]["rho_spent"] == want[3]["rho_spent"]
    assert len(got[1]) < len(want[1])  # fewer projections computed
