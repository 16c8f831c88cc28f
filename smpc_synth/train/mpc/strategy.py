"""MPC mode: the parties secret-share their encoded rows and train ONE generator jointly.

Per session, identical on every data party (CrypTen over the authenticated mesh, Beaver
triples from the dealer member):

1. the encoder is fitted from a secure sum of each party's additive statistics (only the
   pooled totals are revealed, and every party's row count);
2. ``gaussian``: one secure sum of (n, sum, sum of outer products), then the closed form;
3. ``vae`` / ``gan``: the rows are secret-shared into one pooled table and the MPC twin of
   the model trains on it (:mod:`smpc_synth.train.mpc.trainer`), with shares checkpointed every
   epoch; only the per-step losses (and the VAE's per-unit noise scale) are revealed;
4. the released network's weights are opened to the output parties only; the VAE's encoder
   and the GAN's discriminator are never revealed.

With ``dp.epsilon`` (per record; the dealer is required) every opened sum carries the dealer's
Gaussian noise (:meth:`~smpc_synth.mpc.dealer.provider.DealerProvider.noise_share`), planned by one
ledger: the encoder's statistics, the Gaussian generator's clipped moments, and the VAE's DP-SGD
(:mod:`smpc_synth.train.mpc.dp_sgd`), whose noisy steps make its weights public as they train. Each
party shuffles its rows with a secret permutation before sharing them. Every party's row count is
still opened to the other parties (the pooled table's shape); no exact count is released.
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
        from smpc_synth.models import get_generator
        from smpc_synth.mpc.session import crypten_session, phase, traffic

        cfg = ctx.config
        started = time.perf_counter()
        marginal = get_generator(cfg.generator).differentially_private
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
            if marginal:
                with phase("dp marginals"):
                    model, encoder, received, metrics = _run_marginal(ctx)
                private = None
            else:
                private = _start_ledger(ctx) if cfg.dp.enabled else None
                with phase("encoder stats"):
                    encoder, sizes, rows = _fit_encoder(ctx, private)
                model, metrics = _train_model(ctx, encoder, sizes, private, rows)
                synthesizer = _release(ctx, encoder, model, rows, private)
            metrics["traffic_by_phase"] = traffic().by_phase
        if marginal:
            synthesizer = _release_marginal(ctx, model, encoder, received, metrics)
        elif private is not None:
            metrics.update({"privacy": private[0].to_dict(), "rows_released": round(rows)})
        else:  # without DP the pooled row count is opened anyway (the table's shape)
            metrics.setdefault("rows_trained", sum(sizes))
        metrics.update(
            {
                "local_rows": len(ctx.data),
                "train_seconds": time.perf_counter() - started,
                "provider": cfg.mpc.provider,
                "transport": cfg.mpc.transport,
            }
        )
        return TrainingResult(synthesizer, metrics)


ENCODER_NOISE_TAG, MOMENTS_NOISE_TAG = 0, 1  # the dealer's noise draws (DP-SGD: dp_sgd)
DEALT_NOISE = (
    "the dealer: the exact discrete Gaussian (Canonne, Kamath and Steinke) on the fixed-point "
    "grid, from an AES-CTR key of its own"
)


def _start_ledger(ctx: PartyContext):
    from smpc_synth.models import get_generator
    from smpc_synth.models.private import start_ledger
    from smpc_synth.train.mpc.dp_sgd import SLOT_DELTA_SHARE

    ledger, source = start_ledger(ctx.config.dp, ctx.config.generator, f"mpc/{ctx.name}")
    if "training" in get_generator(ctx.config.generator).dp_parts:
        ledger.reserve_delta(
            "slots",
            SLOT_DELTA_SHARE * ctx.config.dp.delta,
            "each party shares its Poisson sample in a fixed number of slots; that some "
            "sample ever needs more (its excess rows are then left out) has at most this "
            "probability, which the accountant's delta leaves room for",
        )
    seeded = ctx.config.mpc.debug_seed is not None
    ledger.noise_source = (
        f"INSECURE: keyed by mpc.debug_seed (tests only); {DEALT_NOISE}" if seeded else DEALT_NOISE
    )
    ledger.note(
        "noise",
        "dealt by the dealer as shares: no data party, nor all but one together, knows it; "
        "each party's Poisson samples of its own rows: " + source.describe().split(";")[0],
    )
    return ledger, source


def _run_marginal(ctx: PartyContext):
    """AIM / MST on secret shares: only noisy marginals and chosen indices are opened, and
    no row count (the encoder follows from the public schema alone)."""
    from smpc_synth.models import Privacy, get_generator
    from smpc_synth.mpc.marginals import SecureQueries
    from smpc_synth.train.marginals import run_mechanism

    cfg = ctx.config
    gen_cls = get_generator(cfg.generator)
    encoder = gen_cls.make_encoder(ctx.schema).fit_public()
    model = gen_cls(encoder.layout, **cfg.generator_params)
    codes = model.codes(encoder.transform(ctx.data))
    if cfg.dp.insecure_null_data:  # tests only: every mechanism reads no row
        codes = codes[:0]
    queries = SecureQueries(codes, model.shape)
    privacy = Privacy.from_run(cfg.dp, cfg.mpc.debug_seed)
    started = time.perf_counter()
    phases.enter(ctx.name, "aggregation")  # the first marginal is summed on shares
    received = run_mechanism(ctx, model, queries, privacy)
    metrics = {"epochs": [{"epoch": 1, "seconds": time.perf_counter() - started}]}
    return model, encoder, received, metrics


def _release_marginal(ctx: PartyContext, model, encoder, received, metrics):
    """After the session: the synthesizer of an output party (a follower loads the model
    the first party sent)."""
    from smpc_synth.models import Synthesizer
    from smpc_synth.train.marginals import finish

    metrics.update(finish(model, received))
    if not ctx.is_output_party:
        return None
    meta = {"train_rows": model.estimated_rows, "seed": ctx.config.seed, "mode": "mpc"}
    meta["dp"] = model.privacy_report
    return Synthesizer.from_parts(ctx.schema, encoder, model, meta=meta)


def _fit_encoder(ctx: PartyContext, private):
    """The encoder (from exact or noisy sums), every party's row count, and the row count
    the run may state (exact, or the noisy one under DP)."""
    from smpc_synth.data.encoding import N_ROWS, noisy_count
    from smpc_synth.models import get_generator
    from smpc_synth.mpc.secure_stats import party_sizes, secure_sum

    gen_cls = get_generator(ctx.config.generator)
    encoder = gen_cls.make_encoder(ctx.schema)
    stats = encoder.sufficient_stats(ctx.data)
    sizes = party_sizes(len(ctx.data), ctx.rank, ctx.world_size)
    phases.enter(ctx.name, "aggregation")
    if private is None:
        encoder.fit_stats(secure_sum(stats, ctx.rank, ctx.world_size))
        return encoder, sizes, sum(sizes)
    from smpc_synth.dp.noise import grid_sensitivity
    from smpc_synth.models.private import plan_encoder

    dp = ctx.config.dp
    size = sum(v.size for v in stats.values())
    bound = grid_sensitivity(encoder.stats_sensitivity(), size)  # each party's rounding
    mechanism = plan_encoder(private[0], encoder, dp, bound)
    summed = secure_sum(
        stats,
        ctx.rank,
        ctx.world_size,
        noise_std=mechanism.noise_std,
        noise_tag=ENCODER_NOISE_TAG,
        null_data=dp.insecure_null_data,
    )
    encoder.fit_stats(summed, noise_std=mechanism.noise_std)
    rows = noisy_count(summed[N_ROWS], mechanism.noise_std)
    private[0].check_delta(rows)
    return encoder, sizes, rows


def _train_model(ctx: PartyContext, encoder, sizes: list[int], private, rows: float):
    from smpc_synth.models import get_generator
    from smpc_synth.models.schedule import check_batch_rows
    from smpc_synth.mpc.session import phase

    cfg = ctx.config
    X = encoder.transform(ctx.data)
    model = get_generator(cfg.generator)(encoder.layout, **cfg.generator_params)
    # the pooled row count is known from the row-count exchange, before any training step
    check_batch_rows(model.hparams, sum(sizes), "the parties' rows", "pooled training rows")
    started = time.perf_counter()
    if private is not None and "moments" in model.dp_parts:
        with phase("moments"):
            _fit_moments(ctx, model, X, private, rows)
    if "training" not in model.dp_parts:
        if private is None:
            with phase("gaussian moments"):
                _fit_gaussian(ctx, model, X)
        ctx.progress({"event": "epoch", "epoch": 1, "epochs": 1})
        return model, {"epochs": [{"epoch": 1, "seconds": time.perf_counter() - started}]}
    if private is not None:
        return model, _train_private(ctx, model, X, sizes, private, rows)
    from smpc_synth.train.mpc.trainer import TrainLoop, train

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


def _fit_moments(ctx: PartyContext, model, X: np.ndarray, private, rows: float) -> None:
    """The noisy moments of the clipped encoded rows: the Gaussian generator's fit, or the
    GAN's moment target."""
    from smpc_synth.dp.noise import grid_sensitivity
    from smpc_synth.models.gaussian import (
        clip_rows,
        from_upper,
        moments_sensitivity,
        sufficient_stats,
        upper,
    )
    from smpc_synth.models.private import apply_moments, plan_moments
    from smpc_synth.mpc.secure_stats import secure_sum

    _, total, outer = sufficient_stats(clip_rows(X, model.layout))
    stats = {"sum": total, "upper": upper(outer)}
    size = sum(v.size for v in stats.values())
    bound = grid_sensitivity(moments_sensitivity(model.layout), size)
    mechanism = plan_moments(private[0], type(model), model.layout, ctx.config.dp, bound)
    null = ctx.config.dp.insecure_null_data
    summed = secure_sum(
        stats,
        ctx.rank,
        ctx.world_size,
        noise_std=mechanism.noise_std,
        noise_tag=MOMENTS_NOISE_TAG,
        null_data=null,
    )
    apply_moments(model, rows, summed["sum"], from_upper(summed["upper"], len(total)))


