"""The distributed discrete Gaussian: each party's own N_Z share, summed before release."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from smpc_synth.dp.accountant import DISTRIBUTED_DISCRETE_GAUSSIAN, Mechanism, get_accountant
from smpc_synth.dp.budget import Budget, Ledger
from smpc_synth.dp.zcdp import (
    RhoPlan,
    cdp_epsilon,
    distributed_gaussian_rho,
    gaussian_rho,
    share_sigma2_for,
)

ORDERS = (1.5, 2.0, 4.0, 8.0, 16.0)
SMALL = [(shares, sigma) for shares in (2, 3) for sigma in (0.5, 0.6, 0.8, 1.0)]

variances = st.floats(0.25, 1e4)
sensitivities = st.floats(0.0, 8.0)
dims = st.integers(1, 5000)


def _sum_of_shares_logpmf(sigma2: float, shares: int, radius: int = 60) -> np.ndarray:
    """Log pmf of the sum of ``shares`` N_Z(0, sigma2) on -shares*radius..shares*radius, each
    share normalised over |x| <= radius, convolved in log space (nothing underflows)."""
    x = np.arange(-radius, radius + 1)
    one = -(x**2) / (2 * sigma2)
    one -= logsumexp(one)
    total = one
    for _ in range(shares - 1):
        wider = np.full(len(total) + len(one) - 1, -np.inf)
        for i, log_p in enumerate(one):
            wider[i : i + len(total)] = np.logaddexp(wider[i : i + len(total)], log_p + total)
        total = wider
    return total


def _renyi_shift_by_one(log_p: np.ndarray, alpha: float) -> float:
    """D_alpha(P(. - 1) || P) on the common support (the rest is below e^-1000)."""
    shifted, base = log_p[:-1], log_p[1:]
    return float(logsumexp(alpha * shifted + (1 - alpha) * base) / (alpha - 1))


def _exact_divergences() -> dict[tuple[int, float], dict[float, float]]:
    return {
        (shares, sigma): {
            alpha: _renyi_shift_by_one(_sum_of_shares_logpmf(sigma * sigma, shares), alpha)
            for alpha in ORDERS
        }
        for shares, sigma in SMALL
    }


EXACT = _exact_divergences()


@pytest.mark.parametrize(("shares", "sigma"), SMALL)
def test_the_bound_holds_against_the_exact_renyi_divergence(shares, sigma):
    rho = distributed_gaussian_rho(sigma * sigma, shares, 1.0, 1)
    for alpha, divergence in EXACT[shares, sigma].items():
        assert divergence <= alpha * rho + 1e-12, (alpha, divergence, alpha * rho)


def test_the_sum_of_shares_leaks_more_than_a_gaussian_of_the_summed_variance():
    # so the tau term is needed: charging 1 / (2 n s^2) would understate these divergences
    understated = [
        (shares, sigma, alpha)
        for (shares, sigma), by_order in EXACT.items()
        for alpha, divergence in by_order.items()
        if divergence > alpha * gaussian_rho(shares * sigma * sigma) * (1 + 1e-9)
    ]
    assert (2, 0.5, 4.0) in understated and (3, 0.6, 4.0) in understated
    for shares, sigma, _alpha in understated:
        rho = distributed_gaussian_rho(sigma * sigma, shares, 1.0, 1)
        assert rho > gaussian_rho(shares * sigma * sigma)


def test_the_bound_is_the_papers_closed_form():
    sigma2, shares, dims = 0.36, 3, 4
    tau2 = 10 * math.exp(-2 * math.pi**2 * sigma2 / 2)
    tau3 = tau2 + 10 * math.exp(-2 * math.pi**2 * sigma2 * 2 / 3)

    def bound(n: int, tau: float) -> float:
        scale = 1 / math.sqrt(n * sigma2)
        return min(scale**2 / 2 + tau * dims, (scale + tau * math.sqrt(dims)) ** 2 / 2)

    expected = min(gaussian_rho(sigma2), bound(2, tau2), bound(3, tau3))
    assert distributed_gaussian_rho(sigma2, shares, 1.0, dims) == pytest.approx(expected)


@given(sigma2=variances, sensitivity=sensitivities, dims=dims)
def test_one_share_is_the_discrete_gaussian_exactly(sigma2, sensitivity, dims):
    assert distributed_gaussian_rho(sigma2, 1, sensitivity, dims) == gaussian_rho(
        sigma2, sensitivity
    )


@given(
    sigma2=variances,
    more=st.floats(1.0, 100.0),
    shares=st.integers(1, 40),
    extra=st.integers(0, 40),
    sensitivity=sensitivities,
    dims=dims,
)
def test_more_noise_never_costs_more(sigma2, more, shares, extra, sensitivity, dims):
    rho = distributed_gaussian_rho(sigma2, shares, sensitivity, dims)
    assert distributed_gaussian_rho(sigma2 * more, shares, sensitivity, dims) <= rho
    assert distributed_gaussian_rho(sigma2, shares + extra, sensitivity, dims) <= rho
    # and never less than a continuous Gaussian of the summed variance
    assert rho >= gaussian_rho(shares * sigma2, sensitivity) * (1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(
    rho=st.floats(1e-5, 20.0),
    shares=st.integers(1, 30),
    sensitivity=st.floats(0.1, 8.0),
    dims=dims,
)
def test_share_sigma2_for_is_the_smallest_variance_within_rho(rho, shares, sensitivity, dims):
    sigma2 = share_sigma2_for(rho, shares, sensitivity, dims)
    assert sigma2 >= 0.25
    spent = distributed_gaussian_rho(sigma2, shares, sensitivity, dims)
    assert spent <= rho
    if sigma2 > 0.25:
        assert spent == pytest.approx(rho, rel=1e-6)
        less = sigma2 * (1 - 1e-9)
        assert less < 0.25 or distributed_gaussian_rho(less, shares, sensitivity, dims) > rho


@pytest.mark.parametrize(
    "args",
    [
        (0.24, 2, 1.0, 1),
        (math.nan, 2, 1.0, 1),
        (1.0, 0, 1.0, 1),
        (1.0, 2, 1.0, 0),
        (1.0, 2, -1.0, 1),
    ],
)
def test_out_of_range_arguments_are_refused(args):
    with pytest.raises(ValueError):
        distributed_gaussian_rho(*args)


def test_share_sigma2_for_refuses_a_non_positive_rho():
    with pytest.raises(ValueError):
        share_sigma2_for(0.0, 2, 1.0, 1)


@settings(max_examples=40, deadline=None)
@given(
    sigma2=st.floats(0.25, 1e5),
    shares=st.integers(1, 12),
    dims=st.integers(1, 2000),
    sensitivity=st.floats(0.5, 4.0),
)
def test_a_recorded_share_sum_charges_at_least_its_bound(sigma2, shares, dims, sensitivity):
    delta = 1e-6
    plan = RhoPlan(Ledger(Budget(1e6, delta, accountant="zcdp")))
    charged = plan.measure_shared("cells", sigma2, shares, dims, "counts", sensitivity)
    [mechanism] = plan.ledger.mechanisms
    bound = distributed_gaussian_rho(sigma2, shares, sensitivity, dims)
    assert mechanism.kind == DISTRIBUTED_DISCRETE_GAUSSIAN
    assert mechanism.sensitivity == sensitivity and mechanism.what == "counts"
    assert charged == mechanism.rho == plan.spent
    assert bound <= charged <= bound * (1 + 1e-14)


@settings(max_examples=20, deadline=None)
@given(sigma2=st.floats(0.25, 1e4), shares=st.integers(2, 8), dims=st.integers(1, 500))
def test_both_accountants_compose_it_as_the_gaussian_of_its_rho(sigma2, shares, dims):
    delta = 1e-6
    plan = RhoPlan(Ledger(Budget(1e6, delta, accountant="zcdp")))
    plan.measure_shared("cells", sigma2, shares, dims, "counts")
    [mechanism] = plan.ledger.mechanisms
    zcdp = get_accountant("zcdp").epsilon([mechanism], delta)
    rdp = get_accountant("rdp").epsilon([mechanism], delta)
    assert zcdp == cdp_epsilon(mechanism.rho, delta)
    # the same conversion (CKS = Balle et al.), the rdp one only on its grid of orders,
    # which reaches the best order (about sqrt(log(1/delta) / rho)) unless rho is tiny
    assert rdp >= zcdp * (1 - 1e-9)
    if mechanism.rho >= 1e-4:
        assert rdp <= zcdp * 1.05
    twice = get_accountant("zcdp").epsilon([mechanism, mechanism], delta)
    assert twice == cdp_epsilon(2 * mechanism.rho, delta)


def test_the_ledger_refuses_a_share_sum_over_the_budget():
    plan = RhoPlan(Ledger(Budget(1.0, 1e-6, accountant="zcdp")))
    sigma2 = share_sigma2_for(plan.rho * 0.6, 3, 1.0, 100)
    plan.measure_shared("first", sigma2, 3, 100, "counts")
    assert plan.remaining == pytest.approx(plan.rho * 0.4, rel=1e-6)
    with pytest.raises(Exception, match="over the budget"):
        plan.measure_shared("second", sigma2, 3, 100, "counts")


def test_a_mechanism_of_the_new_kind_is_a_valid_record():
    mechanism = Mechanism("m", DISTRIBUTED_DISCRETE_GAUSSIAN, 2.0)
    assert mechanism.rho == 1 / 8
