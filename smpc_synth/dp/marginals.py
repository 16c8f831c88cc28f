"""The data-dependent steps of the marginal mechanisms (AIM, MST), in exact integer arithmetic.

AIM and MST touch the data in two ways only, and both are here, behind
:class:`MarginalQueries`, so the same algorithm runs on one table (:class:`LocalQueries`),
inside MPC (:mod:`smpc_synth.mpc.marginals`) or over federated aggregation
(:mod:`smpc_synth.train.federated_marginals`, which draws the noise in shares and so charges
its releases itself: ``charge_measure``, ``charge_select``):

- ``measure``: a marginal's counts plus discrete Gaussian noise ``N_Z(0, sigma2)`` (the
  discrete Gaussian mechanism, sensitivity 1 under adding or removing a row);
- ``errors`` + ``select``: the exponential mechanism over candidate marginals, whose score
  is ``w_i * min(|x_i - e_i|_1, clip) - offset_i`` for public estimates ``e_i``, integer
  weights ``w_i`` and public offsets (sensitivity ``max w_i``), by Gumbel-max.

Every party and mode computes exactly the same integers, so that a debug-seeded MPC run
selects what a plaintext run with the same seed selects, bit for bit:

- estimates are rounded to the grid ``2^-SCORE_BITS`` (public rounding: the L1 error of the
  rounded estimate still changes by at most 1 when a row comes or goes);
- the L1 error is clipped at a public bound (it can only lower the sensitivity);
- score and noise live on the grid ``2^-bits`` (:func:`plan_selection`), with the noise
  ``round(scale 2^bits G)``; the candidate's index is packed into the low bits, so the
  maximum is unique and the lowest index wins a tie of scores. :func:`plan_selection`
  also returns how far the selection can stand from the exact exponential mechanism
  (:func:`smpc_synth.dp.sampling.gumbel_shift`, ``gumbel_tail``), which the accountant
  charges (:func:`smpc_synth.dp.zcdp.selection_rho`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from smpc_synth.dp import sampling

if TYPE_CHECKING:
    from smpc_synth.dp.zcdp import RhoPlan

Clique = tuple[str, ...]
SCORE_BITS = 8  # estimates are rounded to 1/256 of a count before the L1 error is taken
VALUE_BITS = 61  # |packed score| < 2^61: differences stay within a 64-bit comparison
GUMBEL_REACH = 100.0  # |G| < 90 for every value gumbel_fixed can produce
MEASURE_WHAT = "a marginal's counts plus discrete Gaussian noise N_Z (sensitivity 1 per row)"
SELECT_WHAT = "the exponential mechanism over candidate marginals' errors (fixed-point Gumbel-max)"
CENTRAL_NOISE = (
    "discrete Gaussian and Gumbel noise from AES-128-CTR under a key from os.urandom "
    "(in MPC the dealer's, dealt as shares; smpc_synth.dp.sampling)"
)


def contingency(codes: np.ndarray, columns: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """The counts of ``codes[:, columns]`` over ``shape`` (C order, as mbi flattens), int64."""
    if len(columns) == 0:
        return np.array([len(codes)], dtype=np.int64)
    flat = np.ravel_multi_index(tuple(codes[:, c] for c in columns), tuple(shape))
    return np.bincount(flat, minlength=math.prod(shape)).astype(np.int64)


class LocalCounts:
    """One table's codes and the contingency tables asked of them, each counted once: AIM
    asks every round for the same candidates' tables, and counting is the only step whose
    cost grows with the rows."""

    def __init__(self, codes: np.ndarray, shape: Sequence[int]) -> None:
        self.codes = np.asarray(codes, dtype=np.int64)
        self.shape = list(shape)
        self._tables: dict[tuple[int, ...], np.ndarray] = {}

    def recode(self, mappings: dict[int, np.ndarray], shape: Sequence[int]) -> None:
        """Map each column's codes through ``mappings[column]`` (a public merging of values)."""
        codes = self.codes.copy()
        for column, mapping in mappings.items():
            codes[:, column] = np.asarray(mapping, dtype=np.int64)[codes[:, column]]
        self.codes, self.shape = codes, list(shape)
        self._tables.clear()

    def __call__(self, columns: Sequence[int]) -> np.ndarray:
        """The counts of ``columns`` (int64, C order; the caller must not modify them)."""
        key = tuple(int(c) for c in columns)
        table = self._tables.get(key)
        if table is None:
            table = contingency(self.codes, key, [self.shape[c] for c in key])
            table.flags.writeable = False
            self._tables[key] = table
        return table


