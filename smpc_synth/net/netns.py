"""Where a member runs on an emulated network: a Linux network namespace and its address.

A launcher that places members on an emulated network (:mod:`smpc_synth.runtime.network`
builds it) hands each member a :class:`Host`. A member started as a command runs under
``ip netns exec``; a member started as a Python process enters its namespace with
:func:`enter` before it opens any socket (sockets stay in the namespace they were made in).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
MEMBER_PORT = 50051  # each member has an address of its own, so all can use one port
GLOO_PORT = 29500  # CrypTen's gloo rendezvous, at the first party's address


@dataclass(frozen=True)
class Host:
    """One member's place: its namespace, its address there and its interface's name."""

    netns: str
    ip: str
    interface: str = "eth0"

    def address(self, port: int = MEMBER_PORT) -> str:
        return f"{self.ip}:{port}"

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def env(self) -> dict[str, str]:
        """Environment a member needs here: gloo binds its pair sockets to this interface
        (by default it would resolve the machine's host name, an address of another
        namespace, and fall back to loopback)."""
        return {"GLOO_SOCKET_IFNAME": self.interface}


def enter(netns: str) -> None:
    """Move the calling thread (and the threads it starts later) into namespace ``netns``.

    Call it first thing in a fresh process, before any thread or socket exists."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into network namespace {netns!r}: {os.strerror(errno)}")
    finally:
        os.close(fd)
