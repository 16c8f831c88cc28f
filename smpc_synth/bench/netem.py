"""Network conditions for benchmarks: LAN and WAN profiles emulated with ``tc netem``.

Emulation needs root, iproute2 and the kernel's ``sch_netem`` module. Where any is missing the
benchmark says which, and reports loopback figures only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkProfile:
    """One-way delay and rate applied to every link between members."""

    name: str
    delay_ms: float
    rate_mbit: float


PROFILES = {
    "lan": NetworkProfile("lan", delay_ms=0.25, rate_mbit=1000.0),
    "wan": NetworkProfile("wan", delay_ms=25.0, rate_mbit=100.0),  # 50 ms RTT, as in ANCHORS
}


def netem_unavailable_reason() -> str | None:
    """None if netem can be used here, else why not (for the benchmark's report)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces and queueing disciplines"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2 (ip, tc)"
    ns = f"smpc-netem-probe-{os.getpid()}"
    try:
        made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
        if made.returncode != 0:
            return f"cannot create a network namespace: {made.stderr.strip()}"
        probe = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                "1ms",
            ],
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            return f"tc netem is unavailable (kernel module sch_netem?): {probe.stderr.strip()}"
        return None
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
