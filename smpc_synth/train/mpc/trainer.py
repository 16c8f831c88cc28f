"""The secure training loop: pool the parties' shared rows, run epochs, checkpoint shares.

Every party runs this same loop on its shares. The pooled table is the concatenation of the
parties' secret-shared encoded rows in rank order (row counts are public); each epoch draws
the same permutation on every party from the shared public seed, exactly as the plaintext
``train_epoch`` does, so batches are chosen jointly without anyone seeing a row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.mpc.secure_stats import share_from_each
from smpc_synth.mpc.session import cpu_clock, cpu_since, phase, rekey, traffic
from smpc_synth.train.mpc.guard import WrapGuard, losses_only
from smpc_synth.train.mpc.twins import TWINS, Twin

crypten = import_crypten()

CHECKPOINT = "mpc"


@dataclass
class TrainLoop:
    """What one party needs to run the joint epochs."""

    rank: int
    sizes: list[int]  # every party's row count, in rank order
    seed: int
    epochs: int
    checkpoints: Any  # CheckpointStore
    progress: Callable[[dict[str, Any]], None]
    resume: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def pooled_table(X: np.ndarray, sizes: list[int], rank: int):
    """The secret-shared concatenation of every party's encoded rows, in rank order."""
    width = X.shape[1]
    local = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32)
    shared = share_from_each(local, [torch.Size((n, width)) for n in sizes], rank)
    return crypten.cat(shared, dim=0)


def resume_point(
    checkpoints, key: str, resume: bool, agree: Callable[[int], int]
) -> tuple[int, dict[str, Any] | None]:
    """The epoch to start from and the checkpoint it continues; every party must agree."""
    state = checkpoints.load(key) if resume else None
    first = 0 if state is None else int(state["epoch"]) + 1
    if agree(first) != first:
        raise RuntimeError("parties disagree on the epoch to resume from")
    return first, state


def make_twin(model) -> Twin:
    return TWINS[model.name](model)


def train(model, X: np.ndarray, loop: TrainLoop, agree: Callable[[int], int]) -> Twin:
    """Train ``model``'s twin for ``loop.epochs`` epochs; returns the twin (weights shared).

    ``agree(first_epoch)`` must return the epoch every party resumes from (or raise).
    """
    with phase("share rows"):
        table = pooled_table(X, loop.sizes, loop.rank)
    n = sum(loop.sizes)
    batch = min(model.hparams.batch_size, n)
    steps = n // batch
    model.initialize(loop.seed)  # the plaintext model's starting point, from the public seed
    with phase("setup"):
        twin = make_twin(model)
    twin.phase = phase
    rng = torch.Generator().manual_seed(loop.seed)
    first, state = resume_point(loop.checkpoints, CHECKPOINT, loop.resume, agree)
    if state is not None:
        twin.load(state["twin"])
        rng.set_state(state["rng"])
        loop.history = list(state["history"])
    guard = WrapGuard()
    epoch_state = _EpochState(first)  # what a rollback must rewind along with the shares

    def snapshot():
        return twin.state(), rng.get_state(), epoch_state.copy(), len(loop.history)

    def restore(point) -> None:
        twin.load(point[0])
        rng.set_state(point[1])
        epoch_state.restore(point[2])
        del loop.history[point[3] :]
        twin.reset_optimizer_roots()

    # How often each epoch has started here: a rollback that redoes an epoch's first step
    # must not re-key to the randomness that wrapped around.
    starts: dict[int, int] = {}

    # One run of the guard over every step of every epoch, so that a wrecked last step of an
    # epoch can still be rolled back from the first step of the next (with one step per
    # epoch, every rollback crosses an epoch boundary).
    def step(g: int) -> dict[str, float]:
        i = g % steps
        if i == 0:
            starts[epoch_state.epoch] = starts.get(epoch_state.epoch, -1) + 1
            rekey(epoch_state.epoch, starts[epoch_state.epoch])  # debug-seeded runs only
            epoch_state.start(torch.randperm(n, generator=rng), traffic())
            twin.begin_epoch()
        return twin.step(table[epoch_state.order[i * batch : (i + 1) * batch]], rng)

    def accepted(g: int, losses: dict[str, float]) -> None:
        epoch_state.results.append(losses_only(losses))
        if g % steps == steps - 1:
            _end_epoch(twin, loop, epoch_state, rng, guard.rollbacks, training_started)
            epoch_state.epoch += 1

    training_started = time.perf_counter()
    guard.run_steps((loop.epochs - first) * steps, step, snapshot, restore, accepted)
    return twin


@dataclass
class _EpochState:
    """The running epoch: its number, batch order, accepted losses, and where it started."""

    epoch: int
    order: torch.Tensor | None = None
    results: list[dict[str, float]] = field(default_factory=list)
    traffic_before: Any = None
    started: float = 0.0
    cpu_before: dict[str, float] = field(default_factory=dict)

    def start(self, order: torch.Tensor, traffic_now: Any) -> None:
        self.order, self.results = order, []
        self.traffic_before, self.started = traffic_now, time.perf_counter()
        self.cpu_before = cpu_clock()

    def copy(self) -> _EpochState:
        return replace(self, results=list(self.results))

    def restore(self, other: _EpochState) -> None:
        vars(self).update(vars(other.copy()))


def _end_epoch(
    twin: Twin, loop: TrainLoop, state: _EpochState, rng: torch.Generator, rollbacks: int, t0: float
) -> None:
    """Reveal the epoch's aggregates, record it, report it and checkpoint every share."""
    with phase("epoch end"):
        twin.end_epoch()
    after = traffic()
    record = {
        "epoch": state.epoch + 1,  # reported 1-based, as in the other modes
        "seconds": time.perf_counter() - t0,  # cumulative, as elsewhere
        "epoch_seconds": time.perf_counter() - state.started,
        **_mean(state.results),
        "bytes": after.bytes_sent - state.traffic_before.bytes_sent,
        "rounds": after.rounds - state.traffic_before.rounds,
        "rollbacks": rollbacks,
        **cpu_since(state.cpu_before),
    }
    loop.history.append(record)
    loop.progress({"event": "epoch", "epochs": loop.epochs, **record})
    loop.checkpoints.save(
        CHECKPOINT,
        {
            "epoch": state.epoch,
            "twin": twin.state(),
            "rng": rng.get_state(),
            "history": loop.history,
        },
    )


def _mean(results: list[dict[str, float]]) -> dict[str, float]:
    keys = results[0].keys() if results else ()
    return {k: sum(r[k] for r in results) / len(results) for k in keys}
