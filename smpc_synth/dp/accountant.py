"""Privacy accountants behind one small interface, and the registry that names them.

A run's releases are a list of :class:`Mechanism` records; an accountant composes the whole
list into one epsilon at the run's delta. Two are registered: ``rdp`` (Opacus's RDP
accountant, for DP-SGD's Poisson-subsampled steps) and ``zcdp`` (for AIM's and MST's
measurements and selections, :mod:`smpc_synth.dp.zcdp`). A new one implements::

    @register_accountant
    class MyAccountant(Accountant):
        name = "mine"

        def check(self, mechanism: Mechanism) -> None:
            ...  # raise InputError if it cannot account for this mechanism

        def epsilon(self, mechanisms: Sequence[Mechanism], delta: float) -> float:
            ...  # epsilon of all of them together, at delta

That is all: :mod:`smpc_synth.dp.budget` plans every noise scale through :func:`get_accountant`
and never does accounting itself. The unit of privacy is one record under add/remove
adjacency (or one party, for DP-FedAvg), as :class:`Mechanism` states.

In federated mode with party-level DP, one step is one aggregation round and the sample rate
is the fraction of parties taking part (1.0: no amplification); with per-example DP-SGD, a
step is one batch and the rate is the Poisson sampling probability of a record.
"""

from __future__ import annotations

import functools
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from smpc_synth.errors import InputError

GAUSSIAN = "gaussian"  # the Gaussian mechanism on every unit (rows or parties), each step
SUBSAMPLED_GAUSSIAN = "poisson-subsampled gaussian"  # DP-SGD: a Poisson sample per step
DISCRETE_GAUSSIAN = "discrete gaussian"  # N_Z on integer counts (CKS 2020): the Gaussian's loss
# The exponential mechanism by Gumbel-max. Its noise multiplier is the Gumbel scale over the
# score's sensitivity, 2 / epsilon: bounded range gives epsilon^2 / 8 = 1 / (2 s^2) zCDP, the
# Gaussian's, so both accountants treat it as one Gaussian release (Cesar and Rogers 2021).
EXPONENTIAL = "exponential (gumbel-max)"
# The sum of n independent N_Z shares on integer values, one per party, before a secure sum
# (Kairouz, Liu and Steinke 2021). Recorded with the noise multiplier of the Gaussian of the
# same rho, so both accountants compose it as one Gaussian release: rho-zCDP is RDP
# alpha * rho, the Gaussian's curve at that multiplier (smpc_synth.dp.zcdp).
DISTRIBUTED_DISCRETE_GAUSSIAN = "distributed discrete gaussian"
MECHANISM_KINDS = (
    GAUSSIAN,
    SUBSAMPLED_GAUSSIAN,
    DISCRETE_GAUSSIAN,
    EXPONENTIAL,
    DISTRIBUTED_DISCRETE_GAUSSIAN,
)
# Opacus's default Renyi orders stop at 63; a Gaussian with a large noise multiplier (an
# encoder's share of a small budget) is tightest at higher orders, so a few more are tried.
EXTRA_RDP_ORDERS = (64, 80, 96, 128, 160, 192, 256, 384, 512, 1024)


@dataclass(frozen=True)
class Mechanism:
    """One accounted part of a run: ``steps`` Gaussian releases with noise standard deviation
    ``noise_multiplier * sensitivity``, each on a Poisson sample of rate ``sample_rate``.

    ``sensitivity`` is the L2 bound on what one unit (a record, or a party) can change in
    one release, in the released values' units; ``what`` says in words what is released.
    ``tail`` is the probability of an event on which the mechanism's bound may not hold (a
    fixed-point selection's uniforms in the extreme tails); accountants charge it to delta.
    """

    label: str
    kind: str
    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1
    sensitivity: float = 1.0
    what: str = ""
    tail: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in MECHANISM_KINDS:
            raise InputError(f"mechanism '{self.label}': unknown kind {self.kind!r}")
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise InputError(
                f"mechanism '{self.label}': noise multiplier must be positive and finite, "
                f"got {self.noise_multiplier}"
            )
        if not 0 < self.sample_rate <= 1:
            raise InputError(
                f"mechanism '{self.label}': sample rate must be in (0, 1], got {self.sample_rate}"
            )
        if self.steps < 1:
            raise InputError(f"mechanism '{self.label}': steps must be at least 1")
        if self.kind != SUBSAMPLED_GAUSSIAN and self.sample_rate != 1.0:
            raise InputError(f"mechanism '{self.label}': a {self.kind} has sample rate 1")
        if not 0 <= self.tail < 1:
            raise InputError(f"mechanism '{self.label}': tail must be in [0, 1)")

    @property
    def rho(self) -> float:
        """Its zCDP (all steps; meaningful unless Poisson-subsampled)."""
        return self.steps / (2.0 * self.noise_multiplier**2)

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.sensitivity

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "noise_std": self.noise_std}


