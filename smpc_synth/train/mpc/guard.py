"""A guard against CrypTen's rare truncation wrap-around (CrypTen issue #347).

Two-party truncation fails with probability about |x| / 2^64 per element, and when it does
a value becomes astronomically large: the loss explodes, or an update wrecks the weights and
the NEXT loss explodes. Every party sees the same revealed loss, so all take the same
decision: keep the state from before the previous step, and when a loss is not finite or
jumps far above the recent ones, roll back to it and redo both steps (fresh shares, so the
wrap-around does not recur). The rollback also resets the optimizer's warm start.
The trainer runs one guard over all epochs, so the step before may belong to the previous
epoch (with one step per epoch it always does).

A step may also report health checks next to its losses: values under keys that start with
:data:`CHECK_PREFIX`, scaled so that above 1 means a wrap-around happened somewhere the
loss may not show it (Adam's inverse square root, see :mod:`smpc_synth.train.mpc.optim`). A failed
check rolls back like an exploded loss; checks are not losses, so they are not recorded.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from collections.abc import Callable
from typing import Any

from smpc_synth.errors import SmpcSynthError

MAX_ABS_LOSS = 1e6  # no loss of ours comes near this unless a value wrapped around
JUMP_FACTOR = 50.0  # ... or jumps this far above the median of the recent losses
WINDOW = 20
MAX_RETRIES = 3  # consecutive rollbacks before giving up
CHECK_PREFIX = "check:"

log = logging.getLogger(__name__)


def losses_only(values: dict[str, float]) -> dict[str, float]:
    """A step's losses without its health checks."""
    return {k: v for k, v in values.items() if not k.startswith(CHECK_PREFIX)}


class WrapGuard:
    """Decides whether a step's revealed losses are sane, and keeps the rollback point."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.rollbacks = 0

    def is_bad(self, losses: dict[str, float]) -> bool:
        checks = [v for k, v in losses.items() if k.startswith(CHECK_PREFIX)]
        if any(not v <= 1.0 for v in checks):  # NaN fails too
            return True
        values = [abs(v) for v in losses_only(losses).values()]
        if any(not math.isfinite(v) or v > MAX_ABS_LOSS for v in values):
            return True
        if len(self.recent) >= 5:
            scale = max(statistics.median(self.recent), 1.0)
            return max(values) > JUMP_FACTOR * scale
        return False

    def accept(self, losses: dict[str, float]) -> None:
        self.recent.append(max((abs(v) for v in losses_only(losses).values()), default=0.0))

    def run_steps(
        self,
        steps: int,
        step: Callable[[int], dict[str, float]],
        snapshot: Callable[[], Any],
        restore: Callable[[Any], None],
        accepted: Callable[[int, dict[str, float]], None] | None = None,
    ) -> list[dict[str, float]]:
        """Run ``step(i)`` for i < steps with rollback; returns each step's losses.

        ``accepted(i, losses)`` runs once step i's losses pass, before the next snapshot
        (so whatever it changes is rewound with the state when step i+1 rolls back)."""
        results: list[dict[str, float]] = []
        points: dict[int, Any] = {0: snapshot()}
        failures: dict[int, int] = {}  # step -> rollbacks it caused
        i = 0
        while i < steps:
            losses = step(i)
            if self.is_bad(losses):
                failures[i] = failures.get(i, 0) + 1
                self.rollbacks += 1
                if failures[i] > MAX_RETRIES:
                    raise SmpcSynthError(
                        f"MPC training: losses {losses} stayed out of range after "
                        f"{MAX_RETRIES} rollbacks (fixed-point overflow?)"
                    )
                shown = ", ".join(f"{k} {v:.3g}" for k, v in losses.items())
                log.warning(
                    "step %d looks wrapped around (%s): rolled back to step %d to redo it",
                    i + 1,
                    shown,
                    max(i, 1),
                )
                i = max(i - 1, 0)
                restore(points[i])
                del results[i:]
                continue
            self.accept(losses)
            results.append(losses)
            if accepted is not None:
                accepted(i, losses)
            i += 1
            points = {k: v for k, v in points.items() if k >= i - 1}
            points[i] = snapshot()
        return results
