"""Adam for a secret-shared flat parameter vector (CrypTen has none: issue #405).

The whole model is one tensor, so a step costs a fixed handful of rounds however many layers
there are, and there is no gradient clipping (CrypTen's ``update_parameters`` clips by
default, which squares, compares and multiplies every parameter: 60 of its 91 rounds).

Fixed point has 16 fractional bits, too coarse for squared gradients (1e-3 squared is below
one unit), so the moments are kept for gradients scaled by a public power of two
(:data:`GRAD_SCALE` to begin with); Adam is invariant to that scale except for ``eps``,
which is therefore interpreted in scaled units. The inverse square root covers ``x`` in
``[EPS, X_MAX]``: gradients of 6e-4 to 99 at scale 32. Above it the root is a few units
of fixed point, and past the last bucket (2.7e7) a cold start's guess is above
``sqrt(3/x)``: Newton goes to the negative root or to 0. The comparison each step makes
anyway also marks every ``x`` above X_MAX; their count rides with the root check (below),
and a single one fails it. A table whose gradients are larger (wide layouts, many
columns) thus fails the check, and the optimizer keeps its moments at a lower scale
(:meth:`SharedAdam.shrink_scale`) until every element fits. That count is all it
reveals of them.

Within the window a step differs from torch Adam's only by fixed point: ``lr`` is encoded
as ``round(lr 2^16) / 2^16`` (0.7% off at 1e-3, 2^-17 / lr at most), the converged root
is within :data:`ROOT_ERROR_UNITS` units of 2^-16, i.e. a relative ``2 * 2^-16 sqrt(x)``
(up to 9.6% at X_MAX, where the root is 21 units; 3.1% at 1e6), and the update within
:data:`STEP_ERROR_UNITS` units besides: per element and step, ``|u| (e_lr + 2^-15
sqrt(x)) + 2^-15`` for torch's update ``u``.

Two-party truncation fails (wraps around) with a probability proportional to the magnitude of
a product, about value / 2^31 per element, so every product here is kept small: moments
are updated as ``avg + c * (new - avg)`` and Newton multiplies ``x * y`` before ``y``.
``1/sqrt(v)`` is Newton's iteration warm-started from the previous step's value (see
:func:`inverse_sqrt`); the first step and any reset by the guard start from a
piecewise-constant guess found by one batched comparison (:func:`bucket_start`), which 5
Newton steps finish (a cold start from below every root would take 33).
Once a new squared gradient weighs little in ``v`` (``c2`` small, i.e. after the first
dozens of steps), ``v`` moves a few per cent per step and one or two undamped Newton steps
from the previous root suffice (:func:`steady_inverse_sqrt`).

A wrap-around inside Newton's iteration need not show in the loss: the next iteration
squares the wrapped value past fixed point's range, and what comes out can be a root a
million times too large, not one that wrecks the model outright (it happened: a KL jump from
0.2 to 7 that the guard let through). Newton's last step computes ``s = x y^2`` of its
input, about 1 for every element; :attr:`SharedAdam.root_check` is its sum and the count
of elements above X_MAX, which every party reveals with the step's losses. A mean off by
more than :data:`ROOT_CHECK_TOLERANCE` means a wrap-around (then it is off by 10^4 or
more), and any element above X_MAX a gradient too large for the scale: the guard rolls
the step back. It costs no round and no product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.train.mpc.nn import FIXED, fixed_mask

crypten = import_crypten()

GRAD_SCALE = 32  # public power of two: moments are kept for gradient * scale, from this
# A failed root check (a wrap-around, see below) lowers this optimizer's scale by this much:
# squared gradients, hence v and the wrap-around rate of its products, 16 times smaller.
# Tables whose gradients are larger than fixed point's window at GRAD_SCALE (wide layouts,
# many columns: the window [sqrt(EPS), sqrt(X_MAX)] / scale is [6e-4, 99] at 32) end up
# where their gradients fit, at the cost of a larger effective eps; a public decision on
# the already revealed check, so it reveals nothing more.
SCALE_STEP = 4
MIN_GRAD_SCALE = 2.0**-10
EPS = 4e-4  # floor of the scaled second moment (26 units of fixed point): Adam eps ~6e-4
WARM_DAMPING = 0.75  # the warm start passes SAFE_START only if x grew more than 3.2x
WARM_ITERS = 3
RESTART_LOWER = 1 / 32  # unsafe warm starts restart this much lower...
RESTART_ITERS = 11  # ...and need this many Newton steps (x1.5 per step up to the root)
SAFE_START = 1.8  # Newton converges from y0 iff x * y0^2 < 3; this also converges in 3 steps
START_CHECK_SPLIT = 8
# 1/sqrt(x) must stay well above fixed point's unit (Newton is unstable a few units from 0):
X_MAX = 1e7  # largest scaled second moment handled: |gradient| < 100
RESTART_FLOOR = X_MAX**-0.5 / 2  # below every root, yet 10 units of fixed point
# The guess for a cold start: x's bucket among EPS * 4^k (k = 1..BUCKETS), by one batched
# comparison, gives 1/sqrt(x) within 2^(1/2), i.e. at most 41% off: 5 Newton steps (relative
# error 0.41 -> 0.29 -> 0.12 -> 0.02 -> 6e-4 -> 5e-7). Octaves (35 comparisons, 3 steps) cost
# twice as much: a comparison is ~12 bytes and a few microseconds of CPU an element, a Newton
# step three products.
BUCKET_BASE = 4.0
BUCKETS = math.ceil(math.log(X_MAX / EPS, BUCKET_BASE))
BUCKET_ITERS = 5
# Steady state: (largest c2, Newton steps) from the previous root, undamped. Newton's relative
# error squares (x1.5) per step; v moves by about c2 * (g^2/v - 1), so a 2-step start 15% off
# ends 0.4% off, a 1-step start 2% off ends 0.06% off.
STEADY_ITERS = ((0.02, 1), (0.2, 2))
SAFE_GROWTH = 1.8  # x below 1.8x its previous value: x * y_prev^2 < 3, Newton converges
# v's truncation errors (about 1 unit of fixed point a step, either sign) random-walk where
# the gradient stays 0; below -EPS, x = v + EPS is negative and Newton's 1/sqrt diverges,
# wrecking that parameter (a 3-party VAE run did so after ~200 epochs). Clamping v at 0
# every 8 steps (one fused ReLU, 4 rounds) keeps the walk within 8 units of EPS's 26.
V_CLAMP_EVERY = 8
# |mean of x y^2 - 1| over Newton's last step: a few 1e-3 normally, up to 0.06 when the
# gradients jump 6-fold (measured), 1e4 or more after a wrap-around
ROOT_CHECK_TOLERANCE = 0.5
# How far a step is from torch Adam's (module docstring): the converged root within this many
# units of fixed point (Newton's last step rounds twice), and the update within this many
# units besides (truncation of m * root and of its product with lr; m's own rounding)
ROOT_ERROR_UNITS = 2
STEP_ERROR_UNITS = 2


@dataclass
class AdamSettings:
    """The plaintext optimizer's hyperparameters (torch.optim.Adam semantics)."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0


