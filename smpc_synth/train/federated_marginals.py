"""The marginal mechanisms' data-dependent steps over federated aggregation (AIM and MST in
federated mode).

Every release is one masked CKKS sum through the aggregator
(:class:`~smpc_synth.train.aggregation.AggregationClient`) of integers each data party
computes on its own rows, plus its own share of discrete Gaussian noise drawn from its own
CSPRNG. Nobody draws the whole noise: the sum carries ``n`` shares, and the accountant counts
only ``n - 1`` of them (Kairouz, Liu and Steinke 2021, :func:`smpc_synth.dp.zcdp.
distributed_gaussian_rho`), so the printed budget holds against the aggregator and any one
data party, who knows its own share. A coalition of ``k`` data parties faces ``n - k`` shares
(:meth:`AggregatedQueries.privacy_notes` records its epsilon).

- ``measure``: a marginal's local counts plus a share; the sum is the noisy pooled marginal.
- ``measure_party_sizes``: each party's row count, measured like a one-way marginal of a
  column naming the party: the public share of every estimate a party scores against.
- ``errors`` + ``select``: secure aggregation only adds, so the pooled counts' L1 error
  (absolute values, then a maximum) cannot be computed without opening them. Each party
  instead scores every candidate on its own rows against its share of the model's estimate
  (``|x_i - f_i e|_1``, ``f_i`` its noisy size over the noisy total, as FLAIM does: Maddock,
  Cormode and Maple 2024), the parties' scores are summed with noise shares, and the whole
  vector of noisy sums is released and the largest taken. One row moves one party's score
  by at most one count per candidate, so the vector is a Gaussian release of L2 sensitivity
  ``sqrt(sum_r w_r^2)``, charged at the ``rho`` the exponential mechanism would have spent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from smpc_synth.dp import sampling
from smpc_synth.dp.marginals import (
    SCORE_BITS,
    LocalCounts,
    SelectionPlan,
    rounded_estimate,
)
from smpc_synth.dp.zcdp import cdp_epsilon, exponential_rho, gaussian_rho, share_sigma2_for
from smpc_synth.errors import InputError
from smpc_synth.he.params import choose_layout

COUNT_BOUND = 2**32  # rows one party may hold: the public bound on every count it submits
NOISE_TAIL = 14.0  # a noise share beyond this many standard deviations raises (p < 1e-40)
MAX_DROP_BITS = 62
MEASURE_WHAT = (
    "a marginal's counts summed over the parties, each adding its own share of discrete "
    "Gaussian noise N_Z (sensitivity 1 per row; n - 1 shares counted)"
)
SIZES_WHAT = (
    "each party's row count, each party adding a share of discrete Gaussian noise to its own "
    "(sensitivity 1 per row; n - 1 shares counted)"
)
SELECT_WHAT = (
    "every candidate's score (a party's L1 error on its own rows against its share of the "
    "model's estimate, weighted, clipped) summed over the parties with discrete Gaussian noise "
    "shares and released whole; the largest is chosen (n - 1 shares counted)"
)
NOISE_SOURCE = (
    "each data party's own discrete Gaussian shares, from AES-128-CTR under a key from "
    "os.urandom (smpc_synth.dp.sampling), added before its masked CKKS submission; no one "
    "draws or sees the whole noise"
)


def party_noise_key(name: str, base: bytes | None) -> bytes:
    """A party's own noise key: fresh from the OS CSPRNG, or (tests only) derived from the
    debug seed's key and the party's name, so parties never draw the same noise."""
    if base is None:
        return sampling.noise_key()
    return hashlib.sha256(base + name.encode()).digest()[: sampling.KEY_BYTES]


class AggregatedQueries:
    """:class:`~smpc_synth.dp.marginals.MarginalQueries` over secure aggregation; every data
    party calls every method with the same public arguments, in the same order."""

    noise_source = NOISE_SOURCE
    needs_estimates = True
    needs_party_sizes = True

    def __init__(
        self,
        client: Any,
        codes: np.ndarray,
        shape: Sequence[int],
        me: str,
        parties: Sequence[str],
        noise_key: bytes,
    ) -> None:
        if len(codes) >= COUNT_BOUND:
            raise InputError(f"{me}: {len(codes)} rows; federated aim/mst take < 2^32 a party")
        self.client = client
        self._counts = LocalCounts(codes, shape)
        self._rows = len(codes)
        self.parties = list(parties)
        self.position = self.parties.index(me)
        self._key = noise_key
        # the others' n - 1 shares protect a party's rows from it; one party alone draws all
        self.protecting = max(len(self.parties) - 1, 1)
        self.noise_factor = len(self.parties) / self.protecting
        self._fraction: float | None = None
        self._estimates: list[list[np.ndarray]] = []

    # -- costs ------------------------------------------------------------------------------

    def _measure_share(self, sigma2: float, cells: int) -> float:
        """Each party's share for a release planned at ``sigma2`` (sensitivity 1)."""
        return share_sigma2_for(gaussian_rho(sigma2), self.protecting, 1.0, cells)

    def charge_measure(self, budget, label: str, sigma2: float, cells: int) -> None:
        share = self._measure_share(sigma2, cells)
        budget.measure_shared(label, share, self.protecting, cells, MEASURE_WHAT)

    def charge_select(self, budget, label, plan, errors, subset, weights) -> SelectionPlan:
        """Plan the noisy score sums to spend what the exponential mechanism would, and the
        bits dropped so that they fit one aggregation lane; record them."""
        weights = np.asarray(weights, dtype=np.int64)
        target = exponential_rho(plan.epsilon)
        for drop in range(MAX_DROP_BITS):
            sensitivity = _score_sensitivity(weights, drop)
            share = share_sigma2_for(target, self.protecting, sensitivity, len(weights))
            chosen = dataclasses.replace(plan, share_sigma2=share, drop_bits=drop)
            try:
                choose_layout(
                    _score_bound(chosen, weights) + NOISE_TAIL * math.sqrt(share),
                    len(self.parties),
                    max_error=len(self.parties) / 2,
                    masked=self.client.masking,
                )
            except InputError:
                continue
            budget.measure_shared(
                label, share, self.protecting, len(weights), SELECT_WHAT, sensitivity=sensitivity
            )
            return chosen
        raise InputError(f"{label}: no aggregation layout holds the candidates' scores")

    # -- releases ---------------------------------------------------------------------------

    def _noise(self, share: float, tag: int, count: int) -> np.ndarray:
        noise = sampling.draw_noise(self._key, "dgauss", tag, count, [share])
        if count and float(np.abs(noise).max()) > NOISE_TAIL * math.sqrt(share):
            raise RuntimeError("a noise share fell outside its public bound (p < 1e-40)")
        return noise

    def _sum(self, name: str, values: np.ndarray, bound: float) -> np.ndarray:
        """The exact sum over the parties of integer ``values`` within ``bound``."""
        tensors = {"values": torch.from_numpy(values.astype(np.float64))}
        parties = len(self.parties)
        # integers quantise exactly at resolution 1: max_error n/2 asks for no fraction bits
        summed = self.client.sum(name, tensors, max_abs=bound, max_error=parties / 2)
        return np.rint(summed["values"].numpy()).astype(np.int64)

    def _noisy_sum(self, name: str, values: np.ndarray, share: float, tag: int, bound: float):
        noisy = values + self._noise(share, tag, len(values))
        return self._sum(name, noisy, bound + NOISE_TAIL * math.sqrt(share))

    def measure(self, columns: Sequence[int], sigma2: float, tag: int) -> np.ndarray:
        counts = self._counts(columns)
        share = self._measure_share(sigma2, len(counts))
        return self._noisy_sum(f"marginal {tag}", counts, share, tag, COUNT_BOUND)

    def measure_party_sizes(self, sigma2: float, tag: int, budget=None) -> np.ndarray:
        cells = len(self.parties)
        share = self._measure_share(sigma2, cells)
        if budget is not None:
            budget.measure_shared("measure:party sizes", share, self.protecting, cells, SIZES_WHAT)
        sizes = np.zeros(cells, dtype=np.int64)
        sizes[self.position] = self._rows
        noisy = self._noisy_sum(f"party sizes {tag}", sizes, share, tag, COUNT_BOUND)
        kept = np.maximum(noisy, 0).astype(np.float64)
        total = float(kept.sum())
        self._fraction = kept[self.position] / total if total > 0 else 1.0 / cells
        return noisy

    def recode(self, mappings: dict[int, np.ndarray], shape: Sequence[int]) -> None:
        self._counts.recode(mappings, shape)

    def errors(self, cliques, estimates) -> np.ndarray:
        """This party's L1 errors against its share of each estimate (2^-SCORE_BITS units);
        the share is public, so one row moves an error by at most one count."""
        if self._fraction is None:
            raise RuntimeError("the party sizes are measured before any selection")
        return np.array(
            [
                int(
                    np.abs(
                        self._counts(c) * (1 << SCORE_BITS)
                        - rounded_estimate(self._fraction * np.asarray(e, dtype=np.float64))
                    ).sum()
                )
                for c, e in zip(cliques, estimates, strict=True)
            ],
            dtype=np.int64,
        )

    def select(self, errors, subset, weights, offsets, plan: SelectionPlan, tag: int) -> int:
        """The noisy sums of the parties' scores; the largest, less the public offsets (the
        leader passes them; a follower gets -1)."""
        weights = np.asarray(weights, dtype=np.int64)
        clipped = np.minimum(np.asarray(errors, dtype=np.int64)[list(subset)], plan.clip)
        scores = (weights * clipped) >> plan.drop_bits
        bound = _score_bound(plan, weights)
        summed = self._noisy_sum(f"scores {tag}", scores, plan.share_sigma2, tag, bound)
        if offsets is None:
            return -1
        counts = summed.astype(np.float64) * 2.0 ** (plan.drop_bits - SCORE_BITS)
        return int(np.argmax(counts - np.asarray(offsets, dtype=np.float64)))

    # -- the record -------------------------------------------------------------------------

    def privacy_notes(self, ledger) -> dict[str, Any]:
        """The epsilon against a coalition of the aggregator and ``k`` data parties: they
        know ``k`` shares of every noise, so ``n - k`` protect the others' rows, and each
        release's ``rho`` grows at most by ``(n - 1) / (n - k)`` (its tau term shrinks)."""
        n = len(self.parties)
        rho = sum(m.rho for m in ledger.mechanisms)
        left = ledger.accountant_delta - sum(m.tail for m in ledger.mechanisms)
        coalitions = [
            {
                "data_parties": k,
                "epsilon": cdp_epsilon(rho * self.protecting / (n - k), left),
            }
            for k in range(1, n)
        ]
        return {
            "noise_shares": {
                "parties": n,
                "counted": self.protecting,
                "coalitions": coalitions,
                "note": (
                    "each data party adds its own share of every noise; the budget counts "
                    f"{self.protecting} of the {n} shares, so it holds against the aggregator "
                    "and any one data party; against the aggregator with k data parties the "
                    "epsilon is the coalition's below"
                ),
            },
            "selection": SELECT_WHAT,
        }


def _score_sensitivity(weights: np.ndarray, drop: int) -> float:
    """The L2 sensitivity of the score vector in its wire units: one row moves a party's
    error by at most ``2^SCORE_BITS``, its weighted score by ``w 2^SCORE_BITS``, and the
    dropped bits by one more unit (flooring)."""
    per = np.ceil(weights.astype(np.float64) * 2.0 ** (SCORE_BITS - drop)) + (drop > 0)
    return float(np.sqrt(np.sum(per * per)))


def _score_bound(plan: SelectionPlan, weights: np.ndarray) -> float:
    """The public bound on one party's score before its noise share."""
    top = (int(weights.max(initial=1)) * plan.clip) >> plan.drop_bits
    return float(top + 1)
