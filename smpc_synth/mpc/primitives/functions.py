"""Functions on shared tensors that CrypTen computes in general and we need in a narrow case.

Every approximation here is told the range of its input by its caller, which takes it from
the layout, the schema or the generator's hyperparameters, and where one polynomial of at
most :data:`MAX_DEGREE` would not cover that range, the range is reduced first (by powers
of two, by squarings) rather than the degree raised. The worst error of each over its whole
range is measured in MPC against float64 (``tests/integration/test_mpc_functions.py``) and stated in
``docs/mpc-protocols.md``.

- :func:`segment_maximum` of segments of any widths side by side, by one tournament of our
  comparisons (their product free: 4 rounds a level). CrypTen's ``max(dim)`` also builds
  a one-hot argmax and checks ties, which a softmax does not need.
- :func:`reciprocal_and_log_in_range` for values known to lie in ``[low, high]`` (a
  softmax's denominators lie in ``[1, span width]``): on narrow ranges a Chebyshev
  polynomial for both, from one set of powers; on wide ones ``x = 2^k m`` with ``m`` in
  ``[1, 2]`` from one batched comparison (:func:`split_powers_of_two`). CrypTen's general
  reciprocal spends an ``exp`` and 10 Newton steps, its log three ``exp`` and two
  Householder steps (32 rounds).
- :func:`exp_in_range`: a polynomial, squared where the range is wide (3 rounds on
  ``[-2, 2]``, where CrypTen's exp takes 8).
- :func:`tanh` as ``sign(x) (2 / (1 + exp(-2|x|)) - 1)`` and :func:`sigmoid_and_logs` of
  logits, each from one comparison that gives ``|x|`` at no cost, with a reciprocal (and a
  log) on ``(1, 2]``: 16 rounds each.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.polynomial import chebyshev

from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.mpc.primitives import beaver, compare

crypten = import_crypten()

LOG_TOLERANCE = 1e-4  # largest error of a log's polynomial (fixed point adds ~4e-5)
EXP_TOLERANCE = 1e-4  # largest relative error of exp_in_range's polynomial
RECIPROCAL_TOLERANCE = 1e-5  # ... and of the reciprocal's (fixed point: 1.5e-5 absolute)
MAX_DEGREE = 16  # powers up to x^16 cost 4 rounds
MAX_SQUARINGS = 8  # exp_in_range: exp(x / 2^s)^(2^s)
EXP_BUDGET = 1e-3  # exp_in_range's estimated relative error, fixed point's included
LSB = 1.0 / crypten.encoder.FixedPointEncoder().scale  # fixed point's unit: 2^-16
# Range reduction to [1, 2] (split_powers_of_two): the mantissa may stray this far outside,
# as fixed point's errors move x across a power of two (CrypTen's exp(0) is 1 +- 0.4%)
REDUCED_SLACK = 0.01
REDUCED_LOW, REDUCED_HIGH = 1 - REDUCED_SLACK, 2 * (1 + REDUCED_SLACK)
MAX_POWERS = 15  # 2^-j exact in 16-bit fixed point; x - 2^j within the comparison width


@functools.lru_cache(maxsize=64)
def _tournament(lengths: tuple[int, ...]) -> list[tuple[torch.Tensor, ...]]:
    """Per level of :func:`segment_maximum`: the positions of the pairs' first and second
    elements, of the odd ones out, and where each result goes (all public)."""
    levels = []
    while max(lengths) > 1:
        first, second, alone, order, after, start = [], [], [], [], [], 0
        for length in lengths:
            half = length // 2
            # element i meets element length - half + i; an odd middle one plays itself
            order += [len(first) + i for i in range(half)]
            first += range(start, start + half)
            second += range(start + length - half, start + length)
            if length % 2:
                order.append(-1 - len(alone))
                alone.append(start + half)
            after.append(half + length % 2)
            start += length
        pairs = len(first)
        where = [i if i >= 0 else pairs - 1 - i for i in order]
        indices = (first, second, alone, where)
        levels.append(tuple(torch.tensor(v, dtype=torch.long) for v in indices))
        lengths = tuple(after)
    return levels


def segment_maximum(x, lengths: Sequence[int], provider):
    """The largest element of each segment of the MPCTensor ``x`` (rows, sum(lengths)),
    whose last dimension holds segments of ``lengths`` elements one after the other:
    (rows, segments). A tournament whose levels take all segments together: one
    comparison per element but one a segment, ``ceil(log2(widest))`` levels of 4 rounds,
    with no padding (spans of 2 and of 200 categories cost what they hold). Comparisons at
    :data:`~smpc_synth.mpc.primitives.compare.ACTIVATION_BITS`: exact while differences lie within
    +-32,768."""
    for first, second, alone, where in _tournament(tuple(int(n) for n in lengths)):
        a, b = x[:, first], x[:, second]
        # b + max(a - b, 0) = max(a, b); logits, so the activations' width
        pairs = b + compare.relu(a - b, provider, width=compare.ACTIVATION_BITS)[0]
        x = (crypten.cat([pairs, x[:, alone]], dim=1) if len(alone) else pairs)[:, where]
    return x


def segment_sum(x, segment: torch.Tensor, count: int):
    """Sums of the MPCTensor ``x`` (rows, n) over the public ``segment`` index of each column
    (rows, count): a local, exact sum of shares."""
    share = x.share.new_zeros(x.size(0), count).index_add_(1, segment, x.share)
    return _with_share(x, share)


def _with_share(x, share: torch.Tensor):
    """An MPCTensor holding ``share`` (any shape) in the encoding of the MPCTensor ``x``."""
    out = crypten.mpc.MPCTensor.from_shares(share)
    out.encoder = x.encoder
    return out


def polynomial_rounds(degree: int) -> int:
    """Rounds to compute the powers ``x^2 .. x^degree`` (CrypTen's ``polynomial`` doubles
    the known powers each round)."""
    return math.ceil(math.log2(degree)) if degree > 1 else 0


def tanh(x, provider):
    """``tanh`` of the MPCTensor ``x``: ``sign(x) (2 r - 1)`` with ``r = 1 / (1 + u)``,
    ``u = exp(-2|x|)`` in ``(0, 1]`` (``(1 - u) / (1 + u) = 2 r - 1``, so no product).

    One comparison (at :data:`~smpc_synth.mpc.primitives.compare.ACTIVATION_BITS`) gives
    ``[x < 0]``, with ``x [x < 0]`` (hence ``|x|``) and a product kept for the sign, which
    costs one more round at the end. ``provider`` is the dealer provider; with None, CrypTen's tanh.
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
    unsigned = polynomials_in_range(u + 1, ("reciprocal",), 1.0, 2.0)[0] * 2 - 1
    return unsigned - compare.shares_like(unsigned, bits.times(unsigned.share) * 2)


