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
  Cesar and Rogers 2021), as AIM charges it.

The selection actually run is Gumbel-max in fixed point (:mod:`smpc_synth.dp.marginals`).
Outside an event of probability ``tail`` (a uniform in the extreme tails), every outcome's
probability is within a factor ``e^shift`` of the exact mechanism's
(:func:`smpc_synth.dp.sampling.gumbel_shift`), so it is charged as an exponential mechanism
with ``epsilon + 4 shift`` (:func:`selection_rho`), and ``tail`` is charged to delta, as
composition of approximate zCDP allows (Bun and Steinke 2016, section 8): the run is
``(epsilon, cdp_delta(rho_spent, epsilon) + sum tail)``-DP. :data:`SLACK_SHARE` of delta is
set aside for the tails (they are below 1e-14 a run), and the accountant checks it.

The unit of privacy is one row (a record added to or removed from the union of all
parties' tables).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from smpc_synth.errors import InputError, SmpcSynthError

ACCOUNTANT = "smpc-synth zCDP accountant 1 (Canonne-Kamath-Steinke 2020 conversion)"
SLACK_SHARE = 0.01  # share of delta set aside for the selections' tail events
_SEARCH_STEPS = 1000
DEFAULT_DELTA = 1e-9  # below 1/n^2 for tables of up to 31,622 rows; lower it for larger ones


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
        if cdp_delta(middle, epsilon) <= delta:
            low = middle
        else:
            high = middle
    return low


def gaussian_rho(sigma2: float, sensitivity: float = 1.0) -> float:
    """zCDP of the Gaussian or discrete Gaussian mechanism with parameter ``sigma2``."""
    return sensitivity * sensitivity / (2.0 * sigma2)


def exponential_rho(epsilon: float) -> float:
    """zCDP of the exponential mechanism with parameter ``epsilon`` (bounded range)."""
    return epsilon * epsilon / 8.0


def selection_rho(epsilon: float, shift: float) -> float:
    """zCDP charged for a fixed-point exponential mechanism with parameter ``epsilon`` whose
    outcome probabilities are within ``e^shift`` of the exact ones."""
    return exponential_rho(epsilon + 4 * shift)


def check_budget(epsilon: Any, delta: Any, *, epsilon_name: str, delta_name: str) -> None:
    """Refuse a budget that cannot be honoured, naming the flag or key."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise InputError(f"{epsilon_name} must be a number, got {epsilon!r}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InputError(f"{epsilon_name} must be a positive finite number, got {epsilon!r}")
    if isinstance(delta, bool) or not isinstance(delta, int | float):
        raise InputError(f"{delta_name} must be a number, got {delta!r}")
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise InputError(
            f"{delta_name} must be in (0, 1) (the Gaussian mechanism needs delta > 0), "
            f"got {delta!r}"
        )


@dataclass
class Charge:
    """One mechanism run: what it was, its zCDP and the delta of its failure event."""

    what: str
    rho: float
    slack: float = 0.0  # approximate zCDP: probability of an event on which rho may not hold


@dataclass
class ZcdpBudget:
    """The zCDP budget of one run and what has been spent of it, in order."""

    epsilon: float
    delta: float
    charges: list[Charge] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_budget(self.epsilon, self.delta, epsilon_name="epsilon", delta_name="delta")
        self.rho = cdp_rho(self.epsilon, self.delta * (1 - SLACK_SHARE))

    @property
    def spent(self) -> float:
        return sum(c.rho for c in self.charges)

    @property
    def remaining(self) -> float:
        return max(self.rho - self.spent, 0.0)

    @property
    def slack(self) -> float:
        return sum(c.slack for c in self.charges)

    @property
    def slack_allowance(self) -> float:
        """Failure probability the run may still spend (see the module docstring)."""
        return self.delta * SLACK_SHARE - self.slack

    def charge(self, what: str, rho: float, slack: float = 0.0) -> None:
        """Record a mechanism; refuse it if it would overspend (a bug, never rounding)."""
        if rho < 0 or slack < 0:
            raise ValueError(f"negative charge {rho}, {slack}")
        if self.spent + rho > self.rho * (1 + 1e-9) or slack > self.slack_allowance:
            raise SmpcSynthError(
                f"privacy budget exceeded by {what}: rho {self.spent + rho:.6g} of "
                f"{self.rho:.6g}, slack {self.slack + slack:.3g}"
            )
        self.charges.append(Charge(what, rho, slack))

    def delta_spent(self) -> float:
        """The delta the run's release actually has at ``epsilon``: conversion plus tails."""
        return cdp_delta(self.spent, self.epsilon) + self.slack

    def report(self, mechanism: str) -> dict[str, Any]:
        """What metrics.json and the manifest record."""
        by_kind: dict[str, float] = {}
        for c in self.charges:
            kind = c.what.split(":")[0]
            by_kind[kind] = by_kind.get(kind, 0.0) + c.rho
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "delta_spent": self.delta_spent(),
            "mechanism": mechanism,
            "accountant": ACCOUNTANT,
            "unit": "one row added to or removed from the union of the parties' tables",
            "rho": self.rho,
            "rho_spent": self.spent,
            "rho_by_kind": by_kind,
            "delta_tails": self.slack,
            "mechanisms_run": len(self.charges),
        }
