"""A mesh's connections: its gRPC server, a client channel per peer, and the long-lived
data stream per ordered pair (sender -> receiver) that carries every message.

Data-plane frames arrive and leave as raw bytes: :mod:`smpc_synth.net.codec` writes and
reads their bulk field itself (the protobuf runtime would copy it three times a side). The
method's name and its reply still come from data.proto, so any gRPC client of DataPlane
interoperates.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from concurrent import futures
from functools import partial
from typing import TYPE_CHECKING

import grpc

from smpc_synth.errors import InputError, PeerError
from smpc_synth.net import codec
from smpc_synth.net.addresses import is_loopback, split_address
from smpc_synth.net.tls import caller_name, channel_credentials, channel_options, server_credentials
from smpc_synth.net.v1 import control_pb2, control_pb2_grpc, data_pb2, session_pb2_grpc

if TYPE_CHECKING:
    from smpc_synth.net.mesh.peer import PeerMesh

log = logging.getLogger(__name__)

REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
# How gRPC reports a failed TLS handshake (untrusted or misnamed certificate): no retry helps.
_TLS_FAILURE = re.compile(r"(?i)tls handshake|ssl_error|certificate_verify|hostname verification")
POLL_S = 0.1  # how often a wait on a gRPC call checks whether the session was aborted
# The last message of a stream that ends as agreed. A stream that stops without it broke
# off, whatever gRPC says: a killed sender's stream can look half-closed to the receiver.
END_TAG = "mesh/end"
_DATA_SERVICE = data_pb2.DESCRIPTOR.services_by_name["DataPlane"].full_name
_STREAM_METHOD = f"/{_DATA_SERVICE}/Stream"


def details(error: BaseException) -> str:
    """What a failed gRPC call (or other error) says, for messages."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


