"""Secure sums of per-party statistics: every party secret-shares its vector, only the total
is revealed.

Each party shares its own values (``crypten.cryptensor(x, src=i)``); the shares are added
locally and the sum is opened to every party. CrypTen encodes values as int64 with 16
fractional bits, so magnitudes must stay well below 2^47 / parties: callers pass values that
are already scaled by public bounds (see :data:`MAX_ABS`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.errors import InputError

crypten = import_crypten()

MAX_ABS = float(2**36)  # per-party bound: leaves 2^11 headroom for summing 8 parties


def share_from_each(local: torch.Tensor, sizes: list[torch.Size], rank: int) -> list:
    """Party ``i`` secret-shares its tensor of size ``sizes[i]``: one MPCTensor per party."""
    shared = []
    for src, size in enumerate(sizes):
        value = local if src == rank else torch.zeros(size, dtype=local.dtype)
        shared.append(crypten.cryptensor(value, src=src))
    return shared


def secure_sum(
    stats: Mapping[str, np.ndarray],
    rank: int,
    world_size: int,
    noise_std: float | None = None,
    noise_tag: int = 0,
    null_data: bool = False,
) -> dict[str, np.ndarray]:
    """The element-wise sum over parties of ``stats`` (same keys and shapes everywhere).

    ``noise_std``: the dealer's discrete Gaussian noise (draw ``noise_tag``, see
    :mod:`smpc_synth.mpc.dealer.noise`) is added before the sum is opened: the Gaussian mechanism
    on CrypTen's 2^-16 grid (``null_data``, tests only: on zeros instead of the sum)."""
    keys = sorted(stats)
    shapes = [np.shape(stats[k]) for k in keys]
    flat = torch.cat(
        [torch.as_tensor(np.asarray(stats[k], dtype=np.float64)).reshape(-1) for k in keys]
    )
    if flat.numel() and float(flat.abs().max()) > MAX_ABS:
        raise InputError(
            f"a statistic exceeds {MAX_ABS:.0f} in magnitude: too large for CrypTen's fixed point"
        )
    shared = share_from_each(flat, [flat.shape] * world_size, rank)
    total = shared[0]
    for other in shared[1:]:
        total = total + other
    if noise_std is not None:
        total = add_dealt_noise(total, noise_std, noise_tag, null_data)
    summed = reveal_float64(total).numpy()
    out, start = {}, 0
    for key, shape in zip(keys, shapes, strict=True):
        size = int(np.prod(shape, dtype=np.int64))
        out[key] = summed[start : start + size].reshape(shape)
        start += size
    return out


def add_dealt_noise(value, std: float, tag: int, null_data: bool = False):
    """``value`` (an MPCTensor at CrypTen's 16 fractional bits) plus the dealer's discrete
    Gaussian noise of standard deviation ``std`` on the same grid."""
    from smpc_synth.mpc.dealer.noise import discrete_gaussian_shares

    if null_data:
        value = value * 0  # an integer product: exactly zero, no truncation
    if value.encoder.scale != 2**16:
        raise ValueError("dealt noise is for values at 16 fractional bits")
    ring_std = std * 2.0**16
    noise = discrete_gaussian_shares(value.size(), ring_std * ring_std, tag=tag)
    return crypten.mpc.MPCTensor.from_shares(value.share + noise)


def reveal_float64(value) -> torch.Tensor:
    """Open ``value`` to every party and decode it in float64 (CrypTen decodes to float32)."""
    return value.reveal().to(torch.float64) / value.encoder.scale


def party_sizes(rows: int, rank: int, world_size: int) -> list[int]:
    """Every party's row count (needed to shape the pooled table), by secure sum."""
    mine = np.zeros(world_size)
    mine[rank] = rows
    return [round(float(v)) for v in secure_sum({"rows": mine}, rank, world_size)["rows"]]
