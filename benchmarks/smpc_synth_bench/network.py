"""How close emulated links come to their profiles: ``smpc-synth bench network``.

For each profile (default: ``lan`` and ``wan``) two members are placed on an emulated
network (:mod:`smpc_synth.runtime.network`); a probe measures the round-trip time (one-byte
TCP ping-pongs) and the throughput of a bulk TCP transfer (its last three quarters, past
slow start) between them, and prints both beside the profile. The same path with no delay
and no rate limit is measured first: the machine's own ceiling, which no profile can exceed
(on a busy machine a Gbit/s profile may be limited by it, not by the shaper).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from smpc_synth.runtime.network import (
    NetworkProfile,
    emulated,
    load_profiles,
    require_emulation,
)

PINGS = 200
TRANSFER_SECONDS = 3.0  # of the profile's bandwidth
MIN_TRANSFER_BYTES = 8_000_000
CEILING_BYTES = 200_000_000
CEILING = NetworkProfile("unshaped")  # the router's path with no delay and no rate limit
DEFAULT_NETWORKS = "lan,wan"
MEMBERS = ("a", "b")


def transfer_bytes(profile: NetworkProfile) -> int:
    """Bytes to send: a few seconds at the profile's rate."""
    if not profile.bandwidth_mbit:
        return CEILING_BYTES
    return max(MIN_TRANSFER_BYTES, int(profile.bandwidth_mbit * 1e6 / 8 * TRANSFER_SECONDS))


def measure_profile(profile: NetworkProfile, pings: int = PINGS) -> dict[str, Any]:
    """The profile, what the probe measured over it, and the delay line's punctuality."""
    network = emulated(profile, list(MEMBERS))
    assert network is not None, "loopback has no links to measure"
    with network:
        measured = network.measure(*MEMBERS, pings=pings, nbytes=transfer_bytes(profile))
        delay_line = network.delay_line_stats()
        link = network.describe()
    return {
        "profile": profile.as_dict(),
        "calibration": link["calibration"],
        "measured": measured,
        "delay_line": delay_line,
        "load_average": list(os.getloadavg()),
    }


def compare(result: dict[str, Any]) -> dict[str, float | None]:
    """Measured against set: RTT error in ms and percent, throughput as a share of the
    profile's bandwidth."""
    profile, measured = result["profile"], result["measured"]
    rtt, got = profile["rtt_ms"], measured["rtt_ms_median"]
    bandwidth = profile["bandwidth_mbit"]
    return {
        "rtt_error_ms": got - rtt,
        "rtt_error_pct": 100 * (got - rtt) / rtt if rtt else None,
        "throughput_share": measured.get("throughput_mbit", 0.0) / bandwidth if bandwidth else None,
    }


def format_table(results: list[dict[str, Any]], ceiling: dict[str, Any]) -> str:
    header = (
        f"{'profile':<10}{'RTT set':>9}{'min':>9}{'median':>9}{'p90':>9}{'error':>9}"
        f"{'Mbit/s set':>12}{'measured':>10}{'share':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in [ceiling, *results]:
        p, m, c = r["profile"], r["measured"], compare(r)
        bandwidth = f"{p['bandwidth_mbit']:g}" if p["bandwidth_mbit"] else "-"
        share = f"{c['throughput_share']:.0%}" if c["throughput_share"] else "-"
        lines.append(
            f"{p['name']:<10}{p['rtt_ms']:>9.2f}{m['rtt_ms_min']:>9.2f}"
            f"{m['rtt_ms_median']:>9.2f}{m['rtt_ms_p90']:>9.2f}{c['rtt_error_ms']:>+9.2f}"
            f"{bandwidth:>12}{m['throughput_mbit']:>10.0f}{share:>8}"
        )
    lines.append(
        "RTT in ms (one-byte TCP ping-pongs; 'error' = median - set); throughput of a bulk "
        "TCP transfer past slow start. 'unshaped': the same path with no delay and no rate "
        "limit, this machine's ceiling at the time. Load average "
        + " / ".join(f"{x:.1f}" for x in ceiling["load_average"])
    )
    for r in results:
        d = r["delay_line"]
        if d:
            lines.append(
                f"{r['profile']['name']}: delay line carried {d['packets']} packets, "
                f"{d['drops']} dropped, left late by {d['late_ms_median']:.3f} ms median, "
                f"{d['late_ms_p99']:.3f} ms p99; detour cost taken off the delay: "
                f"{(r['calibration'].get('detour_ms') or 0.0):.3f} ms"
            )
    return "\n".join(lines)


def run_network(out: Path, profiles: list[NetworkProfile], pings: int = PINGS) -> dict[str, Any]:
    """Measure the ceiling and each profile; write ``network.json``; print the table."""
    for profile in profiles:
        require_emulation(profile)
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    ceiling = measure_profile(CEILING, pings)
    results = [measure_profile(p, pings) for p in profiles if p.emulated]
    report = {"date": started, "ceiling": ceiling, "profiles": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "network.json").write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(results, ceiling))
    print(f"written: {out / 'network.json'}")
    return report


def main(out: Path, config: Path | None = None, network: str | None = None) -> int:
    """``smpc-synth bench network [--network lan,wan,PROFILE.toml]``."""
    profiles = load_profiles(network or DEFAULT_NETWORKS)
    require_emulation(CEILING)
    run_network(out, profiles)
    return 0
