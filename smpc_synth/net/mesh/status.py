"""A mesh's status: this member's state, phase, traffic and waits, here or asked of a peer
over the network."""

from __future__ import annotations

import time

import grpc

from smpc_synth.errors import PeerError
from smpc_synth.net.mesh.connection import Service, details
from smpc_synth.net.v1 import control_pb2


class Status:
    """The :class:`~smpc_synth.net.mesh.peer.PeerMesh` part that reports its status."""

    def status(self) -> dict[str, object]:
        """This member's state, phase, traffic and how long ago each peer was heard."""
        now = time.monotonic()
        stats = self.stats()
        waiting = self._waiting
        return {
            "member": self._me,
            "state": self._state,
            "phase": self._phase,
            "seconds_since_heard": {p: now - t for p, t in self._last_heard.items()},
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
            "messages_sent": stats.messages_sent,
            "rounds": stats.rounds,
            "abort_reason": str(self._failure) if self._failure else "",
            "waiting_for": waiting[0] if waiting else "",
            "waiting_seconds": now - waiting[1] if waiting else 0.0,
        }

    def peer_status(self, peer: str) -> dict[str, object]:
        """:meth:`status` of ``peer``, asked over the network."""
        self._check_peer(peer)
        try:
            reply = self._control[peer].Status(
                control_pb2.StatusRequest(),
                timeout=self._limits.call_deadline_s,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise PeerError(f"no status from {peer}: {details(exc)}", peer) from None
        status = {field.name: getattr(reply, field.name) for field in reply.DESCRIPTOR.fields}
        status["seconds_since_heard"] = dict(reply.seconds_since_heard)
        return status


class StatusService(Service):
    """The server side of status requests."""

    def Status(self, request, context):
        self._caller(context)
        return control_pb2.StatusReply(**self._mesh.status())
