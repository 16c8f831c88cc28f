"""The dealer's side in a data party: CrypTen's tuple provider, drawing from the dealer.

The semantics are those of CrypTen's TTP provider (``crypten/mpc/provider/ttp_provider.py``):
at start the dealer sends each party, over its authenticated link, a fresh PRG key that
only that party and the dealer know. Every party draws its share of each tuple from its
stream (AES-CTR, :mod:`smpc_synth.mpc.primitives.prg`); for the one value that must be
correlated (``c = a*b``, ``r^2``, the wraps of ``r``, the arithmetic copy of a random bit)
party 0 receives its share from the dealer (:mod:`smpc_synth.mpc.dealer.server`). So no
data party sees a tuple in the clear, and the dealer sees no data.

For differential privacy the dealer also deals noise (:meth:`DealerProvider.noise_share`):
it draws the noise from a key of its own and shares it like any correlated value, so no data
party, nor all but one of them together, knows it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.crypten_backend.link import Link
from smpc_synth.mpc.dealer import protocol
from smpc_synth.mpc.primitives import compare, prg
from smpc_synth.net import objects

crypten = import_crypten()
from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor  # noqa: E402
from crypten.mpc.provider.provider import TupleProvider  # noqa: E402


class DealerProvider(TupleProvider):
    """CrypTen tuple provider for a data party: shares from the dealer's key, party 0's
    correlated share from the dealer.

    Every tuple is a numbered request, and each party draws it from its own stream started
    at :func:`~smpc_synth.mpc.primitives.prg.request_nonce` of (number, request): party 0
    sends the request to the dealer as the tuple is begun, and the dealer, which may have
    guessed it and sent the share already (see
    :class:`~smpc_synth.mpc.dealer.server._Lookahead`), answers with party 0's share
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
        encoded = objects.encode(request)
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
            if message.dim() != 1 or message.numel() < protocol.FRAME_WORDS:
                raise self.link.malformed(self.link.dealer, "expected a framed share")
            generation, got, got_tag = message[: protocol.FRAME_WORDS].tolist()
            if generation != self._generation or (got < number and got != protocol.CPU_NUMBER):
                continue  # from before a re-key, or guessed for a request since made
            if got == number and got_tag == tag:
                if self._early:  # guesses for numbers now past will not be asked for
                    self._early = {k: v for k, v in self._early.items() if k > number}
                return message[protocol.FRAME_WORDS :]
            if got > number:  # sent ahead; a wrong guess for ``number`` is simply dropped
                self._early[got] = (got_tag, message[protocol.FRAME_WORDS :])

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
        return protocol.MAX_TUPLE_ELEMENTS

    @property
    def max_compared(self) -> int:
        """The most elements one comparison request may ask the dealer for."""
        return protocol.MAX_TUPLE_ELEMENTS // protocol.COMPARISON_FRACTION

    def product_size(self, size0: torch.Size, size1: torch.Size, op: str, kwargs: dict):
        """The size of ``op`` of operands of ``size0`` and ``size1``."""
        return protocol.product_size(size0, size1, op, kwargs)

    def product_fits(self, size0: torch.Size, size1: torch.Size, op: str, kwargs: dict) -> bool:
        """Whether :meth:`generate_additive_triple` serves this product: its operands and
        result are within :attr:`max_elements`, or it is elementwise on equal sizes (which
        :meth:`_elementwise` splits); otherwise the protocol must split it."""
        if op == "mul" and size0 == size1:
            return True
        sizes = (size0, size1, protocol.product_size(size0, size1, op, kwargs))
        return max(math.prod(s) for s in sizes) <= protocol.MAX_TUPLE_ELEMENTS

    def _elementwise(
        self, function: str, size: torch.Size, operands: int, *extra: Any, bits: bool = False
    ) -> list[torch.Tensor]:
        """One elementwise tuple of ``size``, asked for as ``operands`` copies of its size
        and ``extra``: the free draws (one per operand; ``bits``: random bits) and the
        correlated share. More than :attr:`max_elements` elements are asked for in flat
        pieces, each a request (and a tuple) of its own, and put together."""
        count = math.prod(size)
        if count <= protocol.MAX_TUPLE_ELEMENTS:
            self._begin(function, *[size] * operands, *extra)
            draw = self._bit if bits else self._ring
            return [*(draw(size) for _ in range(operands)), self._correlated(size)]
        parts = [torch.empty(count, dtype=torch.long) for _ in range(operands + 1)]
        for start in range(0, count, protocol.MAX_TUPLE_ELEMENTS):
            piece = torch.Size((min(protocol.MAX_TUPLE_ELEMENTS, count - start),))
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
            c = self._correlated(protocol.product_size(size0, size1, op, kwargs))
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
            c = self._correlated(protocol.broadcast(size0, size1))
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
        c = self._correlated(protocol.matmul_size(size0, size1))
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
        """This party's material for one secure comparison
        (:mod:`smpc_synth.mpc.primitives.compare`): its free fields from its own stream, and
        its share of the correlated ones (party 0's is the dealer's, filled in by
        :meth:`settle` when deferred)."""
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
        self.link.send_obj(self.link.dealer, {"f": protocol.CPU})
        return float(self._take(protocol.CPU_NUMBER, 0).view(torch.float64)[0])

    def rekey(self, debug_seed: int, labels: Sequence[int]) -> None:
        """Restart this party's stream (and, from party 0, every stream at the dealer) from
        the debug keys for ``labels``, and the request numbers from 0: draws after this
        point no longer depend on what was drawn before it (a resumed run repeats the
        uninterrupted one)."""
        self.settle()
        if self.party_rank == 0:
            self.link.send_obj(self.link.dealer, {"f": protocol.REKEY, "labels": list(labels)})
        self.key = protocol.dealer_key(debug_seed, self.link.me, *labels)
        self.stream = prg.Stream(self.key)
        self._number = 0
        self._generation += 1
        self._early.clear()

    def done(self) -> None:
        """Tell the dealer this party needs no more tuples."""
        self.settle()
        self.link.send_obj(self.link.dealer, {"f": protocol.DONE})
