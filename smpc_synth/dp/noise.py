"""Where DP noise comes from, and the Gaussian mechanism on values and updates.

:class:`NoiseSource` draws from the operating system's CSPRNG (``os.urandom``), never from
torch's or numpy's seedable generators. A Gaussian sample is Opacus's ``secure_mode`` recipe
on those bits: the sum of four Box-Muller normals, halved (Holohan and Braghin 2021, the fix
for the floating-point attack of Mironov, CCS 2012), and every noisy value is then rounded
to the grid of multiples of ``2**-GRID_BITS`` (CrypTen's fixed point; the CKKS layouts are
finer or equal). Rounding ``x + N`` is post-processing of the Gaussian mechanism, and a
grid cell spans about 2^36 doubles of the noise, so the low-order bits that the attack reads
do not survive it. See docs/privacy.md for what the discretisation changes in the guarantee.

A source made with ``debug_seed`` is reproducible and so protects nothing: tests only (the
run's privacy record says so). ``debug_null_data`` additionally makes every mechanism ignore
its data input (tests check that nothing else reaches a released file).

Distributed noise (:func:`add_noise_share`): each of n parties adds N(0, (sigma C)^2 / n) so
the sum carries N(0, (sigma C)^2); a coalition of k parties knows k shares, so against it
only (n - k) / n of the variance remains (docs/federated-security.md).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping

import numpy as np
import torch
from scipy.stats import norm

GRID_BITS = 16
GRID = 2.0**-GRID_BITS
SECURE_DESCRIPTION = (
    "os.urandom (CSPRNG); Gaussian as the halved sum of four Box-Muller draws (Opacus "
    f"secure mode), rounded to multiples of 2^-{GRID_BITS}"
)
# Chance that any noisy value of one update leaves value_bound(); it then raises, never wraps.
OVERFLOW_PROBABILITY = 1e-9
_ROUNDING_SLACK = 1e-6  # relative: float32 casts after clipping
_WORD_BYTES = 8


class NoiseSource:
    """Uniform bits, Gaussians on the grid and Poisson samples for DP mechanisms."""

    def __init__(
        self, debug_seed: int | None = None, label: str = "", debug_null_data: bool = False
    ) -> None:
        if debug_null_data and debug_seed is None:
            raise ValueError("debug_null_data is for tests with a debug seed only")
        self.debug_seed = debug_seed
        self.debug_null_data = debug_null_data
        self._debug = self._sampling = None
        if debug_seed is not None:  # noise and sampling apart: one may not shift the other
            self._debug = _debug_generator(debug_seed, label, "noise")
            self._sampling = _debug_generator(debug_seed, label, "sampling")

    @property
    def secure(self) -> bool:
        return self._debug is None

    def describe(self) -> str:
        if self.secure:
            return SECURE_DESCRIPTION
        return f"INSECURE: reproducible from debug seed {self.debug_seed} (tests only)"

    def words(self, n: int, sampling: bool = False) -> np.ndarray:
        """``n`` uniform 64-bit words (for Poisson samples and permutations if ``sampling``)."""
        debug = self._sampling if sampling else self._debug
        if debug is not None:
            return debug.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
        return np.frombuffer(os.urandom(n * _WORD_BYTES), dtype=np.uint64).copy()

    def uniform(self, n: int, sampling: bool = False) -> np.ndarray:
        """``n`` doubles uniform in (0, 1) (53 random bits each, never 0)."""
        words = self.words(n, sampling)
        return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    def normal(self, n: int) -> np.ndarray:
        """``n`` standard normal doubles: (z1 + z2 + z3 + z4) / 2 of Box-Muller draws."""
        half = -(-4 * n // 2)
        u1, u2 = self.uniform(half), self.uniform(half)
        radius = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
        return z[: 4 * n].reshape(4, n).sum(axis=0) / 2.0

    def gaussian(self, shape: tuple[int, ...] | int, std: float) -> np.ndarray:
        """Gaussian noise of standard deviation ``std``, on the grid (see the module)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if std == 0:
            return np.zeros(shape)
        return on_grid(self.normal(math.prod(shape)).reshape(shape) * std)

    def privatize(self, values: np.ndarray, std: float) -> np.ndarray:
        """The Gaussian mechanism: ``values`` + noise, on the grid (float64)."""
        base = np.asarray(values, dtype=np.float64)
        if self.debug_null_data:
            base = np.zeros_like(base)
        return on_grid(base + self.normal(base.size).reshape(base.shape) * std)

    def generator(self) -> torch.Generator:
        """A torch generator seeded with 63 secret bits, for a model's own draws under DP
        (the VAE's latent noise, generated rows): from the public run seed, each example's
        noise would be known and tied to its place in the batch, so adding a row would move
        the others' gradients. Its outputs are never released."""
        return torch.Generator().manual_seed(int(self.words(1, sampling=True)[0] >> np.uint64(1)))

    def poisson_mask(self, n: int, rate: float) -> np.ndarray:
        """Poisson sampling: each of ``n`` items independently with probability ``rate``."""
        return self.uniform(n, sampling=True) < rate

    def permutation(self, n: int) -> np.ndarray:
        """A uniformly random permutation of ``range(n)`` (sorting random words)."""
        return np.argsort(self.words(n, sampling=True), kind="stable")


