"""Session members in one process, for protocol unit tests: the one in-memory
:class:`~smpc_synth.net.channel.Channel` (integration tests use the real gRPC mesh)."""

from __future__ import annotations

import queue
from collections import defaultdict

from smpc_synth.errors import PeerError
from smpc_synth.net.channel import TrafficStats


class MemoryChannel:
    """Ordered messages per (sender, receiver, tag), like the mesh; payloads are not copied.

    ``recv`` waits up to ``wait`` seconds (0: fail at once, as a timeout would, for members
    that take turns on one thread; more when members run on threads)."""

    def __init__(self, me: str, members: tuple[str, ...], boxes: dict, wait: float = 0.0):
        self.me, self.peers = me, tuple(m for m in members if m != me)
        self._boxes, self._wait = boxes, wait

    @classmethod
    def connect(cls, members: tuple[str, ...], wait: float = 0.0) -> dict[str, MemoryChannel]:
        """One channel per member, all sharing one set of boxes."""
        boxes: dict = defaultdict(queue.Queue)
        return {m: cls(m, members, boxes, wait) for m in members}

    def send(self, peer: str, tag: str, payload) -> None:
        self._boxes[self.me, peer, tag].put(payload)

    def recv(self, peer: str, tag: str, timeout: float | None = None):
        try:
            return self._boxes[peer, self.me, tag].get(
                timeout=self._wait or None, block=self._wait > 0
            )
        except queue.Empty:
            raise PeerError(f"{peer} sent nothing", peer) from None

    def has_message(self, peer: str, tag: str) -> bool:
        return not self._boxes[peer, self.me, tag].empty()

    def stats(self) -> TrafficStats:
        return TrafficStats()
