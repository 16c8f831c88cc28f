"""MPC mode: the parties secret-share their encoded rows and train ONE generator jointly.

Per session, identical on every data party (CrypTen over the authenticated mesh, Beaver
triples from the dealer member):

1. the encoder is fitted from a secure sum of each party's additive statistics (only the
   pooled totals are revealed, and every party's row count);
2. ``gaussian``: one secure sum of (n, sum, sum of outer products), then the closed form;
3. ``vae`` / ``gan``: the rows are secret-shared into one pooled table and the MPC twin of
   the model trains on it (:mod:`smpc_synth.mpc.trainer`), with shares checkpointed every
   epoch; only the per-step losses (and the VAE's per-unit noise scale) are revealed;
4. the released network's weights are opened to the output parties only; the VAE's encoder
   and the GAN's discriminator are never revealed.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from smpc_synth import phases
from smpc_synth.errors import PeerError
from smpc_synth.train.base import PartyContext, Strategy, TrainingResult

log = logging.getLogger(__name__)


class MpcStrategy(Strategy):
    """Joint training on secret-shared rows with CrypTen."""

    name = "mpc"

    def run(self, ctx: PartyContext) -> TrainingResult:
        from smpc_synth.mpc.session import crypten_session, phase, traffic

        cfg = ctx.config
        started = time.perf_counter()
        with crypten_session(
            ctx.channel,
            ctx.parties,
            ctx.rank,
            provider=cfg.mpc.provider,
            transport=cfg.mpc.transport,
            insecure_dev=cfg.mpc.insecure_dev,
            insecure_debug_seed=cfg.mpc.debug_seed,
            timeout=cfg.network.peer_timeout_s,
            rendezvous=cfg.mpc.rendezvous,
            allow_insecure=cfg.network.allow_insecure,
        ):
            with phase("encoder stats"):
                encoder, sizes = _fit_encoder(ctx)
            model, metrics = _train_model(ctx, encoder, sizes)
            synthesizer = _release(ctx, encoder, model, sum(sizes))
            metrics["traffic_by_phase"] = traffic().by_phase
        metrics.update(
            {
                "rows_trained": sum(sizes),
                "local_rows": len(ctx.data),
                "train_seconds": time.perf_counter() - started,
                "provider": cfg.mpc.provider,
                "transport": cfg.mpc.transport,
            }
        )
        return TrainingResult(synthesizer, metrics)


def _fit_encoder(ctx: PartyContext):
    from smpc_synth.data import TableEncoder
    from smpc_synth.models import get_generator
    from smpc_synth.mpc.secure_stats import party_sizes, secure_sum

    gen_cls = get_generator(ctx.config.generator)
    encoder = TableEncoder(ctx.schema, numeric=gen_cls.numeric_encoding)
    phases.enter(ctx.name, "aggregation")
    encoder.fit_stats(secure_sum(encoder.sufficient_stats(ctx.data), ctx.rank, ctx.world_size))
    return encoder, party_sizes(len(ctx.data), ctx.rank, ctx.world_size)


def _train_model(ctx: PartyContext, encoder, sizes: list[int]):
    from smpc_synth.models import get_generator
    from smpc_synth.mpc.session import phase

    cfg = ctx.config
    X = encoder.transform(ctx.data)
    model = get_generator(cfg.generator)(encoder.layout, **cfg.generator_params)
    if hasattr(model, "fit_stats"):
        started = time.perf_counter()
        with phase("gaussian moments"):
            _fit_gaussian(ctx, model, X)
        return model, {"epochs": [{"epoch": 1, "seconds": time.perf_counter() - started}]}
    from smpc_synth.mpc.trainer import TrainLoop, train

    loop = TrainLoop(
        rank=ctx.rank,
        sizes=sizes,
        seed=cfg.seed,
        epochs=cfg.epochs or model.hparams.epochs,
        checkpoints=ctx.checkpoints,
        progress=ctx.progress,
        resume=ctx.resume,
    )
    twin = train(model, X, loop, lambda first: _agree_on_resume(ctx, first))
    model.twin = twin  # kept for the release step
    return model, {"epochs": loop.history}


def _fit_gaussian(ctx: PartyContext, model, X: np.ndarray) -> None:
    from smpc_synth.models.gaussian import sufficient_stats
    from smpc_synth.mpc.secure_stats import secure_sum

    n, total, outer = sufficient_stats(X)
    summed = secure_sum(
        {"n": np.array([float(n)]), "sum": total, "outer": outer}, ctx.rank, ctx.world_size
    )
    model.fit_stats(round(float(summed["n"][0])), summed["sum"], summed["outer"])
    ctx.progress({"event": "epoch", "epoch": 1, "epochs": 1})


def _agree_on_resume(ctx: PartyContext, first: int) -> int:
    """Every party must resume from the same epoch (checked by a secure sum of the epochs)."""
    from smpc_synth.mpc.secure_stats import secure_sum

    mine = np.zeros(ctx.world_size)
    mine[ctx.rank] = first
    epochs = secure_sum({"epochs": mine}, ctx.rank, ctx.world_size)["epochs"]
    for peer, theirs in zip(ctx.parties, np.rint(epochs).astype(int), strict=True):
        if theirs != first:
            raise PeerError(
                f"{peer} would resume at epoch {theirs + 1}, {ctx.name} at {first + 1}: "
                "their checkpoints differ",
                peer=peer,
            )
    return first


def _release(ctx: PartyContext, encoder, model, rows: int):
    """Open the released weights to each output party; the synthesizer where we are one."""
    from smpc_synth.models import Synthesizer
    from smpc_synth.mpc.session import phase

    twin = getattr(model, "twin", None)
    outputs = ctx.output_parties or ctx.parties
    if twin is not None:
        with phase("release"):
            for name in outputs:
                twin.reveal_released(ctx.parties.index(name))
        del model.twin
    if not ctx.is_output_party:
        return None
    meta = {"train_rows": rows, "seed": ctx.config.seed, "mode": "mpc"}
    return Synthesizer.from_parts(ctx.schema, encoder, model, meta=meta)