def tanh_and_exp(x, scale: float, provider) -> tuple:
    """``(t, exp(scale t))`` with ``t = tanh(x)`` of the MPCTensor ``x``, in the rounds of
    :func:`tanh` alone (the VAE's bounded log-variance ``b t`` and ``std = exp(b t / 2)``).

    Both are functions of ``w = 1 + exp(-2|x|)`` in ``(1, 2]`` and of the sign: with ``U =
    2 / w - 1 = |t|``, ``t = U - 2 [x < 0] U`` and ``exp(scale t) = E+(w) + [x < 0] (E-(w) -
    E+(w))``, ``E+-(w) = exp(+-scale U)``. One set of powers of ``w`` gives ``1 / w``,
    ``E+`` and ``E-`` (:func:`tanh_exp_fits`), and both sign products are opened in the
    round in which :func:`tanh` opens its one (the comparison prepares two products): the
    exp of ``t`` after it (:func:`exp_in_range`, 3 rounds on ``[-2, 2]``) is saved.
    ``provider``: the dealer's; with None, CrypTen's tanh and exp."""
    if provider is None:
        t = x.tanh()
        return t, (t * scale).exp()
    bits, negative = compare.sign_bits(
        x.share, provider, times_x=True, later=2, width=compare.ACTIVATION_BITS
    )
    magnitude = x - compare.shares_like(x, negative * 2)
    u = (magnitude * -2).exp()  # CrypTen's exp, as in tanh
    reciprocal, above, below = _evaluate(u + 1, tanh_exp_fits(scale), 1.0, 2.0)
    unsigned = reciprocal * 2 - 1
    gap = below - above
    flip_t, flip_exp = bits.times_each([unsigned.share, gap.share])
    t = unsigned - compare.shares_like(unsigned, flip_t * 2)
    return t, above + compare.shares_like(gap, flip_exp)


