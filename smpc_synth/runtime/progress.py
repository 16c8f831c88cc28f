"""Progress of one run: what the training protocols report, shown to people as one bar.

Strategies report events (dicts with ``event = "epoch"`` or ``"stage"``) through
``PartyContext.progress``. :class:`RunProgress` merges the events of every party into the
state of the run (the run has finished epoch *k* once every reporting party has); a
:class:`ProgressView` shows that state as one rich bar with ETA on a terminal, as an
occasional plain line elsewhere, or not at all; :meth:`RunProgress.summary` is the same
information for ``metrics.json``.

A party started by the ``simulate`` launcher (environment variable :data:`EVENTS_ENV` set to
``json``) writes its events as tagged JSON lines on stdout, which the launcher reads; started
by hand, it shows its own bar.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

PREFIX = "@@progress "
EVENTS_ENV = "SMPC_SYNTH_PROGRESS"  # "json": write events for a launcher, show nothing

# Keys of an epoch event that are not loss terms.
BYTE_KEYS = frozenset({"bytes", "sent_bytes"})
COUNT_KEYS = frozenset({"epoch", "epochs", "rounds", "rollbacks", "rows"}) | BYTE_KEYS
TIME_KEYS = frozenset({"seconds", "epoch_seconds", "elapsed"})
META_KEYS = frozenset({"party", "event", "stage", "message"})

ViewMode = Literal["auto", "bar", "lines", "off"]
BAR_TERMS = 1  # loss terms a bar has room for; plain lines show them all


def loss_terms(event: dict[str, Any]) -> dict[str, float]:
    """The loss values of an epoch event (everything numeric that is not a count or a time)."""
    return {
        k: float(v)
        for k, v in event.items()
        if k not in COUNT_KEYS | TIME_KEYS | META_KEYS
        and isinstance(v, int | float)
        and not isinstance(v, bool)
    }


def human_bytes(n: float) -> str:
    """``1234567`` -> ``'1.2 MB'`` (decimal units, as network figures are usually given)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        text = f"{value:.0f}" if unit == "B" else f"{value:.1f}"
        if abs(float(text)) < 1000:  # as rounded: 999.96 kB reads 1.0 MB, not 1000.0 kB
            return f"{text} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def human_seconds(seconds: float) -> str:
    """``3725`` -> ``'1h02m'``, ``125`` -> ``'2m05s'``, ``9.4`` -> ``'9s'``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def format_value(key: str, value: Any) -> str:
    """One figure as people read it: bytes in MB/GB, counts as integers, losses to 4 digits."""
    if key in BYTE_KEYS:
        return human_bytes(value)
    if key in COUNT_KEYS or isinstance(value, int):
        return f"{round(value):d}"
    if key in TIME_KEYS:
        return human_seconds(value)
    return f"{value:.4g}"


class RunProgress:
    """The state of one run, merged from the events of its members (thread-safe).

    The run has finished epoch *k* when every party that reports epochs has reported *k*;
    the losses of an epoch are the mean over the parties that reported it.
    """

    def __init__(self, title: str, total: int | None = None):
        self.title = title
        self.total = total
        self.started = time.monotonic()
        self.done = 0
        self.stage = "starting"
        self._lock = threading.Lock()
        self._last_epoch: dict[str, int] = {}
        self._first_done: tuple[int, float] | None = None  # (epoch, time) of the first report
        self._by_epoch: dict[int, dict[str, dict[str, Any]]] = {}
        self._sent: dict[str, int] = {}

    def update(self, event: dict[str, Any]) -> None:
        party = str(event.get("party", "?"))
        with self._lock:
            if isinstance(event.get("sent_bytes"), int | float):
                self._sent[party] = int(event["sent_bytes"])
            kind = event.get("event")
            if kind == "stage":
                self.stage = str(event.get("stage", self.stage))
            elif kind == "epoch":
                self._epoch(party, event)

    def _epoch(self, party: str, event: dict[str, Any]) -> None:
        if event.get("epochs"):
            self.total = int(event["epochs"])
        epoch = int(event.get("epoch", 0))
        self._by_epoch.setdefault(epoch, {})[party] = event
        self._last_epoch[party] = max(epoch, self._last_epoch.get(party, 0))
        done = max(self.done, min(self._last_epoch.values()))
        if self._first_done is None:
            self._first_done = (epoch - 1, self.started)
        self.done = done
        self.stage = "training"

    @property
    def bytes_sent(self) -> int:
        return sum(self._sent.values())

    def losses(self, epoch: int | None = None) -> dict[str, float]:
        """Mean loss terms of ``epoch`` (default: the last finished one) over its reports."""
        reports = list(self._by_epoch.get(self.done if epoch is None else epoch, {}).values())
        terms: dict[str, list[float]] = {}
        for report in reports:
            for key, value in loss_terms(report).items():
                terms.setdefault(key, []).append(value)
        return {k: sum(v) / len(v) for k, v in terms.items()}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        """Seconds left at the pace of the epochs seen so far (None before the first)."""
        if not self.total or self._first_done is None or self.done <= self._first_done[0]:
            return None
        first, since = self._first_done
        per_epoch = (time.monotonic() - since) / (self.done - first)
        return per_epoch * max(0, self.total - self.done)

    def status(self, terms: int | None = None) -> str:
        """``'loss 28.25 · kl 0.07 · 12.3 MB sent'`` (or the stage before the first epoch),
        with the first ``terms`` loss terms (default: all)."""
        parts = [] if self.done else [self.stage]
        losses = list(self.losses().items())[:terms]
        parts += [f"{k} {format_value(k, v)}" for k, v in losses]
        if self._sent:
            parts.append(f"{human_bytes(self.bytes_sent)} sent")
        return " · ".join(parts)

    def line(self) -> str:
        """One plain line: title, epochs, elapsed, ETA and the status."""
        total = self.total if self.total else "?"
        parts = [self.title, f"epoch {self.done}/{total}", f"{human_seconds(self.elapsed())}"]
        eta = self.eta()
        if eta is not None and self.done != self.total:
            parts.append(f"ETA {human_seconds(eta)}")
        status = self.status()
        return "  ".join(parts + ([status] if status else []))

    def summary(self) -> dict[str, Any]:
        """What the bar shows, for ``metrics.json``: epochs, time, bytes, losses per epoch."""
        with self._lock:
            history = [
                {
                    "epoch": epoch,
                    "seconds": max(float(r.get("seconds", 0.0)) for r in reports.values()),
                    "parties": sorted(reports),
                    **self.losses(epoch),
                }
                for epoch, reports in sorted(self._by_epoch.items())
            ]
            return {
                "title": self.title,
                "epochs_done": self.done,
                "epochs_total": self.total,
                "seconds": round(self.elapsed(), 3),
                "bytes_sent": self.bytes_sent,
                "bytes_sent_by_member": dict(sorted(self._sent.items())),
                "history": history,
            }


class ProgressView:
    """Shows a :class:`RunProgress`: a rich bar on a terminal, plain lines now and then
    elsewhere (``lines``), or nothing (``off``). Use as a context manager; feed it events."""

    def __init__(
        self,
        progress: RunProgress,
        mode: ViewMode = "auto",
        stream: TextIO | None = None,
        min_interval: float = 10.0,
    ):
        self.progress = progress
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if is_terminal(self.stream) else "lines"
        self.mode = mode
        self.min_interval = min_interval
        self._bar: Any = None
        self._task: Any = None
        self._printed: tuple[int, float] | None = None  # (epoch, time) of the last line
        self._handlers: list[tuple[logging.StreamHandler, TextIO]] = []
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressView:
        if self.mode == "bar":
            self._start_bar()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._bar is not None:
                self._refresh_bar()
                self._bar.stop()
                for handler, stream in self._handlers:
                    handler.setStream(stream)
                self._bar = None
            elif self.mode == "lines" and self.progress.done and not self._shown_last():
                self._print_line()

    def __call__(self, event: dict[str, Any]) -> None:
        self.progress.update(event)
        with self._lock:
            if self._bar is not None:
                self._refresh_bar()
            elif self.mode == "lines" and self._line_due():
                self._print_line()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=12),
            TextColumn("epoch"),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(file=self.stream),
            speed_estimate_period=3600.0,  # epochs can take minutes: average over all of them
        )
        self._task = self._bar.add_task(
            self.progress.title, total=self.progress.total, status=self.progress.status(BAR_TERMS)
        )
        self._bar.start()
        # While the bar is drawn, rich routes sys.stderr through itself: log lines then go
        # above the bar instead of through it.
        if sys.stderr is not self.stream and sys.stderr is not sys.__stderr__:
            for handler in logging.getLogger().handlers:
                if type(handler) is logging.StreamHandler and handler.stream in (
                    sys.__stderr__,
                    self.stream,
                ):
                    self._handlers.append((handler, handler.stream))
                    handler.setStream(sys.stderr)

    def _refresh_bar(self) -> None:
        self._bar.update(
            self._task,
            total=self.progress.total,
            completed=self.progress.done,
            status=self.progress.status(BAR_TERMS),
        )

    def _line_due(self) -> bool:
        done = self.progress.done
        if not done or (self._printed is not None and self._printed[0] == done):
            return False
        if self._printed is None or done == self.progress.total:
            return True
        return time.monotonic() - self._printed[1] >= self.min_interval

    def _shown_last(self) -> bool:
        return self._printed is not None and self._printed[0] == self.progress.done

    def _print_line(self) -> None:
        self.stream.write(self.progress.line() + "\n")
        self.stream.flush()
        self._printed = (self.progress.done, time.monotonic())


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal that can redraw a bar."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class ProgressEmitter:
    """A member's ``progress`` callback: JSON lines for a launcher, or its own view.

    Every event is also kept in :attr:`progress` for this member's ``metrics.json``.
    """

    def __init__(self, party: str, title: str, show: bool = True, stream: TextIO | None = None):
        self.party = party
        self.progress = RunProgress(title)
        self.for_launcher = os.environ.get(EVENTS_ENV) == "json"
        self.stream = stream or sys.stdout
        mode: ViewMode = "auto" if show else "off"
        self.view = None if self.for_launcher else ProgressView(self.progress, mode)

    def __enter__(self) -> ProgressEmitter:
        if self.view is not None:
            self.view.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.view is not None:
            self.view.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        record = {"party": self.party, "elapsed": round(self.progress.elapsed(), 3), **event}
        if self.for_launcher:
            self.stream.write(PREFIX + json.dumps(record, default=_plain) + "\n")
            self.stream.flush()
            self.progress.update(record)
        else:
            self.view(record)


def _plain(value: Any) -> Any:
    """JSON for numpy/torch scalars: integers stay integers."""
    if hasattr(value, "item"):
        return value.item()
    return float(value)


def parse_progress(line: str) -> dict[str, Any] | None:
    """The event in ``line``, or None if it is an ordinary log line."""
    if not line.startswith(PREFIX):
        return None
    try:
        event = json.loads(line[len(PREFIX) :])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def epoch_reporter(progress: Callable[[dict[str, Any]], None], total: int | None):
    """An ``on_epoch(epoch, losses)`` callback for :meth:`Synthesizer.fit` that reports
    1-based epoch events with their cumulative seconds to ``progress``."""
    started = time.perf_counter()

    def on_epoch(epoch: int, losses: dict[str, float]) -> None:
        record = {"epoch": epoch + 1, "seconds": time.perf_counter() - started, **losses}
        progress({"event": "epoch", "epochs": total, **record})

    return on_epoch
