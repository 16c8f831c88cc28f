"""The transport contract: what a training protocol may ask of the network.

A protocol sees only a :class:`Channel` (named peers, tagged messages, traffic figures);
:class:`~smpc_synth.net.PeerMesh` is the implementation the runtime hands it, and tests can
hand it any other object with the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

Payload = np.ndarray | torch.Tensor | bytes


@dataclass
class TrafficStats:
    """What one party sent, for metrics and benchmarks."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    rounds: int = 0
    seconds_waiting: float = 0.0
    by_phase: dict[str, dict[str, float]] = field(default_factory=dict)


class Channel(Protocol):
    """Ordered, authenticated point-to-point messages between named session members.

    ``send`` does not wait for the receiver (messages are buffered on arrival, within the
    configured memory limit); ``recv`` returns the next message from ``peer`` with ``tag``,
    of the kind that was sent (numpy array, torch tensor or bytes), or raises
    :class:`smpc_synth.errors.PeerError` naming the peer on timeout, abort or disconnect.
    """

    @property
    def me(self) -> str: ...

    @property
    def peers(self) -> tuple[str, ...]: ...

    def send(self, peer: str, tag: str, payload: Payload) -> None: ...

    def recv(self, peer: str, tag: str, timeout: float | None = None) -> Payload: ...

    def stats(self) -> TrafficStats: ...