class Accountant(ABC):
    """Composes a run's mechanisms into one (epsilon, delta) guarantee."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @property
    def version(self) -> str:
        """What computes it, with versions (recorded in the run's privacy record)."""
        return self.description

    def check(self, mechanism: Mechanism) -> None:  # noqa: B027 - optional hook
        """Raise InputError if this accountant cannot account for ``mechanism``."""

    @abstractmethod
    def epsilon(self, mechanisms: Sequence[Mechanism], delta: float) -> float:
        """Epsilon of all ``mechanisms`` together (adaptively composed), at ``delta``."""

    def summary(self, mechanisms: Sequence[Mechanism]) -> dict[str, Any]:
        """Figures of the accountant's own terms for the privacy record (default: none)."""
        return {"delta_tails": sum(m.tail for m in mechanisms)}


ACCOUNTANTS: dict[str, type[Accountant]] = {}


def register_accountant(cls: type[Accountant]) -> type[Accountant]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    ACCOUNTANTS[cls.name] = cls
    return cls


def get_accountant(name: str) -> Accountant:
    """A fresh accountant by name; InputError naming the choices otherwise."""
    if name not in ACCOUNTANTS:
        raise InputError(
            f"key 'dp.accountant': unknown accountant {name!r} (choose one of "
            f"{', '.join(sorted(ACCOUNTANTS))})"
        )
    return ACCOUNTANTS[name]()


@register_accountant
class RdpAccountant(Accountant):
    """Opacus's Rényi-DP accountant (Mironov 2017; the sampled Gaussian of Mironov, Talwar
    and Zhang 2019): tight for Poisson-subsampled Gaussian steps, exact composition of RDP
    curves, converted to (epsilon, delta) at the best order."""

    name = "rdp"
    description = "Opacus RDPAccountant (Renyi DP of the Poisson-subsampled Gaussian)"

    def epsilon(self, mechanisms: Sequence[Mechanism], delta: float) -> float:
        """What ``RDPAccountant.get_epsilon`` computes for these mechanisms as its history
        (on more orders), with each mechanism's RDP curve computed once per process: a
        calibration asks about the same earlier parts many times."""
        from opacus.accountants.analysis import rdp as analysis

        _check_delta(delta)
        if not mechanisms:
            return 0.0
        for m in mechanisms:
            self.check(m)
        delta -= sum(m.tail for m in mechanisms)
        if delta <= 0:
            return math.inf
        curve = np.sum(
            [_rdp_curve(m.noise_multiplier, m.sample_rate, m.steps) for m in mechanisms], 0
        )
        with warnings.catch_warnings():  # "optimal order is the largest": we asked for more
            warnings.simplefilter("ignore", UserWarning)
            eps, _order = analysis.get_privacy_spent(orders=_orders(), rdp=curve, delta=delta)
        return float(eps)

    @property
    def version(self) -> str:
        from importlib.metadata import version

        return f"{self.description}, opacus {version('opacus')}"


@register_accountant
class ZcdpAccountant(Accountant):
    """Zero-concentrated DP (Bun and Steinke 2016): the rho of every release adds up, and the
    total converts to (epsilon, delta) by Canonne, Kamath and Steinke's bound, less the
    releases' tail events (:mod:`smpc_synth.dp.zcdp`). What AIM and MST plan in; it gives
    no amplification by sampling, so DP-SGD's Poisson-subsampled steps are refused."""

    name = "zcdp"
    description = "zCDP, Canonne-Kamath-Steinke 2020 conversion (smpc_synth.dp.zcdp)"

    def check(self, mechanism: Mechanism) -> None:
        if mechanism.kind == SUBSAMPLED_GAUSSIAN:
            raise InputError(
                f"key 'dp.accountant': zcdp cannot account for {mechanism.label} (Poisson-"
                "subsampled steps); use rdp"
            )

    def epsilon(self, mechanisms: Sequence[Mechanism], delta: float) -> float:
        from smpc_synth.dp.zcdp import cdp_epsilon

        _check_delta(delta)
        for m in mechanisms:
            self.check(m)
        left = delta - sum(m.tail for m in mechanisms)
        if left <= 0:
            return math.inf
        return cdp_epsilon(sum(m.rho for m in mechanisms), left)

    def summary(self, mechanisms: Sequence[Mechanism]) -> dict[str, Any]:
        return {**super().summary(mechanisms), "rho_spent": sum(m.rho for m in mechanisms)}


def _orders() -> list[float]:
    from opacus.accountants import RDPAccountant

    return [*RDPAccountant.DEFAULT_ALPHAS, *EXTRA_RDP_ORDERS]


@functools.lru_cache(maxsize=1024)
def _rdp_curve(noise_multiplier: float, sample_rate: float, steps: int) -> np.ndarray:
    from opacus.accountants.analysis import rdp as analysis

    curve = analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=_orders()
    )
    return np.asarray(curve, dtype=np.float64)


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise InputError(f"key 'dp.delta' must be in (0, 1), got {delta}")


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` Gaussian steps at one noise multiplier and sample rate."""
    kind = GAUSSIAN if sample_rate == 1.0 else SUBSAMPLED_GAUSSIAN
    _check_steps(sample_rate, steps)
    step = Mechanism("steps", kind, noise_multiplier, sample_rate, steps)
    return get_accountant("rdp").epsilon([step], delta)


def noise_multiplier_for(
    target_epsilon: float, sample_rate: float, steps: int, delta: float
) -> float:
    """The smallest noise multiplier (to Opacus's tolerance) that keeps epsilon <= target."""
    from opacus.accountants.utils import get_noise_multiplier

    _check_steps(sample_rate, steps)
    _check_delta(delta)
    if not target_epsilon > 0:
        raise InputError(f"key 'dp.epsilon' must be positive, got {target_epsilon}")
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
        )
    )


def _check_steps(sample_rate: float, steps: int) -> None:
    if not 0 < sample_rate <= 1:
        raise InputError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
