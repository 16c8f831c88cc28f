"""Beaver products with two local products per party instead of CrypTen's three.

For ``z = op(x, y)`` with a triple ``c = op(a, b)`` and opened ``e = x - a``, ``d = y - b``,
CrypTen computes each party's share as ``c + op(e, b) + op(a, d)`` plus ``op(e, d)`` on
party 0: three int64 products (their matmuls dominate a layer's CPU; :mod:`ring`).
Every op here is bilinear over Z/2^64, so party 0 folds the public term into one product,
``op(e, b + d)``, and the others are unchanged. Same result, bit for bit; one product less.

:func:`products` opens the masked operands of several independent products in one round,
where CrypTen spends a round on each (a layer's weight and input gradients, a loss's squares).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from smpc_synth.crypten_backend.compat import import_crypten

crypten = import_crypten()
from crypten.config import cfg  # noqa: E402
from crypten.gradients import _inverse_broadcast  # noqa: E402
from crypten.mpc.primitives import beaver as crypten_beaver  # noqa: E402
from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor  # noqa: E402

from smpc_synth.crypten_backend.arithmetic import rescaled_product  # noqa: E402
from smpc_synth.mpc.primitives import ring  # noqa: E402

# crypten.mpc.primitives.beaver calls this module-level function for every product
PROTOCOL_NAME = "__beaver_protocol"


def _combine(op: str, a, b, c, epsilon, delta, *args, **kwargs):
    """Each party's share of ``op(x, y)`` from its triple shares and the opened
    ``epsilon = x - a``, ``delta = y - b`` (written into ``c``)."""
    b_term = b.share + delta if c.rank == 0 else b.share
    c.share += ring.product(op, epsilon, b_term, *args, **kwargs)
    c.share += ring.product(op, a.share, delta, *args, **kwargs)
    return c


def make_beaver_protocol(original: Callable) -> Callable:
    """A replacement for CrypTen's ``__beaver_protocol`` (``original`` serves active security,
    which checks an extra triple and which we do not use)."""

    def beaver_protocol(op, x, y, *args, **kwargs):
        if cfg.mpc.active_security:
            return original(op, x, y, *args, **kwargs)
        provider = crypten.mpc.get_default_provider()
        fits = getattr(provider, "product_fits", None)
        if not args and fits is not None and not fits(x.size(), y.size(), op, kwargs):
            out = provider.product_size(x.size(), y.size(), op, kwargs)
            return _in_pieces(beaver_protocol, op, x, y, out, provider.max_elements, kwargs)
        # asked for as CrypTen asks (device by keyword): traced tuple caches share its keys
        a, b, c = provider.generate_additive_triple(
            x.size(), y.size(), op, *args, device=x.device, **kwargs
        )
        with crypten_beaver.IgnoreEncodings([a, b, x, y]):
            epsilon, delta = ArithmeticSharedTensor.reveal_batch([x - a, y - b])
        return _combine(op, a, b, c, epsilon, delta, *args, **kwargs)

    return beaver_protocol


# batched inputs of the convolutions: (batch, channels, *signal)
_CONV_DIMS = {"conv1d": 3, "conv2d": 4, "conv_transpose1d": 3, "conv_transpose2d": 4}


def _split_dims(op: str, x: torch.Size, y: torch.Size, out: torch.Size) -> list:
    """For each dimension of ``op(x, y)``'s result ``out``: the dimension of ``x`` and of
    ``y`` that its rows come from (None where an operand is broadcast along it)."""

    def aligned(size: torch.Size, sizes: torch.Size) -> list:  # broadcasting, from the right
        shift = len(sizes) - len(size)
        return [
            d - shift if d >= shift and size[d - shift] != 1 else None for d in range(len(sizes))
        ]

    if op == "mul":
        return list(zip(aligned(x, out), aligned(y, out)))
    if op in _CONV_DIMS:  # a batch splits by samples; an unbatched input cannot be split
        batched = len(x) == _CONV_DIMS[op]
        return [(0, None) if batched else (None, None)] + [(None, None)] * (len(out) - 1)
    # matmul: batch dimensions broadcast; then x's rows and y's columns (a 1-D operand has
    # neither, and the result drops that dimension)
    rows = [(-2, None)] if len(x) > 1 else []
    cols = [(None, -1)] if len(y) > 1 else []
    batch = out[: len(out) - len(rows) - len(cols)]
    x_batch = aligned(x[:-2], batch) if len(x) > 2 else [None] * len(batch)
    y_batch = aligned(y[:-2], batch) if len(y) > 2 else [None] * len(batch)
    return [*zip(x_batch, y_batch), *rows, *cols]


def _in_pieces(protocol: Callable, op: str, x, y, out: torch.Size, limit: int, kwargs: dict):
    """``op(x, y)`` (of size ``out``) of ArithmeticSharedTensors too large for one triple
    from the dealer: the result is cut along one dimension into pieces, each the product of
    the matching slices of the operands (cut again by ``protocol`` if still too large), each
    a Beaver product of its own; the pieces are put together. A round per piece."""
    sizes = {"x": x.size(), "y": y.size()}
    numel = {"out": out.numel(), "x": x.size().numel(), "y": y.size().numel()}
    large = {name for name, n in numel.items() if n > limit}
    dims = _split_dims(op, sizes["x"], sizes["y"], out)
    # the first dimension that cuts every operand too large; else the one that cuts most
    candidates = [
        (len(large & {"out", *(n for n, d in zip("xy", pair) if d is not None)}), -d, d)
        for d, pair in enumerate(dims)
        if out[d] > 1
    ]
    if not candidates or max(candidates)[0] == 0:
        raise ValueError(
            f"{op} of shapes {tuple(sizes['x'])} and {tuple(sizes['y'])} needs a triple of "
            f"more than {limit} elements, and no dimension of it can be split"
        )
    _, _, d = max(candidates)
    pieces = -(-max(numel[name] for name in large) // limit)
    step = -(-out[d] // min(pieces, out[d]))
    results = []
    for start in range(0, out[d], step):
        length = min(step, out[d] - start)
        operands = [
            t if dim is None else _slice(t, dim, start, length) for t, dim in zip((x, y), dims[d])
        ]
        results.append(protocol(op, *operands, **kwargs).share)
    return ArithmeticSharedTensor.from_shares(torch.cat(results, d), precision=0)


def _slice(t, dim: int, start: int, length: int):
    return ArithmeticSharedTensor.from_shares(t.share.narrow(dim, start, length), precision=0)


def _arithmetic(x) -> bool:
    return isinstance(x, crypten.mpc.MPCTensor) and x.ptype == crypten.mpc.arithmetic


def _batchable(op: str, x, y) -> bool:
    if op == "square":
        return _arithmetic(x) and y is None
    return op in ("mul", "matmul") and _arithmetic(x) and _arithmetic(y)


def products(items: Sequence[tuple[str, object, object]], *, exact: bool = False) -> list:
    """Independent products of MPCTensors with every masked operand opened in one round:
    ``("mul", x, y)``, ``("matmul", x, y)`` or ``("square", x, None)`` each give
    ``getattr(x, op)(y)`` (``x.square()``).

    ``exact``: no truncation: each product keeps the scale of its factors' scales
    multiplied (2^32 for two values at CrypTen's 2^16), so it is exact in Z/2^64 and free
    of two-party truncation's rare wrap-around; the caller keeps the magnitudes in range.

    The tuples are asked for in the same order as one product at a time would, so with two
    parties each share is the same, bit for bit (with more, each truncation draws a tuple of
    its own, which now comes after all the products'). Anything else (public operands,
    binary shares, active security, CrypTen's non-Beaver protocols) runs one product at a
    time.
    """
    provider = crypten.mpc.get_default_provider()
    fits = getattr(provider, "product_fits", None)
    batchable = (
        len(items) > 1
        and not cfg.mpc.active_security
        and cfg.mpc.protocol == "beaver"
        and all(_batchable(op, x, y) for op, x, y in items)
        # a product too large for one triple is split (beaver_protocol): one at a time
        and all(
            fits is None or op == "square" or fits(x.size(), y.size(), op, {}) for op, x, y in items
        )
    )
    if not batchable and exact:
        raise ValueError("exact products need shared arithmetic operands and Beaver triples")
    if not batchable:
        return [x.square() if op == "square" else getattr(x, op)(y) for op, x, y in items]
    tuples, masked = [], []
    for op, x, y in items:
        if op == "square":
            r, r2 = provider.square(x.size(), device=x.device)
            tuples.append((r, r2))
            masked.append(x.share - r.share)
        else:
            a, b, c = provider.generate_additive_triple(x.size(), y.size(), op, device=x.device)
            tuples.append((a, b, c))
            masked += [x.share - a.share, y.share - b.share]
    opened = iter(crypten.communicator.get().all_reduce(masked, batched=True))
    results = []
    for (op, x, y), held in zip(items, tuples, strict=True):
        if op == "square":
            r, r2 = held
            epsilon = next(opened)
            share = r2.share + r.share * 2 * epsilon  # CrypTen's r2 + 2 r e (+ e^2 on party 0)
            if r2.rank == 0:
                share += epsilon * epsilon
            y = x
        else:
            share = _combine(op, *held, next(opened), next(opened)).share
        results.append(_exact_product(x, y, share) if exact else _product_like(x, y, share))
    return results


def _exact_product(x, y, share: torch.Tensor):
    """An MPCTensor holding ``share`` of the untruncated product of ``x`` and ``y``."""
    from crypten.encoder import FixedPointEncoder

    bits = round(math.log2(x.encoder.scale)) + round(math.log2(y.encoder.scale))
    result = x.shallow_copy()
    result._tensor = ArithmeticSharedTensor.from_shares(share, precision=bits)
    result._tensor.encoder = FixedPointEncoder(precision_bits=bits)
    return result


@dataclass
class KeptProduct:
    """What a product ``x @ y`` of matrices keeps for its backward pass: the dealer's
    request number for its triple, this party's shares of the masks ``a``, ``b`` and the
    opened ``e = x - a``, ``f = y - b``."""

    number: int
    a: torch.Tensor
    b: torch.Tensor
    e: torch.Tensor
    f: torch.Tensor
    x: Any
    y: Any


def kept_matmul(x, y, provider) -> tuple[Any, KeptProduct]:
    """``x @ y`` of 2-D MPCTensors by a Beaver triple whose masks the dealer keeps, so that
    :func:`kept_matmul_backward` opens only the output gradient.

    CrypTen's backward pass of a product computes ``g y^T`` and ``x^T g`` with two fresh
    triples, opening ``g`` twice, ``x`` and ``y`` again: a linear layer's backward pass
    sends ``2 n out + n in + in out`` words. Reusing ``a`` and ``b`` (each still masks one
    value only: x and y are the same tensors) leaves ``n out``."""
    a, b, c, number = provider.kept_matmul_triple(x.size(), y.size())
    comm = crypten.communicator.get()
    e, f = comm.all_reduce([x.share - a, y.share - b], batched=True)
    share = c + ring.matmul(e, b + f if comm.get_rank() == 0 else b) + ring.matmul(a, f)
    return _product_like(x, y, share), KeptProduct(number, a, b, e, f, x, y)


def kept_matmul_backward(kept: KeptProduct, grad, provider, *, weight: bool, input: bool):
    """``(g^T x if weight, g y^T if input)`` for the output gradient ``g`` of the kept
    product ``x @ y``, each None where not asked: one round, opening ``h = g - d`` only.

    With ``x = a + e``, ``y = b + f``, ``g = d + h``: ``g^T x = d^T a + d^T e + h^T x``
    and ``g y^T = d b^T + d f^T + h y^T``; the dealer supplies ``d^T a`` and ``d b^T``,
    and party 0 alone adds the public ``e`` and ``f`` into ``a`` and ``b``."""
    d, dt_a, d_bt = provider.backward_material(
        kept.number, kept.a.size(), kept.b.size(), weight, input
    )
    comm = crypten.communicator.get()
    h = comm.all_reduce(grad.share - d)
    first = comm.get_rank() == 0
    d_weight = d_input = None
    if weight:  # g^T x, (out, in) like the weight it is the gradient of
        x_term = kept.a + kept.e if first else kept.a
        share = dt_a + ring.matmul(d.t(), kept.e) + ring.matmul(h.t(), x_term)
        d_weight = _product_like(grad, kept.x, share)
    if input:
        y_term = kept.b + kept.f if first else kept.b
        share = d_bt + ring.matmul(d, kept.f.t()) + ring.matmul(h, y_term.t())
        d_input = _product_like(grad, kept.y, share)
    return d_weight, d_input


def _product_like(x, y, share: torch.Tensor):
    """An MPCTensor like ``x`` holding ``share`` of a product of ``x`` and ``y``, rescaled
    as CrypTen's product would be."""
    result = x.shallow_copy()
    result._tensor = rescaled_product(x._tensor, y._tensor, share)
    return result


def _gradients(wanted: dict[str, tuple], input, other) -> tuple:
    """CrypTen's backward result ``(d input, d other)`` from ``{name: (op, x, y)}`` (two
    shared products in one round; a product by a public factor is local), None for a
    gradient not wanted."""
    grads = dict(zip(wanted, products(list(wanted.values())), strict=True))
    return tuple(
        _inverse_broadcast(grads[name], saved.size()) if name in grads else None
        for name, saved in (("input", input), ("other", other))
    )


def _needs_grad(value) -> bool:
    return isinstance(value, crypten.CrypTensor) and value.requires_grad


def make_matmul_backward(original: staticmethod) -> staticmethod:
    """``backward`` for CrypTen's autograd matmul (``crypten.nn.Linear``): the input and the
    weight gradients in one round (CrypTen: a round each), and no gradient for an operand
    that needs none (CrypTen computes the data's too, and drops it)."""

    def backward(ctx, grad_output):
        input, other = ctx.saved_tensors
        if input.dim() < 2 or other.dim() < 2 or not _arithmetic(grad_output):
            return original.__func__(ctx, grad_output)
        wanted = {}
        if _needs_grad(input):
            wanted["input"] = ("matmul", grad_output, other.transpose(-2, -1))
        if _needs_grad(other):
            wanted["other"] = ("matmul", input.transpose(-2, -1), grad_output)
        return _gradients(wanted, input, other)

    return staticmethod(backward)


def make_mul_backward(original: staticmethod) -> staticmethod:
    """``backward`` for CrypTen's autograd elementwise product: both gradients in one round,
    and none for an operand that needs none. CrypTen multiplies the gradient by the input
    even when the other factor is public (``crypten.nn.Gemm`` scales by a public alpha and
    beta), a Beaver product whose result it drops."""

    def backward(ctx, grad_output):
        input, other = ctx.saved_tensors
        if not _arithmetic(grad_output):
            return original.__func__(ctx, grad_output)
        wanted = {}
        if _needs_grad(input):
            wanted["input"] = ("mul", grad_output, other)
        if _needs_grad(other):
            wanted["other"] = ("mul", grad_output, input)
        return _gradients(wanted, input, other)

    return staticmethod(backward)
