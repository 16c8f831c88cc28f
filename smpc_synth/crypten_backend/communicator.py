"""CrypTen communicators: ours over the party runtime's authenticated Channel, and gloo.

It implements what CrypTen 0.4.1 calls (``grep -r "comm.get()" crypten``): point-to-point
send/recv (also as isend/irecv), the collectives, the ``*_obj`` calls with a safe codec, and
CrypTen's own communication counters. Every collective is a single exchange round: each
party sends its tensor straight to the parties that need it, so an all_reduce among 2 or 3
parties costs one network latency and ``8 * (world_size - 1)`` bytes per element sent.
There is no torch.distributed process group.

:class:`GlooCommunicator` is CrypTen's own torch.distributed one (for trusted networks and
comparison) with the same safe codec in place of pickle for objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed import ReduceOp

from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.crypten_backend.link import Link
from smpc_synth.errors import PeerError
from smpc_synth.net import objects
from smpc_synth.net.limits import MAX_OBJECT_BYTES

crypten = import_crypten()
from crypten.communicator import DistributedCommunicator  # noqa: E402
from crypten.communicator.communicator import Communicator, _logging  # noqa: E402


class _Done:
    """What isend/irecv return: the transfer already happened, ``wait`` has nothing to do."""

    def wait(self) -> None:
        return None

    def is_completed(self) -> bool:
        return True


def _reduce(own: torch.Tensor, received: Sequence[torch.Tensor], op: Any) -> torch.Tensor:
    """Combine this party's ``own`` tensor with the peers' into the first received one: it
    was decoded from the wire for this call, so nobody else holds it (both ops commute)."""
    if not received:
        return own.clone()
    result = received[0]
    for tensor in (own, *received[1:]):
        if op == ReduceOp.SUM:
            result += tensor  # int64 wraps around: arithmetic mod 2^64
        elif op == ReduceOp.BXOR:
            result ^= tensor
        else:
            raise NotImplementedError(f"reduce op {op} is not used by CrypTen")
    return result


def _flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat tensor to send (a view when there is one tensor: sending copies anyway)."""
    if len(tensors) == 1:
        return tensors[0].reshape(-1)
    return torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.empty(0)


def _unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    pieces = flat.split([t.numel() for t in like])
    return [piece.view(t.shape) for piece, t in zip(pieces, like)]


