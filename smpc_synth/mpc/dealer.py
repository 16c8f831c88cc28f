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
and keyword arguments that CrypTen's protocols use.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from smpc_synth.errors import PeerError
from smpc_synth.mpc import compare, prg
from smpc_synth.mpc.compat import import_crypten
from smpc_synth.mpc.link import Link
from smpc_synth.mpc.stats import TrafficRecorder
from smpc_synth.train.base import Channel

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
# Parties may go a long time without needing a tuple (data preparation, sampling); a party
# that dies meanwhile is caught by the channel's heartbeats, not by this wait.
DEALER_IDLE_TIMEOUT_S = 24 * 3600.0
_DONE = "done"
_CPU = "cpu"  # a benchmark asks how much CPU time the dealer has used
_REKEY = "rekey"  # debug-seeded runs only: restart every stream from keys for these labels
LOOKAHEAD_DEPTH = 2  # requests the dealer computes before party 0 asks (see _Lookahead)


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
        self._pending: deque[torch.Tensor] = deque()
        message = link.recv_obj(link.dealer)
        key = message.get("key") if isinstance(message, dict) else None
        if not isinstance(key, bytes) or len(key) != prg.KEY_BYTES:
            raise link.malformed(link.dealer, "expected a PRG key")
        self.stream = prg.Stream(key)

    def _ring(self, size: torch.Size) -> torch.Tensor:
        return self.stream.ring(size)

    def _bit(self, size: torch.Size) -> torch.Tensor:
        return self.stream.bits(size)

    def _correlated(self, size: torch.Size, function: str, *args: Any, **kwargs: Any):
        """Party 0: the dealer's share; everyone else: a PRG share (in the dealer's order)."""
        if self.party_rank != 0:
            return self._ring(size)  # a 64-bit binary share is drawn the same way
        request = {"f": function, "args": list(args), "kwargs": kwargs}
        self.link.send_obj(self.link.dealer, request)
        if not self.deferred:
            return self.link.recv_tensor(self.link.dealer, torch.Size(size), torch.long)
        placeholder = torch.empty(size, dtype=torch.long)  # settle() overwrites it
        self._pending.append(placeholder)
        return placeholder

    def settle(self) -> None:
        """Write every correction the dealer still owes into its placeholder."""
        while self._pending:
            placeholder = self._pending.popleft()
            share = self.link.recv_tensor(self.link.dealer, placeholder.shape, torch.long)
            placeholder.copy_(share)

    def generate_additive_triple(self, size0, size1, op, device=None, *args, **kwargs):
        """Generate multiplicative triples of given sizes"""
        size0, size1 = torch.Size(size0), torch.Size(size1)
        a, b = self._ring(size0), self._ring(size1)
        c_size = _product_size(size0, size1, op, kwargs)
        c = self._correlated(c_size, "additive", size0, size1, op, *args, **kwargs)
        return tuple(ArithmeticSharedTensor.from_shares(t, precision=0) for t in (a, b, c))

    def square(self, size, device=None):
        """Generate square double of given size"""
        size = torch.Size(size)
        r = self._ring(size)
        r2 = self._correlated(size, "square", size)
        return tuple(ArithmeticSharedTensor.from_shares(t, precision=0) for t in (r, r2))

    def generate_binary_triple(self, size0, size1, device=None):
        """Generate xor triples of given size"""
        size0, size1 = torch.Size(size0), torch.Size(size1)
        a, b = self._ring(size0), self._ring(size1)
        c = self._correlated(_broadcast(size0, size1), "binary", size0, size1)
        return tuple(BinarySharedTensor.from_shares(t) for t in (a, b, c))

    def wrap_rng(self, size, device=None):
        """Generate random shared tensor of given size and sharing of its wraps"""
        size = torch.Size(size)
        r = self._ring(size)
        theta_r = self._correlated(size, "wraps", size)
        return tuple(ArithmeticSharedTensor.from_shares(t, precision=0) for t in (r, theta_r))

    def B2A_rng(self, size, device=None):
        """Generate random bit tensor as arithmetic and binary shared tensors"""
        size = torch.Size(size)
        r_bit = self._bit(size)
        r_arith = self._correlated(size, "B2A", size)
        return (
            ArithmeticSharedTensor.from_shares(r_arith, precision=0),
            BinarySharedTensor.from_shares(r_bit),
        )

    def comparison_material(self, layout: compare.Layout):
        """This party's material for one secure comparison (:mod:`smpc_synth.mpc.compare`):
        its free fields from its own stream, and its share of the correlated ones (party 0's
        is the dealer's, filled in by :meth:`settle` when deferred)."""
        free = compare.draw_free(layout, self.stream)
        size = torch.Size((layout.correlated_size,))
        flat = self._correlated(size, "compare", *layout.request())
        return free, layout.split(flat)

    def dealer_cpu_seconds(self) -> float:
        """The dealer process's CPU time so far, all threads (party 0 only; benchmarks
        difference two readings to charge the dealer's work to what ran in between)."""
        if self.party_rank != 0:
            raise RuntimeError("only party 0 talks to the dealer")
        self.settle()
        self.link.send_obj(self.link.dealer, {"f": _CPU})
        return float(self.link.recv_tensor(self.link.dealer, torch.Size([1]), torch.float64)[0])

    def rekey(self, debug_seed: int, labels: Sequence[int]) -> None:
        """Restart this party's stream (and, from party 0, every stream at the dealer) from
        the debug keys for ``labels``: draws after this point no longer depend on what was
        drawn before it (a resumed run repeats the uninterrupted one)."""
        if self.party_rank == 0:
            self.link.send_obj(self.link.dealer, {"f": _REKEY, "labels": list(labels)})
        self.stream = prg.Stream(dealer_key(debug_seed, self.link.me, *labels))

    def done(self) -> None:
        """Tell the dealer this party needs no more tuples."""
        self.settle()
        self.link.send_obj(self.link.dealer, {"f": _DONE})


