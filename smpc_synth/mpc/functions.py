"""Functions on shared tensors that CrypTen computes in general and we need in a narrow case.

- :func:`maximum` along the last dimension by a tournament of our comparisons, each with its
  product free (4 rounds a level). CrypTen's ``max(dim)`` also builds a
  one-hot argmax and checks ties, which a softmax does not need.
- :func:`reciprocal_in_range` for values known to lie in ``[low, high]`` (a softmax's
  denominator lies in ``[1, span width]``): a Chebyshev polynomial, or Newton's iteration
  from the best linear guess where that takes fewer rounds; no ``exp`` for the guess and
  only the work the range needs. CrypTen's general reciprocal spends an ``exp`` and 10
  iterations.
- :func:`log_in_range`, likewise: a Chebyshev polynomial (3-4 rounds) where CrypTen's
  general log takes three ``exp`` and two Householder steps (32 rounds); and
  :func:`exp_in_range` (3 rounds on ``[-2, 2]``, where CrypTen's exp takes 8).
- :func:`tanh` as ``sign(x) (2 / (1 + exp(-2|x|)) - 1)``: the reciprocal's argument lies in
  ``(1, 2]``, where a polynomial of degree 7 (3 rounds) is within 1e-5, and ``|x|`` comes
  with the sign comparison at no cost. 16 rounds against CrypTen's 19 (through its
  sigmoid, with our comparison), at half its error: 1.8e-3 against 3.9e-3, since
  CrypTen's reciprocal starts from a constant 0.75 and stops after 3 Newton steps (0.4%
  off where ``x`` is near 0).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.polynomial import chebyshev

from smpc_synth.mpc import compare
from smpc_synth.mpc.compat import import_crypten

crypten = import_crypten()

RESOLUTION_BITS = 18  # Newton stops once its relative error is below 2^-18 (16-bit fixed point)
LOG_TOLERANCE = 1e-4  # largest error of log_in_range's polynomial (fixed point adds ~4e-5)
EXP_TOLERANCE = 1e-4  # largest relative error of exp_in_range's polynomial
RECIPROCAL_TOLERANCE = 1e-5  # ... and of reciprocal_in_range's (fixed point: 1.5e-5 absolute)
MAX_DEGREE = 16  # powers up to x^16 cost 4 rounds


def maximum(x, provider):
    """The largest element along the last dimension of the MPCTensor ``x`` (keepdim), for
    logits: the comparisons are :data:`~smpc_synth.mpc.compare.ACTIVATION_BITS` wide, exact
    while every difference lies within +-32,768."""
    while x.size(-1) > 1:
        if x.size(-1) % 2:  # an odd one out plays itself: the maximum is unchanged
            x = crypten.cat([x, x[..., :1]], dim=-1)
        half = x.size(-1) // 2
        a, b = x[..., :half], x[..., half:]
        # b + max(a - b, 0) = max(a, b); logits, so the activations' width
        x = b + compare.relu(a - b, provider, width=compare.ACTIVATION_BITS)[0]
    return x


def reciprocal_iterations(low: float, high: float) -> int:
    """Newton steps that take the linear guess of :func:`reciprocal_in_range` to
    :data:`RESOLUTION_BITS` bits of relative precision."""
    ratio = high / low
    error = 1 - 8 * ratio / (ratio**2 + 6 * ratio + 1)  # the guess's worst relative error
    if error <= 2.0**-RESOLUTION_BITS:
        return 0
    return math.ceil(math.log2(RESOLUTION_BITS * math.log(2) / -math.log(error)))


def reciprocal_in_range(x, low: float, high: float):
    """``1 / x`` for an MPCTensor ``x`` whose every element lies in ``[low, high]``.

    Newton's iteration ``y (2 - x y)`` squares the relative error in 2 rounds a step, from
    the guess ``y0 = b (low + high) - b x`` with ``b = 8 / (high^2 + 6 high low + low^2)``,
    the linear function whose worst relative error ``1 - x y0`` over the range is smallest.
    Where a Chebyshev polynomial within :data:`RECIPROCAL_TOLERANCE` takes fewer rounds
    (its powers: 3 rounds on ``[1, 2]`` against Newton's 6, 4 on ``[1, 6]`` against 8), that
    instead. Its fixed-point error does not shrink as Newton's does, but the polynomial's
    own is below fixed point's resolution there.
    """
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high, got [{low}, {high}]")
    if _reciprocal_by_polynomial(low, high):
        return polynomials_in_range(x, ("reciprocal",), low, high)[0]
    slope = 8.0 / (high**2 + 6 * high * low + low**2)
    y = x * -slope + slope * (low + high)
    for _ in range(reciprocal_iterations(low, high)):
        y = y * (2 - x * y)
    return y


def _reciprocal_by_polynomial(low: float, high: float) -> bool:
    degree = polynomial_degree("reciprocal", low, high)
    return degree is not None and polynomial_rounds(degree) < 2 * reciprocal_iterations(low, high)


def polynomial_rounds(degree: int) -> int:
    """Rounds to compute the powers ``x^2 .. x^degree`` (CrypTen's ``polynomial`` doubles
    the known powers each round)."""
    return math.ceil(math.log2(degree)) if degree > 1 else 0


def tanh(x, provider):
    """``tanh`` of the MPCTensor ``x``: ``sign(x) (2 r - 1)`` with ``r = 1 / (1 + u)``,
    ``u = exp(-2|x|)`` in ``(0, 1]`` (``(1 - u) / (1 + u) = 2 r - 1``, so no product).

    One comparison (at :data:`~smpc_synth.mpc.compare.ACTIVATION_BITS`) gives ``[x < 0]``,
    with ``x [x < 0]`` (hence ``|x|``) and a product kept for the sign, which costs one more
    round at the end. ``provider`` is the dealer provider; with None, CrypTen's tanh.
    """
    if provider is None:
        return x.tanh()
    bits, negative = compare.sign_bits(
        x.share, provider, times_x=True, later=1, width=compare.ACTIVATION_BITS
    )
    magnitude = x - compare.shares_like(x, negative * 2)
    # CrypTen's exp, (1 - 2|x| / 256)^256: right while |x| < 256, and within 2e-3 of tanh
    # (its sigmoid's 2^9 halves the approximation error but doubles the quantisation of
    # 2|x| / 2^k, which dominates near 0: 3.9e-3 there)
    u = (magnitude * -2).exp()
    unsigned = reciprocal_in_range(u + 1, 1.0, 2.0) * 2 - 1
    return unsigned - compare.shares_like(unsigned, bits.times(unsigned.share) * 2)


def _centre(low: float, high: float) -> tuple[float, float]:
    """``(mid, half)`` of ``[low, high]``, which ``t = (x - mid) / half`` maps to [-1, 1]."""
    if not low <= high:
        raise ValueError(f"need low <= high, got [{low}, {high}]")
    return (high + low) / 2, max((high - low) / 2, 1e-12)


def polynomial_degree(function: str, low: float, high: float) -> int | None:
    """The degree of :func:`chebyshev_polynomial`, or None if it needs more than
    :data:`MAX_DEGREE`."""
    try:
        return len(chebyshev_polynomial(function, low, high)) - 1
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def chebyshev_polynomial(function: str, low: float, high: float) -> np.ndarray:
    """Monomial coefficients, in ``t = (x - mid) / half`` on ``[-1, 1]``, of the lowest-degree
    Chebyshev fit of ``log`` (within :data:`LOG_TOLERANCE`), ``exp`` or ``reciprocal``
    (within :data:`EXP_TOLERANCE` or :data:`RECIPROCAL_TOLERANCE` of the value) on
    ``[low, high]``; all public, and fitted once per range, not on every training step."""
    target, tolerance, relative = _FITTED[function]
    if function in ("log", "reciprocal") and not low > 0:
        raise ValueError(f"{function} needs 0 < low, got [{low}, {high}]")
    mid, half = _centre(low, high)
    nodes = np.cos(np.pi * (np.arange(256) + 0.5) / 256)
    check = np.linspace(-1.0, 1.0, 4001)
    at_nodes, exact = target(mid + half * nodes), target(mid + half * check)
    for degree in range(1, MAX_DEGREE + 1):
        fit = chebyshev.chebfit(nodes, at_nodes, degree)
        error = chebyshev.chebval(check, fit) - exact
        if np.abs(error / exact if relative else error).max() <= tolerance:
            return chebyshev.cheb2poly(fit)
    raise ValueError(f"{function} on [{low}, {high}] needs a polynomial above degree {MAX_DEGREE}")


def polynomials_in_range(x, functions: Sequence[str], low: float, high: float) -> list:
    """Several fitted functions (:func:`chebyshev_polynomial`) of an MPCTensor ``x`` whose
    every element lies in ``[low, high]``, from one set of powers: the rounds and products of
    the highest degree alone (each function is then a public combination of the powers)."""
    fits = [chebyshev_polynomial(function, low, high) for function in functions]
    mid, half = _centre(low, high)
    t = (x - mid) * (1.0 / half)
    terms = _powers(t, max(len(fit) for fit in fits) - 1)
    results = []
    for fit in fits:
        coefficients = torch.tensor(fit[1:], dtype=torch.float32)
        coefficients = coefficients.view(-1, *([1] * t.dim()))
        results.append((terms[: len(coefficients)] * coefficients).sum(0) + float(fit[0]))
    return results


def _powers(t, degree: int):
    """``t, t^2, ..., t^degree`` stacked along a new first dimension, as CrypTen's
    ``polynomial`` computes them: the known powers times the highest, each round."""
    terms = crypten.stack([t, t.square()]) if degree > 1 else crypten.stack([t])
    while terms.size(0) < degree:
        terms = crypten.cat([terms, terms * terms[-1:]])
    return terms[:degree]


def log_in_range(x, low: float, high: float):
    """``log(x)`` for an MPCTensor ``x`` whose every element lies in ``[low, high]``."""
    return polynomials_in_range(x, ("log",), low, high)[0]


def reciprocal_and_log_in_range(x, low: float, high: float) -> tuple:
    """``(1 / x, log(x))`` for an MPCTensor ``x`` in ``[low, high]``: where the reciprocal is
    a polynomial, the log rides on its powers (a softmax's denominator and the log of it: 4
    rounds for both on ``[1, 6]``, where they took 4 each)."""
    if _reciprocal_by_polynomial(low, high):
        return tuple(polynomials_in_range(x, ("reciprocal", "log"), low, high))
    return reciprocal_in_range(x, low, high), log_in_range(x, low, high)


def exp_in_range(x, low: float, high: float):
    """``exp(x)`` for an MPCTensor ``x`` whose every element lies in ``[low, high]``: on
    ``[-2, 2]`` a polynomial of degree 8, 3 rounds and 7 products of x's size, within 4e-5
    of the value. CrypTen's ``(1 + x / 256)^256`` takes 8 rounds and 8 products, and is off
    by ``x^2 / 512`` of the value (0.8% at 2)."""
    return polynomials_in_range(x, ("exp",), low, high)[0]


_FITTED = {  # function -> (numpy function, tolerance, relative?)
    "log": (np.log, LOG_TOLERANCE, False),
    "exp": (np.exp, EXP_TOLERANCE, True),
    "reciprocal": (np.reciprocal, RECIPROCAL_TOLERANCE, True),
}
