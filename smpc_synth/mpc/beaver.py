"""Beaver products with two local products per party instead of CrypTen's three.

For ``z = op(x, y)`` with a triple ``c = op(a, b)`` and opened ``e = x - a``, ``d = y - b``,
CrypTen computes each party's share as ``c + op(e, b) + op(a, d)`` plus ``op(e, d)`` on
party 0: three int64 products (int64 matmul has no BLAS, so these dominate a layer's CPU).
Every op here is bilinear over Z/2^64, so party 0 folds the public term into one product,
``op(e, b + d)``, and the others are unchanged. Same result, bit for bit; one product less.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from smpc_synth.mpc.compat import import_crypten

crypten = import_crypten()
from crypten.config import cfg  # noqa: E402
from crypten.mpc.primitives import beaver as crypten_beaver  # noqa: E402
from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor  # noqa: E402

# crypten.mpc.primitives.beaver calls this module-level function for every product
PROTOCOL_NAME = "__beaver_protocol"


def make_beaver_protocol(original: Callable) -> Callable:
    """A replacement for CrypTen's ``__beaver_protocol`` (``original`` serves active security,
    which checks an extra triple and which we do not use)."""

    def beaver_protocol(op, x, y, *args, **kwargs):
        if cfg.mpc.active_security:
            return original(op, x, y, *args, **kwargs)
        provider = crypten.mpc.get_default_provider()
        a, b, c = provider.generate_additive_triple(x.size(), y.size(), op, None, *args, **kwargs)
        with crypten_beaver.IgnoreEncodings([a, b, x, y]):
            epsilon, delta = ArithmeticSharedTensor.reveal_batch([x - a, y - b])
        product = getattr(torch, op)
        b_term = b.share + delta if c.rank == 0 else b.share
        c.share += product(epsilon, b_term, *args, **kwargs)
        c.share += product(a.share, delta, *args, **kwargs)
        return c

    return beaver_protocol
