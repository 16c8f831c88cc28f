"""The secure training loop: pool the parties' shared rows, run epochs, checkpoint shares.

Every party runs this same loop on its shares. The pooled table is the concatenation of the
parties' secret-shared encoded rows in rank order (row counts are public); each epoch draws
the same permutation on every party from the shared public seed, exactly as the plaintext
``train_epoch`` does, so batches are chosen jointly without anyone seeing a row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from smpc_synth.mpc.compat import import_crypten
from smpc_synth.mpc.guard import WrapGuard
from smpc_synth.mpc.secure_stats import share_from_each
from smpc_synth.mpc.session import phase, traffic
from smpc_synth.mpc.twins import TWINS, Twin

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
    first = 0
    state = loop.checkpoints.load(CHECKPOINT) if loop.resume else None
    if state is not None:
        first = int(state["epoch"]) + 1
    if agree(first) != first:
        raise RuntimeError("parties disagree on the epoch to resume from")
    if state is not None:
        twin.load(state["twin"])
        rng.set_state(state["rng"])
        loop.history = list(state["history"])
    guard = WrapGuard()

    def snapshot():
        return twin.state(), rng.get_state()

    def restore(point) -> None:
        twin.load(point[0])
        rng.set_state(point[1])
        twin.reset_optimizer_roots()

    training_started = time.perf_counter()
    for epoch in range(first, loop.epochs):
        before = traffic()
        started = time.perf_counter()
        order = torch.randperm(n, generator=rng)
        twin.begin_epoch()

        def step(i: int, order=order):
            return twin.step(table[order[i * batch : (i + 1) * batch]], rng)

        results = guard.run_steps(steps, step, snapshot, restore)
        with phase("epoch end"):
            twin.end_epoch()
        after = traffic()
        record = {
            "epoch": epoch + 1,  # reported 1-based, as in the other modes
            "seconds": time.perf_counter() - training_started,  # cumulative, as elsewhere
            "epoch_seconds": time.perf_counter() - started,
            **_mean(results),
            "bytes": after.bytes_sent - before.bytes_sent,
            "rounds": after.rounds - before.rounds,
            "rollbacks": guard.rollbacks,
        }
        loop.history.append(record)
        loop.progress({"event": "epoch", "epochs": loop.epochs, **record})
        loop.checkpoints.save(
            CHECKPOINT,
            {
                "epoch": epoch,
                "twin": twin.state(),
                "rng": rng.get_state(),
                "history": loop.history,
            },
        )
    return twin


def _mean(results: list[dict[str, float]]) -> dict[str, float]:
    keys = results[0].keys() if results else ()
    return {k: sum(r[k] for r in results) / len(results) for k in keys}