def _debug_generator(seed: int, *labels: str) -> np.random.Generator:
    key = hashlib.sha256(repr((seed, *labels)).encode()).digest()
    return np.random.Generator(np.random.Philox(key=int.from_bytes(key[:16])))


def on_grid(values: np.ndarray) -> np.ndarray:
    """Round to the nearest multiple of :data:`GRID`."""
    return np.rint(np.asarray(values, dtype=np.float64) * 2.0**GRID_BITS) * GRID


def grid_sensitivity(sensitivity: float, n_values: int) -> float:
    """The L2 sensitivity of ``n_values`` values rounded to :data:`GRID` (or to a grid
    chosen by randomness independent of the data), when the unrounded values' is
    ``sensitivity``: each rounded value of a neighbour moves by less than one more step."""
    return sensitivity + math.sqrt(n_values) * GRID


def grid_max_error(parties: int) -> float:
    """The fixed-point ``max_error`` of a secure sum whose packing grid is :data:`GRID`
    (:func:`smpc_synth.he.params.choose_layout` picks 2^-f with f = ceil(log2(parties /
    (2 max_error))))."""
    return parties * GRID / 2


def share_std(noise_multiplier: float, clip_norm: float, parties: int) -> float:
    """Standard deviation of one party's noise share."""
    return noise_multiplier * clip_norm / math.sqrt(parties)


def add_noise_share(
    update: Mapping[str, torch.Tensor],
    noise_multiplier: float,
    clip_norm: float,
    parties: int,
    source: NoiseSource,
) -> dict[str, torch.Tensor]:
    """The (clipped) update plus this party's Gaussian noise share, tensor by tensor."""
    std = share_std(noise_multiplier, clip_norm, parties)
    out = {}
    for name, t in update.items():
        noisy = source.privatize(t.detach().to(torch.float64).numpy(), std)
        out[name] = torch.from_numpy(noisy).to(t.dtype)
    return out


def value_bound(clip_norm: float, noise_multiplier: float, parties: int, n_values: int) -> float:
    """A bound on every value of a clipped, noised update (the fixed-point ``max_abs``).

    A clipped value is at most ``clip_norm``; the noise share exceeds z standard deviations
    in any of ``n_values`` values with probability OVERFLOW_PROBABILITY.
    """
    z = float(norm.isf(OVERFLOW_PROBABILITY / (2 * max(n_values, 1))))
    bound = clip_norm + z * share_std(noise_multiplier, clip_norm, parties)
    return bound * (1 + _ROUNDING_SLACK) + GRID
