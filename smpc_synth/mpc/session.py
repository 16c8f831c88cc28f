"""Start and stop CrypTen for one data party: the one place its global state is changed.

``start_crypten`` installs the communicator (ours over the Channel, or CrypTen's own gloo
one) and the tuple provider (the dealer, or — for tests only — CrypTen's trusted first
party, which lets party 0 see every secret), then sets up CrypTen's shared PRG seeds over
that communicator. Every CrypTen attribute it replaces is an entry of
:data:`smpc_synth.crypten_backend.compat.PATCHES`, in for the session's lifetime
(:func:`~smpc_synth.crypten_backend.compat.patched_crypten`). ``stop_crypten`` undoes all of it.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from smpc_synth.config import PROVIDERS, TRANSPORTS
from smpc_synth.crypten_backend import compat
from smpc_synth.crypten_backend.communicator import ChannelCommunicator
from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.crypten_backend.link import DEALER, Link
from smpc_synth.crypten_backend.transport import check_gloo, insecure_warning, rendezvous_address
from smpc_synth.errors import InputError
from smpc_synth.mpc.dealer.provider import DealerProvider
from smpc_synth.mpc.primitives import prg
from smpc_synth.net.channel import Channel, TrafficStats
from smpc_synth.net.traffic import TrafficRecorder

crypten = import_crypten()
import crypten.communicator as crypten_comm  # noqa: E402
import torch.distributed as dist  # noqa: E402

log = logging.getLogger(__name__)

Transport = Literal[TRANSPORTS]
Provider = Literal[PROVIDERS]
_CRYPTEN_PROVIDER_NAME = {"dealer": DealerProvider.NAME, "tfp": "TFP"}


@dataclass
class MpcSession:
    """The running CrypTen session of this process."""

    transport: str
    provider: str
    parties: tuple[str, ...]
    rank: int
    recorder: TrafficRecorder
    link: Link | None
    dealer_provider: DealerProvider | None
    debug_seed: int | None = None  # tests only: every PRG key derives from it
    _restore: dict[str, Any] = field(default_factory=dict)
    _patches: ExitStack = field(default_factory=ExitStack)  # compat's, while it runs


_SESSION: MpcSession | None = None


def start_crypten(
    channel: Channel | None,
    parties: Sequence[str],
    rank: int,
    provider: Provider = "dealer",
    transport: Transport = "grpc",
    *,
    insecure_dev: bool = False,
    timeout: float | None = None,
    rendezvous: str | None = None,
    dealer: str = DEALER,
    insecure_debug_seed: int | None = None,
    allow_insecure: bool = False,
) -> MpcSession:
    """Make CrypTen run as data party ``rank`` of ``parties`` (member names, in rank order).

    ``channel`` carries all traffic with transport ``grpc`` and the dealer's traffic with
    either transport (it may be None only for ``gloo`` with ``tfp``). ``rendezvous`` is the
    gloo ``init_method`` (``tcp://HOST:PORT``), on loopback unless ``allow_insecure``
    (``network.allow_insecure``). ``timeout`` bounds every wait. ``insecure_debug_seed``
    fixes CrypTen's PRG seeds so tests can compare transports.
    """
    global _SESSION
    if _SESSION is not None:
        raise RuntimeError("a CrypTen session is already running in this process")
    _check_arguments(channel, provider, transport, insecure_dev, rendezvous, insecure_debug_seed)
    if transport == "gloo" and check_gloo(rendezvous, allow_insecure):
        log.warning("%s", insecure_warning(rendezvous))
    recorder = TrafficRecorder()
    link = None if channel is None else Link(channel, recorder, timeout=timeout, dealer=dealer)
    session = MpcSession(
        transport,
        provider,
        tuple(parties),
        rank,
        recorder,
        link,
        None,
        debug_seed=insecure_debug_seed,
    )
    session._restore = {
        "provider": crypten.cfg.mpc.provider,
        "verbose": crypten.cfg.communicator.verbose,
    }
    _SESSION = session
    try:
        _start(session, link, rendezvous, insecure_debug_seed)
    except BaseException:
        _teardown()
        raise
    return session


def _start(
    session: MpcSession, link: Link | None, rendezvous: str | None, debug_seed: int | None
) -> None:
    if session.provider == "dealer":
        deferred = session.transport == "grpc"  # settled by our link as rounds come back
        session.dealer_provider = DealerProvider(link, session.rank, deferred=deferred)
        if deferred:
            link.after_party_recv = session.dealer_provider.settle
    else:
        log.warning(
            "INSECURE: CrypTen's trusted-first-party provider lets %s see every secret; "
            "use it for tests only",
            session.parties[0],
        )
    if session.transport == "grpc":
        ChannelCommunicator.instance = ChannelCommunicator(link, session.parties, session.rank)
    # CrypTen's fixes, this session's communicator and provider, and with the dealer every
    # comparison (relu, gt, max, sigmoid's sign...) and product running the dealer's protocols
    session._patches.enter_context(compat.patched_crypten(session))
    crypten.cfg.communicator.verbose = True  # CrypTen's own counters, for comparison
    crypten.cfg.mpc.provider = _CRYPTEN_PROVIDER_NAME[session.provider]
    if session.transport == "grpc":
        crypten._setup_prng()  # exchanges the pairwise and global seeds over our links
    else:
        session._restore["env.GLOO_SOCKET_IFNAME"] = os.environ.get("GLOO_SOCKET_IFNAME")
        _init_gloo(session.parties, session.rank, rendezvous)
    if debug_seed is not None:
        _fix_seeds(debug_seed, len(session.parties), session.rank)


def stop_crypten() -> None:
    """End the session cleanly: wait for the other parties, release the dealer, restore."""
    session = _require_session()
    try:
        with session.recorder.phase("shutdown"):
            if session.transport == "grpc":
                crypten_comm.get().barrier()
            if session.dealer_provider is not None:
                session.dealer_provider.done()
    finally:
        _teardown()


@contextmanager
def crypten_session(*args: Any, **kwargs: Any) -> Iterator[MpcSession]:
    """``start_crypten`` / ``stop_crypten`` around a block; on error only restore state."""
    session = start_crypten(*args, **kwargs)
    try:
        yield session
    except BaseException:
        _teardown()
        raise
    stop_crypten()


def traffic() -> TrafficStats:
    """What this party has sent and received in the running session, by phase."""
    return _require_session().recorder.snapshot()


def cpu_clock() -> dict[str, float]:
    """This process's CPU seconds so far (all threads) and, on party 0 with the dealer, the
    dealer's (one small request): differences of two readings charge an epoch its CPU,
    which a busy machine changes less than its wall time."""
    session = _require_session()
    out = {"cpu_seconds": time.process_time()}
    if session.dealer_provider is not None and session.rank == 0:
        out["dealer_cpu_seconds"] = session.dealer_provider.dealer_cpu_seconds()
    return out


def cpu_since(before: dict[str, float]) -> dict[str, float]:
    """The CPU seconds of :func:`cpu_clock` spent since the reading ``before``."""
    now = cpu_clock()
    return {key: now[key] - value for key, value in before.items() if key in now}


def crypten_counters() -> dict[str, float]:
    """CrypTen's own counters (rounds = communication calls, bytes as CrypTen counts them)."""
    _require_session()
    return dict(crypten_comm.get().get_communication_stats())


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Attribute this party's traffic inside the block to phase ``name``."""
    with _require_session().recorder.phase(name):
        yield


def rekey(*labels: int) -> bool:
    """In a debug-seeded session, restart every PRG (CrypTen's and the dealer's streams)
    from keys derived from the seed and ``labels``, so that what follows draws the same
    randomness however the session got here (a resumed run repeats the uninterrupted one
    bit for bit). Every party must call it at the same point. Without a debug seed it does
    nothing: fresh keys are never re-derived. Returns whether it re-keyed."""
    session = _require_session()
    if session.debug_seed is None:
        return False
    if session.dealer_provider is not None:
        session.dealer_provider.rekey(session.debug_seed, labels)
    _fix_seeds(
        _derive_seed(session.debug_seed, "rekey", *labels), len(session.parties), session.rank
    )
    return True


def reset_traffic() -> None:
    """Zero this party's counters (ours and CrypTen's)."""
    _require_session().recorder.reset()
    crypten_comm.get().reset_communication_stats()


def _check_arguments(channel, provider, transport, insecure_dev, rendezvous, debug_seed) -> None:
    if transport not in TRANSPORTS:
        raise InputError(f"key 'mpc.transport': {transport!r} is not one of {TRANSPORTS}")
    if provider not in PROVIDERS:
        raise InputError(f"key 'mpc.provider': {provider!r} is not one of {PROVIDERS}")
    if provider == "tfp" and not insecure_dev:
        raise InputError(
            "key 'mpc.provider': 'tfp' lets the first party see every secret; it is refused "
            "unless 'mpc.insecure_dev' is true (tests only)"
        )
    if debug_seed is not None and not insecure_dev:
        raise InputError("key 'mpc.insecure_dev': fixed PRG seeds are for tests only")
    if transport == "gloo" and not rendezvous:
        raise InputError("key 'mpc.transport': 'gloo' needs a rendezvous (tcp://HOST:PORT)")
    if transport == "gloo":
        rendezvous_address(rendezvous)
    if channel is None and (transport == "grpc" or provider == "dealer"):
        raise InputError("key 'mpc.transport': this transport and provider need a channel")


def _init_gloo(parties: Sequence[str], rank: int, rendezvous: str) -> None:
    """CrypTen's own ``crypten.init`` for gloo, but with our object methods in place before
    anything can be sent (the session's compat entries have CrypTen build our
    GlooCommunicator), and on loopback held to loopback: torch's tcp:// store listens on
    every interface and gloo's pairs on the host name's address."""
    host, port = rendezvous_address(rendezvous)
    loopback = not check_gloo(rendezvous, allow_insecure=True)
    if loopback:
        _register_loopback_rendezvous()
        rendezvous = f"{_LOOPBACK_SCHEME}://{host}:{port}"
        interface = _loopback_interface()
        if interface is not None:
            os.environ["GLOO_SOCKET_IFNAME"] = interface
    os.environ.update(
        DISTRIBUTED_BACKEND="gloo",
        RENDEZVOUS=rendezvous,
        WORLD_SIZE=str(len(parties)),
        RANK=str(rank),
    )
    if crypten.mpc.ttp_required():  # its TTP talks pickle during init: never used here
        raise InputError("key 'mpc.provider': CrypTen's TTP provider is not supported")
    crypten_comm._init(use_threads=False, init_ttp=False)
    communicator = crypten_comm.DistributedCommunicator.instance
    communicator.parties = tuple(parties)
    communicator.set_name(parties[rank])
    crypten._setup_prng()


_LOOPBACK_SCHEME = "smpc-loopback"


def _loopback_store(url: str, timeout: dt.timedelta = dt.timedelta(minutes=5), **_kwargs):
    """torch.distributed rendezvous for ``smpc-loopback://HOST:PORT?rank=R&world_size=N``:
    torch's tcp:// one, but rank 0's store listens on HOST only."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    query = {k: int(v[0]) for k, v in parse_qs(parts.query).items() if k in ("rank", "world_size")}
    rank, world_size = query["rank"], query["world_size"]
    host, port = parts.hostname, parts.port
    if rank == 0:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(64)
        store = dist.TCPStore(
            host,
            port,
            world_size,
            True,
            timeout,
            multi_tenant=True,
            master_listen_fd=listener.detach(),
        )
    else:
        store = dist.TCPStore(host, port, world_size, False, timeout, multi_tenant=True)
    yield store, rank, world_size
    raise RuntimeError(f"{_LOOPBACK_SCHEME}:// cannot rendezvous again")


def _register_loopback_rendezvous() -> None:
    handlers = vars(importlib.import_module("torch.distributed.rendezvous"))
    if _LOOPBACK_SCHEME not in handlers["_rendezvous_handlers"]:
        dist.register_rendezvous_handler(_LOOPBACK_SCHEME, _loopback_store)


def _loopback_interface() -> str | None:
    """The loopback interface's name (``lo`` on Linux, ``lo0`` on macOS), for gloo."""
    names = [name for _, name in socket.if_nameindex()]
    return next((n for n in names if n in ("lo", "lo0")), None)


def _derive_seed(base: int, *labels: object) -> int:
    """A signed 64-bit seed for CrypTen's generators from ``base`` and ``labels``."""
    return int.from_bytes(prg.debug_key(base, *labels)[:8], "big", signed=True)


def _fix_seeds(seed: int, world_size: int, rank: int) -> None:
    cpu = torch.device("cpu")
    fixed = {
        "next": _derive_seed(seed, "pair", rank),
        "prev": _derive_seed(seed, "pair", (rank - 1) % world_size),
        "local": _derive_seed(seed, "local", rank),
        "global": _derive_seed(seed, "global"),
    }
    for key, value in fixed.items():
        crypten.generators[key][cpu].manual_seed(value)


def _teardown() -> None:
    global _SESSION
    session, _SESSION = _SESSION, None
    if session is None:
        return
    try:
        if session.transport == "grpc":
            ChannelCommunicator.shutdown()
        elif crypten_comm.is_initialized():
            crypten.uninit()
    finally:
        if "env.GLOO_SOCKET_IFNAME" in session._restore:  # _init_gloo may have pinned it
            interface = session._restore["env.GLOO_SOCKET_IFNAME"]
            if interface is None:
                os.environ.pop("GLOO_SOCKET_IFNAME", None)
            else:
                os.environ["GLOO_SOCKET_IFNAME"] = interface
        session._patches.close()
        crypten.cfg.mpc.provider = session._restore["provider"]
        crypten.cfg.communicator.verbose = session._restore["verbose"]


def _require_session() -> MpcSession:
    if _SESSION is None:
        raise RuntimeError("no CrypTen session: call start_crypten first")
    return _SESSION
