"""The marginal mechanisms' data-dependent steps on secret shares (AIM and MST in MPC mode).

Each party holds its own rows' codes. A marginal of the union of the parties' tables is the
sum of their local contingency tables, so each party's local table *is* its additive share
of the pooled marginal (mod 2^64): no row and no party's own count is ever sent. Every
value a party sends is masked by randomness it shares with no other data party:

- ``measure``: each party adds its share of discrete Gaussian noise dealt by the dealer
  (:mod:`smpc_synth.mpc.dealer.noise`) and the noisy marginal is opened. A coalition of data
  parties without the dealer knows nothing of the noise, so it learns only the noisy counts.
- ``errors``: ``|x * 2^8 - round(e * 2^8)|`` per cell from the dealer's comparison
  (:mod:`smpc_synth.mpc.primitives.compare`, ``x * [x < 0]`` comes free), summed per
  marginal; nothing is opened.
- ``select``: the clipped errors become scores, the dealer deals fixed-point Gumbel noise,
  the candidate index is packed into the low bits, a tournament of 64-bit comparisons
  finds the largest, and only its low bits are opened: every party adds its own random
  multiple of ``2^index_bits`` first, so the high bits (the noisy score) stay hidden.

The arithmetic is :mod:`smpc_synth.dp.marginals`' integer arithmetic, step for step: with
the same noise (a debug seed) the same marginals are selected as in plaintext mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.dp.marginals import (
    SCORE_BITS,
    CentralNoise,
    LocalCounts,
    SelectionPlan,
    reversed_index,
    rounded_estimate,
    unpack_index,
)
from smpc_synth.mpc.primitives import compare, prg

crypten = import_crypten()


class SecureQueries(CentralNoise):
    """:class:`~smpc_synth.dp.marginals.MarginalQueries` on secret shares; every party calls
    every method with the same public arguments (party 0 alone needs the estimates and
    offsets, which only it adds in)."""

    def __init__(self, codes: np.ndarray, shape: Sequence[int]) -> None:
        from smpc_synth.crypten_backend.compat import comparison_provider

        self._counts = LocalCounts(codes, shape)
        self.provider = comparison_provider()
        if self.provider is None:
            raise RuntimeError("secure marginal queries need a session with the dealer")
        self.comm = crypten.communicator.get()
        self.rank = self.comm.get_rank()
        self._mask = prg.Stream(prg.fresh_key())  # this party's own masks for openings

    def recode(self, mappings: dict[int, np.ndarray], shape: Sequence[int]) -> None:
        self._counts.recode(mappings, shape)

    def _local(self, columns: Sequence[int]) -> torch.Tensor:
        """This party's share of the pooled marginal: its own contingency table."""
        return torch.from_numpy(self._counts(columns).copy())

    def measure(self, columns: Sequence[int], sigma2: float, tag: int) -> np.ndarray:
        share = self._local(columns)
        noise = self.provider.noise_share("dgauss", share.shape, tag, float(sigma2))
        return self.comm.all_reduce(share + noise).numpy()

    def errors(self, cliques, estimates) -> torch.Tensor:
        """Shares of ``sum |x * 2^8 - round(e * 2^8)|`` per clique (nothing is opened)."""
        shares = [self._local(c) * (1 << SCORE_BITS) for c in cliques]
        sizes = [len(s) for s in shares]
        diff = torch.cat(shares)
        if self.rank == 0:
            diff -= torch.from_numpy(np.concatenate([rounded_estimate(e) for e in estimates]))
        _, negative = compare.sign_bits(diff, self.provider, times_x=True)
        magnitude = diff - 2 * negative  # |d| = d - 2 d [d < 0]
        return torch.stack([part.sum() for part in magnitude.split(sizes)])

    def select(
        self,
        errors: torch.Tensor,
        subset: Sequence[int],
        weights: np.ndarray,
        offsets: np.ndarray | None,
        plan: SelectionPlan,
        tag: int,
    ) -> int:
        first = self.rank == 0
        chosen = errors[list(subset)]
        # min(L1, clip) = clip + (L1 - clip) [L1 < clip]
        over = chosen - plan.clip if first else chosen.clone()
        _, negative = compare.sign_bits(over, self.provider, times_x=True)
        clipped = negative + plan.clip if first else negative
        score = clipped * torch.from_numpy(np.asarray(weights, dtype=np.int64))
        score *= 1 << (plan.bits - SCORE_BITS)
        if first:
            score -= torch.from_numpy(
                np.rint(np.asarray(offsets) * 2.0**plan.bits).astype(np.int64)
            )
        noise = self.provider.noise_share(
            "gumbel", score.shape, tag, float(plan.scale), int(plan.bits)
        )
        packed = (score + noise) * (1 << plan.index_bits)
        if first:
            packed += torch.from_numpy(reversed_index(len(packed), plan))
        best = self._maximum(packed)
        masked = best + self._mask.ring((1,)) * (1 << plan.index_bits)
        return unpack_index(int(self.comm.all_reduce(masked)[0]), plan)

    def _maximum(self, values: torch.Tensor) -> torch.Tensor:
        """Shares of the largest value, by a tournament: ``max(a, b) = a - (a - b)[a < b]``,
        one 64-bit comparison a level (4 rounds), its product free."""
        while values.numel() > 1:
            if values.numel() % 2:  # an odd one out plays itself
                values = torch.cat([values, values[:1]])
            half = values.numel() // 2
            a, b = values[:half], values[half:]
            _, negative = compare.sign_bits(a - b, self.provider, times_x=True)
            values = a - negative
        return values
