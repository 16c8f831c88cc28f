"""Progress events: a party prints them as tagged JSON lines; the launcher shows them."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

PREFIX = "@@progress "


class ProgressEmitter:
    """Called by strategies through ``PartyContext.progress``; writes one line per event."""

    def __init__(self, party: str, stream: TextIO | None = None):
        self.party = party
        self.stream = stream or sys.stdout
        self.started = time.monotonic()

    def __call__(self, event: dict[str, Any]) -> None:
        record = {"party": self.party, "elapsed": round(time.monotonic() - self.started, 3)}
        record.update(event)
        self.stream.write(PREFIX + json.dumps(record, default=float) + "\n")
        self.stream.flush()


def parse_progress(line: str) -> dict[str, Any] | None:
    """The event in ``line``, or None if it is an ordinary log line."""
    if not line.startswith(PREFIX):
        return None
    try:
        return json.loads(line[len(PREFIX) :])
    except json.JSONDecodeError:
        return None


def describe(event: dict[str, Any]) -> str:
    """One human line for an event: elapsed, party, epoch and losses."""
    parts = [f"[{event.get('elapsed', 0.0):7.1f}s] {event.get('party', '?'):<10}"]
    kind = event.get("event")
    if kind == "epoch":
        total = event.get("epochs")
        epoch = event.get("epoch")
        parts.append(f"epoch {epoch}/{total}" if total else f"epoch {epoch}")
        losses = {
            k: v
            for k, v in event.items()
            if k not in {"party", "elapsed", "event", "epoch", "epochs", "seconds"}
            and isinstance(v, int | float)
        }
        parts.extend(f"{k} {v:.4f}" for k, v in losses.items())
    else:
        parts.append(str(event.get("message", kind)))
    return "  ".join(parts)
