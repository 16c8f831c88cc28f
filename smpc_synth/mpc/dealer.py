"""A dealer that no data party controls: Beaver triples and other correlated randomness.

The semantics are those of CrypTen's TTP provider (``crypten/mpc/provider/ttp_provider.py``):
at start the dealer sends each party, over its authenticated link, a fresh PRG key that
only that party and the dealer know. Every party draws its share of each tuple from its
stream (AES-CTR, :mod:`smpc_synth.mpc.prg`); for the one value that must be correlated
(``c = a*b``, ``r^2``, the wraps of ``r``, the arithmetic copy of a random bit) the dealer
computes party 0's share as the value minus the other parties' PRG shares and sends it to
party 0 alone. So no data party sees a tuple in the clear, and the dealer sees no data. The
arithmetic is that of CrypTen's ``TTPServer``; the transport and the PRG are ours.

Party 0 asks for each tuple as CrypTen requests it; the dealer only accepts the ops, sizes
and keyword arguments that CrypTen's protocols use. Tuples are numbered, and each is drawn
from streams of its own (:func:`~smpc_synth.mpc.prg.request_nonce`), so the dealer can
send the share of a tuple it expects before party 0 asks for it (:class:`_Lookahead`).

For differential privacy the dealer also deals noise (:meth:`DealerProvider.noise_share`):
it draws the noise from a key of its own and shares it like any correlated value, so no data
party, nor all but one of them together, knows it.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from smpc_synth import phases
from smpc_synth.dp import sampling
from smpc_synth.errors import PeerError
from smpc_synth.mpc import codec, compare, prg, ring
from smpc_synth.mpc.compat import import_crypten
from smpc_synth.mpc.link import Link
from smpc_synth.mpc.stats import TrafficRecorder
from smpc_synth.net.channel import Channel

crypten = import_crypten()
from crypten.common.util import count_wraps  # noqa: E402
from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor  # noqa: E402
from crypten.mpc.provider.provider import TupleProvider  # noqa: E402

log = logging.getLogger(__name__)

PRODUCT_OPS = frozenset(
    {"mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"}
)
PRODUCT_KWARGS = frozenset({"stride", "padding", "dilation", "groups", "output_padding"})
MAX_TUPLE_ELEMENTS = 1 << 26  # one request may not make the dealer allocate more (512 MiB)
# A comparison's material is ~11 words an element (compare.Layout): one request compares
# at most MAX_TUPLE_ELEMENTS / COMPARISON_FRACTION elements. Larger tuples and comparisons
# are split by the parties (DealerProvider, beaver.py, compare.sign_bits).
COMPARISON_FRACTION = 8
# Parties may go a long time without needing a tuple (data preparation, sampling); a party
# that dies meanwhile is caught by the channel's heartbeats, not by this wait.
DEALER_IDLE_TIMEOUT_S = 24 * 3600.0
_DONE = "done"
_CPU = "cpu"  # a benchmark asks how much CPU time the dealer has used
_REKEY = "rekey"  # debug-seeded runs only: restart every stream from keys for these labels
MAX_KEPT = 64  # kept triples the dealer remembers (a training step makes one per layer)
LOOKAHEAD_DEPTH = 2  # shares the dealer guesses and sends before party 0 asks (_Lookahead)
FRAME_WORDS = 3  # int64 words before each share the dealer sends: generation, number, tag
CPU_NUMBER = -1  # the request number that frames the dealer's CPU clock


@functools.lru_cache(maxsize=4096)
def _broadcast(size0: torch.Size, size1: torch.Size) -> torch.Size:
    # torch.broadcast_shapes runs ~40 lines of Python (torch._refs); a step asks ~100 times
    return torch.Size(torch.broadcast_shapes(size0, size1))


def _product_size(size0: torch.Size, size1: torch.Size, op: str, kwargs: dict) -> torch.Size:
    """The size of ``op(a, b)``, without arithmetic."""
    if op == "mul":
        return _broadcast(torch.Size(size0), torch.Size(size1))
    if op == "matmul" and len(size0) >= 1 and len(size1) >= 1:
        return _matmul_size(torch.Size(size0), torch.Size(size1))
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    return _meta_product_size(torch.Size(size0), torch.Size(size1), op, frozen)


def _matmul_size(size0: torch.Size, size1: torch.Size) -> torch.Size:
    """torch.matmul's rule: 1-D operands gain a dimension that the result drops again;
    batch dimensions broadcast."""
    left = size0 if len(size0) > 1 else torch.Size((1, *size0))
    right = size1 if len(size1) > 1 else torch.Size((*size1, 1))
    if left[-1] != right[-2]:
        raise ValueError(f"matmul of {tuple(size0)} and {tuple(size1)}: inner sizes differ")
    batch = _broadcast(left[:-2], right[:-2])
    rows = (left[-2],) if len(size0) > 1 else ()
    cols = (right[-1],) if len(size1) > 1 else ()
    return torch.Size((*batch, *rows, *cols))


@functools.lru_cache(maxsize=1024)
def _meta_product_size(size0: torch.Size, size1: torch.Size, op: str, kwargs: tuple):
    # on meta tensors (no arithmetic); the first call of each op costs ~0.5-1 s of imports
    a = torch.empty(size0, device="meta")
    b = torch.empty(size1, device="meta")
    return getattr(torch, op)(a, b, **dict(kwargs)).size()


class DealerProvider(TupleProvider):
    """CrypTen tuple provider for a data party: shares from the dealer's key, party 0's
    correlated share from the dealer.

    Every tuple is a numbered request, and each party draws it from its own stream started
    at :func:`~smpc_synth.mpc.prg.request_nonce` of (number, request): party 0 sends the
    request to the dealer as the tuple is begun, and the dealer, which may have guessed it
    and sent the share already (see :class:`_Lookahead`), answers with party 0's share
    framed by ``[generation, number, tag]``. Party 0 keeps a share sent for a later number
    until it gets there and drops one made for another request.

    With ``deferred`` (our communicator only), party 0 does not wait for the dealer: it gets
    a placeholder, and :meth:`settle` (called by the link each time a party's message has
    arrived) writes the dealer's share into it. Every protocol first opens masked values
    (a round that ends with a message from a party) and only then touches the correlated
    share, so the dealer's work overlaps the parties' whole round instead of adding one.
    """

    NAME = "DEALER"

    def __init__(self, link: Link, rank: int, deferred: bool = False) -> None:
        super().__init__()
        self.link = link
        self.party_rank = rank
        self.deferred = deferred
        # (number, tag, placeholder) of shares the dealer still owes
        self._pending: deque[tuple[int, int, torch.Tensor]] = deque()
        self._early: dict[int, tuple[int, torch.Tensor]] = {}  # number -> (tag, share)
        self._number = 0  # of the next request since the last (re)key
        self._generation = 0  # re-keys so far: shares framed with an older one are stale
        self._current = (0, 0)  # (number, tag) of the tuple being drawn
        message = link.recv_obj(link.dealer)
        key = message.get("key") if isinstance(message, dict) else None
        if not isinstance(key, bytes) or len(key) != prg.KEY_BYTES:
            raise link.malformed(link.dealer, "expected a PRG key")
        self.key = key
        self.stream = prg.Stream(key)

    def _begin(self, function: str, *args: Any, **kwargs: Any) -> None:
        """Number the next tuple and start its stream; party 0 asks the dealer for it."""
        request = {"f": function, "args": list(args), "kwargs": kwargs}
        encoded = codec.encode(request)
        nonce = prg.request_nonce(self._number, encoded)
        self.stream = prg.Stream(self.key, nonce)
        self._current = (self._number, prg.nonce_tag(nonce))
        self._number += 1
        if self.party_rank == 0:
            self.link.send_encoded(self.link.dealer, encoded)

    def _ring(self, size: torch.Size) -> torch.Tensor:
        return self.stream.ring(size)

    def _bit(self, size: torch.Size) -> torch.Tensor:
        return self.stream.bits(size)

    def _correlated(self, size: torch.Size, into: torch.Tensor | None = None) -> torch.Tensor:
        """Party 0: the dealer's share; everyone else: a PRG share (in the dealer's order).
        Written into ``into`` (of ``size``) if given, else into a new tensor."""
        if self.party_rank != 0:
            share = self._ring(size)  # a 64-bit binary share is drawn the same way
        else:
            number, tag = self._current
            if self.deferred:
                placeholder = torch.empty(size, dtype=torch.long) if into is None else into
                self._pending.append((number, tag, placeholder))  # settle() overwrites it
                return placeholder
            share = self._checked(self._take(number, tag), size)
        return share if into is None else into.copy_(share)

    def _take(self, number: int, tag: int) -> torch.Tensor:
        """The dealer's share for request ``number`` tagged ``tag`` (unframed, flat)."""
        early = self._early.pop(number, None)
        if early is not None and early[0] == tag:
            return early[1]
        while True:
            message = self.link.recv_tensor(self.link.dealer, dtype=torch.long)
            if message.dim() != 1 or message.numel() < FRAME_WORDS:
                raise self.link.malformed(self.link.dealer, "expected a framed share")
            generation, got, got_tag = message[:FRAME_WORDS].tolist()
            if generation != self._generation or (got < number and got != CPU_NUMBER):
                continue  # from before a re-key, or guessed for a request since made
            if got == number and got_tag == tag:
                if self._early:  # guesses for numbers now past will not be asked for
                    self._early = {k: v for k, v in self._early.items() if k > number}
                return message[FRAME_WORDS:]
            if got > number:  # sent ahead; a wrong guess for ``number`` is simply dropped
                self._early[got] = (got_tag, message[FRAME_WORDS:])

    def _checked(self, share: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if share.numel() != math.prod(size):
            raise self.link.malformed(
                self.link.dealer, f"expected a share of {tuple(size)}, got {share.numel()} words"
            )
        return share.view(size)

    def settle(self) -> None:
        """Write every correction the dealer still owes into its placeholder."""
        while self._pending:
            number, tag, placeholder = self._pending.popleft()
            placeholder.copy_(self._checked(self._take(number, tag), placeholder.shape))

    @property
    def max_elements(self) -> int:
        """The most elements one tuple request may ask the dealer for."""
        return MAX_TUPLE_ELEMENTS

    @property
    def max_compared(self) -> int:
        """The most elements one comparison request may ask the dealer for."""
        return MAX_TUPLE_ELEMENTS // COMPARISON_FRACTION

    def product_size(self, size0: torch.Size, size1: torch.Size, op: str, kwargs: dict):
        """The size of ``op`` of operands of ``size0`` and ``size1``."""
        return _product_size(size0, size1, op, kwargs)

    def product_fits(self, size0: torch.Size, size1: torch.Size, op: str, kwargs: dict) -> bool:
        """Whether :meth:`generate_additive_triple` serves this product: its operands and
        result are within :attr:`max_elements`, or it is elementwise on equal sizes (which
        :meth:`_elementwise` splits); otherwise the protocol must split it."""
        if op == "mul" and size0 == size1:
            return True
        sizes = (size0, size1, _product_size(size0, size1, op, kwargs))
        return max(math.prod(s) for s in sizes) <= MAX_TUPLE_ELEMENTS

    def _elementwise(
        self, function: str, size: torch.Size, operands: int, *extra: Any, bits: bool = False
    ) -> list[torch.Tensor]:
        """One elementwise tuple of ``size``, asked for as ``operands`` copies of its size
        and ``extra``: the free draws (one per operand; ``bits``: random bits) and the
        correlated share. More than :attr:`max_elements` elements are asked for in flat
        pieces, each a request (and a tuple) of its own, and put together."""
        count = math.prod(size)
        if count <= MAX_TUPLE_ELEMENTS:
            self._begin(function, *[size] * operands, *extra)
            draw = self._bit if bits else self._ring
            return [*(draw(size) for _ in range(operands)), self._correlated(size)]
        parts = [torch.empty(count, dtype=torch.long) for _ in range(operands + 1)]
        for start in range(0, count, MAX_TUPLE_ELEMENTS):
            piece = torch.Size((min(MAX_TUPLE_ELEMENTS, count - start),))
            self._begin(function, *[piece] * operands, *extra)
            for part in parts[:operands]:
                part[start : start + piece[0]] = self._bit(piece) if bits else self._ring(piece)
            self._correlated(piece, into=parts[operands][start : start + piece[0]])
        return [part.view(size) for part in parts]

    def generate_additive_triple(self, size0, size1, op, device=None, *args, **kwargs):
        """Generate multiplicative triples of given sizes"""
        size0, size1 = torch.Size(size0), torch.Size(size1)
        if op == "mul" and size0 == size1 and not args and not kwargs:
            a, b, c = self._elementwise("additive", size0, 2, op)
        else:
            self._begin("additive", size0, size1, op, *args, **kwargs)
            a, b = self._ring(size0), self._ring(size1)
            c = self._correlated(_product_size(size0, size1, op, kwargs))
        return tuple(ArithmeticSharedTensor.from_shares(t, precision=0) for t in (a, b, c))

    def square(self, size, device=None):
        """Generate square double of given size"""
        r, r2 = self._elementwise("square", torch.Size(size), 1)
        return tuple(ArithmeticSharedTensor.from_shares(t, precision=0) for t in (r, r2))

    def generate_binary_triple(self, size0, size1, device=None):
        """Generate xor triples of given size"""
        size0, size1 = torch.Size(size0), torch.Size(size1)
        if size0 == size1:
            a, b, c = self._elementwise("binary", size0, 2)
        else:
            self._begin("binary", size0, size1)
            a, b = self._ring(size0), self._ring(size1)
            c = self._correlated(_broadcast(size0, size1))
        return tuple(BinarySharedTensor.from_shares(t) for t in (a, b, c))

    def wrap_rng(self, size, device=None):
        """Generate random shared tensor of given size and sharing of its wraps"""
        r, theta_r = self._elementwise("wraps", torch.Size(size), 1)
        return tuple(ArithmeticSharedTensor.from_shares(t, precision=0) for t in (r, theta_r))

    def B2A_rng(self, size, device=None):
        """Generate random bit tensor as arithmetic and binary shared tensors"""
        r_bit, r_arith = self._elementwise("B2A", torch.Size(size), 1, bits=True)
        return (
            ArithmeticSharedTensor.from_shares(r_arith, precision=0),
            BinarySharedTensor.from_shares(r_bit),
        )

    def kept_matmul_triple(self, size0: torch.Size, size1: torch.Size):
        """Shares ``(a, b, c = a @ b)`` for a product of matrices, and the request number
        that names it: the dealer keeps ``a`` and ``b`` for :meth:`backward_material`."""
        size0, size1 = torch.Size(size0), torch.Size(size1)
        self._begin("kept", size0, size1)
        a, b = self._ring(size0), self._ring(size1)
        c = self._correlated(_matmul_size(size0, size1))
        return a, b, c, self._current[0]

    def backward_material(
        self, number: int, size0: torch.Size, size1: torch.Size, weight: bool, input: bool
    ):
        """For the kept triple ``number`` of ``x`` (``size0``, mask ``a``) times ``y``
        (``size1``, mask ``b``): a fresh mask ``d`` for the output gradient ``g`` and shares
        of ``d^T a`` (if ``weight``: for ``g^T x``) and ``d b^T`` (if ``input``: for
        ``g y^T``), the second ``None`` where not asked."""
        self._begin("backward", self._number - number, int(weight), int(input))
        rows, inner, cols = size0[0], size0[1], size1[1]
        d = self._ring(torch.Size((rows, cols)))
        sizes = [(cols, inner)] * weight + [(rows, inner)] * input
        flat = self._correlated(torch.Size((sum(r * c for r, c in sizes),)))
        pieces = iter(
            p.view(shape) for p, shape in zip(flat.split([r * c for r, c in sizes]), sizes)
        )
        return d, next(pieces) if weight else None, next(pieces) if input else None

    def comparison_material(self, layout: compare.Layout):
        """This party's material for one secure comparison (:mod:`smpc_synth.mpc.compare`):
        its free fields from its own stream, and its share of the correlated ones (party 0's
        is the dealer's, filled in by :meth:`settle` when deferred)."""
        self._begin("compare", *layout.request())
        free = compare.draw_free(layout, self.stream)
        flat = self._correlated(torch.Size((layout.correlated_size,)))
        return free, layout.split(flat)

    def noise_share(self, kind: str, size: torch.Size, tag: int, *params: float) -> torch.Tensor:
        """This party's additive share (int64, mod 2^64) of DP noise that the dealer draws
        from its own key (:func:`smpc_synth.dp.sampling.draw_noise`: ``kind``, ``params``)
        and no data party knows: every party but 0 draws its share from its own stream,
        party 0 gets the noise minus those shares from the dealer. ``tag`` names the draw:
        a session must never repeat one (the dealer refuses). Party 0 waits for its share
        here: noise is added to a value before it is opened, not after."""
        size = torch.Size(size)
        self._begin("noise", kind, size, tag, *params)
        if self.party_rank != 0:
            return self._ring(size)
        self.settle()
        return self._checked(self._take(*self._current), size)

    def dealer_cpu_seconds(self) -> float:
        """The dealer process's CPU time so far, all threads (party 0 only; benchmarks
        difference two readings to charge the dealer's work to what ran in between)."""
        if self.party_rank != 0:
            raise RuntimeError("only party 0 talks to the dealer")
        self.settle()
        self.link.send_obj(self.link.dealer, {"f": _CPU})
        return float(self._take(CPU_NUMBER, 0).view(torch.float64)[0])

    def rekey(self, debug_seed: int, labels: Sequence[int]) -> None:
        """Restart this party's stream (and, from party 0, every stream at the dealer) from
        the debug keys for ``labels``, and the request numbers from 0: draws after this
        point no longer depend on what was drawn before it (a resumed run repeats the
        uninterrupted one)."""
        self.settle()
        if self.party_rank == 0:
            self.link.send_obj(self.link.dealer, {"f": _REKEY, "labels": list(labels)})
        self.key = dealer_key(debug_seed, self.link.me, *labels)
        self.stream = prg.Stream(self.key)
        self._number = 0
        self._generation += 1
        self._early.clear()

    def done(self) -> None:
        """Tell the dealer this party needs no more tuples."""
        self.settle()
        self.link.send_obj(self.link.dealer, {"f": _DONE})


class _TupleMaker:
    """The dealer's arithmetic (that of CrypTen's ``TTPServer``) over every party's stream:
    it replays each party's draws to learn the tuple, and returns party 0's share of the
    correlated value. ``noise_key`` is the dealer's own key for DP noise (:meth:`noise`),
    which no party holds."""

    def __init__(self, keys: Sequence[bytes], noise_key: bytes | None = None) -> None:
        self.keys = list(keys)
        self.noise_key = noise_key if noise_key is not None else prg.fresh_key()
        self.noise_tags: set[int] = set()  # tags of noise already drawn: never twice
        self.streams = [prg.Stream(key) for key in keys]
        self.number = 0  # of the request being served
        # masks (A, B) of served "kept" triples by request number, oldest first
        self.kept: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.last_kept: tuple[torch.Tensor, torch.Tensor] | None = None  # the one just made

    def begin(self, nonce: bytes, number: int = 0) -> None:
        """Start every party's stream for request ``number`` (see :func:`prg.request_nonce`)."""
        self.streams = [prg.Stream(key, nonce) for key in self.keys]
        self.number = number
        self.last_kept = None

    def keep(self, number: int, masks: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Remember the masks of the kept triple that request ``number`` was (served)."""
        self.kept[number] = masks
        while len(self.kept) > MAX_KEPT:
            self.kept.popitem(last=False)

    def _sum(self, size: torch.Size, skip_first: bool = False) -> torch.Tensor:
        """The sum of the parties' ring shares (int64 wraps: mod 2^64)."""
        streams = self.streams[1:] if skip_first else self.streams
        total = streams[0].ring(size) if streams else torch.zeros(size, dtype=torch.long)
        for stream in streams[1:]:
            total += stream.ring(size)
        return total

    def _xor(self, size: torch.Size, skip_first: bool = False, bits: bool = False):
        streams = self.streams[1:] if skip_first else self.streams
        total = torch.zeros(size, dtype=torch.long)
        for stream in streams:
            total ^= stream.bits(size) if bits else stream.ring(size)
        return total

    def additive(self, size0, size1, op: str, **kwargs) -> torch.Tensor:
        a, b = self._sum(size0), self._sum(size1)
        c = ring.product(op, a, b, **kwargs)
        return c.sub_(self._sum(c.size(), skip_first=True))

    def kept_matmul(self, size0: torch.Size, size1: torch.Size) -> torch.Tensor:
        """A matmul triple whose masks ``A``, ``B`` a later :meth:`backward` reuses."""
        a, b = self._sum(size0), self._sum(size1)
        c = ring.matmul(a, b)
        self.last_kept = (a, b)
        return c.sub_(self._sum(c.size(), skip_first=True))

    def backward(self, distance: int, weight: bool, input: bool) -> torch.Tensor:
        """For the product ``x y`` of the kept triple ``distance`` requests back (masks
        ``A`` of x, ``B`` of y) and a fresh mask ``D`` of its output gradient g: the
        correlations that give ``g^T x`` (``D^T A``, if ``weight``) and ``g y^T`` (``D
        B^T``, if ``input``) with only ``g - D`` opened."""
        masks = self.kept.get(self.number - distance)
        if masks is None:
            raise ValueError(f"no kept triple {distance} requests back")
        a, b = masks
        d = self._sum(torch.Size((a.size(0), b.size(1))))
        parts = []
        if weight:
            parts.append(ring.matmul(d.t(), a))
        if input:
            parts.append(ring.matmul(d, b.t()))
        flat = torch.cat([p.reshape(-1) for p in parts])
        return flat.sub_(self._sum(flat.size(), skip_first=True))

    def square(self, size: torch.Size) -> torch.Tensor:
        r = self._sum(size)
        return (r * r).sub_(self._sum(size, skip_first=True))

    def binary(self, size0, size1) -> torch.Tensor:
        c = self._xor(size0) & self._xor(size1)
        return c.bitwise_xor_(self._xor(c.size(), skip_first=True))

    def wraps(self, size: torch.Size) -> torch.Tensor:
        theta_r = count_wraps([stream.ring(size) for stream in self.streams])
        return theta_r.sub_(self._sum(size, skip_first=True))

    def B2A(self, size: torch.Size) -> torch.Tensor:
        r = self._xor(size, bits=True)
        return r.sub_(self._sum(size, skip_first=True))

    def noise(self, kind: str, size: torch.Size, tag: int, params: Sequence[float]):
        """Party 0's share of noise ``z`` drawn from the dealer's own key: ``z`` minus the
        other parties' stream shares, so no coalition of data parties learns ``z``."""
        if tag in self.noise_tags:
            raise ValueError(f"noise tag {tag} was used before: each draw needs its own")
        values = sampling.draw_noise(self.noise_key, kind, tag, math.prod(size), params)
        self.noise_tags.add(tag)
        z = torch.from_numpy(values).view(size)
        return z.sub_(self._sum(size, skip_first=True))


def _checked_size(value: Any) -> torch.Size:
    if not isinstance(value, torch.Size) or any(d < 0 for d in value):
        raise ValueError(f"expected a size, got {value!r}")
    if math.prod(value) > MAX_TUPLE_ELEMENTS:
        raise ValueError(f"size {tuple(value)} is larger than {MAX_TUPLE_ELEMENTS} elements")
    return value


def _rekeyed(parties: Sequence[str], debug_seed: int | None, labels: Any) -> list[bytes]:
    """The parties' keys for party 0's re-key request (debug seeds only)."""
    if debug_seed is None:
        raise ValueError("asked to re-key, but this dealer has no debug seed")
    if not isinstance(labels, list) or not all(type(x) is int for x in labels):
        raise ValueError(f"re-key labels {labels!r}")
    return [dealer_key(debug_seed, party, *labels) for party in parties]


def _checked_kwargs(kwargs: Any) -> dict[str, Any]:
    if not isinstance(kwargs, dict) or not set(kwargs) <= PRODUCT_KWARGS:
        raise ValueError(f"unexpected keyword arguments {kwargs!r}")
    for value in kwargs.values():
        items = value if isinstance(value, tuple | list) else (value,)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise ValueError(f"unexpected keyword argument value {value!r}")
    return kwargs


def _serve_one(maker: _TupleMaker, request: Any) -> torch.Tensor:
    """Party 0's correlated share for one validated request."""
    if not isinstance(request, dict) or not isinstance(request.get("args"), list):
        raise ValueError("not a tuple request")
    function, args = request.get("f"), request["args"]
    kwargs = _checked_kwargs(request.get("kwargs", {}))
    if function == "additive":
        if len(args) != 3 or args[2] not in PRODUCT_OPS:
            raise ValueError(f"unexpected additive-triple arguments {args!r}")
        size0, size1 = _checked_size(args[0]), _checked_size(args[1])
        _checked_size(_product_size(size0, size1, args[2], kwargs))
        return maker.additive(size0, size1, args[2], **kwargs)
    if function == "kept" and len(args) == 2 and not kwargs:
        size0, size1 = _checked_size(args[0]), _checked_size(args[1])
        if len(size0) != 2 or len(size1) != 2:
            raise ValueError(f"a kept triple is a product of matrices, got {args!r}")
        _checked_size(_matmul_size(size0, size1))
        return maker.kept_matmul(size0, size1)
    if function == "backward" and len(args) == 3 and not kwargs:
        distance, weight, input = args
        if type(distance) is not int or distance < 1 or {weight, input} - {0, 1}:
            raise ValueError(f"unexpected backward arguments {args!r}")
        if not (weight or input):
            raise ValueError("a backward request asks for no gradient")
        return maker.backward(distance, bool(weight), bool(input))
    if function == "binary" and len(args) == 2 and not kwargs:
        size0, size1 = _checked_size(args[0]), _checked_size(args[1])
        _checked_size(_broadcast(size0, size1))
        return maker.binary(size0, size1)
    if function == "compare" and not kwargs:
        layout = compare.Layout.from_request(args, MAX_TUPLE_ELEMENTS // COMPARISON_FRACTION)
        return compare.deal(maker.streams, layout)
    if function == "noise" and len(args) >= 3 and not kwargs:
        kind, size, tag, *params = args
        if kind not in sampling.NOISE_KINDS or type(tag) is not int or tag < 0:
            raise ValueError(f"unexpected noise arguments {args!r}")
        size = _checked_size(size)
        if math.prod(size) > sampling.MAX_NOISE_ELEMENTS:
            raise ValueError(f"noise of size {tuple(size)} is more than one request may ask")
        return maker.noise(kind, size, tag, params)
    if function in ("square", "wraps", "B2A") and len(args) == 1 and not kwargs:
        return getattr(maker, function)(_checked_size(args[0]))
    raise ValueError(f"unknown request {function!r}")


class _Lookahead:
    """Serves party 0's numbered requests, guessing the next ones and sending them early.

    A training loop asks for the same tuples in the same order every step, so the dealer
    guesses the request that followed the same :data:`CONTEXT` requests last time, computes
    its share and sends it before party 0 asks (up to ``depth`` requests ahead): party 0
    finds it waiting instead of waiting for it. When party 0's request is the one guessed,
    nothing more is sent; when it is not, its share is computed and sent, and the guesses
    after it are dropped.

    A share is a function of its request number, the request and the keys only (each
    (number, request) has its own streams), so a guessed share is the one the dealer would
    have computed on request, bit for bit. A wrong guess is a tuple that nobody uses, drawn
    from streams that no other request uses: party 0 gets nothing it could combine with
    the tuples it does use.
    """

    CONTEXT = 12  # a VAE step asks ~80 times for ~30 kinds of tuple; 12 leaves ~1.5% misses
    MAX_LEARNED = 4096  # contexts remembered; a training loop has a few hundred

    def __init__(self, maker: _TupleMaker, depth: int) -> None:
        self.maker = maker
        self.depth = depth
        self.number = 0  # of party 0's next request
        self._ids: dict[bytes, int] = {}  # encoded request -> small int, for cheap contexts
        self._requests: list[tuple[Any, bytes]] = []  # by id: (request, its encoding)
        self._successor: dict[tuple[int, ...], int] = {}
        self._recent: deque[int] = deque([-1] * self.CONTEXT, maxlen=self.CONTEXT)
        # (id, kept masks or None) guessed for numbers self.number, +1, ...
        self._ahead: deque[tuple[int, Any]] = deque()
        self.hits = self.misses = 0

    def serve(self, request: Any) -> tuple[int, int, torch.Tensor | None]:
        """``(number, tag, share)`` for party 0's next request (validated as
        :func:`_serve_one` does); share None if it was guessed and sent already."""
        encoded = codec.encode(request)
        known = self._ids.get(encoded)
        nonce = prg.request_nonce(self.number, encoded)
        share = None
        guessed, kept = self._ahead.popleft() if self._ahead else (None, None)
        if guessed is None or guessed != known:
            if guessed is not None:
                self.misses += 1
                self._ahead.clear()  # guessed on a path the loop did not take
            share = _serve_at(self.maker, nonce, request, self.number)
            kept = self.maker.last_kept
        else:
            self.hits += 1
        if kept is not None:  # only requests made are remembered: a backward pass's
            self.maker.keep(self.number, kept)  # share depends on nothing guessed
        self._learn(request, encoded, known)
        self.number += 1
        return self.number - 1, prg.nonce_tag(nonce), share

    def work_ahead(
        self, asked: Callable[[], bool] = lambda: False
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Guess the next requests, up to ``depth`` ahead, and yield ``(number, tag, share)``
        of each as it is computed; stop as soon as ``asked()``: a request that has come is
        served first."""
        context = [*self._recent, *(ident for ident, _ in self._ahead)][-self.CONTEXT :]
        while len(self._ahead) < self.depth and not asked():
            expected = self._successor.get(tuple(context))
            if expected is None:
                return
            number = self.number + len(self._ahead)
            request, encoded = self._requests[expected]
            if request["f"] == "backward" and number - request["args"][0] >= self.number:
                return  # its triple is itself a guess: wait until it has been asked for
            if request["f"] == "noise":
                return  # every draw of noise has its own tag: never the same request twice
            nonce = prg.request_nonce(number, encoded)
            share = _serve_at(self.maker, nonce, request, number)
            self._ahead.append((expected, self.maker.last_kept))
            context = [*context[1:], expected]
            yield number, prg.nonce_tag(nonce), share

    def restart(self) -> None:
        """The keys were replaced (a re-key): numbers start again at 0 and the guesses sent
        are void. The re-key stays in the context, so what follows it is learned too."""
        self._ahead.clear()
        self.number = 0
        self.maker.kept.clear()
        self.maker.noise_tags.clear()  # debug seeds only: a resumed run draws the same noise
        self._recent.append(-2)

    def _learn(self, request: Any, encoded: bytes, known: int | None) -> None:
        if known is None:  # a validated request (serve() served it) of a new kind
            known = self._ids[encoded] = len(self._requests)
            self._requests.append((request, encoded))
        if len(self._successor) >= self.MAX_LEARNED:
            self._successor.clear()
        self._successor[tuple(self._recent)] = known
        self._recent.append(known)


def _serve_at(maker: _TupleMaker, nonce: bytes, request: Any, number: int) -> torch.Tensor:
    """Party 0's share for request ``number``, drawn from the streams that start at
    ``nonce``."""
    maker.begin(nonce, number)
    return _serve_one(maker, request)


def _framed(generation: int, number: int, tag: int, share: torch.Tensor) -> torch.Tensor:
    """A share as sent: ``[generation, number, tag]`` then its words."""
    head = torch.tensor([generation, number, tag], dtype=torch.long)
    return torch.cat([head, share.reshape(-1).view(torch.long)])


def dealer_key(debug_seed: int, party: str, *labels: int) -> bytes:
    """The key ``party`` shares with the dealer in a debug-seeded run (tests only)."""
    return prg.debug_key(debug_seed, "dealer", party, *labels)


def noise_key(debug_seed: int | None) -> bytes:
    """The dealer's own key for DP noise: fresh from the OS CSPRNG, or (tests only) derived
    from the debug seed, so that a plaintext run with the same seed draws the same noise."""
    return sampling.noise_key(debug_seed)


def send_keys(link: Link, parties: Sequence[str], debug_seed: int | None = None) -> list[bytes]:
    """Give each party its own PRG key, over its own authenticated link."""
    keys = [
        prg.fresh_key() if debug_seed is None else dealer_key(debug_seed, party)
        for party in parties
    ]
    for party, key in zip(parties, keys):
        link.send_obj(party, {"key": key})
    return keys


def serve_dealer(
    channel: Channel,
    parties: Sequence[str],
    *,
    timeout: float | None = DEALER_IDLE_TIMEOUT_S,
    insecure_debug_seed: int | None = None,
    recorder: TrafficRecorder | None = None,
    lookahead: int = LOOKAHEAD_DEPTH,
) -> dict[str, int]:
    """Serve tuples to ``parties`` (in rank order) until every party says it is done.
    Party 0 may also ask for the dealer's CPU time so far (benchmarks charge it per op).

    ``timeout`` bounds each wait for a party's next message (None: the channel's default).
    ``lookahead`` is how many expected requests the dealer computes and sends before they
    come (:class:`_Lookahead`; 0: none).

    Returns how many requests were served (``requests``), how many of them had been
    guessed and sent ahead (``computed_ahead``) and how many guesses were wrong
    (``guessed_wrong``). Raises :class:`PeerError` naming a party that vanishes, times out,
    is reported failed by another party, or sends a bad request.
    ``insecure_debug_seed`` fixes the keys so tests can compare transports bit for bit.
    """
    if insecure_debug_seed is not None:
        log.warning("INSECURE: the dealer's PRG keys are derived from a fixed debug seed")
    link = Link(channel, recorder or TrafficRecorder(), timeout=timeout, dealer=channel.me)
    maker = _TupleMaker(
        send_keys(link, parties, insecure_debug_seed), noise_key(insecure_debug_seed)
    )
    phases.enter(channel.me, "aggregation")  # the parties sum statistics: no triples needed
    ahead = _Lookahead(maker, lookahead)
    first = parties[0]
    served = generation = 0
    while True:
        request = link.recv_obj(first)
        kind = request.get("f") if isinstance(request, dict) else None
        if kind == _DONE:
            break
        if kind == _CPU:
            clock = torch.tensor([time.process_time()], dtype=torch.float64)
            link.send_tensor(first, _framed(generation, CPU_NUMBER, 0, clock))
            continue
        try:
            if kind == _REKEY:
                maker.keys = _rekeyed(parties, insecure_debug_seed, request.get("labels"))
                ahead.restart()
                generation += 1
                continue
            number, tag, share = ahead.serve(request)
        except (ValueError, TypeError, RuntimeError) as err:
            link.abort(first)
            raise PeerError(f"{first} sent a bad tuple request: {err}", peer=first) from err
        if share is not None:
            link.send_tensor(first, _framed(generation, number, tag, share))
        served += 1
        phases.enter(channel.me, "training")
        for number, tag, share in ahead.work_ahead(asked=lambda: link.has_message(first)):
            link.send_tensor(first, _framed(generation, number, tag, share))
    for party in parties[1:]:
        message = link.recv_obj(party)
        if not (isinstance(message, dict) and message.get("f") == _DONE):
            raise link.malformed(party, "expected 'done'")
    return {"requests": served, "computed_ahead": ahead.hits, "guessed_wrong": ahead.misses}
