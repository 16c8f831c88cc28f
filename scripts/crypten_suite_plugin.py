"""pytest plugin that runs CrypTen's own test suite over smpc-synth's CrypTen.

Loaded by ``scripts/crypten_suite.py`` (``pytest -p crypten_suite_plugin``) before pytest
imports any test module, and imported by the forkserver the party processes fork from:
wherever ``crypten`` runs, this module has patched it first. The environment
variable ``CRYPTEN_SUITE_CONFIG`` picks what the parties run:

- ``stock``: CrypTen 0.4.1 as shipped, with only the fixes it needs to run on this torch
  (``compat.shipped_crypten()``), over its own gloo communicator;
- ``gloo``: every patch, our protocols and the dealer as tuple provider, over CrypTen's
  gloo communicator (with our object codec);
- ``grpc``: the same over our gRPC communicator (mutual TLS on loopback).

What it changes in CrypTen's harness (``test/multiprocess_test_case.py``), and why:

- the test methods are wrapped when each test class is defined (pytest 9 binds them before
  ``setUpClass``, where CrypTen wraps them, so they would run in the main process);
- party processes come from a forkserver that has imported torch, CrypTen and the project
  once (a spawned process imports them again: tens of seconds on a loaded host);
- in ``gloo`` and ``grpc``, where CrypTen's harness calls ``crypten.init()``, each party
  starts an smpc-synth session (``mpc.session.crypten_session``) instead, next to a dealer
  process, and the provider the test class selects (``TFP``) is set back to the dealer;
- CrypTen's communication counters are reset after a session's start-up, which counts the
  seed exchange (``crypten.init()`` leaves them at 0);
- the main process waits for its parties with a deadline, and a party that ends without a
  result (a crash in ``setUp``) fails the test;
- the tuple provider's cache files go to a temporary directory, not into site-packages.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import multiprocessing
import os
import queue
import shutil
import tempfile
import time
import traceback
import unittest
from pathlib import Path

import torch

from smpc_synth.crypten_backend import compat

CONFIGS = ("stock", "gloo", "grpc")
CONFIG = os.environ.get("CRYPTEN_SUITE_CONFIG", "stock")
if CONFIG not in CONFIGS:
    raise SystemExit(f"CRYPTEN_SUITE_CONFIG must be one of {CONFIGS}, not {CONFIG!r}")
# a test's parties must all have ended by then (the slowest tests take minutes on 2 cores)
TEST_DEADLINE_S = float(os.environ.get("CRYPTEN_SUITE_TEST_DEADLINE_S", "1200"))
RECV_TIMEOUT_S = 600.0  # one wait for a peer's message (a party may compute for long)
DEALER = "dealer"

torch.set_num_threads(1)
# for the whole process (never closed): every fix, or in stock only those CrypTen needs
_PROCESS_PATCHES = contextlib.ExitStack()
_PROCESS_PATCHES.enter_context(compat.patched_crypten())
if CONFIG == "stock":
    _PROCESS_PATCHES.enter_context(compat.shipped_crypten())

import crypten  # noqa: E402
import crypten.communicator as comm  # noqa: E402
from crypten.config import cfg  # noqa: E402
from crypten.mpc.provider.provider import TupleProvider  # noqa: E402
from test import multiprocess_test_case as harness  # noqa: E402

MultiProcessTestCase = harness.MultiProcessTestCase


def _party_names(world_size: int) -> list[str]:
    return [f"rank{rank}" for rank in range(world_size)]  # CrypTen's default party names


# --- the main process: test methods, forkserver, setUp and join ------------------------------


def _wrap_tests(cls: type) -> None:
    for name in dir(cls):
        fn = getattr(cls, name)
        if name.startswith("test") and callable(fn) and not getattr(fn, "_suite", False):
            wrapped = MultiProcessTestCase.join_or_run(fn)
            wrapped._suite = True
            setattr(cls, name, wrapped)


def _init_subclass(cls, **kwargs) -> None:
    super(MultiProcessTestCase, cls).__init_subclass__(**kwargs)
    _wrap_tests(cls)


MultiProcessTestCase.__init_subclass__ = classmethod(_init_subclass)
MultiProcessTestCase.setUpClass = classmethod(lambda cls: None)

_original_init = MultiProcessTestCase.__init__


def _init(self, methodName="runTest") -> None:
    _original_init(self, methodName)
    self.mp_context = multiprocessing.get_context("forkserver")


MultiProcessTestCase.__init__ = _init


def _set_up(self, world_size: int = MultiProcessTestCase.DEFAULT_WORLD_SIZE) -> None:
    unittest.TestCase.setUp(self)
    crypten.debug.configure_logging()
    self.world_size = world_size
    self.default_tolerance = 0.5
    if self.rank != self.MAIN_PROCESS_RANK:
        return  # a party: its session is running already (see _run)
    self.queue = self.mp_context.Queue()
    self.file = tempfile.mktemp(prefix="crypten-suite-")  # a rendezvous name, like CrypTen's
    os.makedirs(self.file + ".cache")
    self.processes = []
    if CONFIG != "stock":
        _write_plan(self.file, world_size)
        dealer = self.mp_context.Process(
            target=_dealer_main, args=(self.file, world_size, self.queue), name=DEALER
        )
        dealer.start()
        self.processes.append(dealer)
    self.processes += [self._spawn_process(rank) for rank in range(world_size)]


MultiProcessTestCase.setUp = _set_up


def _tear_down(self) -> None:
    unittest.TestCase.tearDown(self)
    for process in getattr(self, "processes", []):
        if process.is_alive():
            process.kill()
        process.join(5)
    if self.rank == self.MAIN_PROCESS_RANK and hasattr(self, "file"):
        shutil.rmtree(self.file + ".cache", ignore_errors=True)
        for leftover in (self.file, self.file + ".plan.json"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


MultiProcessTestCase.tearDown = _tear_down


def _join_processes(self, fn) -> None:
    deadline = time.monotonic() + TEST_DEADLINE_S
    problems: dict[str, str] = {}
    for process in self.processes:
        process.join(max(deadline - time.monotonic(), 0.1))
    for process in self.processes:
        if process.is_alive():
            process.kill()
            process.join(5)
            problems[process.name] = f"still running after {TEST_DEADLINE_S:g} s: killed"
    reported: dict[str, str | None] = {}
    while True:
        try:
            name, tb = self.queue.get(timeout=1.0)
        except queue.Empty:
            break
        reported[name] = tb
    for process in self.processes:
        if process.name in problems:
            continue
        if process.name not in reported:
            problems[process.name] = f"ended (exit code {process.exitcode}) with no result"
        elif reported[process.name]:
            problems[process.name] = reported[process.name]
    if problems:
        message = f"\n~ {self.id()} failed ({CONFIG}) ~\n"
        message += "".join(f"** {name} **:\n{tb}\n" for name, tb in problems.items())
        self.fail(message)


MultiProcessTestCase._join_processes = _join_processes


def _spawn_process(self, rank: int):
    process = self.mp_context.Process(
        target=self.__class__._run,
        name=f"rank{rank}",
        args=(self._current_test_name(), cfg.config, rank, self.world_size, self.file, self.queue),
    )
    process.start()
    return process


MultiProcessTestCase._spawn_process = _spawn_process


# --- the parties and the dealer ---------------------------------------------------------------


def _write_plan(file: str, world_size: int) -> None:
    """Loopback addresses and TLS files of the parties and the dealer, for their processes."""
    from smpc_synth.net.addresses import free_ports

    names = [*_party_names(world_size), DEALER]
    ports = free_ports(len(names) + 1)
    plan = {
        "addresses": {n: f"127.0.0.1:{p}" for n, p in zip(names, ports)},
        "rendezvous": f"tcp://127.0.0.1:{ports[-1]}",  # gloo's, on loopback as sessions require
        "tls": {n: {k: str(v) for k, v in vars(files).items()} for n, files in _certs().items()},
    }
    Path(file + ".plan.json").write_text(json.dumps(plan))


def _plan(file: str) -> dict:
    return json.loads(Path(file + ".plan.json").read_text())


@functools.cache
def _certs():
    from smpc_synth.net.certs import write_certificates

    names = [*_party_names(3), DEALER]
    folder = tempfile.mkdtemp(prefix="crypten-suite-certs-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return write_certificates(names, folder)


@contextlib.contextmanager
def _mesh(file: str, me: str):
    from smpc_synth.config import NetworkConfig
    from smpc_synth.net.mesh import PeerMesh
    from smpc_synth.net.tls import TlsFiles

    plan = _plan(file)
    addresses = plan["addresses"]
    network = NetworkConfig(heartbeat_interval_s=1.0, peer_timeout_s=120.0, call_deadline_s=60.0)
    peers = {name: address for name, address in addresses.items() if name != me}
    mesh = PeerMesh(me, addresses[me], peers, TlsFiles(**plan["tls"][me]), network)
    with mesh:
        mesh.start()
        mesh.connect()
        yield mesh


def _dealer_main(file: str, world_size: int, results) -> None:
    from smpc_synth.mpc.dealer.server import serve_dealer

    tb = None
    try:
        with _mesh(file, DEALER) as mesh:
            serve_dealer(mesh, _party_names(world_size), timeout=RECV_TIMEOUT_S)
    except BaseException:
        tb = traceback.format_exc()
    _report(results, DEALER, tb)


@contextlib.contextmanager
def _party(file: str, rank: int, world_size: int):
    """CrypTen running as party ``rank``: CrypTen's own start-up in ``stock``, otherwise an
    smpc-synth session with the dealer."""
    if CONFIG == "stock":
        os.environ.update(
            WORLD_SIZE=str(world_size),
            RANK=str(rank),
            RENDEZVOUS=f"file://{file}",
            BACKEND="gloo",
        )
        crypten.init()
        try:
            yield
        finally:
            crypten.uninit()
        return
    from smpc_synth.mpc.session import crypten_session

    names = _party_names(world_size)
    with (
        _mesh(file, names[rank]) as mesh,
        crypten_session(
            mesh,
            names,
            rank,
            "dealer",
            CONFIG,
            timeout=RECV_TIMEOUT_S,
            rendezvous=_plan(file)["rendezvous"] if CONFIG == "gloo" else None,
        ),
    ):
        yield


def _run(cls, test_name, config, rank, world_size, file, results) -> None:
    torch.set_num_threads(1)
    self = cls(test_name)
    self.file, self.rank, self.world_size = file, int(rank), world_size
    cfg.set_config(config)
    TupleProvider._DEFAULT_CACHE_PATH = file + ".cache"
    tb = None
    try:
        with _party(file, self.rank, world_size):
            provider = cfg.mpc.provider
            self.setUp()
            if CONFIG != "stock":
                cfg.mpc.provider = provider  # the class selected TFP: the dealer it is
                # a session counts its seed exchange (it turns CrypTen's counters on
                # first); crypten.init() leaves them at 0 (see docs/crypten-compat.md)
                crypten.reset_communication_stats()
            _check_configuration()
            getattr(self, test_name)()
    except BaseException:
        tb = traceback.format_exc()
    _report(results, f"rank{rank}", tb)


MultiProcessTestCase._run = classmethod(_run)


def _check_configuration() -> None:
    """Fail the test unless the party runs what its configuration says."""
    provider = type(crypten.mpc.get_default_provider()).__name__
    communicator = type(comm.get()).__name__
    ltz = crypten.mpc.MPCTensor._ltz.__module__
    expected = {
        "stock": ({"TrustedFirstParty"}, "DistributedCommunicator", "crypten.mpc.mpc"),
        "gloo": ({"DealerProvider"}, "GlooCommunicator", "smpc_synth.mpc.primitives.compare"),
        "grpc": ({"DealerProvider"}, "ChannelCommunicator", "smpc_synth.mpc.primitives.compare"),
    }[CONFIG]
    got = (provider, communicator, ltz)
    if provider not in expected[0] or got[1:] != expected[1:]:
        raise AssertionError(f"configuration {CONFIG}: running {got}, expected {expected}")


def _report(results, name: str, tb: str | None) -> None:
    results.put((name, tb))
    results.close()
    results.join_thread()
    # skip the interpreter's teardown: gRPC and torch thread pools take seconds to wind down
    os._exit(0)


# --- pytest hooks -----------------------------------------------------------------------------


def pytest_collection_finish(session) -> None:
    """Party processes fork from a server that has imported the test modules already."""
    modules = sorted({item.module.__name__ for item in session.items if hasattr(item, "module")})
    multiprocessing.set_forkserver_preload([__name__, *modules])


def pytest_report_header(config) -> str:
    return f"crypten-suite configuration: {CONFIG} (comm: {comm.__name__})"
