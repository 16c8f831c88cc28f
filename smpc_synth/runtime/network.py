"""Emulated networks: every member in its own network namespace, every link shaped alike.

``--network lan|wan|loopback|PROFILE.toml`` picks a :class:`NetworkProfile` (round-trip
time, bandwidth, jitter). ``loopback`` runs members on 127.0.0.1 as always; any other
profile builds, for N members:

- one namespace per member, interface ``eth0`` at 10.77.i.2, and a router namespace with
  one veth per member (10.77.i.1), MTU 65,000 so a TCP segment is up to ~64 KB;
- in the router, a TUN device and policy routing that sends every packet arriving from a
  member through it once; the delay line (:mod:`smpc_synth.runtime.delay_line`) holds each
  packet for the one-way delay (half the RTT, less the measured cost of the detour) plus
  jitter, keeping each direction in order, and writes it back for delivery;
- ``tbf`` at both ends of each member's link: the member's uplink and downlink run at the
  profile's bandwidth.

The delay acts on IP packets, so our gRPC mesh and CrypTen's gloo are shaped the same way
(the kernel's ``netem`` is not needed, and is missing on some kernels). Members run inside
their namespaces (``ip netns exec``, or :func:`smpc_synth.net.netns.enter`). Building needs
root, iproute2 and ``/dev/net/tun``; without them the run is refused (exit code 2) before
anything starts. Everything built is removed on exit, failures included.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Gt, Le
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from smpc_synth.config import SECTION_RULES, ConfigProblem, build_section, doc
from smpc_synth.errors import InputError
from smpc_synth.net.netns import NETNS_DIR, Host

log = logging.getLogger(__name__)

MAX_RTT_MS = 2_000.0  # a geostationary satellite hop is ~600 ms
MAX_BANDWIDTH_MBIT = 100_000.0
MTU = 65_000
PREFIX = "smpcnet"  # namespaces this module creates: smpcnet-PID-K-r, smpcnet-PID-K-I
ROUTE_TABLE = "100"
PROBE_PORT = 5201
CALIBRATION_PINGS = 60
READY_TIMEOUT_S = 30.0
MIN_TBF_BURST = 256 * 1024
MIN_TBF_LIMIT = 1024 * 1024


@dataclass(config=SECTION_RULES)
class NetworkProfile:
    """The links every member sees: RTT between any two members, bandwidth of each member's
    link (each way), and jitter of each one-way delay."""

    name: Annotated[str, Field(min_length=1, max_length=64), doc("what the tables call it")]
    rtt_ms: Annotated[
        float, Ge(0), Le(MAX_RTT_MS), doc("round-trip time between two members, in ms")
    ] = 0.0
    bandwidth_mbit: Annotated[
        Annotated[float, Gt(0), Le(MAX_BANDWIDTH_MBIT)] | None,
        doc("each member's link rate each way, in Mbit/s; unset = unshaped"),
    ] = None
    jitter_ms: Annotated[
        float,
        Ge(0),
        doc("each one-way delay varies uniformly by up to this much either way (no reordering)"),
    ] = 0.0

    @model_validator(mode="after")
    def _jitter_within_delay(self) -> NetworkProfile:
        if self.jitter_ms > self.rtt_ms / 2:
            raise ConfigProblem(
                "jitter_ms",
                f"must be at most half of 'rtt_ms' ({self.rtt_ms / 2:g}): a one-way delay "
                "cannot be negative",
            )
        return self

    @property
    def emulated(self) -> bool:
        """Whether members need namespaces (every profile but ``loopback``)."""
        return self.name != LOOPBACK

    def describe(self) -> str:
        if not self.emulated:
            return "loopback (no shaping)"
        rate = f"{self.bandwidth_mbit:g} Mbit/s" if self.bandwidth_mbit else "unshaped rate"
        jitter = f", jitter ±{self.jitter_ms:g} ms" if self.jitter_ms else ""
        return f"{self.name} ({self.rtt_ms:g} ms RTT, {rate}{jitter})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rtt_ms": self.rtt_ms,
            "bandwidth_mbit": self.bandwidth_mbit,
            "jitter_ms": self.jitter_ms,
        }


LOOPBACK = "loopback"
PROFILES: dict[str, NetworkProfile] = {
    LOOPBACK: NetworkProfile(LOOPBACK),
    "lan": NetworkProfile("lan", rtt_ms=0.5, bandwidth_mbit=1000.0),
    "wan": NetworkProfile("wan", rtt_ms=50.0, bandwidth_mbit=100.0),
}


def load_profile(spec: str | Path | NetworkProfile | None) -> NetworkProfile:
    """A built-in profile by name, or one read from a TOML file (keys ``rtt_ms``,
    ``bandwidth_mbit``, ``jitter_ms``, optional ``name``, at the top or under
    ``[network]``); None means loopback."""
    if spec is None:
        return PROFILES[LOOPBACK]
    if isinstance(spec, NetworkProfile):
        return spec
    text = str(spec)
    if text in PROFILES:
        return PROFILES[text]
    path = Path(text)
    if path.suffix != ".toml":
        raise InputError(
            f"--network: {text!r} is neither a built-in profile ({', '.join(PROFILES)}) "
            "nor a .toml file"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    prefix = ""
    if "network" in raw:
        if not isinstance(raw["network"], dict) or len(raw) > 1:
            raise InputError(f"{path}: put the profile's keys at the top or in [network] only")
        raw, prefix = raw["network"], "network."
    raw = {"name": path.stem, **raw}
    profile = build_section(NetworkProfile, raw, str(path), prefix)
    if profile.name in PROFILES:
        raise InputError(
            f"{path}: key '{prefix}name': {profile.name!r} is a built-in profile's name; "
            "choose another"
        )
    return profile


def load_profiles(spec: str | None) -> list[NetworkProfile]:
    """``lan,wan`` (comma-separated names or files) -> profiles, in order, without repeats."""
    if not spec:
        return [PROFILES[LOOPBACK]]
    profiles: list[NetworkProfile] = []
    for part in str(spec).split(","):
        profile = load_profile(part.strip())
        if profile.name not in {p.name for p in profiles}:
            profiles.append(profile)
    return profiles


def emulation_unavailable() -> str | None:
    """None if networks can be built here, else why not (checked without side effects)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs and qdiscs)"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"needs iproute2 ({' and '.join(missing)} not found)"
    if not os.path.exists("/dev/net/tun"):
        return "needs the TUN device /dev/net/tun (kernel module tun)"
    return None