def rounded_estimate(estimate: np.ndarray) -> np.ndarray:
    """A public estimate on the grid ``2^-SCORE_BITS``, as int64 in those units."""
    return np.rint(np.asarray(estimate, dtype=np.float64) * 2.0**SCORE_BITS).astype(np.int64)


@dataclass(frozen=True)
class SelectionPlan:
    """The fixed-point layout of one exponential-mechanism selection."""

    epsilon: float  # the exponential mechanism's parameter
    bits: int  # scores and noise in units of 2^-bits counts
    index_bits: int  # low bits holding the (reversed) candidate index
    clip: int  # L1 errors clipped here, in units of 2^-SCORE_BITS counts
    scale: float  # Gumbel scale in counts: 2 * sensitivity / epsilon
    shift: float  # extra privacy loss each side, in epsilon units (sampling.gumbel_shift)
    tail: float  # probability the shift bound does not hold (sampling.gumbel_tail)
    # federated selection only (noisy sums of per-party scores): each party's share of the
    # score noise, and how many low bits of the scores it drops to fit the aggregation
    share_sigma2: float = 0.0
    drop_bits: int = 0


def plan_selection(
    candidates: int, weights: np.ndarray, offsets: np.ndarray, epsilon: float, error_bound: float
) -> SelectionPlan:
    """The finest grid on which every packed score fits, for ``candidates`` scores with
    integer ``weights``, real ``offsets`` and L1 errors clipped at ``error_bound`` counts."""
    sensitivity = float(np.max(weights))
    scale = 2.0 * sensitivity / epsilon
    index_bits = max(1, math.ceil(math.log2(candidates + 1)))
    clip = math.ceil(error_bound * 2**SCORE_BITS)
    reach = (
        sensitivity * clip / 2**SCORE_BITS + float(np.max(np.abs(offsets))) + GUMBEL_REACH * scale
    )
    bits = VALUE_BITS - index_bits - math.ceil(math.log2(reach)) - 1
    if bits < SCORE_BITS:
        raise ValueError(f"scores up to {reach:.3g} leave too few fractional bits ({bits})")
    bits = min(bits, 55 - math.ceil(math.log2(scale)) if scale > 1 else 55)
    shift = sampling.gumbel_shift(scale, bits)
    tail = sampling.gumbel_tail(candidates)
    return SelectionPlan(epsilon, bits, index_bits, clip, scale, shift, tail)


def packed_scores(
    errors: np.ndarray, weights: np.ndarray, offsets: np.ndarray, plan: SelectionPlan
) -> np.ndarray:
    """The noiseless part of each packed value (int64): ``(w min(L1, clip) 2^(bits - 8) -
    round(offset 2^bits)) 2^index_bits + reversed index``. Noise ``N`` enters as ``N
    2^index_bits`` (see :func:`unpack_index`)."""
    clipped = np.minimum(errors, plan.clip)
    score = weights.astype(np.int64) * clipped * (1 << (plan.bits - SCORE_BITS))
    score -= np.rint(offsets * 2.0**plan.bits).astype(np.int64)
    return score * (1 << plan.index_bits) + reversed_index(len(errors), plan)


def reversed_index(count: int, plan: SelectionPlan) -> np.ndarray:
    """``2^index_bits - 1 - i``: of equal scores, the lowest index packs highest."""
    return (1 << plan.index_bits) - 1 - np.arange(count, dtype=np.int64)


def unpack_index(low_bits: int, plan: SelectionPlan) -> int:
    return (1 << plan.index_bits) - 1 - (low_bits & ((1 << plan.index_bits) - 1))


