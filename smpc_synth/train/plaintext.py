"""Plaintext mode: every party sends its rows IN THE CLEAR to the first party, which trains.

This is the no-privacy reference that every cost of the cryptography is divided by; it also
proves the party runtime end to end. Rows travel as Arrow IPC (a data-only format).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import pandas as pd
import pyarrow as pa

from smpc_synth.train.base import PartyContext, Strategy, TrainingResult

log = logging.getLogger(__name__)

ROWS_TAG = "plaintext/rows"
DONE_TAG = "plaintext/done"
# On DONE_TAG, one message per epoch (or round) while the leader trains, and one at least
# every quarter of the progress deadline while a long fit goes on between two, then DONE:
# each wait for the next stays within the deadline however long the whole training takes.
EPOCH, DONE = b"epoch", b""


def table_to_bytes(frame: pd.DataFrame) -> bytes:
    """Serialise a table as an Arrow IPC stream (no code-executing format on the wire)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_bytes(blob: bytes) -> pd.DataFrame:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all().to_pandas()


class PlaintextStrategy(Strategy):
    """Pool the rows on the first data party and train there with no protection at all."""

    name = "plaintext"

    def run(self, ctx: PartyContext) -> TrainingResult:
        leader = ctx.parties[0]
        others = [p for p in ctx.parties if p != leader]
        if ctx.name != leader:
            log.warning("plaintext mode: sending %d rows IN THE CLEAR to %s", len(ctx.data), leader)
            ctx.channel.send(leader, ROWS_TAG, table_to_bytes(ctx.data))
            while bytes(ctx.channel.recv(leader, DONE_TAG)) == EPOCH:
                pass
            return TrainingResult(None, {"rows_sent": len(ctx.data)})

        frames = [ctx.data]
        for peer in others:
            frames.append(table_from_bytes(ctx.channel.recv(peer, ROWS_TAG)))
            log.warning(
                "plaintext mode: received %d rows in the clear from %s", len(frames[-1]), peer
            )
        pooled = pd.concat(frames, ignore_index=True)

        every = ctx.config.network.progress_timeout_s / 4
        last = time.monotonic()

        def progress(event: dict) -> None:
            nonlocal last
            working = event.get("event") == "working"
            if not working:
                ctx.progress(event)
            if event.get("event") == "epoch" or (working and time.monotonic() - last >= every):
                last = time.monotonic()
                for peer in others:
                    ctx.channel.send(peer, DONE_TAG, EPOCH)

        synthesizer, metrics = fit_centrally(pooled, dataclasses.replace(ctx, progress=progress))
        for peer in others:
            ctx.channel.send(peer, DONE_TAG, DONE)
        return TrainingResult(synthesizer, metrics)


def fit_centrally(frame: pd.DataFrame, ctx: PartyContext):
    """Train one synthesizer on ``frame`` and report an event per epoch."""
    from smpc_synth.models import Synthesizer, planned_epochs

    cfg = ctx.config
    history: list[dict] = []
    started = time.perf_counter()
    total = planned_epochs(cfg.generator, cfg.epochs, cfg.generator_params)

    def on_epoch(epoch: int, losses: dict[str, float]) -> None:
        record = {"epoch": epoch + 1, "seconds": time.perf_counter() - started, **losses}
        history.append(record)
        ctx.progress({"event": "epoch", "epochs": total, **record})

    synthesizer = Synthesizer.fit(
        frame,
        ctx.schema,
        generator=cfg.generator,
        epochs=cfg.epochs,
        seed=cfg.seed,
        params=cfg.generator_params,
        on_epoch=on_epoch,
        dp=cfg.dp,
        on_working=lambda: ctx.progress({"event": "working"}),
    )
    metrics = {
        "rows_trained": len(frame),
        "train_seconds": time.perf_counter() - started,
        "epochs": history,
    }
    if synthesizer.privacy is not None:
        metrics["privacy"] = synthesizer.privacy
        metrics["rows_released"] = synthesizer.meta["train_rows"]
        if hasattr(synthesizer.generator, "selected"):  # aim, mst: the chosen marginals
            metrics["selected"] = [list(c) for c in synthesizer.generator.selected]
    return synthesizer, metrics