class ChannelCommunicator(Communicator):
    """CrypTen's communicator for one data party, over
    :class:`~smpc_synth.crypten_backend.link.Link`."""

    BYTES_PER_ELEMENT = 8
    instance: ChannelCommunicator | None = None

    def __init__(self, link: Link, parties: Sequence[str], rank: int) -> None:
        if parties[rank] != link.me:
            raise ValueError(f"rank {rank} is {parties[rank]!r}, but this member is {link.me!r}")
        self.link = link
        self.parties = tuple(parties)
        self.rank = rank
        self.world_size = len(parties)
        self._name = link.me
        self.reset_communication_stats()

    # --- lifecycle (CrypTen's class-level singleton interface) --------------------------------

    @classmethod
    def is_initialized(cls) -> bool:
        return cls.instance is not None

    @classmethod
    def get(cls) -> ChannelCommunicator | None:
        return cls.instance

    @classmethod
    def initialize(cls, rank: int, world_size: int, init_ttp: bool = False) -> None:
        if cls.instance is None:
            raise RuntimeError("start the session with smpc_synth.mpc.session.start_crypten")

    @classmethod
    def shutdown(cls) -> None:
        cls.instance = None

    # --- identity ---------------------------------------------------------------------------

    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world_size

    def get_name(self) -> str:
        return self._name

    def set_name(self, name: str) -> None:
        self._name = name

    def _others(self) -> list[int]:
        return [r for r in range(self.world_size) if r != self.rank]

    def _send(self, tensor: torch.Tensor, dst: int) -> None:
        self.link.send_tensor(self.parties[dst], tensor)

    def _recv(self, like: torch.Tensor, src: int) -> torch.Tensor:
        return self.link.recv_tensor(self.parties[src], like.shape, like.dtype)

    def _exchange(self, tensor: torch.Tensor, peers: Sequence[int]) -> list[torch.Tensor]:
        """Send ``tensor`` to every peer, then receive one like it from each (one round)."""
        for peer in peers:
            self._send(tensor, peer)
        return [self._recv(tensor, peer) for peer in peers]

    # --- point to point ---------------------------------------------------------------------

    @_logging
    def send(self, tensor: torch.Tensor, dst: int) -> None:
        self._send(tensor, dst)

    @_logging
    def recv(self, tensor: torch.Tensor, src: int | None = None) -> torch.Tensor:
        if src is None:
            raise NotImplementedError("recv from any source is not supported")
        return self._recv(tensor, src)

    @_logging
    def isend(self, tensor: torch.Tensor, dst: int) -> _Done:
        self._send(tensor, dst)
        return _Done()

    @_logging
    def irecv(self, tensor: torch.Tensor, src: int | None = None) -> _Done:
        # CrypTen posts irecv and waits on it at once (crypten._sync_seeds, replicated.py):
        # receiving here, into ``tensor``, keeps its ordering semantics.
        if src is None:
            raise NotImplementedError("irecv from any source is not supported")
        tensor.data.copy_(self._recv(tensor, src))  # .data: a Parameter receives too
        return _Done()

    # --- collectives ------------------------------------------------------------------------

    @_logging
    def broadcast(self, input, src: int, group=None, batched: bool = False):
        tensors = list(input) if batched else [input]
        if self.rank == src:
            flat = _flatten(tensors)
            for peer in self._others():
                self._send(flat, peer)
            return input
        received = self.link.recv_tensor(self.parties[src])
        if received.numel() != sum(t.numel() for t in tensors):
            raise self.link.malformed(self.parties[src], "broadcast of the wrong size")
        for tensor, piece in zip(tensors, _unflatten(received, tensors)):
            tensor.data.copy_(piece)  # .data, as CrypTen's: a Parameter (requires grad) too
        return input

    @_logging
    def reduce(self, input, dst: int, op=ReduceOp.SUM, batched: bool = False):
        tensors = list(input) if batched else [input]
        flat = _flatten(tensors)
        if self.rank != dst:
            self._send(flat, dst)
            return None
        received = [self._recv(flat, peer) for peer in self._others()]
        result = _unflatten(_reduce(flat, received, op), tensors)
        return result if batched else result[0]

    @_logging
    def all_reduce(self, input, op=ReduceOp.SUM, batched: bool = False):
        tensors = list(input) if batched else [input]
        flat = _flatten(tensors)
        received = self._exchange(flat, self._others())
        result = _unflatten(_reduce(flat, received, op), tensors)
        return result if batched else result[0]

    @_logging
    def gather(self, tensor: torch.Tensor, dst: int) -> list:
        if self.rank != dst:
            self._send(tensor, dst)
            return [None]
        # this party's slot is a copy, as in CrypTen: the result outlives changes to the input
        own = tensor.detach().clone()
        return [own if r == dst else self._recv(tensor, r) for r in range(self.world_size)]

    @_logging
    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        received = iter(self._exchange(tensor, self._others()))
        own = tensor.detach().clone()  # a copy, as in gather
        return [own if r == self.rank else next(received) for r in range(self.world_size)]

    @_logging
    def scatter(self, scatter_list, src: int, size=None, device=None) -> torch.Tensor:
        if self.rank == src:
            for peer in self._others():
                self._send(scatter_list[peer], peer)
            return scatter_list[self.rank]
        if size is None:
            size = scatter_list[self.rank].size()
        return self.link.recv_tensor(self.parties[src], torch.Size(size), torch.long)

    @_logging
    def barrier(self) -> None:
        self._exchange(torch.zeros(0, dtype=torch.long), self._others())

    # --- objects (safe codec, never pickle) -------------------------------------------------

    @_logging
    def send_obj(self, obj: Any, dst: int, group=None) -> None:
        self.link.send_obj(self.parties[dst], obj)

    @_logging
    def recv_obj(self, src: int, group=None) -> Any:
        return self.link.recv_obj(self.parties[src])

    @_logging
    def broadcast_obj(self, obj: Any, src: int, group=None) -> Any:
        if self.rank == src:
            self.link.broadcast_obj([self.parties[peer] for peer in self._others()], obj)
            return obj
        return self.link.recv_obj(self.parties[src])


