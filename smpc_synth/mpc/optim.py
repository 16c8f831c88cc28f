"""Adam for a secret-shared flat parameter vector (CrypTen has none: issue #405).

The whole model is one tensor, so a step costs a fixed handful of rounds however many layers
there are, and there is no gradient clipping (CrypTen's ``update_parameters`` clips by
default, which squares, compares and multiplies every parameter: 60 of its 91 rounds).

Fixed point has 16 fractional bits, too coarse for squared gradients (1e-3 squared is below
one unit), so the moments are kept for gradients scaled by the public ``GRAD_SCALE``; Adam is
invariant to that scale except for ``eps``, which is therefore interpreted in scaled units.
Two-party truncation fails (wraps around) with a probability proportional to the magnitude of
a product, about value / 2^31 per element, so every product here is kept small: moments
are updated as ``avg + c * (new - avg)`` and Newton multiplies ``x * y`` before ``y``.
``1/sqrt(v)`` is Newton's iteration warm-started from the previous step's value (see
:func:`inverse_sqrt`); the first step, and any reset by the guard, converges from cold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from smpc_synth.mpc.compat import import_crypten
from smpc_synth.mpc.nn import fixed_mask

crypten = import_crypten()

GRAD_SCALE = 32  # public integer: moments are kept for gradient * GRAD_SCALE
EPS = 4e-4  # floor of the scaled second moment (26 units of fixed point): Adam eps ~6e-4
WARM_DAMPING = 0.75  # the warm start passes SAFE_START only if x grew more than 3.2x
# (how much lower unsafe elements restart (None: cold), Newton steps from the previous start)
RESTARTS = ((1 / 32, 3), (None, 11))  # 3 from the warm start, 11 after a 32x lower restart
SAFE_START = 1.8  # Newton converges from y0 iff x * y0^2 < 3; this also converges in 3 steps
START_CHECK_SPLIT = 8
# 1/sqrt(x) must stay well above fixed point's unit (Newton is unstable a few units from 0):
X_MAX = 1e7  # largest scaled second moment handled: |gradient| < 100
COLD_START = X_MAX**-0.5  # below every root, so Newton converges (it grows 1.5x per step)
# from COLD_START up to 1/sqrt(EPS) at 1.5x per step, plus a few to converge
COLD_ITERS = math.ceil(math.log(math.sqrt(X_MAX / EPS), 1.5)) + 3


@dataclass
class AdamSettings:
    """The plaintext optimizer's hyperparameters (torch.optim.Adam semantics)."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0


class SharedAdam:
    """Adam on one flat MPCTensor of parameters."""

    def __init__(self, settings: AdamSettings, size: int):
        self.s = settings
        zeros = torch.zeros(size)
        self.m = crypten.cryptensor(zeros, src=0)
        self.v = crypten.cryptensor(zeros, src=0)
        self.inv_root = None  # last 1/sqrt(v_hat + EPS); None: converge from cold
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
        g = grad * GRAD_SCALE
        if s.weight_decay:
            g = g + params * (s.weight_decay * GRAD_SCALE)
        self.m = _ema(self.m, g, c1)
        self.v = _ema(self.v, g.square(), c2)
        self.inv_root = inverse_sqrt(self.v + EPS, self.inv_root)
        return params - (self.m * self.inv_root) * s.lr

    def reset_root(self) -> None:
        """Forget the warm start (after a rollback): the next step converges from cold."""
        self.inv_root = None

    def state(self) -> dict:
        return {
            "m": self.m.share.clone(),
            "v": self.v.share.clone(),
            "inv_root": None if self.inv_root is None else self.inv_root.share.clone(),
            "t": self.t,
        }

    def load(self, state: dict) -> None:
        from_shares = crypten.mpc.MPCTensor.from_shares
        self.m, self.v = from_shares(state["m"]), from_shares(state["v"])
        root = state["inv_root"]
        self.inv_root = None if root is None else from_shares(root)
        self.t = int(state["t"])


def _ema(average, new, weight: float):
    """``average + weight * (new - average)``: the product is as small as the change, which
    keeps two-party truncation from wrapping (its failure rate grows with the product)."""
    if weight == 1.0:
        return new
    return average + (new - average) * weight


def inverse_sqrt(x, warm=None):
    """``1/sqrt(x)`` for x in [EPS, X_MAX] by Newton's iteration, from ``warm`` if given.

    Newton's step for 1/sqrt diverges when it starts above sqrt(3/x), which a warm start
    does where x grew more than ~5x since the last step (a gradient that suddenly appears).
    A comparison finds those elements and only their COUNT is revealed; while it is not
    zero, they restart lower (by 32x, then from cold), and the whole vector takes the
    number of Newton steps the lowest start needs.
    """
    if warm is None:
        return _newton(x, _cold(x), COLD_ITERS)
    y0 = warm * WARM_DAMPING
    for lower, iters in RESTARTS:
        unsafe = _unsafe_starts(x, y0)
        if unsafe is None:
            return _newton(x, y0, iters)
        if lower is None:
            y0 = y0 + unsafe * (_cold(x) - y0)
        else:  # lower, but not below half the cold start (a few units of fixed point)
            y0 = y0 + fixed_mask(unsafe) * (COLD_START / 2 - y0 * (1 - lower))
    return _newton(x, y0, COLD_ITERS)


def _unsafe_starts(x, y0):
    """The 0/1 mask of elements Newton would diverge from, or None if there are none."""
    # x * y0^2 as (x * y0/8) * (8 y0): precise for a small x, whose y0 may be large, and
    # a smaller first product for a large x (two-party truncation fails more on large ones)
    start = (x * (y0 * (1.0 / START_CHECK_SPLIT))) * (y0 * START_CHECK_SPLIT)
    unsafe = start.gt(SAFE_START)
    return None if round(float(unsafe.sum().get_plain_text())) == 0 else unsafe


def _cold(x):
    return x.new(torch.full(tuple(x.size()), COLD_START))


def _newton(x, y, iters: int):
    for _ in range(iters):
        y = y * (3 - (x * y) * y) * 0.5  # x*y first: y^2 alone underflows for large x
    return y