@functools.lru_cache(maxsize=16)
def tanh_exp_fits(scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monomial coefficients (in ``t = (w - 1.5) / 0.5``) of ``1 / w``, ``E+(w) = exp(scale
    (2/w - 1))`` and ``E-(w) = exp(-scale (2/w - 1))`` on ``w`` in ``[1, 2]``
    (:func:`tanh_and_exp`): the reciprocal as :func:`chebyshev_polynomial` fits it, the
    two exps in the fewest rounds of powers whose estimated error, the fit's own (relative)
    and fixed point's (absolute, as :func:`exp_error`), is within :data:`EXP_BUDGET`, at
    the highest degree those rounds compute (``scale`` 2: degree 8, 2.4e-4 off; 4: 16)."""
    reciprocal = chebyshev_polynomial("reciprocal", 1.0, 2.0)
    nodes = np.cos(np.pi * (np.arange(256) + 0.5) / 256)
    check = np.linspace(-1.0, 1.0, 4001)
    best = None
    for degree in range(1, MAX_DEGREE + 1):
        fits, worst = [], 0.0
        for sign in (1.0, -1.0):

            def target(t, sign=sign):
                return np.exp(sign * scale * (2 / (1.5 + 0.5 * t) - 1))

            fit = chebyshev.chebfit(nodes, target(nodes), degree)
            exact = target(check)
            error = np.abs(chebyshev.chebval(check, fit) / exact - 1).max()
            monomial = chebyshev.cheb2poly(fit)
            # rounding: a unit per power, times its coefficient (absolute, see exp_error)
            worst = max(worst, float(error) + LSB * (1 + float(np.sqrt((monomial**2).sum()))))
            fits.append(monomial)
        if worst <= EXP_BUDGET:
            rounds = polynomial_rounds(max(degree, len(reciprocal) - 1))
            if best is not None and rounds > best[0]:
                break
            best = (rounds, fits)
    if best is None:
        raise ValueError(f"exp(scale tanh) with scale {scale} needs more than degree {MAX_DEGREE}")
    return reciprocal, best[1][0], best[1][1]


def sigmoid_and_logs(x, provider) -> tuple:
    """``(sigmoid(x), log sigmoid(x), log(1 - sigmoid(x)))`` of the MPCTensor ``x`` (a
    discriminator's logits), accurate for every ``x`` within the comparison width:
    ``log sigmoid(x) = -(relu(-x) + log(1 + u))`` and ``log(1 - sigmoid(x)) = -(relu(x) +
    log(1 + u))`` with ``u = exp(-|x|)`` in ``(0, 1]``, so the log's argument lies in
    ``(1, 2]`` (a polynomial of degree 4 on the powers that ``1 / (1 + u)`` computes), never
    near 0 where CrypTen's general log (accurate on ``[1e-4, 250]``) is off by up to 10
    (it gives -9.8 for ``log 0``). ``sigmoid(x) = r + [x < 0] (1 - 2r)`` with ``r = 1 / (1 +
    u)``. One comparison (with ``x [x < 0]`` free and a product kept), CrypTen's exp, 3
    rounds of powers and 1 for the sign: 16 rounds, against CrypTen's sigmoid (19) and log
    (32). ``provider``: the dealer's; with None, CrypTen's sigmoid and log."""
    if provider is None:
        p = x.sigmoid()
        logs = crypten.cat([p, 1 - p]).log()
        return p, logs[: x.size(0)], logs[x.size(0) :]
    bits, negative = compare.sign_bits(
        x.share, provider, times_x=True, later=1, width=compare.ACTIVATION_BITS
    )
    negative_part = compare.shares_like(x, negative)  # x [x < 0] = -relu(-x)
    magnitude = x - negative_part * 2
    u = (-magnitude).exp()  # CrypTen's (1 + y / 256)^256: right while |x| < 256
    r, log_w = polynomials_in_range(u + 1, ("reciprocal", "log"), 1.0, 2.0)
    flip = 1 - r * 2
    sigmoid = r + compare.shares_like(flip, bits.times(flip.share))
    return sigmoid, negative_part - log_w, negative_part - x - log_w


def _centre(low: float, high: float) -> tuple[float, float]:
    """``(mid, half)`` of ``[low, high]``, which ``t = (x - mid) / half`` maps to [-1, 1]."""
    if not low <= high:
        raise ValueError(f"need low <= high, got [{low}, {high}]")
    return (high + low) / 2, max((high - low) / 2, 1e-12)


def polynomial_degree(
    function: str, low: float, high: float, tolerance: float | None = None
) -> int | None:
    """The degree of :func:`chebyshev_polynomial`, or None if it needs more than
    :data:`MAX_DEGREE`."""
    try:
        return len(chebyshev_polynomial(function, low, high, tolerance)) - 1
    except ValueError:
        return None


@functools.lru_cache(maxsize=256)
def chebyshev_polynomial(
    function: str, low: float, high: float, tolerance: float | None = None
) -> np.ndarray:
    """Monomial coefficients, in ``t = (x - mid) / half`` on ``[-1, 1]``, of the lowest-degree
    Chebyshev fit of ``log`` (within :data:`LOG_TOLERANCE`), ``exp`` or ``reciprocal``
    (within :data:`EXP_TOLERANCE` or :data:`RECIPROCAL_TOLERANCE` of the value) on
    ``[low, high]``; all public, and fitted once per range, not on every training step."""
    target, default, relative = _FITTED[function]
    tolerance = default if tolerance is None else tolerance
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


def polynomials_in_range(
    x, functions: Sequence[str], low: float, high: float, tolerance: float | None = None
) -> list:
    """Several fitted functions (:func:`chebyshev_polynomial`) of an MPCTensor ``x`` whose
    every element lies in ``[low, high]``, from one set of powers: the rounds and products of
    the highest degree alone (each function is then a public combination of the powers)."""
    fits = [chebyshev_polynomial(function, low, high, tolerance) for function in functions]
    return _evaluate(x, fits, low, high)


def _evaluate(x, fits: Sequence[np.ndarray], low: float, high: float) -> list:
    """The polynomials ``fits`` (monomial coefficients in ``t = (x - mid) / half`` of
    ``[low, high]``) of the MPCTensor ``x``, from one set of powers of ``t``."""
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


def by_polynomial(names: Sequence[str], low: float, high: float) -> bool:
    """Whether every function of ``names`` has a Chebyshev fit of at most
    :data:`MAX_DEGREE` on ``[low, high]`` (else the range is reduced first)."""
    return all(polynomial_degree(name, low, high) is not None for name in names)


def reciprocal_and_log_in_range(
    x, low: float, high, provider=None, *, numerator=None, index=None, log: bool = True
) -> tuple:
    """``(q, log(x) if log else None)`` for an MPCTensor ``x`` (..., n) whose elements lie
    in ``[low, high]``, with ``q = numerator / x[..., index]`` where a ``numerator`` is
    given (a softmax's probabilities from its denominators, in one product less) and
    ``q = 1 / x`` otherwise. ``high`` may be a tensor of n bounds, one per position of the
    last dimension (a softmax's spans of different widths).

    Narrow ranges (on ``[1, 7]`` at most) are a polynomial in one set of powers of ``x``
    for both functions, the log costing no round of its own: 4 rounds on ``[1, 6]``, then
    the product by the numerator. Wider ones are reduced: ``x = 2^k m`` with ``m`` in
    ``[1, 2]`` from one batched comparison of x with the powers of two below its bound
    (:func:`split_powers_of_two`), so that ``1 / x = 2^-k Q(m)`` and ``log x = k ln 2 +
    P(m)`` with polynomials of degree 7 and 4 on ``[1, 2]``: 4 rounds for the
    comparison, 1 for ``m`` (and the numerator times ``2^-k``), 3 for the powers of ``m``
    and 1 for the last product, whatever the width. ``provider``: the dealer's (else
    CrypTen's comparison)."""
    bound = _checked(low, high)
    names = ("reciprocal", "log") if log else ("reciprocal",)
    if by_polynomial(names, low, bound):
        reciprocal, *logs = polynomials_in_range(x, names, low, bound)
        q = reciprocal if numerator is None else numerator * reciprocal[..., index]
        return q, (logs[0] if log else None)
    return _reduced(x, low, high, provider, numerator=numerator, index=index, log=log)


def reciprocal_in_range(x, low: float, high, provider=None):
    """``1 / x`` for an MPCTensor ``x`` in ``[low, high]`` (see
    :func:`reciprocal_and_log_in_range`)."""
    return reciprocal_and_log_in_range(x, low, high, provider, log=False)[0]


def log_in_range(x, low: float, high, provider=None):
    """``log(x)`` for an MPCTensor ``x`` in ``[low, high]``: a polynomial where one of at
    most :data:`MAX_DEGREE` fits, else by range reduction (see
    :func:`reciprocal_and_log_in_range`)."""
    bound = _checked(low, high)
    if by_polynomial(("log",), low, bound):
        return polynomials_in_range(x, ("log",), low, bound)[0]
    return _reduced(x, low, high, provider, reciprocal=False)[1]


def _checked(low: float, high) -> float:
    """The largest of the bounds ``high`` (a float or a tensor), checked against ``low``."""
    bound = float(torch.as_tensor(high).max())
    if not 0 < low <= float(torch.as_tensor(high).min()):
        raise ValueError(f"need 0 < low <= high, got [{low}, {bound}]")
    return bound


def _reduced(
    x, low: float, high, provider, *, numerator=None, index=None, log=True, reciprocal=True
):
    """:func:`reciprocal_and_log_in_range` by range reduction (see there)."""
    scaled = x * (1.0 / low) if low != 1 else x
    powers = torch.as_tensor(
        [powers_needed(float(h) / low) for h in torch.as_tensor(high).reshape(-1)]
    )
    split = split_powers_of_two(scaled, powers.expand(x.size(-1)), provider)
    mantissa, k, inverse = scaled, None, None
    if split is not None:
        k, inverse = split
        wanted = [("mul", scaled, inverse)]
        if reciprocal and numerator is not None:  # 2^-k goes into the numerator instead
            wanted.append(("mul", numerator, inverse[..., index]))
        mantissa, *scaled_numerator = beaver.products(wanted)
        if scaled_numerator:
            numerator, inverse = scaled_numerator[0], None
    names = (("reciprocal",) if reciprocal else ()) + (("log",) if log else ())
    fitted = dict(zip(names, polynomials_in_range(mantissa, names, REDUCED_LOW, REDUCED_HIGH)))
    q = logarithm = None
    if reciprocal:
        q = fitted["reciprocal"]
        if numerator is not None:
            q = numerator * q[..., index]
        elif inverse is not None:
            q = q * inverse
        q = q * (1.0 / low) if low != 1 else q
    if log:
        logarithm = fitted["log"] if k is None else fitted["log"] + k * math.log(2)
        logarithm = logarithm + math.log(low) if low != 1 else logarithm
    return q, logarithm


def powers_needed(high: float) -> int:
    """The ``J`` of :func:`split_powers_of_two` for elements in ``[1, high]``: comparisons
    with ``2^1 .. 2^J`` bring them to ``[1, 2]``."""
    if high > 2.0**MAX_POWERS * 2:
        raise ValueError(f"range reduction covers [1, 2^{MAX_POWERS + 1}], not [1, {high}]")
    return max(math.ceil(math.log2(high)) - 1, 0)


def split_powers_of_two(x, powers: torch.Tensor, provider):
    """``(k, 2^-k)`` as MPCTensors shaped like ``x`` (..., n), where element i of the last
    dimension lies in ``[1, 2^(powers[i] + 1)]`` and ``k`` counts the ``j <= powers[i]``
    with ``x >= 2^j``, so that ``x 2^-k`` lies in ``[1, 2]``; None if no power is needed.

    The comparisons ``c_j = [x >= 2^j]`` of every element with its powers of two run in one
    batched call (4 rounds). They are monotone in j, so ``k = sum_j c_j`` and ``2^-k = 2^-J
    + sum_j (1 - c_j) 2^-j`` are linear in them: local and exact (``2^-j`` is exact in
    16-bit fixed point for ``j <= 16``), no product."""
    powers = torch.as_tensor(powers, dtype=torch.long)
    if int(powers.max()) > MAX_POWERS:
        raise ValueError(f"at most {MAX_POWERS} powers of two, got {int(powers.max())}")
    column = torch.repeat_interleave(torch.arange(len(powers)), powers)
    if not len(column):
        return None
    j = torch.cat([torch.arange(1, int(p) + 1) for p in powers if p > 0])
    below = _below(x[..., column] - (2.0**j).float(), provider)  # [x < 2^j]: 0/1 integers
    scale = int(x.encoder.scale)
    shape = (*below.shape[:-1], x.size(-1))
    k = below.new_zeros(shape).index_add_(-1, column, below * -scale)
    halves = torch.round(scale * 2.0 ** -j.double()).long()  # 2^-j in fixed point, exact
    inverse = below.new_zeros(shape).index_add_(-1, column, below * halves)
    return (
        _with_share(x, k) + powers.float(),
        _with_share(x, inverse) + (2.0 ** -powers.double()).float(),
    )


def _below(x, provider) -> torch.Tensor:
    """Additive shares of the 0/1 integers ``[x < 0]`` of an MPCTensor ``x`` (our comparison
    at the activations' width with the dealer, else CrypTen's)."""
    if provider is None:
        return x.lt(0).share
    bits, _ = compare.sign_bits(x.share, provider, width=compare.ACTIVATION_BITS)
    return bits.arithmetic().view(x.size())


def exp_squarings(low: float, high: float) -> int:
    """Squarings that :func:`exp_in_range` takes on ``[low, high]``: ``exp(x) =
    exp(x / 2^s)^(2^s)`` on a range ``2^s`` times narrower, where the polynomial must be
    ``2^s`` times closer (each squaring doubles a relative error); the fewest rounds whose
    error estimate (:func:`exp_error`) is within :data:`EXP_BUDGET` of the value."""
    best = None
    for s in range(MAX_SQUARINGS + 1):
        fit = _exp_fit(low, high, s)
        if fit is not None and exp_error(low, s, fit) <= EXP_BUDGET:
            rounds = polynomial_rounds(len(fit) - 1) + s
            if best is None or rounds < best[0]:
                best = (rounds, s)
    if best is None:
        raise ValueError(f"exp on [{low}, {high}] is beyond {MAX_SQUARINGS} squarings")
    return best[1]


def _exp_fit(low: float, high: float, s: int) -> np.ndarray | None:
    try:
        return chebyshev_polynomial("exp", low / 2**s, high / 2**s, EXP_TOLERANCE / 2**s)
    except ValueError:
        return None


def exp_error(low: float, s: int, fit: np.ndarray) -> float:
    """Estimated worst relative error of :func:`exp_in_range` with ``s`` squarings: the
    fit's own, and fixed point's: each power's truncation (a unit of 2^-16) times its
    coefficient, adding up as independent errors do, relative to the smallest value
    ``exp(low / 2^s)``; doubled by each squaring. Wide ranges cancel large terms (on
    [-4, 4] terms up to 11 sum to e^-4), which is why they take squarings. Measured
    against float64 over the whole range: 4.7e-4 on [-2, 2] (estimate 4.8e-4), 1.7e-2 on
    [-4, 4] without squaring (estimate 1.8e-2)."""
    rounding = LSB * (1 + float(np.sqrt((fit**2).sum()))) / math.exp(low / 2**s)
    return EXP_TOLERANCE + 2**s * rounding


def exp_in_range(x, low: float, high: float):
    """``exp(x)`` for an MPCTensor ``x`` whose every element lies in ``[low, high]``: a
    polynomial of ``x / 2^s`` squared ``s`` times (:func:`exp_squarings`; on ``[-2, 2]``
    no squaring and degree 8: 3 rounds and 7 products of x's size, within 4e-5 of the
    value). CrypTen's ``(1 + x / 256)^256`` takes 8 rounds and 8 products, and is off by
    ``x^2 / 512`` of the value (0.8% at 2)."""
    s = exp_squarings(low, high)
    scale = 2.0**-s
    y = polynomials_in_range(
        x * scale if s else x, ("exp",), low * scale, high * scale, EXP_TOLERANCE * scale
    )[0]
    for _ in range(s):
        y = y.square()
    return y


_FITTED = {  # function -> (numpy function, tolerance, relative?)
    "log": (np.log, LOG_TOLERANCE, False),
    "exp": (np.exp, EXP_TOLERANCE, True),
    "reciprocal": (np.reciprocal, RECIPROCAL_TOLERANCE, True),
}