def require_emulation(profile: NetworkProfile, flag: str = "--network") -> None:
    """Refuse (exit code 2) a shaped profile where networks cannot be built."""
    if profile.emulated and (reason := emulation_unavailable()):
        raise InputError(
            f"{flag} {profile.name}: cannot emulate a network on this machine: {reason}; "
            f"use '{flag} loopback' or run as root on Linux with iproute2"
        )


def plan_hosts(members: Sequence[str]) -> dict[str, Host]:
    """Each member's namespace and address, fixed by its position (no side effects)."""
    if len(members) > 250:
        raise InputError(f"an emulated network holds at most 250 members, got {len(members)}")
    tag = f"{PREFIX}-{os.getpid()}-{next(_COUNTER)}"
    return {name: Host(f"{tag}-{i}", f"10.77.{i}.2") for i, name in enumerate(members, 1)}


_COUNTER = itertools.count()


class EmulatedNetwork:
    """The namespaces, links and delay line of one profile; a context manager.

    ``hosts`` (from :func:`plan_hosts`) says where each member runs; on entry everything is
    built and the delay calibrated, on exit everything is removed."""

    def __init__(self, profile: NetworkProfile, hosts: dict[str, Host]):
        if not profile.emulated:
            raise ValueError("loopback needs no emulated network")
        self.profile = profile
        self.hosts = hosts
        self.router = next(iter(hosts.values())).netns.rsplit("-", 1)[0] + "-r"
        self._delay: subprocess.Popen | None = None
        self.calibration: dict[str, Any] = {}

    # -- building --------------------------------------------------------------------

    def __enter__(self) -> EmulatedNetwork:
        require_emulation(self.profile)
        remove_stale_namespaces()
        try:
            self._build()
            self._calibrate()
        except BaseException:
            self.close()
            raise
        log.info(
            "emulated network %s for %d members (one-way delay %.3f ms; the router's own "
            "round trip, %.3f ms, taken off)",
            self.profile.describe(),
            len(self.hosts),
            self.calibration.get("one_way_ms", 0.0),
            self.calibration.get("detour_ms") or 0.0,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        router = self.router
        _run("ip", "netns", "add", router)
        _sysctl(router, "net.ipv4.ip_forward=1")
        _sysctl(router, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        _run("ip", "-n", router, "link", "set", "lo", "up")
        for i, host in enumerate(self.hosts.values(), 1):
            side = f"m{i}"
            _run("ip", "netns", "add", host.netns)
            _run(
                "ip", "-n", router, "link", "add", side, "type", "veth",
                "peer", "name", host.interface, "netns", host.netns,
            )  # fmt: skip
            _run("ip", "-n", router, "addr", "add", f"10.77.{i}.1/24", "dev", side)
            _run("ip", "-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", host.interface)
            for ns, dev in ((router, side), (host.netns, host.interface)):
                _run("ip", "-n", ns, "link", "set", dev, "mtu", str(MTU), "up")
            _run("ip", "-n", host.netns, "link", "set", "lo", "up")
            _run("ip", "-n", host.netns, "route", "add", "default", "via", f"10.77.{i}.1")
            _run("ip", "-n", router, "rule", "add", "iif", side, "lookup", ROUTE_TABLE)
            if self.profile.bandwidth_mbit:
                self._shape(router, side)
                self._shape(host.netns, host.interface)
        self._start_delay_line()
        _run("ip", "-n", router, "link", "set", "tun0", "mtu", str(MTU), "up")
        _sysctl(router, "net.ipv4.conf.tun0.rp_filter=0")
        _run("ip", "-n", router, "route", "add", "default", "dev", "tun0", "table", ROUTE_TABLE)

    def _shape(self, netns: str, device: str) -> None:
        rate = self.profile.bandwidth_mbit * 1e6 / 8  # bytes/s
        burst = max(MIN_TBF_BURST, int(rate * 0.002))
        bdp = rate * max(self.profile.rtt_ms, 1.0) / 1e3
        limit = max(MIN_TBF_LIMIT, int(2 * bdp))
        _run(
            "tc", "-n", netns, "qdisc", "add", "dev", device, "root", "tbf",
            "rate", f"{self.profile.bandwidth_mbit:g}mbit",
            "burst", str(burst), "limit", str(limit),
        )  # fmt: skip

    def _start_delay_line(self) -> None:
        command = [sys.executable, "-m", "smpc_synth.runtime.delay_line", "--device", "tun0"]
        self._delay = subprocess.Popen(
            ["ip", "netns", "exec", self.router, *command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=_child_env(),
        )
        ready = _read_line(self._delay, READY_TIMEOUT_S, "the delay line")
        self.calibration["delay_line"] = json.loads(ready)

    def _set_delay(self, one_way_ms: float, jitter_ms: float, seed: int = 0) -> None:
        assert self._delay is not None and self._delay.stdin is not None
        one_way_us, jitter_us = round(one_way_ms * 1e3), round(jitter_ms * 1e3)
        self._delay.stdin.write(f"set {one_way_us} {jitter_us} {seed}\n")
        self._delay.stdin.flush()
        answer = _read_line(self._delay, READY_TIMEOUT_S, "the delay line")
        if answer != "ok":
            raise RuntimeError(f"the delay line refused its settings: {answer}")

    def delay_line_stats(self) -> dict[str, Any]:
        """Packets the delay line carried, drops, and how late they left."""
        if self._delay is None or self._delay.poll() is not None:
            return {}
        assert self._delay.stdin is not None
        self._delay.stdin.write("stats\n")
        self._delay.stdin.flush()
        return json.loads(_read_line(self._delay, READY_TIMEOUT_S, "the delay line"))

    def _calibrate(self) -> None:
        """Set the one-way delay so the RTT between two members is the profile's: the
        detour through the router and the delay line costs time of its own (~0.1-0.2 ms),
        measured with no delay and taken off (floored at zero)."""
        profile, hosts = self.profile, list(self.hosts.values())
        self._set_delay(0.0, 0.0)
        if len(hosts) < 2 or profile.rtt_ms == 0:
            self.calibration.update({"one_way_ms": 0.0, "detour_ms": None})
            return
        direct = probe(hosts[0], hosts[0], pings=CALIBRATION_PINGS)
        routed = probe(hosts[0], hosts[1], pings=CALIBRATION_PINGS)
        detour = max(0.0, routed["rtt_ms_min"] - direct["rtt_ms_min"])
        one_way = max(0.0, (profile.rtt_ms - detour) / 2)
        self._set_delay(one_way, profile.jitter_ms)
        self.calibration.update(
            {
                "loopback_rtt_ms_min": direct["rtt_ms_min"],
                "routed_rtt_ms_min": routed["rtt_ms_min"],
                "detour_ms": detour,
                "one_way_ms": one_way,
            }
        )
        if detour > profile.rtt_ms:
            log.warning(
                "network %s: the router's own round trip (%.2f ms) exceeds the profile's RTT; "
                "the emulated RTT is at least that",
                profile.name,
                detour,
            )

    def measure(self, a: str, b: str, pings: int = 100, nbytes: int = 0) -> dict[str, Any]:
        """RTT and (if ``nbytes``) throughput from member ``a`` to member ``b``."""
        return probe(self.hosts[a], self.hosts[b], pings=pings, nbytes=nbytes)

    def describe(self) -> dict[str, Any]:
        """The profile and what calibration measured, for a run's metrics."""
        return {**self.profile.as_dict(), "calibration": dict(self.calibration)}

    # -- teardown --------------------------------------------------------------------

    def close(self) -> None:
        if self._delay is not None:
            _stop(self._delay)
            self._delay = None
        for host in self.hosts.values():
            _delete_namespace(host.netns)
        _delete_namespace(self.router)


def emulated(profile: NetworkProfile, members: Sequence[str]) -> EmulatedNetwork | None:
    """An :class:`EmulatedNetwork` for ``members`` (enter it with ``with``), or None for
    loopback."""
    return EmulatedNetwork(profile, plan_hosts(members)) if profile.emulated else None


def probe(client: Host, server: Host, pings: int = 50, nbytes: int = 0) -> dict[str, Any]:
    """Run the probe's server in ``server``'s namespace and its client in ``client``'s."""
    module = [sys.executable, "-m", "smpc_synth.runtime.netprobe"]
    listen = subprocess.Popen(
        server.command([*module, "serve", "--host", server.ip, "--port", str(PROBE_PORT)]),
        stdout=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )
    try:
        _read_line(listen, READY_TIMEOUT_S, "the probe server")
        args = ["ping", "--host", server.ip, "--port", str(PROBE_PORT), "--pings", str(pings)]
        done = subprocess.run(
            client.command([*module, *args, "--bytes", str(nbytes)]),
            capture_output=True,
            text=True,
            env=_child_env(),
            timeout=READY_TIMEOUT_S + 600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"network probe failed: {done.stderr.strip()[-500:]}")
        return json.loads(done.stdout)
    finally:
        _stop(listen)


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces this module made in processes that no longer run (a launcher
    killed outright cannot clean up after itself)."""
    removed = []
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return removed
    for name in names:
        parts = name.split("-")
        ours = len(parts) >= 3 and parts[0] == PREFIX and parts[1].isdigit()
        if ours and not _alive(int(parts[1])):
            _delete_namespace(name)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _child_env() -> dict[str, str]:
    """This process's environment with the package importable from where it was loaded."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(
            f"building the emulated network failed: {' '.join(argv)}: {done.stderr.strip()}"
        )


def _sysctl(netns: str, *settings: str) -> None:
    _run("ip", "netns", "exec", netns, "sysctl", "-qw", *settings)


def _delete_namespace(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _read_line(process: subprocess.Popen, timeout: float, what: str) -> str:
    """The next line ``process`` prints, within ``timeout`` seconds."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise RuntimeError(f"{what} did not answer within {timeout:g} s")
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"{what} ended (exit code {process.wait()})")
            return line.strip()


def _stop(process: subprocess.Popen) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


__all__ = [
    "PROFILES",
    "EmulatedNetwork",
    "NetworkProfile",
    "emulated",
    "emulation_unavailable",
    "load_profile",
    "load_profiles",
    "plan_hosts",
    "probe",
    "require_emulation",
]
