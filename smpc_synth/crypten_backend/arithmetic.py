"""CrypTen's arithmetic on shares without its defensive copies.

``ArithmeticSharedTensor._arithmetic_function`` starts every out-of-place op by cloning
``self`` and then replaces the clone's share with a freshly computed tensor, so the copy is
thrown away; ``square`` and ``mul`` by an int do the same: about 580 copies a VAE training
step, some 40 ms of a party's time in a profile. These replacements compute the same shares
bit for bit into new tensors and copy nothing; every case they do not cover (in-place ops,
operands of different precision, a public addend on a party other than 0, whose share
CrypTen returns as a broadcast view of the copy) goes to CrypTen's own code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from smpc_synth.crypten_backend.compat import import_crypten

crypten = import_crypten()
from crypten.config import cfg  # noqa: E402
from crypten.mpc.primitives import beaver as crypten_beaver  # noqa: E402
from crypten.mpc.primitives.arithmetic import SENTINEL, ArithmeticSharedTensor  # noqa: E402

_ADDITIVE = frozenset({"add", "sub"})
_PRODUCTS = frozenset({"mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"})


def _wrap(share: torch.Tensor, encoder) -> ArithmeticSharedTensor:
    result = ArithmeticSharedTensor(src=SENTINEL)
    result.encoder = encoder
    result._tensor = share
    return result


def rescaled_product(
    x: ArithmeticSharedTensor, y: ArithmeticSharedTensor, share: torch.Tensor
) -> ArithmeticSharedTensor:
    """The product's share as a tensor in fixed point, as CrypTen encodes it: truncated once
    if both factors were scaled; a factor of scale 1 (a 0/1 bit, an integer) keeps the
    other's encoding."""
    encoder = x.encoder
    result = _wrap(share, encoder)
    if encoder.scale > 1 and y.encoder.scale > 1:
        return result.div_(encoder.scale)
    if encoder.scale <= 1:
        result.encoder = y.encoder
    return result


def _protocol():
    # CrypTen looks its protocol module up by name on every product (cfg.mpc.protocol)
    return crypten_beaver if cfg.mpc.protocol == "beaver" else None


def make_arithmetic_function(original: Callable) -> Callable:
    """A replacement for ``ArithmeticSharedTensor._arithmetic_function``."""

    def _arithmetic_function(self, y, op, inplace=False, *args, **kwargs):
        if inplace or (op not in _ADDITIVE and op not in _PRODUCTS):
            return original(self, y, op, inplace, *args, **kwargs)
        encoder = self.encoder
        if isinstance(y, ArithmeticSharedTensor):
            if op in _ADDITIVE:
                if encoder.scale != y.encoder.scale:
                    return original(self, y, op, inplace, *args, **kwargs)
                return _wrap(getattr(self.share, op)(y.share), encoder)
            protocol = _protocol()
            if protocol is None:
                return original(self, y, op, inplace, *args, **kwargs)
            return rescaled_product(self, y, getattr(protocol, op)(self, y, *args, **kwargs).share)
        if not (isinstance(y, int | float) or torch.is_tensor(y)):
            return original(self, y, op, inplace, *args, **kwargs)
        if op in _ADDITIVE:
            if self.rank != 0:  # CrypTen's share is then a broadcast view of its copy
                return original(self, y, op, inplace, *args, **kwargs)
            return _wrap(getattr(self.share, op)(encoder.encode(y, device=self.device)), encoder)
        public = encoder.encode(y, device=self.device)
        result = _wrap(getattr(torch, op)(self.share, public, *args, **kwargs), encoder)
        return result.div_(encoder.scale) if encoder.scale > 1 else result

    return _arithmetic_function


def make_square(original: Callable) -> Callable:
    """A replacement for ``ArithmeticSharedTensor.square`` (CrypTen: clone, then square_)."""

    def square(self):
        protocol = _protocol()
        if protocol is None:
            return original(self)
        return _wrap(protocol.square(self).share, self.encoder).div_(self.encoder.scale)

    return square


def make_mul(original: Callable) -> Callable:
    """A replacement for ``ArithmeticSharedTensor.mul`` (CrypTen clones before an int
    product, which makes a new tensor anyway)."""

    def mul(self, y):
        if isinstance(y, int):
            return _wrap(self.share * y, self.encoder)
        return self._arithmetic_function(y, "mul")

    return mul
