"""Per-party traffic of an MPC session: bytes, messages and rounds, split by phase.

A *round* is counted each time this party waits for a message after having sent one since
its previous wait: it is the number of sequential network latencies the party pays, which is
what dominates on a WAN. Traffic to and from the dealer is counted in the same rounds (the
party waits for it) but its bytes are kept apart, as they are not party-to-party traffic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from smpc_synth.net.channel import TrafficStats

DEFAULT_PHASE = "default"
_COUNTERS = (
    "bytes_sent",
    "bytes_received",
    "messages_sent",
    "rounds",
    "seconds_waiting",
    "dealer_bytes_sent",
    "dealer_bytes_received",
    "seconds",  # wall time inside the phase (nested phases' time is theirs)
)


class TrafficRecorder:
    """Counts what one party sends and receives; ``phase()`` attributes it to a named step."""

    def __init__(self) -> None:
        self._phase = DEFAULT_PHASE
        self._by_phase: dict[str, dict[str, float]] = {}
        self._waiting = False  # True between a wait and the next send: no new round
        self._since = clock()  # when the current phase last started accruing time

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute traffic inside the ``with`` block to ``name`` (phases may nest)."""
        self._charge()
        outer, self._phase = self._phase, name
        try:
            yield
        finally:
            self._charge()
            self._phase = outer

    def _charge(self) -> None:
        now = clock()
        self._counters()["seconds"] += now - self._since
        self._since = now

    def _counters(self) -> dict[str, float]:
        return self._by_phase.setdefault(self._phase, dict.fromkeys(_COUNTERS, 0))

    def sent(self, nbytes: int, dealer: bool = False) -> None:
        counters = self._counters()
        counters["dealer_bytes_sent" if dealer else "bytes_sent"] += nbytes
        counters["messages_sent"] += 1
        self._waiting = False

    def received(self, nbytes: int, seconds: float, dealer: bool = False) -> None:
        counters = self._counters()
        counters["dealer_bytes_received" if dealer else "bytes_received"] += nbytes
        counters["seconds_waiting"] += seconds
        if not self._waiting:
            counters["rounds"] += 1
            self._waiting = True

    def reset(self) -> None:
        self._by_phase.clear()
        self._waiting = False
        self._since = clock()

    def snapshot(self) -> TrafficStats:
        """Totals over all phases, plus a copy of each phase's counters."""
        totals = dict.fromkeys(_COUNTERS, 0)
        for counters in self._by_phase.values():
            for key, value in counters.items():
                totals[key] += value
        return TrafficStats(
            bytes_sent=int(totals["bytes_sent"]),
            bytes_received=int(totals["bytes_received"]),
            messages_sent=int(totals["messages_sent"]),
            rounds=int(totals["rounds"]),
            seconds_waiting=float(totals["seconds_waiting"]),
            by_phase={name: dict(counters) for name, counters in self._by_phase.items()},
        )


def clock() -> float:
    """The clock waits are measured with."""
    return time.perf_counter()
