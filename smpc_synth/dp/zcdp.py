"""Zero-concentrated DP (zCDP) accounting for the marginal mechanisms (AIM, MST).

A run's budget is ``(epsilon, delta)``. It becomes a zCDP budget ``rho`` by the conversion of
Canonne, Kamath and Steinke ("The Discrete Gaussian for Differential Privacy", NeurIPS
2020, Proposition 12 / Corollary 13), the one AIM and MST use (``cdp_rho``): ``rho``-zCDP
implies ``(epsilon, delta)``-DP with

    delta = min over alpha > 1 of exp((alpha - 1)(alpha rho - epsilon)) / (alpha - 1)
            * (1 - 1/alpha)^alpha.

Mechanisms compose by adding their ``rho``:

- the (discrete) Gaussian mechanism on a query of L2 sensitivity ``Delta`` with parameter
  ``sigma``: ``Delta^2 / (2 sigma^2)`` (CKS Theorem 4 holds for the discrete Gaussian with
  the same constant, so integer counts with dealt ``N_Z`` noise are charged exactly that);
- the exponential mechanism with parameter ``epsilon``: ``epsilon^2 / 8`` (bounded range,
  Cesar and Rogers 2021), as AIM charges it;
- the distributed discrete Gaussian (:func:`distributed_gaussian_rho`): ``n`` parties each
  add their own ``N_Z(0, s^2)`` per coordinate before a secure sum, and the sum of the
  shares is not a discrete Gaussian. Kairouz, Liu and Steinke ("The Distributed Discrete
  Gaussian Mechanism for Federated Learning with Secure Aggregation", ICML 2021,
  Proposition 14) bound its Renyi divergence, for ``s >= 1/2``, ``d`` coordinates and
  ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k + 1))``, by the smaller of
  ``alpha Delta^2 / (2 n s^2) + tau d`` and ``(alpha / 2) (Delta / (sqrt(n) s) + tau
  sqrt(d))^2``. Both hold at every ``alpha >= 1``, so the sum is rho-zCDP with

      rho = Delta^2 / (2 n s^2) + tau min(d, Delta sqrt(d) / (sqrt(n) s) + tau d / 2),

  their privacy theorem's ``(1/2) eps^2`` with ``eps = min(sqrt(Delta^2 / (n s^2) +
  2 tau d), Delta / (sqrt(n) s) + tau sqrt(d))`` (the first bound's constant ``tau d`` is
  charged whole: near ``alpha = 1`` nothing smaller follows from it). Adding a share to
  the sum is post-processing, so the bound for any ``m <= n`` shares holds as well: the
  least of them is charged. With one share it is the discrete Gaussian's.

The selection actually run is Gumbel-max in fixed point (:mod:`smpc_synth.dp.marginals`).
Outside an event of probability ``tail`` (a uniform in the extreme tails), every outcome's
probability is within a factor ``e^shift`` of the exact mechanism's
(:func:`smpc_synth.dp.sampling.gumbel_shift`), so it is charged as an exponential mechanism
with ``epsilon + 4 shift`` (:func:`selection_rho`), and ``tail`` is charged to delta, as
composition of approximate zCDP allows (Bun and Steinke 2016, section 8): the run is
``(epsilon, cdp_delta(rho_spent, epsilon) + sum tail)``-DP. :data:`SLACK_SHARE` of delta is
set aside for the tails (they are below 1e-14 a run), and the accountant checks it.

The unit of privacy is one row (a record added to or removed from the union of all
parties' tables). The conversion and composition live in the ``zcdp`` accountant of the
registry (:class:`smpc_synth.dp.accountant.ZcdpAccountant`); :class:`RhoPlan` is how AIM
and MST split the run's one ledger in rho.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from smpc_synth.dp.accountant import (
    DISCRETE_GAUSSIAN,
    DISTRIBUTED_DISCRETE_GAUSSIAN,
    EXPONENTIAL,
    Mechanism,
)

if TYPE_CHECKING:
    from smpc_synth.dp.budget import Ledger

SLACK_SHARE = 0.01  # share of delta set aside for the selections' tail events
_SEARCH_STEPS = 200  # bisections stop earlier, once the interval stops shrinking in floats


def cdp_delta(rho: float, epsilon: float) -> float:
    """The smallest delta the CKS bound gives for ``rho``-zCDP at ``epsilon``. Any alpha
    gives a valid bound, so an inexact search can only overstate delta."""
    if rho < 0 or epsilon < 0:
        raise ValueError(f"rho and epsilon must be >= 0, got {rho}, {epsilon}")
    if rho == 0:
        return 0.0
    low, high = 1.01, (epsilon + 1) / (2 * rho) + 2
    for _ in range(_SEARCH_STEPS):  # the exponent is convex in alpha: bisect its derivative
        alpha = (low + high) / 2
        if alpha in (low, high):
            break
        derivative = (2 * alpha - 1) * rho - epsilon + math.log1p(-1.0 / alpha)
        if derivative < 0:
            low = alpha
        else:
            high = alpha
    exponent = (alpha - 1) * (alpha * rho - epsilon) + alpha * math.log1p(-1 / alpha)
    return min(math.exp(exponent) / (alpha - 1.0), 1.0)


def cdp_epsilon(rho: float, delta: float) -> float:
    """The smallest epsilon with ``cdp_delta(rho, epsilon) <= delta``."""
    if rho < 0 or not delta > 0:
        raise ValueError(f"need rho >= 0 and delta > 0, got {rho}, {delta}")
    if delta >= 1 or rho == 0:
        return 0.0
    low, high = 0.0, rho + 2 * math.sqrt(rho * math.log(1 / delta))  # Bun-Steinke's bound
    for _ in range(_SEARCH_STEPS):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if cdp_delta(rho, middle) <= delta:
            high = middle
        else:
            low = middle
    return high


def cdp_rho(epsilon: float, delta: float) -> float:
    """The largest ``rho`` whose zCDP implies ``(epsilon, delta)``-DP."""
    if epsilon < 0 or not delta > 0:
        raise ValueError(f"need epsilon >= 0 and delta > 0, got {epsilon}, {delta}")
    if delta >= 1:
        return 0.0
    low, high = 0.0, epsilon + 1
    for _ in range(_SEARCH_STEPS):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if cdp_delta(middle, epsilon) <= delta:
            low = middle
        else:
            high = middle
    return low


def gaussian_rho(sigma2: float, sensitivity: float = 1.0) -> float:
    """zCDP of the Gaussian or discrete Gaussian mechanism with parameter ``sigma2``."""
    return sensitivity * sensitivity / (2.0 * sigma2)


def distributed_gaussian_rho(
    share_sigma2: float, shares: int, sensitivity: float, dims: int
) -> float:
    """zCDP of adding, to an integer-valued query of L2 sensitivity ``sensitivity`` over
    ``dims`` coordinates, the sum of ``shares`` independent ``N_Z(0, share_sigma2)`` per
    coordinate (the module docstring gives the bound). With one share it is
    :func:`gaussian_rho`; the caller counts only the shares hidden from the adversary."""
    if not share_sigma2 >= 0.25:
        raise ValueError(f"the bound needs share variance >= 1/4, got {share_sigma2}")
    if shares < 1 or dims < 1:
        raise ValueError(f"need shares >= 1 and dims >= 1, got {shares}, {dims}")
    if not sensitivity >= 0:
        raise ValueError(f"sensitivity must be >= 0, got {sensitivity}")
    best = gaussian_rho(share_sigma2, sensitivity)
    tau = 0.0
    for n in range(2, shares + 1):  # the bound for n shares, whichever n <= shares is least
        tau += 10.0 * math.exp(-2.0 * math.pi**2 * share_sigma2 * (n - 1) / n)
        scale = sensitivity * math.sqrt(dims / (n * share_sigma2))
        rho = gaussian_rho(n * share_sigma2, sensitivity) + tau * min(
            dims, scale + tau * dims / 2.0
        )
        best = min(best, rho)
    return best


def share_sigma2_for(rho: float, shares: int, sensitivity: float, dims: int) -> float:
    """The smallest share variance (at least 1/4) whose :func:`distributed_gaussian_rho` is
    at most ``rho``, to float precision."""
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}")

    def within(sigma2: float) -> bool:
        return distributed_gaussian_rho(sigma2, shares, sensitivity, dims) <= rho

    # every bound is at least the continuous Gaussian's of the summed variance
    low = max(0.25, sensitivity * sensitivity / (2.0 * shares * rho))
    if within(low):
        return low
    high = 2.0 * low
    while not within(high):
        low, high = high, 2.0 * high
    for _ in range(_SEARCH_STEPS):  # the bound decreases in the variance
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if within(middle):
            high = middle
        else:
            low = middle
    return high


def exponential_rho(epsilon: float) -> float:
    """zCDP of the exponential mechanism with parameter ``epsilon`` (bounded range)."""
    return epsilon * epsilon / 8.0


def selection_rho(epsilon: float, shift: float) -> float:
    """zCDP charged for a fixed-point exponential mechanism with parameter ``epsilon`` whose
    outcome probabilities are within ``e^shift`` of the exact ones."""
    return exponential_rho(epsilon + 4 * shift)


class RhoPlan:
    """AIM's and MST's view of the run's :class:`~smpc_synth.dp.budget.Ledger`: a budget in
    ``rho`` to split between rounds, each release recorded in the ledger as a mechanism (the
    ``zcdp`` accountant composes them; the ledger refuses any overspending)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        budget = ledger.budget
        self.rho = cdp_rho(budget.epsilon, ledger.accountant_delta * (1 - SLACK_SHARE))
        ledger.details["rho_budget"] = self.rho

    @property
    def spent(self) -> float:
        return sum(m.rho for m in self.ledger.mechanisms)

    @property
    def remaining(self) -> float:
        return max(self.rho - self.spent, 0.0)

    def measure(self, label: str, sigma2: float, what: str) -> None:
        """Record a marginal's counts plus ``N_Z(0, sigma2)`` (sensitivity 1)."""
        self.ledger.add(Mechanism(label, DISCRETE_GAUSSIAN, math.sqrt(sigma2), what=what))

    def measure_shared(
        self,
        label: str,
        share_sigma2: float,
        shares: int,
        dims: int,
        what: str,
        sensitivity: float = 1.0,
    ) -> float:
        """Record ``dims`` integer values plus the sum of ``shares`` independent
        ``N_Z(0, share_sigma2)`` per coordinate (:func:`distributed_gaussian_rho`), as the
        Gaussian of the same rho; return the rho charged, never below the bound's."""
        rho = distributed_gaussian_rho(share_sigma2, shares, sensitivity, dims)
        if not rho > 0:
            raise ValueError(f"{label}: nothing to record at sensitivity {sensitivity}")
        mechanism = Mechanism(
            label,
            DISTRIBUTED_DISCRETE_GAUSSIAN,
            1.0 / math.sqrt(2.0 * rho),
            sensitivity=sensitivity,
            what=what,
        )
        while mechanism.rho < rho:  # rounded below the bound: one ulp less noise each time
            smaller = math.nextafter(mechanism.noise_multiplier, 0.0)
            mechanism = dataclasses.replace(mechanism, noise_multiplier=smaller)
        self.ledger.add(mechanism)
        return mechanism.rho

    def select(self, label: str, epsilon: float, shift: float, tail: float, what: str) -> None:
        """Record a fixed-point exponential mechanism with parameter ``epsilon`` (see the
        module docstring): charged as one with ``epsilon + 4 shift``, ``tail`` to delta."""
        multiplier = 2.0 / (epsilon + 4 * shift)  # Gumbel scale over sensitivity
        self.ledger.add(Mechanism(label, EXPONENTIAL, multiplier, what=what, tail=tail))