class SharedAdam:
    """Adam on one flat MPCTensor of parameters."""

    def __init__(self, settings: AdamSettings, size: int, grad_scale: float = GRAD_SCALE):
        self.s = settings
        self.grad_scale = float(grad_scale)  # public; lowered by shrink_scale
        self.max_scale = grad_scale  # what a rollback to an older state may restore
        zeros = torch.zeros(size)
        self.m = crypten.cryptensor(zeros, src=0)
        self.v = crypten.cryptensor(zeros, src=0)
        self.size = size
        self.inv_root = None  # last 1/sqrt(v_hat + EPS); None: converge from cold
        self.last_x = None  # the v_hat + EPS that inv_root is the root of
        self.root_check = None  # shared sum of x y^2 over Newton's last step (see above)
        self.t = 0

    def step(self, params, grad):
        """Return ``params`` after one Adam step with gradient ``grad`` (both flat).

        ``m`` and ``v`` hold the bias-corrected moments directly (m_hat, v_hat): their
        recursions weight the new gradient by (1 - beta) / (1 - beta^t), so early steps are
        not the quantisation error of a tiny v multiplied by 1 / (1 - beta2^t).
        """
        s = self.s
        self.t += 1
        c1 = (1 - s.beta1) / (1 - s.beta1**self.t)
        c2 = (1 - s.beta2) / (1 - s.beta2**self.t)
        scale = self.grad_scale
        g = grad * (int(scale) if scale.is_integer() else scale)  # an int: exact, no truncation
        if s.weight_decay:
            g = g + params * (s.weight_decay * self.grad_scale)
        self.m = _ema(self.m, g, c1)
        self.v = _ema(self.v, g.square(), c2)
        if self.t % V_CLAMP_EVERY == 0:
            self.v = self.v.relu()  # see V_CLAMP_EVERY
        x = self.v + EPS
        steady = next((n for weight, n in STEADY_ITERS if c2 <= weight), None)
        # m times the root comes out of Newton's last round (no product of its own)
        if steady is not None and self.inv_root is not None and self.last_x is not None:
            root = steady_inverse_sqrt(x, self.inv_root, self.last_x, steady, times=self.m)
        else:
            root = inverse_sqrt(x, self.inv_root, times=self.m)
        self.inv_root = root.root
        self.root_check = crypten.stack([root.check.sum(), fixed_mask(root.over).sum()])
        self.last_x = x
        return params - root.times * s.lr

    def root_check_error(self, revealed: Sequence[float]) -> float:
        """The revealed :attr:`root_check` as a health check: above 1 means a wrap-around
        or an element beyond the window (each adds 2)."""
        total, over = revealed
        return abs(total / self.size - 1) / ROOT_CHECK_TOLERANCE + 2 * round(over)

    def reset_root(self) -> None:
        """Forget the warm start (after a rollback): the next step converges from cold."""
        self.inv_root = self.last_x = None

    def shrink_scale(self) -> bool:
        """After a failed root check: keep the moments for gradients :data:`SCALE_STEP`
        times smaller from now on (m and v rescaled, the warm start forgotten). False if
        the scale is at :data:`MIN_GRAD_SCALE` already."""
        if self.grad_scale / SCALE_STEP < MIN_GRAD_SCALE:
            return False
        self.max_scale = self.grad_scale / SCALE_STEP
        self._rescale(self.max_scale)
        return True

    def _rescale(self, scale: float) -> None:
        ratio = scale / self.grad_scale
        if ratio != 1:
            self.m, self.v = self.m * ratio, self.v * ratio**2
            self.grad_scale = scale
            self.reset_root()

    def state(self) -> dict:
        return {
            "m": self.m.share.clone(),
            "v": self.v.share.clone(),
            "inv_root": _share_or_none(self.inv_root),
            "last_x": _share_or_none(self.last_x),
            "t": self.t,
            "grad_scale": self.grad_scale,
        }

    def load(self, state: dict) -> None:
        """Restore :meth:`state`, at the scale it was taken at or the lower one a failed
        check has set since."""
        from_shares = crypten.mpc.MPCTensor.from_shares
        self.m, self.v = from_shares(state["m"]), from_shares(state["v"])
        root, last_x = state["inv_root"], state.get("last_x")
        self.inv_root = None if root is None else from_shares(root)
        self.last_x = None if last_x is None else from_shares(last_x)
        self.t = int(state["t"])
        self.grad_scale = float(state.get("grad_scale", GRAD_SCALE))
        self._rescale(min(self.grad_scale, self.max_scale))


