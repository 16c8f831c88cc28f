"""A mesh's agreement steps: the handshake (every member has the same session id and
fingerprints) and barriers (every member has reached a stage)."""

from __future__ import annotations

import time

import grpc

from smpc_synth.errors import PeerError
from smpc_synth.net.mesh.connection import POLL_S, Service, details
from smpc_synth.net.v1 import control_pb2, session_pb2, session_pb2_grpc


class Agreement:
    """The :class:`~smpc_synth.net.mesh.peer.PeerMesh` part that agrees with every peer."""

    def handshake(self, session_id: str, fingerprints: dict[str, str]) -> None:
        """Check every peer has the same session id and fingerprints as this member.

        PeerError naming each disagreeing peer and item (every member raises its own, and
        the session is aborted).
        """
        self._require_connected("handshake")
        self._hello = session_pb2.Hello(session_id=session_id, fingerprints=fingerprints)
        self._hello_ready.set()
        stub = {p: session_pb2_grpc.SessionStub(c) for p, c in self._channels.items()}
        calls = {
            peer: stub[peer].Exchange.future(
                self._hello,
                timeout=self._limits.call_deadline_s + self._limits.abort_deadline_s,
                metadata=self._metadata,
            )
            for peer in self._peer_addresses
        }
        problems: list[tuple[str, str]] = []
        unanswered = False
        for peer, call in calls.items():
            try:
                reply = self._await(call)
            except grpc.RpcError as exc:
                problems.append((peer, f"no handshake from {peer} ({details(exc)})"))
                unanswered = True
                continue
            differences = _differences(self._hello, reply, peer)
            if differences:
                problems.append((peer, f"{peer} differs in {'; '.join(differences)}"))
        if problems:
            # a peer that stopped because of someone else answers no more but tells us whom
            # to blame (Abort), maybe a moment later: blaming it at once names the messenger
            if unanswered and self.abort_event.wait(self._limits.abort_deadline_s):
                self._raise_if_failed()
            message = "handshake failed: " + "; ".join(text for _, text in problems)
            self.abort(message, culprit=problems[0][0])
            raise PeerError(message, problems[0][0])
        self._state = "ready"

    def barrier(self, stage: str, timeout: float | None = None) -> None:
        """Tell every peer this member reached ``stage``; wait until all peers have too.

        PeerError naming the peers missing after ``timeout`` (default ``peer_timeout_s``).
        """
        self._require_connected("barrier")
        wait = self._limits.peer_timeout_s if timeout is None else timeout
        calls = {
            peer: self._control[peer].Start.future(
                control_pb2.StartRequest(stage=stage),
                timeout=self._limits.call_deadline_s,
                metadata=self._metadata,
            )
            for peer in self._peer_addresses
        }
        for peer, call in calls.items():
            try:
                call.result()
            except grpc.RpcError as exc:
                self.abort(f"{peer} did not take stage {stage!r}: {details(exc)}", peer)
        with self._stage_cond:
            self._stage_cond.wait_for(
                lambda: self.aborted or self._stages[stage] >= set(self._peer_addresses), wait
            )
            missing = sorted(set(self._peer_addresses) - self._stages[stage])
        self._raise_if_failed()
        if missing:
            self.abort(f"{', '.join(missing)} did not reach {stage!r} in {wait:g} s", missing[0])
            self._raise_if_failed()


class AgreementService(Service):
    """The server side of the handshake and of barriers."""

    def Exchange(self, request, context):
        self._caller(context)
        mesh = self._mesh
        deadline = time.monotonic() + mesh._limits.call_deadline_s
        while not mesh._hello_ready.wait(POLL_S):
            if mesh.aborted:
                context.abort(grpc.StatusCode.ABORTED, f"{mesh.me}: {mesh.failure}")
            if time.monotonic() > deadline:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{mesh.me} has not begun its handshake")
        return mesh._hello

    def Start(self, request, context):
        peer = self._caller(context)
        with self._mesh._stage_cond:
            self._mesh._stages[request.stage].add(peer)
            self._mesh._stage_cond.notify_all()
        return control_pb2.Ack()


def _differences(mine: session_pb2.Hello, theirs: session_pb2.Hello, peer: str) -> list[str]:
    """What differs between two hellos, each as 'item (ours here, theirs at peer)'."""
    pairs = {"session id": (mine.session_id, theirs.session_id)}
    for key in sorted(set(mine.fingerprints) | set(theirs.fingerprints)):
        pairs[key] = (mine.fingerprints.get(key), theirs.fingerprints.get(key))
    differing = [
        f"{item} ({_short(a)} here, {_short(b)} at {peer})"
        for item, (a, b) in pairs.items()
        if a != b
    ]
    shown = 10  # a wholly different config would otherwise fill the screen
    if len(differing) > shown:
        differing[shown:] = [f"and {len(differing) - shown} more"]
    return differing


def _short(value: str | None) -> str:
    if value is None:
        return "missing"
    return value if len(value) <= 40 else value[:12] + "..."
