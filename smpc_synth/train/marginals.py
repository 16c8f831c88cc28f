"""Running a marginal mechanism (AIM, MST) across parties: one leader, the others follow.

The mechanism's public work (fitting Private-PGM to the noisy marginals released so far,
choosing the candidates, their estimates) is a function of public values only, so the first
data party does it alone and announces each data-dependent step to the others before it is
run; every party then runs the step together (on secret shares in MPC mode, through the
aggregator in federated mode). The other parties never compute the model: on a machine that
hosts all of them, they do not compete with the leader for CPU. At the end the leader sends
the fitted model, which only holds public values, to every other output party.

Announcements travel as our tagged binary codec (no pickle): the method, its public
arguments; estimates and offsets stay with the leader (only it adds them in), unless every
party needs the estimates (federated mode: each scores its own rows against its share).
While the leader fits (minutes on large models) it says so at least every quarter of
``network.progress_timeout_s``, so the others' wait for its next step is bounded by the
fit's progress, not by its length.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from smpc_synth.dp.marginals import SelectionPlan
from smpc_synth.errors import PeerError
from smpc_synth.net import objects
from smpc_synth.train.base import PartyContext

log = logging.getLogger(__name__)

CALL_TAG = "dp/call"
MODEL_TAG = "dp/model"
_DONE = "done"
_WORKING = "working"


def _plain(value: Any) -> Any:
    """numpy values as what the codec carries."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, order="C"))  # a copy: estimates are read-only
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _forwarded(name: str) -> property:
    """An attribute of the wrapped queries (how their noise is drawn is theirs to say)."""
    return property(lambda self: getattr(self.inner, name))


class LeaderQueries:
    """Runs each query on ``inner`` after announcing it to ``followers``; what a release
    costs is asked of ``inner`` (only the leader keeps the budget)."""

    def __init__(self, inner, ctx: PartyContext) -> None:
        self.inner = inner
        self.ctx = ctx
        self.followers = [p for p in ctx.parties if p != ctx.name]
        self._handles: list[Any] = []
        self._every = ctx.config.network.progress_timeout_s / 4
        self._last = time.monotonic()

    def _announce(self, method: str, **arguments: Any) -> None:
        blob = objects.encode(_plain({"method": method, **arguments}))
        for peer in self.followers:
            self.ctx.channel.send(peer, CALL_TAG, blob)
        self._last = time.monotonic()

    def working(self) -> None:
        """Tell the others the leader is still fitting, if it has been silent a while."""
        if time.monotonic() - self._last >= self._every:
            self._announce(_WORKING)

    noise_factor = _forwarded("noise_factor")
    needs_estimates = _forwarded("needs_estimates")
    needs_party_sizes = _forwarded("needs_party_sizes")
    noise_source = _forwarded("noise_source")

    def privacy_notes(self, ledger) -> dict[str, Any]:
        return self.inner.privacy_notes(ledger)

    def charge_measure(self, budget, label: str, sigma2: float, cells: int) -> None:
        self.inner.charge_measure(budget, label, sigma2, cells)

    def charge_select(self, budget, label, plan, errors, subset, weights) -> SelectionPlan:
        return self.inner.charge_select(budget, label, plan, self._handles[errors], subset, weights)

    def measure_party_sizes(self, sigma2: float, tag: int, budget=None) -> np.ndarray:
        self._announce("party_sizes", sigma2=float(sigma2), tag=tag)
        return self.inner.measure_party_sizes(sigma2, tag, budget=budget)

    def recode(self, mappings: dict[int, np.ndarray], shape: Sequence[int]) -> None:
        self._announce("recode", mappings=[[c, m] for c, m in mappings.items()], shape=list(shape))
        self.inner.recode(mappings, shape)

    def measure(self, columns: Sequence[int], sigma2: float, tag: int) -> np.ndarray:
        self._announce("measure", columns=list(columns), sigma2=float(sigma2), tag=tag)
        return self.inner.measure(columns, sigma2, tag)

    def errors(self, cliques, estimates) -> int:
        shared = {"estimates": list(estimates)} if self.inner.needs_estimates else {}
        self._announce("errors", cliques=[list(c) for c in cliques], **shared)
        self._handles.append(self.inner.errors(cliques, estimates))
        return len(self._handles) - 1

    def select(self, errors: int, subset, weights, offsets, plan: SelectionPlan, tag: int) -> int:
        self._announce(
            "select",
            errors=errors,
            subset=list(subset),
            weights=np.asarray(weights, dtype=np.int64),
            plan=asdict(plan),
            tag=tag,
        )
        return self.inner.select(self._handles[errors], subset, weights, offsets, plan, tag)

    def done(self) -> None:
        self._announce(_DONE)


