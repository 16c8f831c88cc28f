"""One privacy budget per run, split between the parts that read the data, under one accountant.

A :class:`Ledger` is made from the run's :class:`Budget` (epsilon, delta, accountant) and
plans every noise scale before any data is touched:

- :meth:`Ledger.gaussian`: a Gaussian mechanism on all rows (the encoder's statistics, the
  Gaussian generator's moments), given a ``share`` of the budget. A share is a fraction of
  the inverse variance (zCDP's rho) of the single Gaussian that would spend the whole budget:
  Gaussian mechanisms on all rows compose additively in those terms, so shares summing to 1
  spend exactly the budget.
- :meth:`Ledger.sgd`: Poisson-subsampled Gaussian steps (DP-SGD), with the smallest noise
  multiplier that keeps everything recorded so far plus these steps within the budget.

The ledger records each part with its mechanism (:class:`~smpc_synth.dp.accountant.Mechanism`)
and reports the epsilon of all of them together from the accountant (:meth:`Ledger.spent`):
the one number a run prints, bounding everything it releases. :meth:`Ledger.to_dict` is
what ``metrics.json`` and the signed manifest record.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smpc_synth.dp.accountant import (
    GAUSSIAN,
    SUBSAMPLED_GAUSSIAN,
    Mechanism,
    get_accountant,
)
from smpc_synth.errors import InputError

log = logging.getLogger(__name__)

MAX_NOISE_MULTIPLIER = 1e6  # beyond this the released values are noise: refuse instead
RELATIVE_TOLERANCE = 1e-3  # of the calibrated noise multiplier
MIN_LEFT = 0.01  # DP-SGD needs at least this share of epsilon left to start

UNITS = {
    "record": "one record (row), add/remove adjacency",
    "party": "one data party's whole table (DP-FedAvg), add/remove adjacency",
}


@dataclass(frozen=True)
class Budget:
    """The run's whole privacy budget."""

    epsilon: float
    delta: float
    accountant: str = "rdp"
    unit: str = "record"

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise InputError(f"key 'dp.epsilon' must be positive and finite, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise InputError(f"key 'dp.delta' must be in (0, 1), got {self.delta}")
        if self.unit not in UNITS:
            raise InputError(f"key 'dp.unit': use one of {', '.join(UNITS)}, got {self.unit!r}")
        get_accountant(self.accountant)  # names the choices if unknown


class Ledger:
    """The parts of one run's budget, planned in order and composed by one accountant."""

    def __init__(self, budget: Budget, noise_source: str = "") -> None:
        self.budget = budget
        self.accountant = get_accountant(budget.accountant)
        self.mechanisms: list[Mechanism] = []
        self.noise_source = noise_source
        self.notes: dict[str, str] = {}
        self.reserved: dict[str, float] = {}  # parts of delta spent outside the accountant
        self.details: dict[str, Any] = {}  # a planner's own figures (e.g. its rho budget)

    @property
    def accountant_delta(self) -> float:
        """The delta the accountant works at: the budget's, less what is reserved."""
        return self.budget.delta - sum(self.reserved.values())

    def reserve_delta(self, label: str, amount: float, why: str) -> None:
        """Set aside ``amount`` of delta for an event outside the mechanisms (a failure
        probability); call it before planning, the epsilon printed holds at the full delta."""
        if self.mechanisms:
            raise RuntimeError("reserve delta before any part is planned")
        if not 0 < amount < self.accountant_delta:
            raise ValueError(f"cannot reserve {amount:g} of delta {self.accountant_delta:g}")
        self.reserved[label] = amount
        self.note(f"delta:{label}", why)

    def _epsilon(self, mechanisms: list[Mechanism]) -> float:
        return self.accountant.epsilon(mechanisms, self.accountant_delta)

    def whole_budget_multiplier(self) -> float:
        """The noise multiplier of one Gaussian mechanism on all rows spending the budget."""
        return _smallest_within(
            lambda s: self._epsilon([Mechanism("whole", GAUSSIAN, s)]), self.budget.epsilon
        )

    def gaussian(self, label: str, share: float, sensitivity: float, what: str) -> Mechanism:
        """Plan a Gaussian mechanism on all rows taking ``share`` of the budget (see above)."""
        if not 0 < share <= 1:
            raise InputError(f"the share of the budget for {label} must be in (0, 1], got {share}")
        if not sensitivity > 0:
            raise ValueError(f"{label}: sensitivity must be positive, got {sensitivity}")
        multiplier = self.whole_budget_multiplier() / math.sqrt(share)
        return self.add(Mechanism(label, GAUSSIAN, multiplier, 1.0, 1, sensitivity, what))

    def sgd(
        self, label: str, sample_rate: float, steps: int, sensitivity: float, what: str
    ) -> Mechanism:
        """Plan ``steps`` Poisson-subsampled Gaussian steps with what is left of the budget."""
        if self.mechanisms and self._epsilon(self.mechanisms) >= self.budget.epsilon * (
            1 - MIN_LEFT
        ):
            raise InputError(
                f"dp: the budget epsilon={self.budget.epsilon:g} is spent before {label} "
                f"(by {', '.join(m.label for m in self.mechanisms)}): lower their shares"
            )

        def total(s: float) -> float:
            step = Mechanism(label, SUBSAMPLED_GAUSSIAN, s, sample_rate, steps, sensitivity)
            return self._epsilon([*self.mechanisms, step])

        multiplier = _smallest_within(total, self.budget.epsilon)
        kind = SUBSAMPLED_GAUSSIAN if sample_rate < 1 else GAUSSIAN
        return self.add(Mechanism(label, kind, multiplier, sample_rate, steps, sensitivity, what))

    def add(self, mechanism: Mechanism) -> Mechanism:
        """Record a part planned elsewhere (checked against the accountant and the budget)."""
        self.accountant.check(mechanism)
        spent = self._epsilon([*self.mechanisms, mechanism])
        if spent > self.budget.epsilon * (1 + 1e-9):
            raise InputError(
                f"dp: {mechanism.label} would take epsilon to {spent:.4g}, over the budget "
                f"{self.budget.epsilon:g}"
            )
        self.mechanisms.append(mechanism)
        return mechanism

    def spent(self) -> float:
        """Epsilon of every recorded part together, at the budget's delta."""
        return self._epsilon(self.mechanisms)

    def check_delta(self, rows: float) -> None:
        """Warn (and note) if delta is not well below 1 / rows, ``rows`` a noisy count (a DP
        release, so looking at it costs nothing): delta near 1/n allows releasing a row."""
        if rows > 0 and self.budget.delta * rows > 0.1:
            text = (
                f"delta {self.budget.delta:g} is not well below 1 / rows (about {rows:.0f} rows): "
                "lower dp.delta"
            )
            log.warning("dp: %s", text)
            self.note("delta", text)

    def note(self, key: str, text: str) -> None:
        """Record something about the release that is not a mechanism (what is public, what
        is withheld), so the record says what the epsilon covers."""
        self.notes[key] = text

    def to_dict(self) -> dict[str, Any]:
        """What ``metrics.json`` and the manifest record."""
        return {
            "epsilon": self.spent(),
            "delta": self.budget.delta,
            "delta_reserved": dict(self.reserved),
            "budget_epsilon": self.budget.epsilon,
            "accountant": self.accountant.name,
            "accountant_description": self.accountant.version,
            "unit": self.budget.unit,
            "unit_description": UNITS[self.budget.unit],
            "noise_source": self.noise_source,
            "parts": [m.to_dict() for m in self.mechanisms],
            "notes": dict(self.notes),
            **self.accountant.summary(self.mechanisms),
            **self.details,
        }


def _smallest_within(epsilon_of: Callable[[float], float], target: float) -> float:
    """The smallest noise multiplier s (within RELATIVE_TOLERANCE) with epsilon_of(s) <=
    target; epsilon_of must fall as s grows. The returned s always meets the target."""
    high = 1.0
    while epsilon_of(high) > target:
        high *= 2
        if high > MAX_NOISE_MULTIPLIER:
            raise InputError(
                f"dp: no noise multiplier up to {MAX_NOISE_MULTIPLIER:g} keeps epsilon within "
                f"{target:g}: raise the budget or train fewer steps"
            )
    low = high / 2
    while low > 1e-3 and epsilon_of(low) <= target:
        high, low = low, low / 2
    while high - low > RELATIVE_TOLERANCE * high:
        mid = (low + high) / 2
        if epsilon_of(mid) <= target:
            high = mid
        else:
            low = mid
    return high


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


def describe_record(record: dict[str, Any]) -> str:
    """A few readable lines from :meth:`Ledger.to_dict`: the guarantee, then each part."""
    lines = [
        f"differential privacy: epsilon {record['epsilon']:.4g} (budget "
        f"{record['budget_epsilon']:g}), delta {record['delta']:g}, per "
        f"{record['unit_description']}; accountant: {record['accountant']}"
    ]
    for part in record["parts"]:
        rate = f", sample rate {part['sample_rate']:.4g}" if part["sample_rate"] < 1 else ""
        steps = f", {part['steps']} steps" if part["steps"] > 1 else ""
        lines.append(
            f"  {part['label']}: {part['kind']}, noise multiplier {part['noise_multiplier']:.4g} "
            f"x sensitivity {part['sensitivity']:.4g}{rate}{steps}"
        )
    lines.append(f"  noise: {record['noise_source']}")
    return "\n".join(lines)