class Connections:
    """The :class:`~smpc_synth.net.mesh.peer.PeerMesh` part that listens, reaches every peer
    and opens, drains and closes the data streams."""

    def start(self) -> None:
        """Listen for peers. InputError if the address cannot be bound."""
        workers = 4 * len(self._peer_addresses) + 4  # each inbound stream holds one
        server = grpc.server(
            futures.ThreadPoolExecutor(workers, thread_name_prefix=f"mesh-{self._me}"),
            options=self._limits.grpc_options(),
        )
        servicer = self._servicer()
        control_pb2_grpc.add_ControlServicer_to_server(servicer, server)
        session_pb2_grpc.add_SessionServicer_to_server(servicer, server)
        add_data_plane(servicer, server)
        try:
            if self._tls is not None:
                port = server.add_secure_port(self._listen, server_credentials(self._tls))
            else:
                self._warn_plain("listening on")
                port = server.add_insecure_port(self._listen)
        except RuntimeError as exc:
            raise InputError(f"{self._me} cannot listen on {self._listen}: {exc}") from None
        server.start()
        self._server, self._port, self._state = server, port, "listening"
        log.info("%s listening on %s", self._me, self.address)

    def connect(self) -> None:
        """Reach every peer, retrying with backoff up to ``connect_timeout_s``.

        PeerError naming the peers still unreachable then, or at once naming a peer whose
        TLS handshake fails or that refuses this member (certificate name, membership).
        Heartbeats start with the first peer reached; the data streams open at the end.
        """
        if self._server is None:
            raise RuntimeError("PeerMesh.connect before start()")
        self._open_channels()
        self._watcher = threading.Thread(
            target=self._watch, name=f"mesh-{self._me}-watch", daemon=True
        )
        self._watcher.start()
        limits = self._limits
        deadline = time.monotonic() + limits.connect_timeout_s
        pending, errors, delay = list(self._peer_addresses), {}, limits.backoff_initial_s
        while True:
            remaining = deadline - time.monotonic()
            calls = {
                peer: self._control[peer].Heartbeat.future(
                    control_pb2.Beat(state="connecting"),
                    timeout=max(min(limits.call_deadline_s, remaining), 0.1),
                    metadata=self._metadata,
                )
                for peer in pending
            }
            for peer, call in calls.items():
                try:
                    self._await(call)
                except grpc.RpcError as exc:
                    errors[peer] = self._retryable(peer, exc)
                    continue
                pending.remove(peer)
                self._heard(peer)
                self._reached.add(peer)
            self._raise_if_failed()
            remaining = deadline - time.monotonic()
            if not pending:
                break
            if remaining <= 0:
                where = "; ".join(
                    f"{p} at {self._peer_addresses[p]} ({errors[p]})" for p in pending
                )
                raise PeerError(
                    f"could not reach {', '.join(pending)} within "
                    f"{limits.connect_timeout_s:g} s: {where}",
                    pending[0],
                )
            log.info("%s: waiting for %s (retry in %.1f s)", self._me, ", ".join(pending), delay)
            self.abort_event.wait(min(delay, remaining))
            self._raise_if_failed()
            delay = min(delay * limits.backoff_multiplier, limits.backoff_max_s)
        self._open_streams()
        self._state = "connected"

    def close(self, timeout: float | None = None) -> None:
        """Leave the session: deliver everything sent, wait (at most ``timeout``, default
        ``progress_timeout_s``) until every peer has finished sending to us, then stop.

        The session has ended as agreed only if every peer finished: one that breaks off or
        is late aborts it, naming that peer, and :attr:`failure` says so afterwards. close
        itself never raises, since it also runs while an error unwinds."""
        if self._state == "closed":
            return
        wait = self._limits.progress_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + wait
        if self._streams and not self.aborted:
            self._state = "closing"
            end = codec.encode(END_TAG, b"", self._limits.chunk_bytes)
            for box in self._outboxes.values():
                with contextlib.suppress(PeerError):  # aborted meanwhile: seen below
                    box.put(end, 0, self._limits.peer_timeout_s)
                box.close(f"{self._me} has closed its side of the session")
            for peer, call in self._streams.items():
                try:
                    self._await(call, max(deadline - time.monotonic(), 0))
                except PeerError:
                    break  # aborted meanwhile
                except (grpc.RpcError, grpc.FutureTimeoutError, grpc.FutureCancelledError):
                    # a broken stream aborts the session (_stream_done); a late one below
                    log.warning("%s: could not confirm delivery to %s", self._me, peer)
            late = self._inbox.wait_ended(
                set(self._peer_addresses), max(deadline - time.monotonic(), 0)
            )
            if late and not self.aborted:
                names = sorted(late)
                self.abort(
                    f"{', '.join(names)} did not finish the session within {wait:g} s", names[0]
                )
        self._stopping.set()
        try:
            if self._watcher is not None:
                self._watcher.join()
            with self._abort_lock:
                notifier = self._abort_notifier
            if notifier is not None:
                notifier.join(self._limits.abort_deadline_s)
            for call in self._streams.values():
                call.cancel()
            for box in self._outboxes.values():
                box.close(f"{self._me} has left the session")
        finally:  # whatever happened above, no server thread may keep the process alive
            self._tap.close()
            if self._server is not None:
                self._server.stop(self._limits.shutdown_grace_s).wait()
            for channel in self._channels.values():
                channel.close()
            self._state = "closed"

    def _await(self, call: grpc.Future, timeout: float | None = None):
        """``call.result(timeout)``, but this session's failure as soon as it is aborted: a
        call to a stopped peer must not hold this member past the abort."""
        done = threading.Event()
        call.add_done_callback(lambda _: done.set())
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(POLL_S):
            if self.aborted:
                call.cancel()
                self._raise_if_failed()
            if deadline is not None and time.monotonic() > deadline:
                raise grpc.FutureTimeoutError()
        return call.result()

    def _retryable(self, peer: str, exc: grpc.RpcError) -> str:
        """Why ``peer`` was not reached, if retrying may help; else PeerError at once."""
        if exc.code() in REFUSED:
            raise PeerError(f"{peer} refused {self._me}: {exc.details()}", peer) from None
        if self._tls is not None and _TLS_FAILURE.search(exc.details() or ""):
            raise PeerError(
                f"TLS with {peer} at {self._peer_addresses[peer]} failed: check that its "
                f"certificate is issued by {self._tls.ca} and names {peer!r} ({details(exc)})",
                peer,
            ) from None
        return details(exc)

    def _check_transport(self, allow_insecure: bool) -> list[str]:
        """Names of members reached over plain TCP off loopback (refused unless allowed)."""
        members = {self._me: self._listen, **self._peer_addresses}
        hosts = {name: split_address(addr, name)[0] for name, addr in members.items()}
        if self._tls is not None:
            self._tls.read()  # missing or unreadable files: InputError before any traffic
            return []
        off = [f"{name} ({members[name]})" for name, host in hosts.items() if not is_loopback(host)]
        if off and not allow_insecure:
            raise InputError(
                f"plain TCP refused for {', '.join(off)}: not a loopback address. Give TLS "
                "certificates (smpc-synth certs) or allow plain TCP explicitly (allow_insecure)"
            )
        return off

    def _warn_plain(self, what: str) -> None:
        if self._plain_off_loopback:
            log.warning(
                "%s: INSECURE plain TCP %s, off loopback (%s): traffic is neither encrypted "
                "nor authenticated",
                self._me,
                what,
                ", ".join(self._plain_off_loopback),
            )

    def _open_channels(self) -> None:
        options = [*self._limits.grpc_options(), ("grpc.use_local_subchannel_pool", 1)]
        credentials = channel_credentials(self._tls) if self._tls else None
        for peer, address in self._peer_addresses.items():
            if peer in self._channels:
                continue
            if credentials is not None:
                opts = options + channel_options(peer)
                channel = grpc.secure_channel(address, credentials, options=opts)
            else:
                self._warn_plain(f"to {peer}")
                channel = grpc.insecure_channel(address, options=options)
            self._channels[peer] = channel
            self._control[peer] = control_pb2_grpc.ControlStub(channel)

    def _open_streams(self) -> None:
        for peer, channel in self._channels.items():
            stream = channel.stream_unary(
                _STREAM_METHOD,
                request_serializer=_wire,
                response_deserializer=data_pb2.StreamSummary.FromString,
            )
            call = stream.future(iter(self._outboxes[peer]), metadata=self._metadata)
            call.add_done_callback(partial(self._stream_done, peer))
            self._streams[peer] = call

    def _stream_done(self, peer: str, call: grpc.Future) -> None:
        if call.cancelled() or call.exception() is None:
            return
        if peer in self._departed or self._stopping.is_set():
            self._outboxes[peer].close(f"{peer} has left the session")
            return
        reason = f"lost the connection to {peer} ({details(call.exception())})"
        # a gRPC callback thread must not wait: _lost does
        threading.Thread(target=self._lost, args=(peer, reason), daemon=True).start()


