"""The dealer member's loop: Beaver triples and other correlated randomness on request.

The dealer is a member that no data party controls. It gives each party a PRG key of its
own (:func:`send_keys`), replays every party's draws to learn each tuple and sends party 0
its share of the correlated value; the arithmetic is that of CrypTen's ``TTPServer``, the
transport and the PRG are ours. It only accepts the ops, sizes and keyword arguments that
CrypTen's protocols use (:mod:`smpc_synth.mpc.dealer.protocol`). Tuples are numbered, and
each is drawn from streams of its own (:func:`~smpc_synth.mpc.primitives.prg.request_nonce`),
so the dealer can send the share of a tuple it expects before party 0 asks for it
(:class:`_Lookahead`). DP noise is drawn from the dealer's own key, which no party holds.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from smpc_synth import phases
from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.crypten_backend.link import Link
from smpc_synth.dp import sampling
from smpc_synth.errors import PeerError
from smpc_synth.mpc.dealer import protocol
from smpc_synth.mpc.primitives import compare, prg, ring
from smpc_synth.net import objects
from smpc_synth.net.channel import Channel
from smpc_synth.net.traffic import TrafficRecorder

crypten = import_crypten()
from crypten.common.util import count_wraps  # noqa: E402

log = logging.getLogger(__name__)

# Parties may go a long time without needing a tuple (data preparation, sampling); a party
# that dies meanwhile is caught by the channel's heartbeats, not by this wait.
DEALER_IDLE_TIMEOUT_S = 24 * 3600.0
MAX_KEPT = 64  # kept triples the dealer remembers (a training step makes one per layer)
LOOKAHEAD_DEPTH = 2  # shares the dealer guesses and sends before party 0 asks (_Lookahead)


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
    if math.prod(value) > protocol.MAX_TUPLE_ELEMENTS:
        raise ValueError(
            f"size {tuple(value)} is larger than {protocol.MAX_TUPLE_ELEMENTS} elements"
        )
    return value


def _rekeyed(parties: Sequence[str], debug_seed: int | None, labels: Any) -> list[bytes]:
    """The parties' keys for party 0's re-key request (debug seeds only)."""
    if debug_seed is None:
        raise ValueError("asked to re-key, but this dealer has no debug seed")
    if not isinstance(labels, list) or not all(type(x) is int for x in labels):
        raise ValueError(f"re-key labels {labels!r}")
    return [protocol.dealer_key(debug_seed, party, *labels) for party in parties]


def _checked_kwargs(kwargs: Any) -> dict[str, Any]:
    if not isinstance(kwargs, dict) or not set(kwargs) <= protocol.PRODUCT_KWARGS:
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
        if len(args) != 3 or args[2] not in protocol.PRODUCT_OPS:
            raise ValueError(f"unexpected additive-triple arguments {args!r}")
        size0, size1 = _checked_size(args[0]), _checked_size(args[1])
        _checked_size(protocol.product_size(size0, size1, args[2], kwargs))
        return maker.additive(size0, size1, args[2], **kwargs)
    if function == "kept" and len(args) == 2 and not kwargs:
        size0, size1 = _checked_size(args[0]), _checked_size(args[1])
        if len(size0) != 2 or len(size1) != 2:
            raise ValueError(f"a kept triple is a product of matrices, got {args!r}")
        _checked_size(protocol.matmul_size(size0, size1))
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
        _checked_size(protocol.broadcast(size0, size1))
        return maker.binary(size0, size1)
    if function == "compare" and not kwargs:
        layout = compare.Layout.from_request(
            args, protocol.MAX_TUPLE_ELEMENTS // protocol.COMPARISON_FRACTION
        )
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
        encoded = objects.encode(request)
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


def noise_key(debug_seed: int | None) -> bytes:
    """The dealer's own key for DP noise: fresh from the OS CSPRNG, or (tests only) derived
    from the debug seed, so that a plaintext run with the same seed draws the same noise."""
    return sampling.noise_key(debug_seed)


def send_keys(link: Link, parties: Sequence[str], debug_seed: int | None = None) -> list[bytes]:
    """Give each party its own PRG key, over its own authenticated link."""
    keys = [
        prg.fresh_key() if debug_seed is None else protocol.dealer_key(debug_seed, party)
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
        if kind == protocol.DONE:
            break
        if kind == protocol.CPU:
            clock = torch.tensor([time.process_time()], dtype=torch.float64)
            link.send_tensor(first, _framed(generation, protocol.CPU_NUMBER, 0, clock))
            continue
        try:
            if kind == protocol.REKEY:
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
        if not (isinstance(message, dict) and message.get("f") == protocol.DONE):
            raise link.malformed(party, "expected 'done'")
    return {"requests": served, "computed_ahead": ahead.hits, "guessed_wrong": ahead.misses}