class MarginalQueries(Protocol):
    """What a marginal mechanism may learn about the data (see the module docstring), and
    what each release costs: a mechanism charges a release through its queries, which know
    how the noise is drawn, before making it."""

    # the measured marginals carry noise_factor times the planned variance
    noise_factor: float
    # the queries need the model's estimates on every party (federated) or only where the
    # mechanism runs (one table; in MPC only party 0 adds them in)
    needs_estimates: bool
    # federated: each party's size is measured first (its share of every estimate)
    needs_party_sizes: bool

    def charge_measure(self, budget: RhoPlan, label: str, sigma2: float, cells: int) -> None:
        """Record in ``budget`` a measurement of ``cells`` counts planned at ``sigma2``."""

    def charge_select(
        self,
        budget: RhoPlan,
        label: str,
        plan: SelectionPlan,
        errors: Any,
        subset: Sequence[int],
        weights: np.ndarray,
    ) -> SelectionPlan:
        """Record in ``budget`` a selection planned as ``plan``; the plan to run it with."""

    def measure_party_sizes(
        self, sigma2: float, tag: int, budget: RhoPlan | None = None
    ) -> np.ndarray:
        """Each party's row count plus noise planned at ``sigma2`` (federated only), charged
        to ``budget`` where the mechanism runs."""

    @property
    def noise_source(self) -> str:
        """Where the noise comes from, in words, for the privacy record."""

    def privacy_notes(self, ledger: Any) -> dict[str, Any]:
        """What the privacy record adds for this way of drawing noise (e.g. coalitions)."""

    def recode(self, mappings: dict[int, np.ndarray], shape: Sequence[int]) -> None:
        """Map column ``c``'s codes through the public ``mappings[c]`` (MST's compression);
        ``shape`` is the domain afterwards."""

    def measure(self, columns: Sequence[int], sigma2: float, tag: int) -> np.ndarray:
        """The marginal of ``columns`` plus ``N_Z(0, sigma2)`` noise per cell (int64)."""

    def errors(self, cliques: Sequence[Sequence[int]], estimates: Sequence[np.ndarray]) -> Any:
        """A handle on the L1 errors ``|x_c - round(e_c)|_1`` (units 2^-SCORE_BITS)."""

    def select(
        self,
        errors: Any,
        subset: Sequence[int],
        weights: np.ndarray,
        offsets: np.ndarray,
        plan: SelectionPlan,
        tag: int,
    ) -> int:
        """The exponential mechanism over ``subset`` of the errors: the chosen position in
        ``subset`` (only that is revealed)."""


class CentralNoise:
    """Releases whose noise is drawn whole, by one party (plaintext mode) or by the dealer
    (MPC): a measurement is the discrete Gaussian mechanism, a selection the fixed-point
    exponential mechanism (:mod:`smpc_synth.dp.zcdp`)."""

    noise_factor = 1.0
    needs_estimates = False
    needs_party_sizes = False
    noise_source = CENTRAL_NOISE

    def charge_measure(self, budget: RhoPlan, label: str, sigma2: float, cells: int) -> None:
        budget.measure(label, sigma2, MEASURE_WHAT)

    def charge_select(self, budget, label, plan, errors, subset, weights) -> SelectionPlan:
        budget.select(label, plan.epsilon, plan.shift, plan.tail, SELECT_WHAT)
        return plan

    def measure_party_sizes(self, sigma2, tag, budget=None) -> np.ndarray:
        raise NotImplementedError("party sizes are measured in federated mode only")

    def privacy_notes(self, ledger: Any) -> dict[str, Any]:
        return {}


class LocalQueries(CentralNoise):
    """The queries on one table of codes (plaintext mode; the same integers as MPC).

    ``noise_key`` is the key noise is drawn from: fresh from the OS CSPRNG unless a test
    passes one derived from a debug seed (:func:`smpc_synth.mpc.dealer.noise_key`).
    """

    def __init__(self, codes: np.ndarray, shape: Sequence[int], noise_key: bytes) -> None:
        self._counts = LocalCounts(codes, shape)
        self.noise_key = noise_key

    def recode(self, mappings: dict[int, np.ndarray], shape: Sequence[int]) -> None:
        self._counts.recode(mappings, shape)

    def measure(self, columns: Sequence[int], sigma2: float, tag: int) -> np.ndarray:
        counts = self._counts(columns)
        return counts + sampling.draw_noise(self.noise_key, "dgauss", tag, len(counts), [sigma2])

    def errors(self, cliques, estimates) -> np.ndarray:
        return np.array(
            [
                int(np.abs(self._counts(c) * (1 << SCORE_BITS) - rounded_estimate(e)).sum())
                for c, e in zip(cliques, estimates, strict=True)
            ],
            dtype=np.int64,
        )

    def select(self, errors, subset, weights, offsets, plan, tag) -> int:
        base = packed_scores(np.asarray(errors)[list(subset)], weights, offsets, plan)
        noise = sampling.draw_noise(
            self.noise_key, "gumbel", tag, len(base), [plan.scale, plan.bits]
        )
        packed = base + noise * (1 << plan.index_bits)
        return unpack_index(int(packed.max()), plan)