class GlooCommunicator(DistributedCommunicator):
    """CrypTen's gloo communicator, sending objects with :mod:`~smpc_synth.net.objects`.

    An object travels as its size (int64) then its encoding; a size of -1 stands for an
    object the codec refused to encode, so the receiver fails naming the sender instead of
    waiting for bytes that never come. A receiver allocates no more than
    :data:`~smpc_synth.net.limits.MAX_OBJECT_BYTES`, whatever size a peer announces."""

    parties: tuple[str, ...] = ()  # member names by rank, set by the session

    @_logging
    def send_obj(self, obj: Any, dst: int, group=None) -> None:
        group = self.main_group if group is None else group
        data = _encode_or_refuse(obj, lambda size: dist.send(size, dst, group=group))
        dist.send(data, dst, group=group)

    @_logging
    def recv_obj(self, src: int, group=None) -> Any:
        group = self.main_group if group is None else group
        size = torch.tensor(0, dtype=torch.int64)
        dist.recv(size, src, group=group)
        data = torch.empty(self._checked_size(src, size), dtype=torch.uint8)
        dist.recv(data, src, group=group)
        return self._decode_from(src, data)

    @_logging
    def broadcast_obj(self, obj: Any, src: int, group=None) -> Any:
        group = self.main_group if group is None else group
        if self.get_rank() == src:
            data = _encode_or_refuse(obj, lambda size: dist.broadcast(size, src, group=group))
            dist.broadcast(data, src, group=group)
            return obj
        size = torch.tensor(0, dtype=torch.int64)
        dist.broadcast(size, src, group=group)
        data = torch.empty(self._checked_size(src, size), dtype=torch.uint8)
        dist.broadcast(data, src, group=group)
        return self._decode_from(src, data)

    def _sender(self, src: int) -> str:
        return self.parties[src] if src < len(self.parties) else f"the party of rank {src}"

    def _checked_size(self, src: int, size: torch.Tensor) -> int:
        announced = int(size)
        if announced == _REFUSED_SIZE:
            raise PeerError(
                f"{self._sender(src)} could not send the object it owed (see its log)",
                self._sender(src),
            )
        if not 0 <= announced <= MAX_OBJECT_BYTES:
            raise PeerError(
                f"{self._sender(src)} sent a malformed object: announced {announced} bytes "
                f"(at most {MAX_OBJECT_BYTES})",
                self._sender(src),
            )
        return announced

    def _decode_from(self, src: int, data: torch.Tensor) -> Any:
        try:
            return objects.decode(data.numpy().tobytes())
        except objects.CodecError as err:
            sender = self._sender(src)
            raise PeerError(f"{sender} sent a malformed object: {err}", sender) from err


_REFUSED_SIZE = -1


def _encode_or_refuse(obj: Any, send_size) -> torch.Tensor:
    """The encoding of ``obj`` after ``send_size`` sent its size; if the codec refuses it,
    ``send_size`` sends the refusal and CodecError is raised."""
    try:
        encoded = objects.encode(obj)
    except objects.CodecError:
        send_size(torch.tensor(_REFUSED_SIZE, dtype=torch.int64))
        raise
    send_size(torch.tensor(len(encoded), dtype=torch.int64))
    return torch.frombuffer(bytearray(encoded), dtype=torch.uint8)
