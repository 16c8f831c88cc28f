"""The phases of a session member's life, marked in its log; fault tests strike at one.

A member logs ``phase NAME`` once as it enters each phase, so that its log (and a fault
report) shows how far it got. Which member enters which phase where:

- ``start-up``: listening, before any peer is reached (every member);
- ``handshake``: every peer reached, before the session is agreed (every member);
- ``aggregation``: the first secure sum is under way (a data party: its share sent; the
  aggregator: every submission in, no answer yet; the dealer: its keys sent while the
  parties sum their statistics, which needs no triples);
- ``training``: the first epoch is done (a data party); the first triple served (dealer); a
  model round answered while the parties train on (aggregator);
- ``release``: training is over; outputs are written and the session closes.

The fault-matrix tests (``make test-faults``) set ``SMPC_SYNTH_FAULT=MEMBER:PHASE:ACTION``
to make MEMBER act on itself as it enters PHASE: ``kill`` (SIGKILL), ``stop`` (SIGSTOP), or
``hang`` (its protocol thread blocks for good while its gRPC threads still answer
heartbeats). It is for tests only: a real run never sets it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from smpc_synth.errors import InputError

log = logging.getLogger(__name__)

PHASES = ("start-up", "handshake", "aggregation", "training", "release")
FAULT_ACTIONS = ("kill", "stop", "hang")
FAULT_ENV = "SMPC_SYNTH_FAULT"

_entered: set[tuple[str, str]] = set()


def injected_fault() -> tuple[str, str, str] | None:
    """The (member, phase, action) ``SMPC_SYNTH_FAULT`` asks for, if set; InputError if
    malformed (checked before any network traffic)."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    parts = tuple(spec.split(":"))
    if len(parts) != 3 or parts[1] not in PHASES or parts[2] not in FAULT_ACTIONS:
        raise InputError(
            f"{FAULT_ENV}={spec!r}: use MEMBER:PHASE:ACTION with PHASE one of "
            f"{', '.join(PHASES)} and ACTION one of {', '.join(FAULT_ACTIONS)}"
        )
    return parts  # type: ignore[return-value]


def enter(member: str, phase: str) -> None:
    """``member`` enters ``phase`` (logged once); strikes if a test injected a fault here."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}")
    if (member, phase) in _entered:
        return
    _entered.add((member, phase))
    log.info("%s: phase %s", member, phase)
    fault = injected_fault()
    if fault is None or fault[:2] != (member, phase):
        return
    action = fault[2]
    log.warning(
        "%s: FAULT INJECTED by %s: %s at phase %s, at %.3f",
        member,
        FAULT_ENV,
        action,
        phase,
        time.time(),  # the fault tests time every survivor's exit from here
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        threading.Event().wait()  # a deadlock: this thread never runs again