def _share_or_none(value):
    return None if value is None else value.share.clone()


def _ema(average, new, weight: float):
    """``average + weight * (new - average)``: the product is as small as the change, which
    keeps two-party truncation from wrapping (its failure rate grows with the product)."""
    if weight == 1.0:
        return new
    return average + (new - average) * weight


class Root(NamedTuple):
    """``1/sqrt(x)`` by Newton's iteration, with what the health check needs of it."""

    root: object  # MPCTensor: 1/sqrt(x)
    check: object  # MPCTensor: x y^2 of Newton's last step's input, about 1 (see _newton)
    over: object  # 0/1 MPCTensor (CrypTen's scale 1): x above X_MAX, beyond the window
    times: object = None  # MPCTensor: the ``times`` asked for, times the root (else None)


def inverse_sqrt(x, warm=None, over=None, times=None) -> Root:
    """``1/sqrt(x)`` for x in [EPS, X_MAX] by Newton's iteration, from ``warm`` if given.

    Newton's step for 1/sqrt diverges when it starts above sqrt(3/x), which a warm start
    does where x grew more than ~5x since the last step (a gradient that suddenly appears).
    A comparison finds those elements and only their COUNT is revealed; while it is not
    zero, they restart 32x lower (and the vector takes the Newton steps that needs), and
    if some still are unsafe the whole vector starts from :func:`bucket_start`. The first
    comparison also marks the elements above X_MAX (``over``, unless given): none is
    revealed here, their count rides with the root check. ``times``: a tensor whose
    product with the root comes with it (:attr:`Root.times`), in Newton's rounds.
    """
    if warm is not None:
        y0 = warm * WARM_DAMPING
        unsafe, found = _unsafe_starts(x, y0, over is None)
        over = found if over is None else over
        if unsafe is None:
            return _root(_newton(x, y0, WARM_ITERS, times), over)
        # lower, but not to a few units of fixed point, where Newton cannot move
        y0 = y0 + fixed_mask(unsafe) * (RESTART_FLOOR - y0 * (1 - RESTART_LOWER))
        if _unsafe_starts(x, y0)[0] is None:
            return _root(_newton(x, y0, RESTART_ITERS, times), over)
    guess, found = bucket_start(x)
    return _root(_newton(x, guess, BUCKET_ITERS, times), found if over is None else over)