def _train_private(ctx: PartyContext, model, X: np.ndarray, sizes, private, rows: float):
    """DP-SGD on shares (:mod:`smpc_synth.train.mpc.dp_sgd`): each party samples its own rows."""
    from smpc_synth.models.private import SGD_WHAT, plan_sgd
    from smpc_synth.train.mpc import dp_sgd

    cfg = ctx.config
    ledger, source = private
    model.initialize(cfg.seed)
    epochs = cfg.epochs or model.hparams.epochs
    plan = plan_sgd(
        ledger,
        epochs,
        model.hparams.batch_size,
        rows,
        cfg.dp.clip_norm,
        SGD_WHAT,
        sensitivity=dp_sgd.sensitivity(cfg.dp.clip_norm),
    )
    loop = dp_sgd.DpLoop(
        rank=ctx.rank,
        sizes=sizes,
        seed=cfg.seed,
        plan=plan,
        source=source,
        delta=cfg.dp.delta,
        noise_std=plan.noise_multiplier * plan.clip_norm,
        checkpoints=ctx.checkpoints,
        progress=ctx.progress,
        resume=ctx.resume,
        null_data=cfg.dp.insecure_null_data,
    )
    dp_sgd.train_dp(model, X, loop, lambda first: _agree_on_resume(ctx, first))
    return {
        "epochs": loop.history,
        "skipped_steps": loop.skipped,
        "overflowed_steps": loop.overflows,
        "sgd": plan.to_dict(),
    }


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


def _release(ctx: PartyContext, encoder, model, rows: float, private):
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
    meta = {"train_rows": round(rows), "seed": ctx.config.seed, "mode": "mpc"}
    if private is not None:
        meta["dp"] = private[0].to_dict()
    return Synthesizer.from_parts(ctx.schema, encoder, model, meta=meta)
