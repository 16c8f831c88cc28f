"""What a launcher and the members it starts tell each other about faults.

A member reports why it stopped as a ``fault`` event on its progress stream: the member it
holds at fault (``culprit``, possibly itself) and the reason. A launcher (``simulate``)
sees what no peer can: a member whose process died or was stopped before any peer reached
it (at start-up, a member that is not up yet looks the same to its peers as one that never
will be). It tells the others at once, one JSON line on their standard input, which they
follow only when started with ``SMPC_SYNTH_SUPERVISED=1``; each then aborts its session
naming that member, as if a peer had told it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from smpc_synth.runtime.progress import EVENTS_ENV, PREFIX

log = logging.getLogger(__name__)

SUPERVISED_ENV = "SMPC_SYNTH_SUPERVISED"
FAULT_EVENT = "fault"
_REPORT_WAIT_S = 2.0  # how long a launcher waits for a failed member's last output


def fault_event(culprit: str, reason: str) -> dict[str, Any]:
    """The progress event a member emits as it stops on an error."""
    return {"event": FAULT_EVENT, "culprit": culprit, "reason": reason}


def report_fault(member: str, culprit: str, reason: str) -> None:
    """Tell this member's launcher, if it reads our events, whom we stopped because of."""
    if os.environ.get(EVENTS_ENV) != "json":
        return  # started by hand: the error line says it
    event = {"party": member, **fault_event(culprit, reason)}
    sys.stdout.write(PREFIX + json.dumps(event) + "\n")
    sys.stdout.flush()


def notice(culprit: str, reason: str) -> str:
    """The line a launcher writes to a member's standard input: ``culprit`` has failed."""
    return json.dumps({"culprit": culprit, "reason": reason}) + "\n"


def follow_launcher(mesh, done: threading.Event, stream: IO[str] | None = None) -> None:
    """If this member runs under a launcher, abort ``mesh`` on each notice it sends (until
    ``done`` is set). Reads standard input on a daemon thread."""
    if os.environ.get(SUPERVISED_ENV) != "1":
        return

    def read() -> None:
        for line in stream or sys.stdin:
            try:
                message = json.loads(line)
                culprit, reason = str(message["culprit"]), str(message["reason"])
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed notice from the launcher: %r", line[:200])
                continue
            if done.is_set():
                return
            mesh.abort(f"the launcher reports: {reason}", culprit=culprit)

    threading.Thread(target=read, name="launcher-notices", daemon=True).start()


def is_stopped(pid: int) -> bool:
    """Whether child process ``pid`` is stopped (SIGSTOP, SIGTSTP): it cannot answer anyone.
    Leaves the child's state for ``Popen.poll`` to collect."""
    try:
        info = os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # exited (a zombie waiting for poll) or not our child
        return False
    return info is not None and info.si_code == os.CLD_STOPPED


