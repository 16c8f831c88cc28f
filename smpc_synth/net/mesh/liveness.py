"""A mesh's liveness: heartbeats to every peer, and the abort that stops every member,
naming the one at fault."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from functools import partial

import grpc

from smpc_synth.errors import PeerError
from smpc_synth.net.mesh.connection import REFUSED, Service
from smpc_synth.net.v1 import control_pb2

log = logging.getLogger(__name__)

ABORTED = "has aborted the session"


class Liveness:
    """The :class:`~smpc_synth.net.mesh.peer.PeerMesh` part that watches peers and aborts."""

    def abort(self, reason: str, culprit: str | None = None) -> None:
        """Stop the session: every pending and later ``recv``/``send`` raises PeerError
        (naming ``culprit``, else this member); peers are told, best effort."""
        # close() takes the same lock, so it always sees (and joins) the notifier: peers hear
        # who failed before our streams end, instead of blaming us for leaving.
        with self._abort_lock:
            if self._fail(reason, culprit or self._me):
                notifier = threading.Thread(
                    target=self._tell_peers_abort,
                    args=(reason, culprit or ""),
                    name=f"mesh-{self._me}-abort",
                    daemon=True,
                )
                notifier.start()
                self._abort_notifier = notifier

    def _watch(self) -> None:
        """Heartbeat every peer heard from each interval; abort if one stays silent too long
        (also during connect: a peer that called us and died before we reached it)."""
        limits = self._limits
        while not self._stopping.wait(limits.heartbeat_interval_s) and not self.aborted:
            now = time.monotonic()
            for peer in self._known - self._departed:
                silent = now - self._last_heard[peer]
                if silent > limits.silence_limit_s:
                    self.abort(
                        f"{peer} silent for {silent:.1f} s: declared dead after "
                        f"{limits.silence_limit_s:g} s so that everyone stops within "
                        f"peer_timeout_s = {limits.peer_timeout_s:g} s",
                        peer,
                    )
                    return
                call = self._control[peer].Heartbeat.future(
                    control_pb2.Beat(state=self._state, phase=self._phase),
                    timeout=limits.heartbeat_deadline_s,
                    metadata=self._metadata,
                )
                call.add_done_callback(partial(self._beat_done, peer))

    def _beat_done(self, peer: str, call: grpc.Future) -> None:
        error = call.exception()
        if error is None:
            self._heard(peer)
        elif isinstance(error, grpc.RpcError) and error.code() in REFUSED:
            self.abort(f"{peer} refused our heartbeat: {error.details()}", peer)

    def _heard(self, peer: str) -> None:
        self._known.add(peer)
        self._last_heard[peer] = time.monotonic()

    def _lost(self, peer: str, reason: str) -> None:
        """A link to ``peer`` broke: ``peer`` is at fault unless, within ``abort_deadline_s``,
        the session is aborted otherwise. A member that stops because of another one tells
        us so (Abort) before its streams close, but under load that call may arrive after
        the break; blaming ``peer`` at once would then name the messenger."""
        if self._stopping.is_set() or peer in self._departed:
            return
        if self.abort_event.wait(self._limits.abort_deadline_s):
            return
        if not self._stopping.is_set() and peer not in self._departed:
            self.abort(reason, peer)

    def _excuse(self, peer: str) -> str | None:
        """Why ``peer``, late with a message, is not at fault (asked over the network): it
        waits for another member, or it has aborted (and will say whom it blames).

        None if it waits for nobody, or for us, or does not answer in time: then a wait for
        ``peer`` that ran out is ``peer``'s fault."""
        try:
            reply = self._control[peer].Status(
                control_pb2.StatusRequest(),
                timeout=self._limits.status_deadline_s,
                metadata=self._metadata,
            )
        except grpc.RpcError:
            return None
        if reply.abort_reason:
            return ABORTED
        other = reply.waiting_for
        return f"waits for {other} itself" if other and other not in (self._me, peer) else None

    def _fail(self, message: str, culprit: str) -> bool:
        """Record the abort locally and wake every waiter; False if already aborted."""
        with self._lock:
            if self._failure is not None:
                return False
            self._failure = PeerError(message, culprit)
        log.error("%s: session aborted: %s", self._me, message)
        self._state = "aborted"
        self._inbox.fail(self._failure)
        for box in self._outboxes.values():
            box.fail(self._failure)
        with self._stage_cond:
            self._stage_cond.notify_all()
        self.abort_event.set()
        return True

    def _tell_peers_abort(self, reason: str, culprit: str) -> None:
        request = control_pb2.AbortRequest(reason=reason, culprit=culprit)
        calls = {
            peer: self._control[peer].Abort.future(
                request, timeout=self._limits.abort_deadline_s, metadata=self._metadata
            )
            for peer in set(self._control) - self._departed
        }
        for peer, call in calls.items():  # all in flight at once; each ends by its deadline
            if peer == culprit:  # a dead or stopped culprit never answers: not worth a wait
                continue
            with contextlib.suppress(grpc.RpcError):
                call.result()


class LivenessService(Service):
    """The server side of heartbeats and aborts."""

    def Heartbeat(self, request, context):
        self._caller(context)
        return control_pb2.Beat(state=self._mesh._state, phase=self._mesh._phase)

    def Abort(self, request, context):
        peer = self._caller(context)
        self._mesh._fail(f"{peer} aborted the session: {request.reason}", request.culprit or peer)
        return control_pb2.Ack()
