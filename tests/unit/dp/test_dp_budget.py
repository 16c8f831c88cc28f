"""One budget per run: shares, calibration and the accountant registry."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smpc_synth.dp.accountant import (
    ACCOUNTANTS,
    GAUSSIAN,
    Accountant,
    Mechanism,
    get_accountant,
    register_accountant,
)
from smpc_synth.dp.budget import Budget, Ledger
from smpc_synth.errors import InputError


def test_full_gaussian_shares_summing_to_one_spend_exactly_the_budget():
    ledger = Ledger(Budget(1.0, 1e-6))
    enc = ledger.gaussian("encoder", 0.1, 3.0, "histograms")
    mom = ledger.gaussian("moments", 0.9, 40.0, "moments")
    assert ledger.spent() <= 1.0
    assert ledger.spent() == pytest.approx(1.0, rel=2e-3)
    # a share is of the inverse variance: a tenth of it is sqrt(10) times the noise
    assert enc.noise_multiplier / mom.noise_multiplier == pytest.approx(3.0, rel=1e-9)
    assert enc.noise_std == pytest.approx(3.0 * enc.noise_multiplier)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    epsilon=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
    share=st.floats(0.02, 0.5),
    rate=st.floats(0.005, 0.5),
    steps=st.integers(1, 400),
)
def test_sgd_takes_what_is_left_and_no_more(epsilon, share, rate, steps):
    ledger = Ledger(Budget(epsilon, 1e-6))
    ledger.gaussian("encoder", share, 1.0, "stats")
    sgd = ledger.sgd("training", rate, steps, 1.0, "gradients")
    assert ledger.spent() <= epsilon
    # tight: 1% less noise would overspend
    tighter = Mechanism("t", sgd.kind, sgd.noise_multiplier * 0.99, rate, steps)
    assert get_accountant("rdp").epsilon([ledger.mechanisms[0], tighter], 1e-6) > epsilon


def test_a_spent_budget_refuses_further_parts_naming_them():
    ledger = Ledger(Budget(1.0, 1e-6))
    ledger.gaussian("encoder", 1.0, 1.0, "stats")
    with pytest.raises(InputError, match="spent before training"):
        ledger.sgd("training", 0.1, 100, 1.0, "gradients")
    with pytest.raises(InputError, match="over the budget"):
        ledger.add(Mechanism("more", GAUSSIAN, 1.0))


def test_ledger_record_names_every_part_and_the_unit():
    ledger = Ledger(Budget(2.0, 1e-7, unit="party"), noise_source="test")
    ledger.gaussian("encoder", 0.2, 2.0, "stats")
    ledger.sgd("training", 1.0, 30, 1.0, "updates")
    ledger.note("schema", "public")
    record = ledger.to_dict()
    assert [p["label"] for p in record["parts"]] == ["encoder", "training"]
    assert record["delta"] == 1e-7 and record["unit"] == "party"
    assert record["epsilon"] <= 2.0 and record["accountant"] == "rdp"
    assert record["parts"][0]["noise_std"] == pytest.approx(
        2.0 * record["parts"][0]["noise_multiplier"]
    )


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"epsilon": 0.0, "delta": 1e-6}, "dp.epsilon"),
        ({"epsilon": math.inf, "delta": 1e-6}, "dp.epsilon"),
        ({"epsilon": 1.0, "delta": 1.0}, "dp.delta"),
        ({"epsilon": 1.0, "delta": 1e-6, "unit": "row"}, "dp.unit"),
        ({"epsilon": 1.0, "delta": 1e-6, "accountant": "magic"}, "dp.accountant"),
    ],
)
def test_bad_budgets_name_the_key(kwargs, key):
    with pytest.raises(InputError, match=key.replace(".", r"\.")):
        Budget(**kwargs)


def test_another_accountant_registers_beside_rdp_and_is_used_by_name():
    @register_accountant
    class FullBatchZcdp(Accountant):
        """rho = sum 1 / (2 sigma^2) per full-batch Gaussian step; eps from (rho, delta)."""

        name = "toy-zcdp"

        def check(self, mechanism):
            if mechanism.sample_rate != 1.0:
                raise InputError("toy-zcdp: full-batch mechanisms only")

        def epsilon(self, mechanisms, delta):
            rho = sum(m.steps / (2 * m.noise_multiplier**2) for m in mechanisms)
            return rho + 2 * math.sqrt(rho * math.log(1 / delta))

    try:
        ledger = Ledger(Budget(1.0, 1e-6, accountant="toy-zcdp"))
        ledger.gaussian("encoder", 0.5, 1.0, "stats")
        ledger.gaussian("moments", 0.5, 1.0, "moments")
        assert ledger.spent() == pytest.approx(1.0, rel=2e-3)
        half = Ledger(Budget(1.0, 1e-6, accountant="toy-zcdp"))
        half.gaussian("encoder", 0.5, 1.0, "stats")
        with pytest.raises(InputError, match="full-batch"):
            half.sgd("training", 0.1, 10, 1.0, "gradients")
    finally:
        ACCOUNTANTS.pop("toy-zcdp")


def test_a_delta_near_one_over_the_rows_is_noted_in_the_record():
    loose = Ledger(Budget(1.0, 1e-3))
    loose.check_delta(500.0)
    assert "1 / rows" in loose.to_dict()["notes"]["delta"]
    tight = Ledger(Budget(1.0, 1e-6))
    tight.check_delta(500.0)
    assert "delta" not in tight.to_dict()["notes"]


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(10, 200_000),
    rate=st.floats(0.001, 0.9),
    steps=st.integers(1, 10_000),
    parties=st.integers(2, 8),
)
def test_mpc_slots_hold_every_poisson_sample_but_for_the_reserved_delta(rows, rate, steps, parties):
    from scipy.stats import binom

    from smpc_synth.train.mpc.dp_sgd import SLOT_DELTA_SHARE, slots

    delta = 1e-6
    k = slots(rows, rate, steps, parties, delta)
    # a union bound over steps and parties: every sample fits but with that probability
    assert steps * parties * binom.sf(k, rows, rate) <= SLOT_DELTA_SHARE * delta * 1.0001
    assert k >= rows * rate  # never fewer slots than the expected sample
