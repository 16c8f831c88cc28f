"""The session's members connected pairwise over gRPC: the :class:`Channel` strategies use.

Every member runs one gRPC server and holds one client channel per peer. Data travels on one
long-lived ``DataPlane.Stream`` per ordered pair (sender -> receiver), so per-(sender, tag)
order is the stream's order and a small round costs no call set-up. Liveness: heartbeats to
every peer; a peer silent for :attr:`Limits.silence_limit_s` (so that every member has
stopped within ``peer_timeout_s``), a broken stream, or a ``recv`` that waits longer than
its deadline (``progress_timeout_s`` unless given) for a peer that is not itself waiting for
another member aborts the session, and every member's pending and later calls raise
:class:`~smpc_synth.errors.PeerError` naming the member at fault.

Lifecycle: ``start()`` (listen) -> ``connect()`` (reach every peer, with backoff) ->
``handshake(session_id, fingerprints)`` -> ``send``/``recv`` -> ``close()`` (drains, and waits
until every peer has finished sending). ``abort(reason)`` stops everything early.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent import futures
from functools import partial

import grpc

from smpc_synth.config import NetworkConfig
from smpc_synth.errors import InputError, PeerError
from smpc_synth.net import codec
from smpc_synth.net.addresses import is_loopback, split_address
from smpc_synth.net.channel import Payload, TrafficStats
from smpc_synth.net.limits import Limits
from smpc_synth.net.mailbox import Inbox, Outbox
from smpc_synth.net.tap import WireTap
from smpc_synth.net.tls import (
    MEMBER_METADATA_KEY,
    TlsFiles,
    caller_name,
    channel_credentials,
    channel_options,
    server_credentials,
)
from smpc_synth.net.traffic import TrafficRecorder
from smpc_synth.net.v1 import (
    control_pb2,
    control_pb2_grpc,
    data_pb2,
    data_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)

log = logging.getLogger(__name__)

_REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
# How gRPC reports a failed TLS handshake (untrusted or misnamed certificate): no retry helps.
_TLS_FAILURE = re.compile(r"(?i)tls handshake|ssl_error|certificate_verify|hostname verification")
_NO_PHASE = ""
_POLL_S = 0.1  # how often a wait on a gRPC call checks whether the session was aborted
# The last message of a stream that ends as agreed. A stream that stops without it broke
# off, whatever gRPC says: a killed sender's stream can look half-closed to the receiver.
_END_TAG = "mesh/end"
_ABORTED = "has aborted the session"


def _details(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


class PeerMesh:
    """This member's links to every other member of a session (implements ``Channel``).

    ``me`` is this member's name, ``listen`` its ``host:port`` (port 0: any free port, see
    :attr:`address`), ``peers`` maps every other member to its ``host:port``. With ``tls``
    every link is mutually authenticated; without it, every address must be loopback unless
    ``allow_insecure`` (or ``network.allow_insecure``) is set, which the log repeats.
    """

    def __init__(
        self,
        me: str,
        listen: str,
        peers: dict[str, str],
        tls: TlsFiles | None,
        network: NetworkConfig,
        allow_insecure: bool = False,
    ):
        if me in peers:
            raise InputError(f"member {me!r} is listed among its own peers")
        self._me = me
        self._peer_addresses = dict(peers)
        self._members = {me, *peers}
        self._listen = listen
        self._limits = Limits.from_network(network)
        self._tls = tls
        self._plain_off_loopback = self._check_transport(allow_insecure or network.allow_insecure)
        self._metadata = ((MEMBER_METADATA_KEY, me),)

        self._lock = threading.Lock()
        self._state = "created"
        self._server: grpc.Server | None = None
        self._port: int | None = None
        self._channels: dict[str, grpc.Channel] = {}
        self._control: dict[str, control_pb2_grpc.ControlStub] = {}
        self._streams: dict[str, grpc.Future] = {}
        self._inbound: set[str] = set()  # peers with an open data stream to us
        self._inbox = Inbox(self._limits.max_queued_bytes)
        self._outboxes = {p: Outbox(p, self._limits.max_queued_bytes) for p in peers}
        self._last_heard = dict.fromkeys(peers, time.monotonic())
        self._reached: set[str] = set()  # peers connect() has reached: heartbeats go to these
        # peers heard from at all (reached, or they called us): their silence is watched; one
        # never heard from may still be starting (connect_timeout_s bounds that wait)
        self._known: set[str] = set()
        self._departed: set[str] = set()
        self._hello: session_pb2.Hello | None = None
        self._hello_ready = threading.Event()
        self._stages: dict[str, set[str]] = defaultdict(set)
        self._stage_cond = threading.Condition()
        self._traffic = TrafficRecorder(rounds_at="send", default_phase="other")
        self._tap = WireTap(me)
        self._abort_lock = threading.Lock()
        self._phase = _NO_PHASE
        self._waiting: tuple[str, float] | None = None  # (peer, since) while recv waits
        self._failure: PeerError | None = None
        self.abort_event = threading.Event()  # set once the session is aborted
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._abort_notifier: threading.Thread | None = None

    # --- Channel protocol -------------------------------------------------------------

    @property
    def me(self) -> str:
        return self._me

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(self._peer_addresses)

    def send(self, peer: str, tag: str, payload: Payload) -> None:
        """Queue ``payload`` for ``peer``; returns without waiting for the receiver."""
        self._check_peer(peer)
        if tag == _END_TAG:
            raise ValueError(f"tag {_END_TAG!r} is reserved")
        self._raise_if_failed()
        self._require_connected("send")
        frames = codec.encode(tag, payload, self._limits.chunk_bytes)
        nbytes = codec.frame_bytes(frames)
        self._outboxes[peer].put(frames, nbytes, self._limits.peer_timeout_s)
        with self._lock:
            self._traffic.sent(nbytes)

    def recv(self, peer: str, tag: str, timeout: float | None = None) -> Payload:
        """The next message ``peer`` sent with ``tag``, as the kind it was sent.

        Waits at most ``timeout`` seconds (``None``: ``progress_timeout_s``); running out
        aborts the session naming ``peer``, since the protocol cannot go on without it. A
        peer that dies, stalls or leaves ends the wait sooner (heartbeats, broken streams).
        Heartbeats prove a process alive, not that it makes progress: the deadline catches
        a peer whose protocol thread is stuck. A peer that is itself waiting for another
        member's message is not at fault: the wait goes on (at most one deadline per
        member in all) while the member at the end of that chain is found and named.
        """
        self._check_peer(peer)
        limit = self._limits.progress_timeout_s if timeout is None else timeout
        started = time.monotonic()
        self._waiting = (peer, started)
        deadlines = 1
        try:
            message = self._inbox.get(peer, tag, limit)
            while message is None and deadlines < len(self._members):
                excuse = self._excuse(peer)
                if excuse is None:
                    break
                log.info("%s: %s %s: waiting on", self._me, peer, excuse)
                deadlines += 1
                if excuse == _ABORTED:  # its verdict is on its way (Abort)
                    message = self._inbox.get(peer, tag, self._limits.abort_deadline_s)
                else:
                    message = self._inbox.get(peer, tag, limit)
        finally:
            self._waiting = None
            waited = time.monotonic() - started
            with self._lock:
                self._traffic.waited(waited)
        if message is None:
            within = f"{limit:g} s" if deadlines == 1 else f"{deadlines} x {limit:g} s"
            self.abort(f"{peer} sent no {tag!r} message within {within}", culprit=peer)
            self._raise_if_failed()
        payload, nbytes = message
        with self._lock:
            self._traffic.received(nbytes)
        return payload

    def has_message(self, peer: str, tag: str) -> bool:
        """Whether a message from ``peer`` with ``tag`` has arrived and waits for ``recv``."""
        self._check_peer(peer)
        return self._inbox.has(peer, tag)

    def stats(self) -> TrafficStats:
        """Traffic so far. Bytes are raw payload bytes; a round starts with each send that
        follows a receive (or is the first send): a burst of sends to several peers between
        two receives counts once. ``by_phase`` holds the same figures per :meth:`phase`."""
        with self._lock:
            return self._traffic.snapshot()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute traffic inside the block to phase ``name`` in :meth:`stats`."""
        with self._lock:
            outer = self._traffic.enter(name or "other")
        previous, self._phase = self._phase, name
        try:
            yield
        finally:
            self._phase = previous
            with self._lock:
                self._traffic.leave(outer)

    # --- lifecycle --------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` this member listens on (the real port once started)."""
        host, port = split_address(self._listen, self._me)
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self._port if self._port is not None else port}"

    @property
    def aborted(self) -> bool:
        return self.abort_event.is_set()

    @property
    def failure(self) -> PeerError | None:
        """Why the session was aborted, or None."""
        return self._failure

    def start(self) -> None:
        """Listen for peers. InputError if the address cannot be bound."""
        workers = 4 * len(self._peer_addresses) + 4  # each inbound stream holds one
        server = grpc.server(
            futures.ThreadPoolExecutor(workers, thread_name_prefix=f"mesh-{self._me}"),
            options=self._limits.grpc_options(),
        )
        servicer = _Servicer(self)
        control_pb2_grpc.add_ControlServicer_to_server(servicer, server)
        session_pb2_grpc.add_SessionServicer_to_server(servicer, server)
        _add_data_plane(servicer, server)
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

    def _await(self, call: grpc.Future, timeout: float | None = None):
        """``call.result(timeout)``, but this session's failure as soon as it is aborted: a
        call to a stopped peer must not hold this member past the abort."""
        done = threading.Event()
        call.add_done_callback(lambda _: done.set())
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(_POLL_S):
            if self.aborted:
                call.cancel()
                self._raise_if_failed()
            if deadline is not None and time.monotonic() > deadline:
                raise grpc.FutureTimeoutError()
        return call.result()

    def _retryable(self, peer: str, exc: grpc.RpcError) -> str:
        """Why ``peer`` was not reached, if retrying may help; else PeerError at once."""
        if exc.code() in _REFUSED:
            raise PeerError(f"{peer} refused {self._me}: {exc.details()}", peer) from None
        if self._tls is not None and _TLS_FAILURE.search(exc.details() or ""):
            raise PeerError(
                f"TLS with {peer} at {self._peer_addresses[peer]} failed: check that its "
                f"certificate is issued by {self._tls.ca} and names {peer!r} ({_details(exc)})",
                peer,
            ) from None
        return _details(exc)

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
                problems.append((peer, f"no handshake from {peer} ({_details(exc)})"))
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
                self.abort(f"{peer} did not take stage {stage!r}: {_details(exc)}", peer)
        with self._stage_cond:
            self._stage_cond.wait_for(
                lambda: self.aborted or self._stages[stage] >= set(self._peer_addresses), wait
            )
            missing = sorted(set(self._peer_addresses) - self._stages[stage])
        self._raise_if_failed()
        if missing:
            self.abort(f"{', '.join(missing)} did not reach {stage!r} in {wait:g} s", missing[0])
            self._raise_if_failed()

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
            raise PeerError(f"no status from {peer}: {_details(exc)}", peer) from None
        status = {field.name: getattr(reply, field.name) for field in reply.DESCRIPTOR.fields}
        status["seconds_since_heard"] = dict(reply.seconds_since_heard)
        return status

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
            return _ABORTED
        other = reply.waiting_for
        return f"waits for {other} itself" if other and other not in (self._me, peer) else None

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
            end = codec.encode(_END_TAG, b"", self._limits.chunk_bytes)
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

    def __enter__(self) -> PeerMesh:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is KeyboardInterrupt:
            self.abort(f"{self._me} was interrupted (Ctrl-C)")
        elif exc is not None and not self.aborted:
            # a PeerError names who failed (a peer that left mid-protocol): peers that have
            # not noticed it yet must hear that name, not ours
            culprit = exc.peer if isinstance(exc, PeerError) else None
            self.abort(f"{self._me} stopped on an error: {exc}", culprit)
        self.close()

    # --- internals --------------------------------------------------------------------

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
        reason = f"lost the connection to {peer} ({_details(call.exception())})"
        # a gRPC callback thread must not wait: _lost does
        threading.Thread(target=self._lost, args=(peer, reason), daemon=True).start()

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
        elif isinstance(error, grpc.RpcError) and error.code() in _REFUSED:
            self.abort(f"{peer} refused our heartbeat: {error.details()}", peer)

    def _heard(self, peer: str) -> None:
        self._known.add(peer)
        self._last_heard[peer] = time.monotonic()

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

    def _require_connected(self, what: str) -> None:
        if self._state not in ("connected", "ready"):
            raise RuntimeError(f"PeerMesh.{what} needs a connected mesh (state: {self._state})")

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _check_peer(self, peer: str) -> None:
        if peer not in self._peer_addresses:
            raise InputError(
                f"{peer!r} is not a peer of {self._me} (peers: {', '.join(self.peers)})"
            )