def follow(inner, ctx: PartyContext, leader: str) -> int:
    """Run the leader's announced queries on ``inner`` until it is done; returns how many."""
    handles: list[Any] = []
    calls = 0
    while True:
        try:
            call = objects.decode(bytes(ctx.channel.recv(leader, CALL_TAG)))
            method = call["method"]
        except (objects.CodecError, KeyError, TypeError) as err:
            raise PeerError(
                f"{leader} sent a malformed mechanism step: {err}", peer=leader
            ) from None
        if method == _DONE:
            return calls
        if method == _WORKING:
            continue
        calls += 1
        try:
            if method == "recode":
                inner.recode({int(c): np.asarray(m) for c, m in call["mappings"]}, call["shape"])
            elif method == "measure":
                inner.measure(call["columns"], call["sigma2"], call["tag"])
            elif method == "errors":
                estimates = call.get("estimates")
                if estimates is not None:
                    estimates = [np.asarray(e, dtype=np.float64) for e in estimates]
                handles.append(inner.errors([tuple(c) for c in call["cliques"]], estimates))
            elif method == "party_sizes":
                inner.measure_party_sizes(call["sigma2"], call["tag"])
            elif method == "select":
                plan = SelectionPlan(**call["plan"])
                inner.select(
                    handles[call["errors"]],
                    call["subset"],
                    np.asarray(call["weights"]),
                    None,
                    plan,
                    call["tag"],
                )
            else:
                raise ValueError(f"unknown step {method!r}")
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise PeerError(f"{leader} sent a bad mechanism step: {err}", peer=leader) from None


def run_mechanism(ctx: PartyContext, model, queries, privacy) -> Any:
    """Fit ``model`` (a MarginalGenerator) with every party; the leader's progress events go
    out as epochs. Returns what :func:`finish` needs once the session is over: a follower
    that receives the model loads it only then (loading compiles Private-PGM's programs,
    which must not hold up the session's closing barrier)."""
    leader = ctx.parties[0]
    if ctx.name == leader:

        def progress(event: dict[str, Any]) -> None:
            if event.get("event") == "round":
                ctx.progress({"event": "epoch", "epoch": event["round"], **_shown(event)})
            elif event.get("event") == "working":
                wrapped.working()

        wrapped = LeaderQueries(queries, ctx)
        model.fit_private(wrapped, privacy, progress)
        wrapped.done()
        state = objects.encode(_plain(model.state_dict()))
        for peer in ctx.output_parties or ctx.parties:
            if peer != leader:
                ctx.channel.send(peer, MODEL_TAG, state)
        return None
    follow(queries, ctx, leader)
    return bytes(ctx.channel.recv(leader, MODEL_TAG)) if ctx.is_output_party else None


def finish(model, received: bytes | None) -> dict[str, Any]:
    """Load the model a follower received (after the session), and the training metrics:
    the DP report and the noisy row estimate."""
    if received is not None:
        try:
            state = objects.decode(received)
        except objects.CodecError as err:
            raise PeerError(f"the first party sent a malformed model: {err}") from None
        model.load_state_dict(state)
    if model.model is None:
        return {}
    return {
        "rows_released": model.estimated_rows,
        "privacy": model.privacy_report,
        "selected": [list(c) for c in model.selected],
    }


def _shown(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k in ("selected", "rho_spent")}