def bucket_start(x):
    """A guess of ``1/sqrt(x)`` within ``BUCKET_BASE^(1/4)``: the root at the geometric
    middle of x's bucket ``[EPS B^k, EPS B^(k+1))``, from one comparison against every
    bucket boundary, and X_MAX; returns the guess and the 0/1 mask of ``x > X_MAX``.

    ``y0 = v_0 + sum_k [x > EPS B^k] (v_k - v_(k-1))``; the 0/1 comparison results are
    integers, so multiplying them by the encoded differences is exact and local. The
    differences are taken between rounded values, so the sum is exactly the encoded v_k.
    Above the last boundary the guess is more than sqrt(3/x) and Newton would diverge
    (to the negative root): such an x is above X_MAX, which the mask reports.
    """
    k = torch.arange(BUCKETS + 1, dtype=torch.float64)
    boundaries = torch.cat([EPS * BUCKET_BASE ** k[1:], torch.tensor([X_MAX])]).float()
    encoded = torch.round((EPS * BUCKET_BASE ** (k + 0.5)) ** -0.5 * FIXED.scale).long()
    steps = torch.cat([encoded[1:] - encoded[:-1], torch.zeros(1, dtype=torch.long)])
    steps = steps.view(-1, *([1] * x.dim()))
    stacked = crypten.stack([x] * (BUCKETS + 1))
    above = (stacked - boundaries.view(-1, *([1] * x.dim()))).gt(0)
    guess = crypten.mpc.MPCTensor.from_shares((above.share * steps).sum(0))
    return guess + float(encoded[0]) / FIXED.scale, above[BUCKETS]


def steady_inverse_sqrt(x, previous_root, previous_x, iters: int, times=None) -> Root:
    """``1/sqrt(x)`` by ``iters`` Newton steps from the previous root, unless some element
    grew more than :data:`SAFE_GROWTH`-fold (only their count is revealed): then
    :func:`inverse_sqrt`. No multiplication is needed for the check; the same comparison
    marks the elements above X_MAX. ``times``: as in :func:`inverse_sqrt`."""
    bits = crypten.stack([x - previous_x * SAFE_GROWTH, x - X_MAX]).gt(0)
    grown, over = bits[0], bits[1]
    if round(float(grown.sum().get_plain_text())) == 0:
        return _root(_newton(x, previous_root, iters, times), over)
    return inverse_sqrt(x, previous_root, over, times)


def _unsafe_starts(x, y0, with_range: bool = False):
    """The 0/1 mask of elements Newton would diverge from, or None if there are none, and
    (``with_range``) the 0/1 mask of ``x > X_MAX`` from the same comparison, else None."""
    # x * y0^2 as (x * y0/8) * (8 y0): precise for a small x, whose y0 may be large, and
    # a smaller first product for a large x (two-party truncation fails more on large ones)
    start = (x * (y0 * (1.0 / START_CHECK_SPLIT))) * (y0 * START_CHECK_SPLIT)
    over = None
    if with_range:
        bits = crypten.stack([start - SAFE_START, x - X_MAX]).gt(0)
        unsafe, over = bits[0], bits[1]
    else:
        unsafe = start.gt(SAFE_START)
    return (None if round(float(unsafe.sum().get_plain_text())) == 0 else unsafe), over


def _root(newton: tuple, over) -> Root:
    root, check, product = newton
    return Root(root, check, over, product)


def _newton(x, y, iters: int, times=None):
    """``iters`` Newton steps for ``1/sqrt(x)`` from ``y``; returns the root, ``x y^2``
    of the last step's input (about 1 where that input was close) and, if ``times`` is
    given, ``times`` times the root (else None).

    ``times y' = (times y) (3 - s) / 2`` for the last step's ``y' = y (3 - s) / 2``: the
    last step multiplies ``[x, times]`` stacked by ``y`` and ``[y, times y]`` by ``(3 - s) /
    2``, one product each (``y`` and ``(3 - s) / 2`` opened once), so ``times`` takes no
    round of its own and opens as many elements as its own product would have."""
    s = product = None
    for i in range(iters):
        last = times is not None and i == iters - 1
        xy = (crypten.stack([x, times]) if last else x) * y
        s = (xy[0] if last else xy) * y  # x*y first: y^2 alone underflows for large x
        half = (3 - s) * 0.5
        y = (crypten.stack([y, xy[1]]) if last else y) * half
        if last:
            y, product = y[0], y[1]
    return y, s, product