def _wire(frame: codec.WireFrame) -> bytes:
    return frame.wire


def add_data_plane(servicer: DataService, server: grpc.Server) -> None:
    """Serve ``DataPlane.Stream`` on ``server`` with raw bytes in (see the module's doc)."""
    stream = grpc.stream_unary_rpc_method_handler(
        servicer.Stream,
        request_deserializer=None,  # raw bytes: parsed in Stream, which names a bad peer
        response_serializer=data_pb2.StreamSummary.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_DATA_SERVICE, {"Stream": stream}),)
    )


class Service:
    """The server side of a mesh: checks every caller, then serves it (one mixin per
    concern: :class:`DataService` here, the handshake's, liveness's and status's)."""

    def __init__(self, mesh: PeerMesh):
        self._mesh = mesh

    def _caller(self, context: grpc.ServicerContext) -> str:
        mesh = self._mesh
        try:
            peer = caller_name(context, mesh._members - {mesh.me}, mesh._tls is not None)
        except PermissionError as exc:
            log.warning("%s: %s", mesh.me, exc)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{mesh.me}: {exc}")
        mesh._heard(peer)
        return peer


class DataService(Service):
    """The server side of the data streams."""

    def Stream(self, request_iterator, context):
        peer = self._caller(context)
        mesh = self._mesh
        with mesh._lock:
            if peer in mesh._inbound:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{peer} already has a stream")
            mesh._inbound.add(peer)
        assembler = codec.Assembler(
            mesh._limits.max_queued_bytes, reserve=partial(mesh._inbox.reserve, peer)
        )
        messages = total = 0
        ended = False
        try:
            for wire in request_iterator:
                mesh._heard(peer)
                if mesh._tap.enabled:
                    mesh._tap.record(peer, wire)
                message = assembler.feed(codec.parse_frame(wire))
                if message is None:
                    continue
                if ended:
                    raise codec.CodecError(
                        f"a message after the end of the stream ({message.tag!r})"
                    )
                if message.tag == END_TAG:
                    ended = True
                    continue
                mesh._inbox.put(peer, *message)
                messages, total = messages + 1, total + message.nbytes
            if assembler.pending is not None:
                raise codec.CodecError(f"stream ended inside message {assembler.pending!r}")
        except codec.CodecError as exc:
            reason = f"{peer} sent a malformed message: {exc}"
            mesh.abort(reason, peer)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
        except PeerError as exc:  # aborted while waiting for inbox room
            context.abort(grpc.StatusCode.ABORTED, str(exc))
        except grpc.RpcError:  # the caller went away without closing the stream
            mesh._lost(peer, f"the connection from {peer} broke")
            return data_pb2.StreamSummary()
        if not ended:  # the caller's process or its connection is gone
            mesh._lost(peer, f"the connection from {peer} broke")
            return data_pb2.StreamSummary()
        mesh._departed.add(peer)
        mesh._inbox.end(peer)
        log.info("%s: %s has finished sending", mesh.me, peer)
        return data_pb2.StreamSummary(messages=messages, bytes=total)