# Data-plane frames arrive and leave as raw bytes: codec writes and reads their bulk field
# itself (the protobuf runtime would copy it three times a side). The method's name and its
# reply still come from data.proto, so any gRPC client of DataPlane interoperates.
_DATA_SERVICE = data_pb2.DESCRIPTOR.services_by_name["DataPlane"].full_name
_STREAM_METHOD = f"/{_DATA_SERVICE}/Stream"


def _wire(frame: codec.WireFrame) -> bytes:
    return frame.wire


def _add_data_plane(servicer: _Servicer, server: grpc.Server) -> None:
    stream = grpc.stream_unary_rpc_method_handler(
        servicer.Stream,
        request_deserializer=None,  # raw bytes: parsed in Stream, which names a bad peer
        response_serializer=data_pb2.StreamSummary.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_DATA_SERVICE, {"Stream": stream}),)
    )


class _Servicer(
    control_pb2_grpc.ControlServicer,
    session_pb2_grpc.SessionServicer,
    data_pb2_grpc.DataPlaneServicer,
):
    """The server side of a :class:`PeerMesh`: checks every caller, then serves it."""

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

    def Heartbeat(self, request, context):
        self._caller(context)
        return control_pb2.Beat(state=self._mesh._state, phase=self._mesh._phase)

    def Start(self, request, context):
        peer = self._caller(context)
        with self._mesh._stage_cond:
            self._mesh._stages[request.stage].add(peer)
            self._mesh._stage_cond.notify_all()
        return control_pb2.Ack()

    def Status(self, request, context):
        self._caller(context)
        return control_pb2.StatusReply(**self._mesh.status())

    def Abort(self, request, context):
        peer = self._caller(context)
        self._mesh._fail(f"{peer} aborted the session: {request.reason}", request.culprit or peer)
        return control_pb2.Ack()

    def Exchange(self, request, context):
        self._caller(context)
        mesh = self._mesh
        deadline = time.monotonic() + mesh._limits.call_deadline_s
        while not mesh._hello_ready.wait(_POLL_S):
            if mesh.aborted:
                context.abort(grpc.StatusCode.ABORTED, f"{mesh.me}: {mesh.failure}")
            if time.monotonic() > deadline:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{mesh.me} has not begun its handshake")
        return mesh._hello

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
                if message.tag == _END_TAG:
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
