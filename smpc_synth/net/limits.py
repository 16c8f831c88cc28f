"""Every size, deadline and retry bound of the network layer, in one place.

Values a run may change come from :class:`smpc_synth.config.NetworkConfig`; the rest are
fixed here. Nothing on the network is unbounded (docs/design.md §5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from smpc_synth.config import NetworkConfig

MIB = 1024 * 1024
# Headroom for the frame's tag, header and protobuf framing on top of its data slice.
FRAME_OVERHEAD_BYTES = 64 * 1024
# A message's tag names its protocol step ("mpc", "fed/bound"); longer ones are refused.
MAX_TAG_BYTES = 256
# Dimensions of one array on the wire (numpy's own limit is 64).
MAX_DIMS = 32
# What a queued message costs besides its payload and tag (queue entry, tuple, bookkeeping,
# the queue of a tag not seen before): counted against the inbox bound, so that a flood of
# empty messages is bounded as surely as one of large ones.
MESSAGE_OVERHEAD_BYTES = 1024
# One object sent by CrypTen's ``*_obj`` calls (sizes, small tensors): encoded size bound.
MAX_OBJECT_BYTES = 64 * MIB


@dataclass(frozen=True)
class Limits:
    """The bounds one :class:`~smpc_synth.net.mesh.PeerMesh` works within."""

    heartbeat_interval_s: float = NetworkConfig.heartbeat_interval_s
    peer_timeout_s: float = NetworkConfig.peer_timeout_s
    progress_timeout_s: float = NetworkConfig.progress_timeout_s
    connect_timeout_s: float = NetworkConfig.connect_timeout_s
    call_deadline_s: float = NetworkConfig.call_deadline_s
    max_message_bytes: int = NetworkConfig.max_message_bytes  # one gRPC message (frame)
    chunk_bytes: int = 1 * MIB  # payloads are cut into frames of this many raw bytes
    # Bytes buffered per peer and direction (sent but not yet on the wire; received but not
    # yet taken by recv). A full inbox stops reading the stream, which stalls the sender.
    # One payload may not exceed it.
    max_queued_bytes: int = 1024 * MIB
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0
    backoff_multiplier: float = 2.0
    abort_deadline_s: float = 2.0  # telling peers about an abort is best effort
    shutdown_grace_s: float = 1.0
    # What a member needs, once it knows the session is lost, to end its process: unwind,
    # free its buffers, let the interpreter exit (a loaded 2-core machine takes a second or two).
    exit_allowance_s: float = 3.0
    status_deadline_s: float = 5.0  # asking a peer what it waits for, before blaming it

    @classmethod
    def from_network(cls, network: NetworkConfig) -> Limits:
        """The limits for a run's network settings."""
        limits = cls(
            heartbeat_interval_s=network.heartbeat_interval_s,
            peer_timeout_s=network.peer_timeout_s,
            progress_timeout_s=network.progress_timeout_s,
            connect_timeout_s=network.connect_timeout_s,
            call_deadline_s=network.call_deadline_s,
            max_message_bytes=network.max_message_bytes,
        )
        if limits.chunk_bytes + FRAME_OVERHEAD_BYTES > limits.max_message_bytes:
            chunk = max(limits.max_message_bytes - FRAME_OVERHEAD_BYTES, 4096)
            limits = replace(limits, chunk_bytes=chunk)
        return limits

    @property
    def silence_limit_s(self) -> float:
        """How long a peer may stay silent (no heartbeat answered, no frame) before it is
        declared dead: ``peer_timeout_s`` less what noticing (one heartbeat interval) and
        stopping (telling peers, shutting down, exiting) take, so that every member has
        stopped within ``peer_timeout_s`` of the fault. Never below half of it."""
        stopping = (
            self.heartbeat_interval_s
            + self.abort_deadline_s
            + self.shutdown_grace_s
            + self.exit_allowance_s
        )
        return max(self.peer_timeout_s - stopping, self.peer_timeout_s / 2)

    @property
    def heartbeat_deadline_s(self) -> float:
        """Deadline of one heartbeat call: a stalled peer must not hold the caller long."""
        return min(self.call_deadline_s, self.peer_timeout_s)

    def grpc_options(self) -> list[tuple[str, int]]:
        """Channel and server options: message size and gRPC's own reconnect backoff."""
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", int(self.backoff_initial_s * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(self.backoff_initial_s * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(self.backoff_max_s * 1000)),
        ]