class _TupleMaker:
    """The dealer's arithmetic (that of CrypTen's ``TTPServer``) over every party's stream:
    it replays each party's draws to learn the tuple, and returns party 0's share of the
    correlated value."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self.streams = [prg.Stream(key) for key in keys]

    def tell(self) -> list[int]:
        return [stream.tell() for stream in self.streams]

    def seek(self, positions: Sequence[int]) -> None:
        for stream, position in zip(self.streams, positions, strict=True):
            stream.seek(position)

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
        c = getattr(torch, op)(a, b, **kwargs)
        return c.sub_(self._sum(c.size(), skip_first=True))

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


def _checked_size(value: Any) -> torch.Size:
    if not isinstance(value, torch.Size) or any(d < 0 for d in value):
        raise ValueError(f"expected a size, got {value!r}")
    if math.prod(value) > MAX_TUPLE_ELEMENTS:
        raise ValueError(f"size {tuple(value)} is larger than {MAX_TUPLE_ELEMENTS} elements")
    return value


def _rekeyed(parties: Sequence[str], debug_seed: int | None, labels: Any) -> list[prg.Stream]:
    """The parties' streams restarted for party 0's re-key request (debug seeds only)."""
    if debug_seed is None:
        raise ValueError("asked to re-key, but this dealer has no debug seed")
    if not isinstance(labels, list) or not all(type(x) is int for x in labels):
        raise ValueError(f"re-key labels {labels!r}")
    return [prg.Stream(dealer_key(debug_seed, party, *labels)) for party in parties]


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
    if function == "binary" and len(args) == 2 and not kwargs:
        size0, size1 = _checked_size(args[0]), _checked_size(args[1])
        _checked_size(_broadcast(size0, size1))
        return maker.binary(size0, size1)
    if function == "compare" and not kwargs:
        layout = compare.Layout.from_request(args, MAX_TUPLE_ELEMENTS // 8)
        return compare.deal(maker.streams, layout)
    if function in ("square", "wraps", "B2A") and len(args) == 1 and not kwargs:
        return getattr(maker, function)(_checked_size(args[0]))
    raise ValueError(f"unknown request {function!r}")


class _Lookahead:
    """Serves requests through a :class:`_TupleMaker`, working ahead on the ones it expects.

    A training loop asks for the same tuples in the same order every step, so after party
    0's request the dealer, instead of idling until the next one, computes the request that
    followed the same :data:`CONTEXT` requests last time (up to ``depth`` ahead). When the
    next request is the one expected, its share is ready; when it is not, the streams are
    rewound to where the first guess started and the request is served as usual.

    Either way every share is the one the dealer would have computed without looking ahead,
    bit for bit, and only shares of requests party 0 made are ever sent: a guessed share
    that is not asked for is dropped, and its stream positions are drawn again for the real
    request (sending both would give party 0 two correlations of the same random words).
    """

    CONTEXT = 12  # a VAE step asks ~80 times for ~30 kinds of tuple; 12 leaves ~1.5% misses
    MAX_LEARNED = 4096  # contexts remembered; a training loop has a few hundred

    def __init__(self, maker: _TupleMaker, depth: int) -> None:
        self.maker = maker
        self.depth = depth
        self._ids: dict[str, int] = {}  # signature -> small int, for cheap context keys
        self._requests: list[Any] = []  # by id
        self._successor: dict[tuple[int, ...], int] = {}
        self._recent: deque[int] = deque([-1] * self.CONTEXT, maxlen=self.CONTEXT)
        # (id, share, stream positions before it) of requests computed ahead
        self._ahead: deque[tuple[int, torch.Tensor, list[int]]] = deque()
        self.hits = self.misses = 0

    def serve(self, request: Any) -> torch.Tensor:
        """Party 0's share for ``request`` (validated as :func:`_serve_one` does)."""
        known = self._ids.get(_signature(request))
        if self._ahead and self._ahead[0][0] == known:
            share = self._ahead.popleft()[1]
            self.hits += 1
        else:
            if self._ahead:
                self.misses += 1
                self.maker.seek(self._ahead[0][2])
                self._ahead.clear()
            share = _serve_one(self.maker, request)
        self._learn(request, known)
        return share

    def work_ahead(self, asked: Callable[[], bool] = lambda: False) -> None:
        """Compute the expected next requests, up to ``depth`` of them, stopping as soon as
        ``asked()``: a request that has come is served first."""
        context = [*self._recent, *(ident for ident, _, _ in self._ahead)][-self.CONTEXT :]
        while len(self._ahead) < self.depth and not asked():
            expected = self._successor.get(tuple(context))
            if expected is None:
                return
            positions = self.maker.tell()
            share = _serve_one(self.maker, self._requests[expected])
            self._ahead.append((expected, share, positions))
            context = [*context[1:], expected]

    def restart(self) -> None:
        """The streams were replaced (a re-key): drop the work done ahead. The re-key stays
        in the context, so what follows it is learned too."""
        self._ahead.clear()
        self._recent.append(-2)

    def _learn(self, request: Any, known: int | None) -> None:
        if known is None:  # a validated request (serve() served it) of a new kind
            known = self._ids[_signature(request)] = len(self._requests)
            self._requests.append(request)
        if len(self._successor) >= self.MAX_LEARNED:
            self._successor.clear()
        self._successor[tuple(self._recent)] = known
        self._recent.append(known)


