"""CPU time of the members of an MPC session, for the benchmarks.

A member's CPU is its whole process (gRPC's and gloo's threads included). Party 0 also reads
the dealer's clock over its link. When members outnumber cores, wall time cannot fall
below their summed CPU divided by the cores (:func:`floor_seconds`).
"""

from __future__ import annotations

import os
import time


class MemberCpu:
    """CPU seconds spent between laps, by this party and (read by party 0) the dealer."""

    def __init__(self, session, rank: int, me: str, with_dealer: bool = True) -> None:
        self._me = me
        from smpc_synth.crypten_backend.compat import comparison_provider

        provider = comparison_provider() if with_dealer and rank == 0 else None
        self._dealer = provider
        self._last = self._now()

    def _now(self) -> dict[str, float]:
        now = {self._me: time.process_time()}
        if self._dealer is not None:
            now[self._dealer.link.dealer] = self._dealer.dealer_cpu_seconds()
        return now

    def lap(self) -> dict[str, float]:
        """CPU seconds per member since the last lap (or since this clock started)."""
        now = self._now()
        spent = {member: now[member] - self._last[member] for member in now}
        self._last = now
        return spent


def cores() -> int:
    return os.cpu_count() or 1


def floor_seconds(cpu_seconds: float) -> float:
    """The least wall time that ``cpu_seconds`` of members' CPU can take on this machine."""
    return cpu_seconds / cores()
