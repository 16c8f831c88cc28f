"""Run an MPC session's members as local processes over the real gRPC mesh.

For benchmarks and integration tests: each member is a fresh (spawned) process with its own
:class:`~smpc_synth.net.mesh.PeerMesh` on a loopback port, mutually authenticated with TLS
certificates made for the run. CrypTen keeps per-process global state, which is why each
member needs its own process. A member is a picklable function ``fn(mesh, **kwargs)``; its
return value (or the error it raised) comes back as a :class:`MemberOutcome`.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smpc_synth.config import NetworkConfig
from smpc_synth.net import netns
from smpc_synth.net.netns import Host

MemberFn = Callable[..., Any]


@dataclass
class MemberOutcome:
    """How one member ended: its return value, or the error it raised."""

    name: str
    ok: bool = False
    result: Any = None
    error_type: str = ""
    error: str = ""
    peer: str | None = None  # PeerError.peer: whom the member blamed
    exitcode: int | None = None
    seconds: float = 0.0  # from launch to the member's end


@dataclass
class LocalSession:
    """Running member processes; :meth:`wait` collects their outcomes."""

    processes: dict[str, multiprocessing.Process]
    results: multiprocessing.Queue
    started: float = field(default_factory=time.monotonic)

    def kill(self, name: str) -> None:
        """SIGKILL one member (fault injection)."""
        pid = self.processes[name].pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def wait(self, timeout: float) -> dict[str, MemberOutcome]:
        """Outcomes of all members; a member still running after ``timeout`` s is killed
        and reported with ``error_type`` ``"Hung"``."""
        outcomes = {name: MemberOutcome(name) for name in self.processes}
        deadline = time.monotonic() + timeout
        reported: set[str] = set()

        def collect(block: float) -> None:
            try:
                name, fields = (
                    self.results.get(timeout=block) if block else self.results.get_nowait()
                )
            except queue.Empty:
                return
            vars(outcomes[name]).update(fields)
            reported.add(name)

        while time.monotonic() < deadline and any(
            name not in reported and process.is_alive() for name, process in self.processes.items()
        ):
            collect(0.1)
        while len(reported) < len(self.processes):  # results of members that just ended
            before = len(reported)
            collect(0.5)
            if len(reported) == before:
                break
        for name, process in self.processes.items():
            process.join(max(deadline - time.monotonic(), 0.1))
            if process.is_alive():
                process.kill()
                process.join()
                outcomes[name].error_type = outcomes[name].error_type or "Hung"
            outcomes[name].exitcode = process.exitcode
        return outcomes


def launch(
    members: dict[str, tuple[MemberFn, dict[str, Any]]],
    workdir: str | Path,
    *,
    tls: bool = True,
    network: NetworkConfig | None = None,
    hosts: dict[str, Host] | None = None,
) -> LocalSession:
    """Start one process per member (``name -> (fn, kwargs)``) on loopback ports, or, with
    ``hosts`` (an emulated network's), each in its namespace at its address there."""
    from smpc_synth.net.addresses import free_ports
    from smpc_synth.net.certs import write_certificates

    names = list(members)
    if hosts is None:
        addresses = {n: f"127.0.0.1:{p}" for n, p in zip(names, free_ports(len(names)))}
    else:
        addresses = {n: hosts[n].address() for n in names}
    certs = write_certificates(names, Path(workdir) / "certs") if tls else {}
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    processes = {
        name: ctx.Process(
            target=_member_main,
            args=(name, addresses, certs.get(name), network or NetworkConfig(), fn, kwargs),
            kwargs={"results": results, "host": hosts.get(name) if hosts else None},
            name=f"mpc-{name}",
            daemon=True,
        )
        for name, (fn, kwargs) in members.items()
    }
    for process in processes.values():
        process.start()
    return LocalSession(processes, results)


def _member_main(name, addresses, tls_files, network, fn, kwargs, *, results, host=None) -> None:
    if host is not None:  # first, before any thread or socket exists
        netns.enter(host.netns)
        os.environ.update(host.env())
    import torch

    from smpc_synth.errors import PeerError
    from smpc_synth.net.mesh import PeerMesh

    torch.set_num_threads(1)
    started = time.monotonic()
    peers = {n: a for n, a in addresses.items() if n != name}
    outcome: dict[str, Any] = {}
    mesh = PeerMesh(name, addresses[name], peers, tls_files, network)
    try:
        with mesh:
            mesh.start()
            mesh.connect()
            outcome = {"ok": True, "result": fn(mesh, **kwargs)}
    except Exception as err:
        outcome = {
            "ok": False,
            "error_type": type(err).__name__,
            "error": str(err),
            "peer": err.peer if isinstance(err, PeerError) else None,
        }
    outcome["seconds"] = time.monotonic() - started
    results.put((name, outcome))
    results.close()
    results.join_thread()
    # The mesh is closed and the outcome delivered: skip the interpreter's slow teardown
    # (gRPC and torch thread pools take seconds to wind down on a busy machine).
    os._exit(0)