def _signature(request: Any) -> str:
    # requests come through the safe codec (dicts, lists, sizes, numbers, strings), whose
    # reprs differ wherever the requests do
    return repr(request)


def dealer_key(debug_seed: int, party: str, *labels: int) -> bytes:
    """The key ``party`` shares with the dealer in a debug-seeded run (tests only)."""
    return prg.debug_key(debug_seed, "dealer", party, *labels)


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
    ``lookahead`` is how many expected requests the dealer computes before they come
    (:class:`_Lookahead`; 0: none).

    Returns how many requests were served (``requests``), how many of them had been
    computed ahead (``computed_ahead``) and how many guesses were wrong
    (``guessed_wrong``). Raises :class:`PeerError` naming a party that vanishes, times out,
    is reported failed by another party, or sends a bad request.
    ``insecure_debug_seed`` fixes the keys so tests can compare transports bit for bit.
    """
    if insecure_debug_seed is not None:
        log.warning("INSECURE: the dealer's PRG keys are derived from a fixed debug seed")
    link = Link(channel, recorder or TrafficRecorder(), timeout=timeout, dealer=channel.me)
    maker = _TupleMaker(send_keys(link, parties, insecure_debug_seed))
    ahead = _Lookahead(maker, lookahead)
    first = parties[0]
    served = 0
    while True:
        request = link.recv_obj(first)
        kind = request.get("f") if isinstance(request, dict) else None
        if kind == _DONE:
            break
        if kind == _CPU:
            link.send_tensor(first, torch.tensor([time.process_time()], dtype=torch.float64))
            continue
        try:
            if kind == _REKEY:
                maker.streams = _rekeyed(parties, insecure_debug_seed, request.get("labels"))
                ahead.restart()
                continue
            share = ahead.serve(request)
        except (ValueError, TypeError, RuntimeError) as err:
            link.abort(first)
            raise PeerError(f"{first} sent a bad tuple request: {err}", peer=first) from err
        link.send_tensor(first, share)
        served += 1
        ahead.work_ahead(asked=lambda: link.has_message(first))
    for party in parties[1:]:
        message = link.recv_obj(party)
        if not (isinstance(message, dict) and message.get("f") == _DONE):
            raise link.malformed(party, "expected 'done'")
    return {"requests": served, "computed_ahead": ahead.hits, "guessed_wrong": ahead.misses}
