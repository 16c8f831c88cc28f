"""Secure comparison with the dealer: the sign bits of a shared tensor in 4 rounds.

CrypTen's ``_ltz`` converts the whole 64-bit share to binary and runs a carry adder over it:
8 rounds and about 216 bytes sent per element. Here the dealer hands out a random ``r``
together with XOR shares of its bits (and of products of those bits), so, for a comparison
``width`` bits wide (``|x| < 2^(width-1)``; at 64 every int64 qualifies):

1. the parties open ``c = x + K + r`` with ``K = 2^(width-1)`` (8 bytes; uniformly random,
   so it shows nothing). ``y = x + K`` lies in ``[0, 2^width)``, and ``x < 0`` is
   ``y < K``, the complement of bit ``width-1`` of ``y = (c - r) mod 2^width``, i.e. of
   ``c ^ r ^ borrow`` at that bit, where ``borrow`` is ``c mod 2^(width-1) < r mod
   2^(width-1)`` for public ``c`` and shared bits of ``r``. That comparison is a prefix
   combination of per-bit (generate, propagate) pairs. The first level of the tree (groups
   of 4 bits) is a polynomial in ``r``'s bits with public coefficients, so with the
   dealer's products of ``r``'s bits it costs no communication; the two levels above
   (groups of 4, then the ``width / 16`` groups left) each cost one round of a Beaver
   product of up to 4 inputs;
2. the XOR-shared bit ``b`` becomes arithmetic, and is multiplied into tensors: ``e = b ^
   rho`` is opened for a dealer bit ``rho`` (``b = e + (1 - 2e) rho``). ``x * b`` itself
   (``times_x``: a ReLU, ``|x|``) costs nothing more: ``c - K = x + r`` is already open, so
   ``-r`` serves as its Beaver mask and the dealer supplies ``r * rho``. A later product
   ``y * b`` (a ReLU's backward pass) opens ``y - a`` for a fresh ``a``: 8 bytes and one
   round.

About 12.5 bytes per element are sent for the sign at width 64 (8 for ``c``), against
CrypTen's 216, and 8 per later product. Everything is exact for every value within the
width: 64 bits for CrypTen's ``_ltz`` and ``relu``, whose callers assume nothing;
:data:`ACTIVATION_BITS` for activations and logits, which halves the dealer's bit material
and the binary work. The protocol works for any number of parties. Bits of 64 elements are
packed in one int64 word ("bit-sliced"), so the binary work is a few hundred word
operations per 64 elements.

Only used with the dealer provider; CrypTen's own providers keep CrypTen's ``_ltz``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
import torch

from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.mpc.primitives.prg import Stream

crypten = import_crypten()
from torch.distributed import ReduceOp  # noqa: E402

BITS = 64
# Activations and logits compared at this width: exact while |x| < 2^31 ring units, i.e.
# |value| < 2^15 = 32,768 in CrypTen's 16-bit fixed point (a network's pre-activations are
# a few units; a value that large has already blown the loss up, which the guard catches)
ACTIVATION_BITS = 32
WIDTHS = (32, 48, 64)  # a multiple of 16: groups of 4 bits, combined 4 at a time
GROUP = 4  # positions combined per tree node
# products with one comparison's bits (a ReLU uses 2: x * b and its backward; the VAE's
# tanh_and_exp 3: |x|, then t's and std's signs)
MAX_PRODUCTS = 3
# Elements of one comparison request: the dealer serves at most MAX_TUPLE_ELEMENTS / 8
MAX_COUNT = 1 << 22


@dataclass(frozen=True)
class Level:
    """One Beaver combination level of ``inputs`` (generate, propagate) pairs: which variables
    are opened, which mask products the dealer provides (every subset of two or more
    variables of a monomial). Variables: generate bits ``0 .. inputs-1``, propagate bits
    ``inputs .. 2 inputs-1``, index ``inputs-1`` the most significant. The combined pair is
    ``G = G_k ^ P_k G_(k-1) ^ P_k P_(k-1) G_(k-2) ^ ...`` (XOR, not OR: at most one term is
    1, the one of the highest differing position) and ``P = P_k ... P_0``."""

    inputs: int
    with_propagate: bool

    @cached_property
    def g_monomials(self) -> tuple[tuple[int, ...], ...]:
        """The non-linear terms of ``G`` (its linear term is the top generate bit)."""
        k = self.inputs
        # P_(k-1) ... P_(k-j) G_(k-1-j) for j = 1 .. k-1
        return tuple((*range(2 * k - 1, 2 * k - 1 - j, -1), k - 1 - j) for j in range(1, k))

    @cached_property
    def p_monomial(self) -> tuple[int, ...]:
        return tuple(self.inputs + i for i in range(self.inputs - 1, -1, -1))

    @cached_property
    def monomials(self) -> tuple[tuple[int, ...], ...]:
        return self.g_monomials + ((self.p_monomial,) if self.with_propagate else ())

    @cached_property
    def opened(self) -> tuple[int, ...]:
        return tuple(sorted({v for m in self.monomials for v in m}))

    @cached_property
    def subsets(self) -> tuple[frozenset[int], ...]:
        found: set[frozenset[int]] = set()
        for monomial in self.monomials:
            for k in range(2, len(monomial) + 1):
                found.update(frozenset(s) for s in itertools.combinations(monomial, k))
        return tuple(sorted(found, key=lambda s: (len(s), sorted(s))))


MIDDLE = Level(GROUP, with_propagate=True)  # groups of 4 groups
TOP = Level(GROUP, with_propagate=False)  # the last 4 groups at width 64 (only the borrow)
SUBSETS = tuple(range(1, 2**GROUP))  # non-empty subsets of a group's 4 positions, as masks


@cache  # every comparison asks, on both sides: plan each width once
def top_level(width: int) -> Level:
    """The last level at ``width``: the ``width / 16`` groups the middle level leaves."""
    return Level(width // (GROUP * GROUP), with_propagate=False)


def check_width(width: int) -> int:
    if width not in WIDTHS:
        raise ValueError(f"comparison width must be one of {WIDTHS}, got {width!r}")
    return width


def offset(width: int) -> int:
    """``K = 2^(width-1)`` as an int64 (mod 2^64: -2^63 at width 64)."""
    return (1 << (width - 1)) if width < BITS else -(1 << (BITS - 1))


# --- bit slicing -------------------------------------------------------------------------------


def words(count: int) -> int:
    """int64 words holding one bit of ``count`` elements."""
    return (count + 63) // 64


# masks of the low half of each 2j-bit field, for the 64x64 bit-matrix transpose
_TRANSPOSE_MASKS = {
    32: 0x00000000FFFFFFFF,
    16: 0x0000FFFF0000FFFF,
    8: 0x00FF00FF00FF00FF,
    4: 0x0F0F0F0F0F0F0F0F,
    2: 0x3333333333333333,
    1: 0x5555555555555555,
}


def bitslice(values: torch.Tensor, rows: int = 64) -> torch.Tensor:
    """(n,) int64 -> (64, words(n)) int64: bit j of element i is bit i%64 of word [j, i//64].
    With ``rows <= 32``, only bits 0..31: (32, words(n)), for half the work.

    Each block of 64 elements is a 64x64 bit matrix, transposed by six rounds of masked
    swaps (Hacker's Delight, 7-3) for all blocks at once. After the first round the low and
    high 32 bits are apart, so the low half alone needs only half of the later rounds.
    """
    n = values.numel()
    blocks = np.zeros((words(n), 64), dtype=np.uint64)
    blocks.reshape(-1)[:n] = values.reshape(-1).numpy().view(np.uint64)
    if rows <= 32:
        low, high, j = blocks[:, :32], blocks[:, 32:], np.uint64(32)
        blocks = low ^ ((((low >> j) ^ high) & np.uint64(_TRANSPOSE_MASKS[32])) << j)
    size = blocks.shape[1]
    for j, mask in _TRANSPOSE_MASKS.items():
        if 2 * j > size:
            continue
        pairs = blocks.reshape(-1, size // (2 * j), 2, j)
        low, high = pairs[:, :, 0, :], pairs[:, :, 1, :]  # views: updated in place
        swap = ((low >> np.uint64(j)) ^ high) & np.uint64(mask)
        low ^= swap << np.uint64(j)
        high ^= swap
    return torch.from_numpy(np.ascontiguousarray(blocks.T).view(np.int64))


def unslice(row: torch.Tensor, count: int) -> torch.Tensor:
    """(words,) int64 of packed bits -> (count,) int64 of 0/1."""
    bits = np.unpackbits(row.contiguous().numpy().view(np.uint8), bitorder="little")
    return torch.from_numpy(bits[:count].astype(np.int64))


def _ones_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, -1)


# --- the dealer's material ----------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Field shapes of one comparison's material for ``count`` elements: ``width`` bits wide,
    with ``x * b`` (``times_x``) and ``later`` products of other tensors with the bits."""

    count: int
    later: int = 0
    width: int = BITS
    times_x: bool = False

    def __post_init__(self) -> None:
        check_width(self.width)
        if self.later < 0 or self.later + self.times_x > MAX_PRODUCTS:
            raise ValueError(f"at most {MAX_PRODUCTS} products per comparison")

    @property
    def low_groups(self) -> int:
        return self.width // GROUP

    @property
    def free(self) -> list[tuple[str, tuple[int, ...]]]:
        """Fields every party draws from its own PRG stream (no correction needed)."""
        w = words(self.count)
        return [
            ("r", (self.count,)),
            ("mask_middle", (self.low_groups // GROUP, len(MIDDLE.opened), w)),
            ("mask_top", (1, len(top_level(self.width).opened), w)),
            ("rho", (w,)),
            ("a", (self.later, self.count)),
        ]

    @property
    def correlated(self) -> list[tuple[str, tuple[int, ...]]]:
        """Fields whose value the dealer fixes: party 0's share comes from the dealer."""
        w = words(self.count)
        return [
            ("r_bits", (self.low_groups, len(SUBSETS), w)),  # products of r's bits per group
            ("r_top", (w,)),  # bit width-1 of r
            ("products_middle", (self.low_groups // GROUP, len(MIDDLE.subsets), w)),
            ("products_top", (1, len(top_level(self.width).subsets), w)),
            ("rho_arith", (self.count,)),
            ("r_rho", (int(self.times_x), self.count)),
            ("a_rho", (self.later, self.count)),
        ]

    @property
    def correlated_size(self) -> int:
        return sum(int(np.prod(shape)) for _, shape in self.correlated)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of the correlated fields in ``flat`` (views: a later fill shows through)."""
        pieces = flat.split([int(np.prod(s)) for _, s in self.correlated])
        return {name: p.view(shape) for (name, shape), p in zip(self.correlated, pieces)}

    def request(self) -> list[int]:
        """The arguments of the dealer's "compare" request; :meth:`from_request` inverts it."""
        return [self.count, self.later, self.width, int(self.times_x)]

    @classmethod
    def from_request(cls, args: list, max_count: int) -> Layout:
        """The layout party 0 asked for, checked (a ValueError names what is wrong)."""
        if len(args) != 4 or not all(type(a) is int for a in args):
            raise ValueError(f"unexpected comparison arguments {args!r}")
        count, later, width, times_x = args
        if not 0 < count <= max_count:
            raise ValueError(f"unexpected comparison size {count!r}")
        if times_x not in (0, 1):
            raise ValueError(f"unexpected times_x {times_x!r}")
        return cls(count, later, width, bool(times_x))


def draw_free(layout: Layout, stream: Stream) -> dict[str, torch.Tensor]:
    return {name: stream.ring(shape) for name, shape in layout.free}


def draw_correlated(layout: Layout, stream: Stream) -> torch.Tensor:
    """A non-first party's share of the correlated fields (one flat draw, as the dealer's)."""
    return stream.ring((layout.correlated_size,))


def _and_all(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """A new tensor: the AND of ``rows`` (callers update it in place)."""
    if len(rows) == 1:
        return rows[0].clone()
    out = rows[0] & rows[1]
    for row in rows[2:]:
        out &= row
    return out


def _xor_all(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """A new tensor: the XOR of ``tensors`` (callers update it in place)."""
    if len(tensors) == 1:
        return tensors[0].clone()
    out = tensors[0] ^ tensors[1]
    for t in tensors[2:]:
        out ^= t
    return out


def _mask_products(masks: torch.Tensor, level: Level) -> torch.Tensor:
    """(..., opened, w) mask values -> (..., subsets, w): AND of each needed subset."""
    index = {v: i for i, v in enumerate(level.opened)}
    return torch.stack(
        [_and_all([masks[..., index[v], :] for v in sorted(s)]) for s in level.subsets], dim=-2
    )


def deal(streams: Sequence[Stream], layout: Layout) -> torch.Tensor:
    """The dealer: party 0's share of the correlated fields, for parties whose PRG streams
    are ``streams`` (in rank order)."""
    free = [draw_free(layout, s) for s in streams]
    others = [layout.split(draw_correlated(layout, s)) for s in streams[1:]]

    def summed(name: str) -> torch.Tensor:
        return torch.stack([f[name] for f in free]).sum(0)  # int64 wraps: mod 2^64

    def xored(name: str) -> torch.Tensor:
        return _xor_all([f[name] for f in free])

    width = layout.width
    r = summed("r")
    bits = bitslice(r, width)[:width]  # (width, w)
    low = bits.clone()
    low[width - 1] = 0  # the top bit is padding in the low comparison
    grouped = low.view(layout.low_groups, GROUP, -1)
    r_bits = torch.stack(
        [_and_all([grouped[:, i] for i in range(GROUP) if s >> i & 1]) for s in SUBSETS], dim=1
    )
    rho = unslice(xored("rho"), layout.count)
    value = {
        "r_bits": r_bits,
        "r_top": bits[width - 1],
        "products_middle": _mask_products(xored("mask_middle"), MIDDLE),
        "products_top": _mask_products(xored("mask_top"), top_level(width)),
        "rho_arith": rho,
        "r_rho": (r * rho).unsqueeze(0) if layout.times_x else r.new_empty(0, layout.count),
        "a_rho": summed("a") * rho,
    }
    binary = {"r_bits", "r_top", "products_middle", "products_top"}
    shares = []
    for name, _shape in layout.correlated:
        parts = [o[name] for o in others]
        if name in binary:
            shares.append(_xor_all([value[name], *parts]) if parts else value[name])
        else:
            shares.append(value[name] - sum(parts) if parts else value[name])
    return torch.cat([s.reshape(-1) for s in shares])


# --- the protocol -------------------------------------------------------------------------------


class _Comm:
    """The two kinds of opening the protocol needs, over CrypTen's communicator."""

    def __init__(self, comm=None) -> None:
        self.comm = comm or crypten.communicator.get()
        self.rank = self.comm.get_rank()

    def open_xor(self, share: torch.Tensor) -> torch.Tensor:
        return self.comm.all_reduce(share, op=ReduceOp.BXOR)

    def open_sum(self, share: torch.Tensor) -> torch.Tensor:
        return self.comm.all_reduce(share, op=ReduceOp.SUM)

    def public(self, value: torch.Tensor) -> torch.Tensor:
        """A public value as shares: party 0 holds it, the others zeros (right for XOR and
        for additive sharing alike)."""
        return value if self.rank == 0 else torch.zeros_like(value)


def _low_level(c_bits: torch.Tensor, r_bits: torch.Tensor, comm: _Comm):
    """Level 1 (no communication): (generate, propagate) shares of each group of 4 bits.

    Per bit, with public ``p = not c_i`` and shared ``r_i``: ``G_i = p r_i`` (c_i < r_i) and
    ``P_i = r_i ^ p`` (c_i == r_i). The group's pair is a polynomial in r's bits whose
    coefficients are public words; the dealer's ``r_bits`` holds shares of every product.
    """
    p = ~c_bits
    p[-1] = -1  # the top position is padding: equal (r's bit is 0 there too)
    p = p.view(-1, GROUP, p.size(-1))

    def times_p(poly: dict[int, torch.Tensor], i: int) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        for subset, coef in poly.items():  # (r_i ^ p_i) * term
            for key, value in ((subset | 1 << i, coef), (subset, coef & p[:, i])):
                out[key] = out[key] ^ value if key in out else value
        return out

    def times_g(poly: dict[int, torch.Tensor], i: int) -> dict[int, torch.Tensor]:
        return {subset | 1 << i: coef & p[:, i] for subset, coef in poly.items()}

    def evaluate(poly: dict[int, torch.Tensor]) -> torch.Tensor:
        out = torch.zeros_like(p[:, 0])
        for subset, coef in poly.items():
            out ^= comm.public(coef) if subset == 0 else coef & r_bits[:, subset - 1]
        return out

    one = {0: _ones_like(p[:, 0])}
    generate: dict[int, torch.Tensor] = {}
    for top in range(GROUP - 1, -1, -1):  # G_top * P_{top+1} * ... * P_3
        term = one
        for i in range(GROUP - 1, top, -1):
            term = times_p(term, i)
        for subset, coef in times_g(term, top).items():
            generate[subset] = generate[subset] ^ coef if subset in generate else coef
    propagate = one
    for i in range(GROUP - 1, -1, -1):
        propagate = times_p(propagate, i)
    return evaluate(generate), evaluate(propagate)


def _combine(g: torch.Tensor, p: torch.Tensor, level: Level, masks, products, comm: _Comm):
    """One round: (groups*k, w) pairs -> (groups, w) pairs by k-input Beaver products."""
    k = level.inputs
    groups = g.size(0) // k
    variables = torch.cat([g.view(groups, k, -1), p.view(groups, k, -1)], dim=1)
    index = {v: i for i, v in enumerate(level.opened)}
    eps = comm.open_xor(variables[:, list(level.opened)] ^ masks)
    subset_index = {s: i for i, s in enumerate(level.subsets)}

    def monomial(vs: tuple[int, ...]) -> torch.Tensor:
        out = comm.public(_and_all([eps[:, index[v]] for v in vs]))
        for k in range(1, len(vs) + 1):
            for chosen in itertools.combinations(vs, k):
                rest = [eps[:, index[v]] for v in vs if v not in chosen]
                if k == 1:
                    mask = masks[:, index[chosen[0]]]
                else:
                    mask = products[:, subset_index[frozenset(chosen)]]
                out ^= _and_all([mask, *rest]) if rest else mask
        return out

    g_out = variables[:, k - 1] ^ _xor_all([monomial(m) for m in level.g_monomials])
    p_out = monomial(level.p_monomial) if level.with_propagate else None
    return g_out, p_out


class SignBits:
    """The bits ``b = [x < 0]`` of a shared tensor, held as a public ``e`` and a dealer bit
    ``rho`` (``b = e ^ rho``), with the dealer's prepared products still unused."""

    def __init__(self, e: torch.Tensor, rho: torch.Tensor, prepared: list, comm: _Comm):
        self.e, self.rho, self.prepared, self.comm = e, rho, prepared, comm

    @classmethod
    def joined(cls, pieces: Sequence[SignBits]) -> SignBits:
        """The bits of a tensor compared in ``pieces`` (flat, in order; every share the
        dealer owed them has been settled), with their prepared products joined too."""
        prepared = [
            (torch.cat([a for a, _ in column]), torch.cat([a_rho for _, a_rho in column]))
            for column in zip(*(piece.prepared for piece in pieces))
        ]
        e = torch.cat([piece.e for piece in pieces])
        rho = torch.cat([piece.rho for piece in pieces])
        return cls(e, rho, prepared, pieces[0].comm)

    def arithmetic(self) -> torch.Tensor:
        """Additive shares of ``b`` (no communication)."""
        return self.comm.public(self.e) + (1 - 2 * self.e) * self.rho

    def product(self, delta: torch.Tensor, a: torch.Tensor, a_rho: torch.Tensor):
        """Shares of ``y * b`` from the opened ``delta = y - a``: with ``b = e + (1-2e) rho``,
        ``y * b = e y + (1-2e) (delta rho + a rho)``, and ``e y`` is local (``e`` is public)."""
        y = self.comm.public(delta) + a
        return self.e * y + (1 - 2 * self.e) * (delta * self.rho + a_rho)

    def times(self, y_share: torch.Tensor) -> torch.Tensor:
        """Shares of ``y * b`` for shares of ``y`` (same number of elements): one round."""
        return self.times_each([y_share])[0]

    def times_each(self, y_shares: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Shares of ``y * b`` for each of ``y_shares`` (each as many elements as the bits),
        a prepared product each, all opened in one round."""
        if len(self.prepared) < len(y_shares):
            raise RuntimeError("no prepared product left for these sign bits")
        prepared = [self.prepared.pop(0) for _ in y_shares]
        opened = torch.cat([y.reshape(-1) - a for y, (a, _) in zip(y_shares, prepared)])
        deltas = self.comm.open_sum(opened).split([a.numel() for a, _ in prepared])
        return [
            self.product(delta, a, a_rho).view_as(y)
            for y, delta, (a, a_rho) in zip(y_shares, deltas, prepared)
        ]


def sign_bits(
    x_share: torch.Tensor,
    provider,
    *,
    times_x: bool = False,
    later: int = 0,
    width: int = BITS,
    comm: _Comm | None = None,
) -> tuple[SignBits, torch.Tensor | None]:
    """``[x < 0]`` of the shares ``x_share`` (exact while ``|x| < 2^(width-1)``), with
    ``x * [x < 0]`` if ``times_x`` (no extra round or byte); ``later`` products with other
    tensors can be had from :meth:`SignBits.times` (at most :data:`MAX_PRODUCTS` in all).

    Returns (SignBits, shares of ``x * [x < 0]`` shaped like ``x_share``, or None).
    ``provider`` is the dealer provider; a tensor larger than its ``max_compared`` is
    compared in pieces (4 rounds each), which :meth:`SignBits.joined` puts together.
    """
    count = x_share.numel()
    Layout(count, later, width, times_x)  # checks the arguments before any traffic
    comm = comm or _Comm()
    limit = getattr(provider, "max_compared", None)
    if limit is None or count <= limit:
        return _sign_bits(x_share, provider, times_x, later, width, comm)
    flat = x_share.reshape(-1)
    pieces = [
        _sign_bits(flat[start : start + limit], provider, times_x, later, width, comm)
        for start in range(0, count, limit)
    ]
    bits = SignBits.joined([piece for piece, _ in pieces])
    if not times_x:
        return bits, None
    return bits, torch.cat([negative for _, negative in pieces]).view_as(x_share)


def _sign_bits(
    x_share: torch.Tensor, provider, times_x: bool, later: int, width: int, comm: _Comm
) -> tuple[SignBits, torch.Tensor | None]:
    layout = Layout(x_share.numel(), later, width, times_x)
    free, own = provider.comparison_material(layout)
    bias = offset(width)  # K
    masked = x_share.reshape(-1) + free["r"]
    if comm.rank == 0:
        masked += bias
    # party 0's correlated share (``own``) arrives from the dealer while c is in flight
    c = comm.open_sum(masked)
    c_bits = bitslice(c, width)[:width]
    g, p = _low_level(c_bits, own["r_bits"], comm)
    g, p = _combine(g, p, MIDDLE, free["mask_middle"], own["products_middle"], comm)
    g, _ = _combine(g, p, top_level(width), free["mask_top"], own["products_top"], comm)
    b = g[0] ^ own["r_top"] ^ comm.public(~c_bits[width - 1])  # [y < K]: not bit width-1
    prepared = [(free["a"][i], own["a_rho"][i]) for i in range(later)]
    e_words = comm.open_xor(b ^ free["rho"])
    bits = SignBits(unslice(e_words, layout.count), own["rho_arith"], prepared, comm)
    if not times_x:
        return bits, None
    # x = (c - K) - r: the open c - K is x's Beaver difference for the mask a = -r
    negative = bits.product(c - bias, -free["r"], -own["r_rho"][0])
    return bits, negative.view_as(x_share)


# --- CrypTen integration --------------------------------------------------------------------------


def ltz(x, provider):
    """``x < 0`` of an MPCTensor as a 0/1 MPCTensor (CrypTen's ``_ltz`` contract); more than
    :data:`MAX_COUNT` elements are compared :data:`MAX_COUNT` at a time."""
    flat = x._tensor.share.reshape(-1)
    chunks = [
        sign_bits(flat[i : i + MAX_COUNT], provider)[0].arithmetic()  # exact for every value
        for i in range(0, max(flat.numel(), 1), MAX_COUNT)
    ]
    share = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
    result = crypten.mpc.MPCTensor.from_shares(share.view(x.size()), precision=0)
    result.encoder._scale = 1
    return result


def shares_like(x, share: torch.Tensor):
    """An MPCTensor of ``share`` with the shape and encoding of the MPCTensor ``x``."""
    out = crypten.mpc.MPCTensor.from_shares(share.view(x.size()))
    out.encoder = x.encoder
    return out


def relu(x, provider, keep_product: bool = False, width: int = BITS):
    """``x * [x >= 0]`` of an MPCTensor as ``x - x * [x < 0]``, the product free with the
    comparison (4 rounds in all, no Beaver triple). Returns the result and the sign bits,
    which keep one prepared product (``keep_product``) for a backward pass. ``width``: see
    :func:`sign_bits` (CrypTen's ``relu`` and ``_ltz`` keep all 64 bits)."""
    bits, negative = sign_bits(
        x.share, provider, times_x=True, later=int(keep_product), width=width
    )
    return x - shares_like(x, negative), bits


def _ours(x) -> bool:
    return x.ptype == crypten.mpc.ptype.arithmetic and x.nelement() > 0


def make_ltz(provider, original: Callable) -> Callable:
    """A replacement for ``MPCTensor._ltz`` that runs :func:`ltz` with ``provider``."""

    def _ltz(self):
        return ltz(self, provider) if _ours(self) else original(self)

    return _ltz


def make_relu(provider, original: Callable) -> Callable:
    """A replacement for ``MPCTensor.relu`` that runs :func:`relu` with ``provider``."""

    def _relu(self):
        return relu(self, provider)[0] if _ours(self) else original(self)

    return _relu


def make_autograd_relu(provider, original: staticmethod) -> tuple[staticmethod, staticmethod]:
    """``forward`` and ``backward`` for CrypTen's autograd ReLU (``crypten.nn.ReLU``): one
    comparison, whose sign bits keep the product the backward pass needs (one round, 8 bytes
    an element, where CrypTen's backward is a Beaver product). ``original`` is CrypTen's
    forward, for inputs that are not arithmetic shares.

    The bits are those of ``-x``, i.e. ``[x > 0]``: the gradient is ``g [x > 0]``, 0 at
    exactly 0 as in CrypTen and PyTorch (``x - x [x < 0]`` would pass ``g`` there), and
    ``relu(x) = -((-x) [-x < 0])`` comes free with the comparison."""

    def forward(ctx, input):
        if not _ours(input):
            return original.__func__(ctx, input)  # saves CrypTen's 0/1 mask
        positive, negated = sign_bits(-input.share, provider, times_x=True, later=1)
        ctx.save_for_backward(positive)
        return shares_like(input, -negated)

    def backward(ctx, grad_output):
        (saved,) = ctx.saved_tensors
        if not isinstance(saved, SignBits):
            return grad_output.mul(saved)
        return shares_like(grad_output, saved.times(grad_output.share))

    return staticmethod(forward), staticmethod(backward)
