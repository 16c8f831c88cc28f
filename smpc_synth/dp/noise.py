"""Distributed Gaussian noise: each of n parties adds a share so the sum carries the target noise.

Each party adds N(0, (sigma * C)**2 / n) to every value of its clipped update; the sum of n
independent shares is N(0, (sigma * C)**2), the Gaussian mechanism for sensitivity C. A
coalition of k parties knows its own k shares, so against it only (n - k) / n of the noise
variance remains (see docs/federated-security.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from scipy.stats import norm

# Chance that any noisy value of one update leaves value_bound(); it then raises, never wraps.
OVERFLOW_PROBABILITY = 1e-9
_ROUNDING_SLACK = 1e-6  # relative: float32 casts after clipping


def share_std(noise_multiplier: float, clip_norm: float, parties: int) -> float:
    """Standard deviation of one party's noise share."""
    return noise_multiplier * clip_norm / math.sqrt(parties)


def add_noise_share(
    update: Mapping[str, torch.Tensor],
    noise_multiplier: float,
    clip_norm: float,
    parties: int,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The (clipped) update plus this party's Gaussian noise share, tensor by tensor."""
    std = share_std(noise_multiplier, clip_norm, parties)
    out = {}
    for name, t in update.items():
        noise = torch.normal(0.0, std, t.shape, generator=generator, dtype=torch.float64)
        out[name] = (t.detach().to(torch.float64) + noise).to(t.dtype)
    return out


def value_bound(clip_norm: float, noise_multiplier: float, parties: int, n_values: int) -> float:
    """A bound on every value of a clipped, noised update (the fixed-point ``max_abs``).

    A clipped value is at most ``clip_norm``; the noise share exceeds z standard deviations
    in any of ``n_values`` values with probability OVERFLOW_PROBABILITY.
    """
    z = float(norm.isf(OVERFLOW_PROBABILITY / (2 * max(n_values, 1))))
    bound = clip_norm + z * share_std(noise_multiplier, clip_norm, parties)
    return bound * (1 + _ROUNDING_SLACK)
