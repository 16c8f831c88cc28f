"""The queues between a member's protocol thread and its gRPC streams: one inbox, an outbox
per peer.

Every message crosses threads twice (protocol thread -> the stream that sends it; the stream
that received it -> the protocol thread), so the hand-off is on the hot path of every round.
It goes through :class:`queue.SimpleQueue`, whose wait and wake-up are in C, and takes no
lock the other thread also needs, except the byte counters' (held for an addition). The
queues before did several Condition operations per message on locks both threads used
(reserve, put, get, a notify after each get): on raw gRPC+TLS streams, a small round trip
took 0.58 ms of CPU a process with them and 0.30 ms with bare SimpleQueues, while a queue of
one Condition per direction measured the same as a SimpleQueue. Conditions remain only where
a side must wait for room, which the limits make rare.

End-of-stream and failures travel as sentinels in the same queues, so a waiter wakes for them
as it would for a message.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from smpc_synth.errors import PeerError
from smpc_synth.net.channel import Payload
from smpc_synth.net.codec import WireFrame
from smpc_synth.net.limits import MESSAGE_OVERHEAD_BYTES

# Sentinels (never payloads: those are arrays, tensors or bytes).
_FAILED = object()  # the session was aborted
_ENDED = object()  # the peer closed its stream to us
_CLOSED = object()  # this side closed its stream to the peer


class _Room:
    """Bytes buffered against a limit; ``take`` waits for room (one message may always pass).

    The counter has a plain lock: taking and giving back room happen for every message,
    waiting for it almost never, so only a waiter touches the Condition."""

    def __init__(self, limit: int, blocked: Callable[[], bool]):
        self._limit = limit
        self._blocked = blocked  # true once waiting makes no sense (failed, closed)
        self._lock = threading.Lock()
        self._freed = threading.Condition(threading.Lock())
        self._used = 0
        self._waiting = 0

    def _try_take(self, nbytes: int) -> bool:
        with self._lock:
            if self._used == 0 or self._used + nbytes <= self._limit:
                self._used += nbytes
                return True
            return False

    def take(self, nbytes: int, timeout: float | None = None) -> bool:
        """Reserve ``nbytes``; False if no room came within ``timeout`` or ``blocked()``."""
        if self._blocked():
            return False
        if self._try_take(nbytes):
            return True
        with self._freed:
            self._waiting += 1  # before the check: give() then notifies
            try:
                taken = self._freed.wait_for(
                    lambda: self._blocked() or self._try_take(nbytes), timeout
                )
            finally:
                self._waiting -= 1
        return bool(taken) and not self._blocked()  # failed or closed: nothing more goes

    def give(self, nbytes: int) -> None:
        with self._lock:
            self._used -= nbytes
        if self._waiting:
            self.wake()

    def wake(self) -> None:
        with self._freed:
            self._freed.notify_all()

    @property
    def used(self) -> int:
        return self._used


class Inbox:
    """Messages received from peers, queued by (peer, tag) until the protocol takes them.

    A queued message counts against its peer's bound with its payload, its tag and
    :data:`~smpc_synth.net.limits.MESSAGE_OVERHEAD_BYTES`, so empty messages are bounded too.
    """

    def __init__(self, limit: int):
        self._limit = limit
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, str], queue.SimpleQueue[Any]] = {}
        self._rooms: dict[str, _Room] = {}
        self._ended: set[str] = set()  # peers that closed their stream to us cleanly
        self._ended_cond = threading.Condition(self._lock)
        self._failure: PeerError | None = None

    @staticmethod
    def cost(tag: str, nbytes: int) -> int:
        """Bytes a queued message of ``nbytes`` payload bytes counts for."""
        return nbytes + len(tag.encode()) + MESSAGE_OVERHEAD_BYTES

    def reserve(self, peer: str, tag: str, nbytes: int) -> None:
        """Wait until a message of ``nbytes`` from ``peer`` fits the limit (stalls that
        peer's stream meanwhile)."""
        if not self._room(peer).take(self.cost(tag, nbytes)):
            raise self._failure  # type: ignore[misc]  # take fails only once failed

    def put(self, peer: str, tag: str, payload: Payload, nbytes: int) -> None:
        """Queue a message whose room :meth:`reserve` took."""
        self._queue(peer, tag, creating=True).put((payload, nbytes))

    def end(self, peer: str) -> None:
        """``peer`` closed its stream: a wait for anything more from it raises."""
        with self._lock:
            self._ended.add(peer)
            for (sender, _), box in self._queues.items():
                if sender == peer:
                    box.put(_ENDED)
            self._ended_cond.notify_all()

    def fail(self, error: PeerError) -> None:
        """Every pending and later ``get`` raises ``error``."""
        with self._lock:
            self._failure = error
            for box in self._queues.values():
                box.put(_FAILED)
            rooms = list(self._rooms.values())
            self._ended_cond.notify_all()
        for room in rooms:
            room.wake()

    def has(self, peer: str, tag: str) -> bool:
        box = self._queues.get((peer, tag))
        return box is not None and not box.empty()

    def get(self, peer: str, tag: str, timeout: float | None) -> tuple[Payload, int] | None:
        """The next message from ``peer`` with ``tag``, or None after ``timeout`` seconds."""
        box = self._queue(peer, tag, creating=False)
        try:
            item = box.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _FAILED or item is _ENDED:
            box.put(item)  # for the next waiter on this queue
        if self._failure is not None:
            raise self._failure
        if item is _ENDED:
            raise self._left(peer, tag)
        payload, nbytes = item
        self._room(peer).give(self.cost(tag, nbytes))
        return payload, nbytes

    def wait_ended(self, peers: set[str], timeout: float) -> set[str]:
        """Wait until every peer in ``peers`` has closed its stream; return those that have not."""
        with self._ended_cond:
            self._ended_cond.wait_for(
                lambda: self._failure is not None or peers <= self._ended, timeout
            )
            return peers - self._ended

    def _room(self, peer: str) -> _Room:
        room = self._rooms.get(peer)
        if room is None:
            with self._lock:
                room = self._rooms.setdefault(
                    peer, _Room(self._limit, lambda: self._failure is not None)
                )
        return room

    def _queue(self, peer: str, tag: str, creating: bool) -> queue.SimpleQueue[Any]:
        """The queue of (peer, tag); for a reader, PeerError if none can ever fill it.

        A queue that exists gets a sentinel on failure or end, so only creating one needs
        the checks."""
        box = self._queues.get((peer, tag))
        if box is not None:
            return box
        with self._lock:
            if not creating and self._failure is not None:
                raise self._failure
            box = self._queues.get((peer, tag))
            if box is None:
                if not creating and peer in self._ended:
                    raise self._left(peer, tag)
                box = self._queues[peer, tag] = queue.SimpleQueue()
            return box

    @staticmethod
    def _left(peer: str, tag: str) -> PeerError:
        return PeerError(f"{peer} left the session without sending {tag!r}", peer)


class Outbox:
    """Frames waiting to go to one peer; the peer's data stream iterates them in order."""

    def __init__(self, peer: str, limit: int):
        self._peer = peer
        self._frames: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # keeps one message's frames together
        self._room = _Room(limit, lambda: self._failure is not None or self._closed is not None)
        self._closed: str | None = None  # why nothing more may be sent
        self._closed_event = threading.Event()
        self._failure: PeerError | None = None

    def put(self, frames: list[WireFrame], nbytes: int, timeout: float) -> None:
        """Queue one message; wait (up to ``timeout``) while the queue is over its limit."""
        has_room = self._room.take(nbytes, timeout)
        if self._failure is not None:
            raise self._failure
        with self._lock:  # close() takes it too: no frame can follow its end marker
            if self._closed is not None:
                raise PeerError(f"cannot send to {self._peer}: {self._closed}", self._peer)
            if not has_room:
                raise PeerError(
                    f"{self._peer} has not taken {self._room.used} queued bytes in {timeout:g} s",
                    self._peer,
                )
            for frame in frames:
                self._frames.put(frame)

    def close(self, why: str) -> None:
        """Let the stream end once the queued frames are out."""
        with self._lock:
            if self._closed is None:
                self._closed = why
                self._frames.put(_CLOSED)
            self._closed_event.set()
        self._room.wake()

    def fail(self, error: PeerError) -> None:
        self._failure = error
        self._frames.put(_FAILED)
        self._room.wake()

    def __iter__(self) -> Iterator[WireFrame]:
        while True:
            frame = self._frames.get()
            if self._failure is not None or frame is _FAILED:
                # Not a clean end, which the receiver would take for a finished peer: wait
                # until close(), which comes after the call is cancelled.
                self._closed_event.wait()
                return
            if frame is _CLOSED:
                return
            self._room.give(frame.payload_bytes)
            yield frame