def describe_exit(code: int) -> str:
    """``killed by SIGKILL`` or ``exited with code 2``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class RootCause:
    """The member a failed session is blamed on, how the launcher saw it, and who named it."""

    member: str
    how: str  # what the launcher saw: "killed by SIGKILL", "stopped (SIGSTOP) for 22 s", ...
    reason: str  # what the members said
    named_by: list[str] = field(default_factory=list)
    disagreeing: dict[str, str] = field(default_factory=dict)  # member -> whom it named
    exit_code: int = 1  # what the launcher exits with

    def describe(self) -> str:
        text = f"root cause: {self.member} ({self.how})"
        if self.reason:
            text += f": {self.reason}"
        if self.named_by:
            text += f" [named by {', '.join(self.named_by)}]"
        if self.disagreeing:
            others = ", ".join(f"{m} named {c}" for m, c in sorted(self.disagreeing.items()))
            text += f" [but {others}]"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Supervisor:
    """A launcher's watch over its member processes (started with ``stdin=PIPE``).

    A member that dies, or stays stopped for ``stopped_limit_s`` (as long as its peers'
    heartbeats allow a silent member), is announced to the others at once. Once a member
    has failed, any member still running ``stop_within_s`` later is killed (the promise is
    that nothing hangs), and so is a member that cannot stop itself because it is the one
    at fault (stopped or stuck) once only such members remain. :meth:`root_cause` then
    says whom the session failed on.
    """

    def __init__(
        self,
        processes: dict[str, subprocess.Popen],
        *,
        stopped_limit_s: float,
        stop_within_s: float,
        poll_s: float = 0.1,
    ):
        self.processes = processes
        self.stopped_limit_s = stopped_limit_s
        self.stop_within_s = stop_within_s
        self.poll_s = poll_s
        self.readers: dict[str, threading.Thread] = {}
        self._reports: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._codes: dict[str, int] = {}
        self.exited_at: dict[str, float] = {}  # member -> when its exit was seen (Unix time)
        self._stopped_since: dict[str, float] = {}
        self._declared: dict[str, str] = {}  # member -> what the launcher saw
        self._killed: set[str] = set()  # killed by the launcher
        self._told: set[str] = set()

    def record(self, member: str, event: dict[str, Any]) -> None:
        """A progress event from ``member``: keeps its fault report (thread-safe)."""
        if event.get("event") == FAULT_EVENT:
            with self._lock:
                self._reports.setdefault(member, event)

    def reports(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._reports)

    def wait(self) -> dict[str, int]:
        """Watch until every member has exited; their exit codes."""
        first_failure: float | None = None
        unexplained: dict[str, float] = {}  # failed members whose report may still be coming
        while len(self._codes) < len(self.processes) or unexplained:
            now = time.monotonic()
            for name, proc in self.processes.items():
                if name in self._codes:
                    continue
                code = proc.poll()
                if code is None:
                    if self._newly_stopped(name, proc, now):
                        first_failure = first_failure or now
                    continue
                self._codes[name] = code
                self.exited_at[name] = time.time()
                if code != 0:
                    first_failure = first_failure or now
                    if name not in self._killed:
                        unexplained[name] = now
            for name, since in list(unexplained.items()):
                reader = self.readers.get(name)
                # its last lines (the report) may still be in the pipe: wait for them a little
                if reader is None or not reader.is_alive() or now - since > _REPORT_WAIT_S:
                    del unexplained[name]
                    self._tell(*self._cause_of(name, self._codes[name]))
            if first_failure is not None:
                self._stop_the_rest(now > first_failure + self.stop_within_s)
            time.sleep(self.poll_s)
        return dict(self._codes)

    def interrupt(self) -> None:
        """Ctrl-C at the launcher: every member is asked to stop (SIGINT)."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)

    def _newly_stopped(self, name: str, proc: subprocess.Popen, now: float) -> bool:
        if not is_stopped(proc.pid):
            self._stopped_since.pop(name, None)
            return False
        since = self._stopped_since.setdefault(name, now)
        if name in self._declared or now - since < self.stopped_limit_s:
            return False
        self._declared[name] = f"stopped (SIGSTOP) for {now - since:.0f} s"
        log.error("%s has been stopped for %.0f s: telling the others", name, now - since)
        self._tell(name, f"{name} has been stopped (SIGSTOP) for {now - since:.0f} s")
        return True

    def _cause_of(self, name: str, code: int) -> tuple[str, str]:
        """Whom ``name``'s exit is to be blamed on, and why: its own report, or itself."""
        report = self.reports().get(name)
        if report is not None:
            return str(report.get("culprit") or name), str(report.get("reason", ""))
        return name, f"{name} {describe_exit(code)}"

    def _tell(self, culprit: str, reason: str) -> None:
        """Announce ``culprit``'s failure to every other member still running (once)."""
        if culprit in self._told:
            return
        self._told.add(culprit)
        line = notice(culprit, reason)
        for name, proc in self.processes.items():
            if name == culprit or proc.poll() is not None or proc.stdin is None:
                continue
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # it has just exited

    def _stop_the_rest(self, overdue: bool) -> None:
        now = time.monotonic()
        running = [n for n, p in self.processes.items() if n not in self._codes]
        blamed = set(self._declared) | {
            str(r.get("culprit")) for r in self.reports().values() if r.get("culprit")
        }
        only_culprits = all(n in blamed for n in running)
        for name in running:
            if overdue or only_culprits:
                why = "it is at fault and cannot stop itself" if name in blamed else "too late"
                log.error("%s did not stop after the session failed (%s): killing it", name, why)
                if name in self._stopped_since:
                    stopped = now - self._stopped_since[name]
                    self._declared.setdefault(name, f"stopped (SIGSTOP) for {stopped:.0f} s")
                self._killed.add(name)
                self.processes[name].kill()

    def root_cause(self, codes: dict[str, int]) -> RootCause | None:
        """The member the session failed on, or None if every member succeeded."""
        if all(code == 0 for code in codes.values()):
            return None
        reports = self.reports()
        votes = Counter(str(r.get("culprit")) for r in reports.values() if r.get("culprit"))
        own = [
            n
            for n, c in codes.items()
            if c != 0 and n not in self._killed and reports.get(n, {}).get("culprit", n) == n
        ]
        candidates = [*self._declared, *own]
        if votes:
            top = max(votes.values())
            tied = [m for m, v in votes.items() if v == top]
            member = next((m for m in candidates if m in tied), tied[0])
        elif candidates:
            member = candidates[0]
        else:
            member = next(n for n, c in codes.items() if c != 0)
        if member in self._declared:
            how = self._declared[member]
        elif member in self._killed:
            how = "did not stop: killed by the launcher"
        elif member in codes:
            how = describe_exit(codes[member])
        else:
            how = "not a member of this session"
        mine = reports.get(member, {})
        named_by = sorted(
            n for n, r in reports.items() if n != member and r.get("culprit") == member
        )
        named = [reports[n] for n in named_by]
        reason = str(mine.get("reason", "")) if mine.get("culprit") == member else ""
        if not reason and named:
            reason = str(Counter(str(r.get("reason", "")) for r in named).most_common(1)[0][0])
        code = codes.get(member, 1)
        return RootCause(
            member=member,
            how=how,
            reason=reason,
            named_by=named_by,
            disagreeing={
                n: str(r.get("culprit"))
                for n, r in reports.items()
                if r.get("culprit") not in (member, None) and n != member
            },
            exit_code=code if code in (2, 3) else 1,
        )
