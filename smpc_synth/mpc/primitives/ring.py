"""Exact products in Z/2^64, the ring of CrypTen's shares, at float64 BLAS speed.

torch has no BLAS kernel for int64 matmul. Its own loop ran at 3.5-4.5 GMAC/s on one host,
but runs at 0.4 GMAC/s on an AVX2 host without AVX-512 (no 64-bit vector multiply), where
it made 57% of a party's CPU and 47% of the dealer's in a VAE epoch; float64 GEMM runs at
7-12 GMAC/s on the same core.

:func:`limb_matmul` splits each operand into three balanced limbs,
``x = x0 + x1 2^22 + x2 2^44`` with ``|x0|, |x1| <= 2^21`` and ``|x2| <= 2^19``, each exact
in float64. Products of limbs whose weights reach ``2^64`` vanish mod 2^64, which leaves
six float64 GEMMs, summed by weight ``2^0, 2^22, 2^44``. Every term of a weight's sum is
at most ``2^42`` in size and a weight has at most two such full terms (``x0 y1 + x1 y0``;
``x0 y2 + x2 y0`` add ``2^41`` together), so every partial sum stays below ``2^53`` while
the inner dimension is at most :data:`MAX_INNER`: float64 holds it exactly, whatever order
BLAS adds in. Longer inner dimensions are cut into chunks. The result equals torch's int64
product bit for bit, so :func:`matmul` picks whichever of the two this process measured
faster (once, in ~50 ms).
"""

from __future__ import annotations

import functools
import time

import torch

LIMB_BITS = 22
_MASK = (1 << LIMB_BITS) - 1
_HALF = 1 << (LIMB_BITS - 1)
MAX_INNER = 1024  # 1024 * 2 * 2^42 = 2^53, the last integer float64 holds exactly
# below this many multiply-adds the three splits cost more than int64's loop saves
MIN_WORK = 1 << 17


def limbs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x`` (int64) as float64 limbs ``(x0, x1, x2)`` with ``x = x0 + x1 2^22 + x2 2^44``
    mod 2^64, ``x0`` and ``x1`` in ``[-2^21, 2^21)``."""
    carried = x + _HALF
    low = (carried & _MASK).double().sub_(_HALF)
    carried = (carried >> LIMB_BITS).add_(_HALF)
    middle = (carried & _MASK).double().sub_(_HALF)
    return low, middle, (carried >> LIMB_BITS).double()


def _limb_product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x0, x1, x2 = limbs(x)
    y0, y1, y2 = limbs(y)
    low = torch.matmul(x0, y0)
    middle = torch.matmul(x0, y1).add_(torch.matmul(x1, y0))
    high = torch.matmul(x0, y2).add_(torch.matmul(x1, y1)).add_(torch.matmul(x2, y0))
    result = high.long().bitwise_left_shift_(LIMB_BITS).add_(middle.long())
    return result.bitwise_left_shift_(LIMB_BITS).add_(low.long())


def limb_matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(x, y)`` of int64 tensors mod 2^64, by float64 limbs."""
    inner = x.size(-1)
    if inner <= MAX_INNER:
        return _limb_product(x, y)
    y_inner = -2 if y.dim() >= 2 else 0
    total = None
    for start in range(0, inner, MAX_INNER):
        length = min(MAX_INNER, inner - start)
        part = _limb_product(x.narrow(-1, start, length), y.narrow(y_inner, start, length))
        total = part if total is None else total.add_(part)
    return total


@functools.cache
def limbs_are_faster() -> bool:
    """Whether :func:`limb_matmul` beats torch's int64 loop on this CPU (a layer-sized
    product, best of three each)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(-(2**63), 2**63 - 1, (256, 128), generator=generator)
    y = torch.randint(-(2**63), 2**63 - 1, (128, 128), generator=generator)

    def best(product) -> float:
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            product(x, y)
            seconds.append(time.perf_counter() - started)
        return min(seconds)

    return best(limb_matmul) < best(torch.matmul)


def matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(x, y)`` of int64 tensors mod 2^64 (same shapes, same bits), by
    whichever way is faster here."""
    if x.dim() == 0 or y.dim() == 0:
        return torch.matmul(x, y)
    multiply_adds = x.numel() * (y.size(-1) if y.dim() >= 2 else 1)
    if multiply_adds < MIN_WORK:
        return torch.matmul(x, y)
    return limb_matmul(x, y) if limbs_are_faster() else torch.matmul(x, y)


def product(op: str, x: torch.Tensor, y: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``getattr(torch, op)(x, y, *args, **kwargs)`` of int64 tensors, by :func:`matmul` for
    a matmul (the only product here whose int64 kernel is slow)."""
    if op == "matmul" and not args and not kwargs:
        return matmul(x, y)
    return getattr(torch, op)(x, y, *args, **kwargs)
