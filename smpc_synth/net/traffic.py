"""Per-member traffic: bytes, messages and rounds, split by phase. The one counter of both
the peer mesh (a member's whole traffic) and an MPC session's links (its own).

A *round* is one sequential network latency the member pays, which is what dominates on a
WAN. Where it is counted is the counter's ``rounds_at``:

- ``"wait"``: each time the member waits for a message after having sent one since its
  previous wait (an MPC session's links);
- ``"send"``: each send that follows a receive, or is the first: a burst of sends to
  several peers between two receives counts once (the mesh).

Traffic to and from the dealer is counted in the same rounds (the party waits for it) but
its bytes are kept apart, as they are not party-to-party traffic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from smpc_synth.net.channel import TrafficStats

DEFAULT_PHASE = "default"
COUNTERS = (
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
    """Counts what one member sends and receives; ``phase()`` attributes it to a named step.
    Not locked: a member that counts from several threads holds its own lock around it."""

    def __init__(
        self, rounds_at: Literal["wait", "send"] = "wait", default_phase: str = DEFAULT_PHASE
    ) -> None:
        if rounds_at not in ("wait", "send"):
            raise ValueError(f"rounds_at {rounds_at!r}: 'wait' or 'send'")
        self._rounds_at = "recv" if rounds_at == "wait" else "send"
        self._phase = default_phase
        self._by_phase: dict[str, dict[str, float]] = {}
        self._last = ""  # "send" or "recv": a round begins where this changes to rounds_at
        self._since = clock()  # when the current phase last started accruing time

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute traffic inside the ``with`` block to ``name`` (phases may nest)."""
        outer = self.enter(name)
        try:
            yield
        finally:
            self.leave(outer)

    def enter(self, name: str) -> str:
        """Start attributing traffic to phase ``name``; returns the phase it interrupts."""
        self._charge()
        outer, self._phase = self._phase, name
        return outer

    def leave(self, outer: str) -> None:
        """Go back to phase ``outer`` (what :meth:`enter` returned)."""
        self._charge()
        self._phase = outer

    def _charge(self) -> None:
        now = clock()
        self._counters()["seconds"] += now - self._since
        self._since = now

    def _counters(self) -> dict[str, float]:
        return self._by_phase.setdefault(self._phase, dict.fromkeys(COUNTERS, 0))

    def sent(self, nbytes: int, dealer: bool = False) -> None:
        counters = self._counters()
        counters["dealer_bytes_sent" if dealer else "bytes_sent"] += nbytes
        counters["messages_sent"] += 1
        self._event(counters, "send")

    def waited(self, seconds: float) -> None:
        """Time spent waiting for a message, whether or not one came."""
        self._counters()["seconds_waiting"] += seconds

    def received(self, nbytes: int, seconds: float = 0.0, dealer: bool = False) -> None:
        counters = self._counters()
        counters["dealer_bytes_received" if dealer else "bytes_received"] += nbytes
        counters["seconds_waiting"] += seconds
        self._event(counters, "recv")

    def _event(self, counters: dict[str, float], kind: str) -> None:
        if kind == self._rounds_at and self._last != kind:
            counters["rounds"] += 1
        self._last = kind

    def reset(self) -> None:
        self._by_phase.clear()
        self._last = ""
        self._since = clock()

    def snapshot(self) -> TrafficStats:
        """Totals over all phases, plus a copy of each phase's counters."""
        totals = dict.fromkeys(COUNTERS, 0)
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
