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
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import grpc

from smpc_synth.config import NetworkConfig
from smpc_synth.errors import InputError, PeerError
from smpc_synth.net import codec
from smpc_synth.net.addresses import split_address
from smpc_synth.net.channel import Payload, TrafficStats
from smpc_synth.net.limits import Limits
from smpc_synth.net.mailbox import Inbox, Outbox
from smpc_synth.net.mesh.connection import END_TAG, Connections, DataService
from smpc_synth.net.mesh.handshake import Agreement, AgreementService
from smpc_synth.net.mesh.liveness import ABORTED, Liveness, LivenessService
from smpc_synth.net.mesh.status import Status, StatusService
from smpc_synth.net.tap import WireTap
from smpc_synth.net.tls import MEMBER_METADATA_KEY, TlsFiles
from smpc_synth.net.traffic import TrafficRecorder
from smpc_synth.net.v1 import control_pb2_grpc, data_pb2_grpc, session_pb2, session_pb2_grpc

log = logging.getLogger(__name__)

_NO_PHASE = ""


class PeerMesh(Connections, Agreement, Liveness, Status):
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

    @property
    def me(self) -> str:
        return self._me

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(self._peer_addresses)

    def send(self, peer: str, tag: str, payload: Payload) -> None:
        """Queue ``payload`` for ``peer``; returns without waiting for the receiver."""
        self._check_peer(peer)
        if tag == END_TAG:
            raise ValueError(f"tag {END_TAG!r} is reserved")
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
                if excuse == ABORTED:  # its verdict is on its way (Abort)
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

    def _servicer(self) -> _Servicer:
        return _Servicer(self)


class _Servicer(
    DataService,
    AgreementService,
    LivenessService,
    StatusService,
    control_pb2_grpc.ControlServicer,
    session_pb2_grpc.SessionServicer,
    data_pb2_grpc.DataPlaneServicer,
):
    """The server side of a :class:`PeerMesh`: every service a member answers."""
