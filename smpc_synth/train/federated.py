"""Federated mode: local training, secure aggregation of updates, optional DP.

Round structure, identical on every data party:

1. the encoder is fitted from secure sums of additive statistics (only totals are revealed);
2. ``gaussian``: one secure sum of (n, sum, sum of outer products) and the closed-form fit;
3. neural generators (same initial weights everywhere, from the run seed): per round, local
   epochs on local rows, then the secure sum of the weighted update (weight n_k / N, so the
   sum is FedAvg's weighted mean).

With ``dp.epsilon`` every secure sum carries Gaussian noise, planned by one ledger
(:mod:`smpc_synth.models.private`) and drawn from the CSPRNG; the mean of updates is
unweighted (a weight n_k / N would read the rows outside the ledger). Two units of privacy:

- ``record`` (default): each party adds the full noise to its own statistics, and trains
  locally with Opacus DP-SGD (Poisson rate ``q`` = batch size / noisy total rows,
  ``round(1/q)`` steps per local epoch): everything a party sends is a DP release of its own
  rows, so its rows are protected against the other parties and the aggregator as well.
- ``party`` (DP-FedAvg, McMahan et al. 2018): each party's statistics are divided by its own
  row count, its update is clipped to ``clip_norm``, both are rounded to the noise grid and
  carry a share of the noise (the shares sum to the full noise); one step per round at
  sample rate 1. A coalition of k parties knows k shares (docs/federated-security.md).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch

from smpc_synth.errors import InputError, PeerError
from smpc_synth.models.private import train_private
from smpc_synth.train.aggregation import AggregationClient, serve_aggregator
from smpc_synth.train.base import PartyContext, Strategy, TrainingResult

log = logging.getLogger(__name__)

STATS_MAX_ERROR = 0.05  # counts are rounded after the sum: any error below 0.5 is exact
MOMENTS_MAX_ERROR = 1e-3  # moments need finer resolution: they are divided by n afterwards
BOUND_TAG = "fed/bound"
RESUME_TAG = "fed/resume"
CHECKPOINT = "federated"


class FederatedStrategy(Strategy):
    """Federated averaging with CKKS-encrypted, pairwise-masked aggregation."""

    name = "federated"

    def run(self, ctx: PartyContext) -> TrainingResult:
        from smpc_synth.data.encoding import N_ROWS
        from smpc_synth.models import Synthesizer, get_generator

        cfg = ctx.config
        aggregator = ctx.services.get("aggregator")
        if aggregator is None:
            raise InputError("federated mode needs a member with role 'aggregator' in [[peers]]")
        started = time.perf_counter()
        if not ctx.is_output_party:
            log.warning(
                "%s is not an output party, but federated averaging gives every data party "
                "the global model each round; it keeps no copy (checkpoint or generator) once "
                "training ends",
                ctx.name,
            )
        client = AggregationClient(
            ctx.channel,
            ctx.name,
            ctx.parties,
            aggregator,
            he=cfg.federated.he,
            masking=cfg.federated.masking,
            session=f"{cfg.fingerprint()}",
        )
        client.setup()
        gen_cls = get_generator(cfg.generator)
        if "marginals" in gen_cls.dp_parts:
            return _run_marginal(ctx, client, gen_cls, started)
        encoder = gen_cls.make_encoder(ctx.schema)
        private = _Private.start(ctx) if cfg.dp.enabled else None
        metrics: dict[str, Any] = {"local_rows": len(ctx.data)}
        if private is None:
            stats = _secure_stats(ctx, client, encoder.sufficient_stats(ctx.data), "encoder stats")
            encoder.fit_stats(stats)
            total_rows = round(float(np.sum(stats[N_ROWS])))
            metrics["rows_trained"] = total_rows
        else:
            total_rows = private.fit_encoder(ctx, client, encoder)
        X = encoder.transform(ctx.data)
        model = gen_cls(encoder.layout, **cfg.generator_params)
        if private is not None and private.needs_moments(gen_cls):
            private.fit_moments(ctx, client, model, X, total_rows)
        if "training" not in gen_cls.dp_parts:
            if private is None:
                _fit_gaussian(ctx, client, model, X)
            ctx.progress({"event": "epoch", "epoch": 1, "epochs": 1})
            metrics["epochs"] = [{"epoch": 1, "seconds": time.perf_counter() - started}]
        else:
            metrics.update(_fedavg(ctx, client, model, X, total_rows, started, private))
        if private is not None:
            metrics.update(private.record(total_rows))
        client.finish()
        if not ctx.is_output_party:
            # FedAvg hands every party the global model each round; one that is not to
            # receive the generator keeps no copy of it once training is over
            ctx.checkpoints.discard(CHECKPOINT)
        metrics["train_seconds"] = time.perf_counter() - started
        metrics["he"] = cfg.federated.he
        metrics["masking"] = client.masking
        synthesizer = None
        if ctx.is_output_party:
            meta = {"train_rows": total_rows, "seed": cfg.seed, "mode": "federated"}
            if private is not None:
                meta.update(train_rows=metrics.get("rows_released"), dp=metrics["privacy"])
            synthesizer = Synthesizer.from_parts(ctx.schema, encoder, model, meta=meta)
        return TrainingResult(synthesizer, metrics)


def _run_marginal(ctx: PartyContext, client: AggregationClient, gen_cls, started: float):
    """AIM / MST through the aggregator: only noisy sums are opened, each party adding its
    share of the noise (:mod:`smpc_synth.train.federated_marginals`); the encoder follows
    from the public schema alone."""
    from smpc_synth.models import Privacy, Synthesizer
    from smpc_synth.train.federated_marginals import AggregatedQueries, party_noise_key
    from smpc_synth.train.marginals import finish, run_mechanism

    cfg = ctx.config
    encoder = gen_cls.make_encoder(ctx.schema).fit_public()
    model = gen_cls(encoder.layout, **cfg.generator_params)
    codes = model.codes(encoder.transform(ctx.data))
    if cfg.dp.insecure_null_data:  # tests only: every mechanism reads no row
        codes = codes[:0]
    privacy = Privacy.from_run(cfg.dp)
    key = party_noise_key(ctx.name, privacy.noise_key)
    queries = AggregatedQueries(client, codes, model.shape, ctx.name, ctx.parties, key)
    received = run_mechanism(ctx, model, queries, privacy)
    client.finish()
    metrics: dict[str, Any] = {"local_rows": len(ctx.data)}
    metrics["epochs"] = [{"epoch": 1, "seconds": time.perf_counter() - started}]
    metrics.update(finish(model, received))
    metrics["train_seconds"] = time.perf_counter() - started
    metrics["he"], metrics["masking"] = cfg.federated.he, client.masking
    if not ctx.is_output_party:
        return TrainingResult(None, metrics)
    meta = {"train_rows": model.estimated_rows, "seed": cfg.seed, "mode": "federated"}
    meta["dp"] = model.privacy_report
    return TrainingResult(Synthesizer.from_parts(ctx.schema, encoder, model, meta=meta), metrics)


def _public_bound(ctx: PartyContext, local_max: float) -> float:
    """A power-of-two bound on every party's values, agreed by exchanging local bounds.

    Reveals to the other data parties only the magnitude (power of two) of each party's
    largest statistic, roughly its row count.
    """
    mine = 2.0 ** math.ceil(math.log2(max(local_max, 1.0)))
    for peer in ctx.parties:
        if peer != ctx.name:
            ctx.channel.send(peer, BOUND_TAG, np.array([mine]))
    bounds = [mine] + [
        float(np.asarray(ctx.channel.recv(p, BOUND_TAG))[0]) for p in ctx.parties if p != ctx.name
    ]
    return max(bounds)


def _secure_stats(
    ctx,
    client: AggregationClient,
    stats: dict[str, np.ndarray],
    name: str,
    max_error: float = STATS_MAX_ERROR,
):
    tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in stats.items()}
    local_max = max((float(t.abs().max()) for t in tensors.values() if t.numel()), default=1.0)
    bound = _public_bound(ctx, local_max)
    summed = client.sum(name, tensors, max_abs=bound, max_error=max_error)
    return {k: v.numpy() for k, v in summed.items()}


def _fit_gaussian(ctx, client, model, X: np.ndarray) -> None:
    from smpc_synth.models.gaussian import sufficient_stats

    n, total, outer = sufficient_stats(X)
    tensors = {
        "n": torch.tensor([float(n)]),
        "sum": torch.as_tensor(total),
        "outer": torch.as_tensor(outer),
    }
    local_max = max(float(t.abs().max()) for t in tensors.values())
    bound = _public_bound(ctx, local_max)
    summed = client.sum("gaussian moments", tensors, max_abs=bound, max_error=MOMENTS_MAX_ERROR)
    model.fit_stats(round(float(summed["n"][0])), summed["sum"].numpy(), summed["outer"].numpy())


def _parameters(model) -> dict[str, torch.Tensor]:
    """Every trainable tensor and released buffer, by qualified name (a stable order)."""
    named = {}
    for module_name, module in model.modules().items():
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                named[f"{module_name}.{key}"] = value.detach().clone()
    return named


def _load_parameters(model, values: dict[str, torch.Tensor]) -> None:
    for module_name, module in model.modules().items():
        state = module.state_dict()
        for key in state:
            qualified = f"{module_name}.{key}"
            if qualified in values:
                state[key] = values[qualified].to(state[key].dtype)
        module.load_state_dict(state)


def _fedavg(ctx, client, model, X, total_rows, started: float, private) -> dict[str, Any]:
    from smpc_synth.dp.clip import clip_update
    from smpc_synth.dp.noise import add_noise_share, grid_max_error, on_grid, value_bound

    cfg = ctx.config
    fed = cfg.federated
    rounds = cfg.epochs or model.hparams.epochs
    model.initialize(cfg.seed)  # the same starting point on every party
    rng = torch.Generator().manual_seed(cfg.seed * 7919 + ctx.rank + 1)
    parties = len(ctx.parties)
    unit = private.unit if private is not None else None
    weight = len(X) / total_rows if private is None else 1.0 / parties
    sigma = plan = None
    if unit == "party":
        sigma = private.plan_updates(model, rounds)
    elif unit == "record":
        plan = private.plan_local_sgd(model, rounds * fed.local_epochs, total_rows)
        secret = private.source.generator()  # the model's draws: see NoiseSource.generator
    initial_buffers = {k: v.clone() for k, v in getattr(model, "buffers", {}).items()}
    history: list[dict[str, Any]] = []
    first = 0
    state = ctx.checkpoints.load(CHECKPOINT) if ctx.resume else None
    if state is not None:
        model.load_training_state_dict(state["training"])
        rng.set_state(state["rng"])
        history = list(state["history"])
        first = int(state["round"]) + 1
        client.round = int(state["client_round"])
    _agree_on_resume(ctx, first)
    clamped = 0
    for r in range(first, rounds):
        global_params = _parameters(model)
        losses: dict[str, float] = {}
        for _ in range(fed.local_epochs):
            if plan is None:
                losses = model.train_epoch(X, rng)
            else:
                steps = plan.steps_per_epoch
                train_private(model, X, plan, private.source, secret, steps=steps)
        delta = {k: v - global_params[k] for k, v in _parameters(model).items()}
        if sigma is not None:
            clip = cfg.dp.clip_norm
            delta, _norm = clip_update(delta, clip)
            delta = {k: torch.from_numpy(on_grid(v.double().numpy())) for k, v in delta.items()}
            delta = add_noise_share(delta, sigma, clip, parties, private.source)
            n_values = sum(t.numel() for t in delta.values())
            bound = value_bound(clip, sigma, parties, n_values)
            max_error = grid_max_error(parties)
        else:
            delta = {k: v * weight for k, v in delta.items()}
            bound, max_error = fed.update_bound, fed.max_error
            clamped += sum(int((v.abs() > bound).sum()) for v in delta.values())
            delta = {k: v.clamp(-bound, bound) for k, v in delta.items()}
        summed = client.sum(f"round {r + 1}", delta, max_abs=bound, max_error=max_error)
        scale = 1.0 / parties if sigma is not None else 1.0
        _load_parameters(
            model,
            {
                k: global_params[k] + summed[k].to(global_params[k].dtype) * scale
                for k in global_params
            },
        )
        frozen = initial_buffers if private is not None else None
        _average_buffers(client, model, r, weight, frozen=frozen)
        record = {"epoch": r + 1, "seconds": time.perf_counter() - started, **losses}
        history.append(record)
        ctx.progress({"event": "epoch", "epochs": rounds, **record})
        ctx.checkpoints.save(
            CHECKPOINT,
            {
                "round": r,
                "client_round": client.round,
                "training": model.training_state_dict(),
                "rng": rng.get_state(),
                "history": history,
            },
        )
    if clamped:
        log.warning("%d update values exceeded federated.update_bound and were clamped", clamped)
    return {"epochs": history, "rounds": rounds, "clamped_values": clamped}


class _Private:
    """A DP run's side of federated mode: its ledger, noise and the unit protected."""

    def __init__(self, ctx: PartyContext, ledger, source) -> None:
        self.ledger, self.source = ledger, source
        self.dp = ctx.config.dp
        self.unit = self.dp.unit
        self.parties = len(ctx.parties)

    @classmethod
    def start(cls, ctx: PartyContext) -> _Private:
        from smpc_synth.models.private import start_ledger

        ledger, source = start_ledger(ctx.config.dp, ctx.config.generator, f"federated/{ctx.name}")
        ledger.note("noise", UNIT_NOISE[ctx.config.dp.unit])
        return cls(ctx, ledger, source)

    def share_std(self, std: float) -> float:
        """What each party adds: all of it (record), or its share (party)."""
        return std if self.unit == "record" else std / math.sqrt(self.parties)

    def total_std(self, std: float) -> float:
        """The noise the secure sum carries."""
        return std * math.sqrt(self.parties) if self.unit == "record" else std

    def sensitivity(self, bound: float, n_values: int) -> float:
        """Party-level sums are rounded to the noise grid before noise: account for it."""
        from smpc_synth.dp.noise import grid_sensitivity

        return grid_sensitivity(bound, n_values) if self.unit == "party" else bound

    def _noisy_sum(self, ctx, client, stats: dict[str, np.ndarray], std: float, name: str):
        from smpc_synth.dp.noise import grid_max_error, on_grid

        if self.unit == "party":  # grid values, and a sum on the grid: exact packing
            stats = {k: on_grid(v) for k, v in stats.items()}
            max_error = grid_max_error(self.parties)
        else:  # a DP release of this party's rows: any rounding after it is post-processing
            max_error = STATS_MAX_ERROR
        noisy = {k: self.source.privatize(v, self.share_std(std)) for k, v in stats.items()}
        return _secure_stats(ctx, client, noisy, name, max_error)

    def fit_encoder(self, ctx, client, encoder) -> float:
        """Fit ``encoder`` from noisy sums; the noisy count of rows (record) or parties."""
        from smpc_synth.data.encoding import N_ROWS, noisy_count
        from smpc_synth.models.private import plan_encoder

        stats = (
            encoder.sufficient_stats(ctx.data)
            if self.unit == "record"
            else encoder.normalized_stats(ctx.data)
        )
        size = sum(np.asarray(v).size for v in stats.values())
        bound = self.sensitivity(encoder.stats_sensitivity(), size)
        mechanism = plan_encoder(self.ledger, encoder, self.dp, bound)
        summed = self._noisy_sum(ctx, client, stats, mechanism.noise_std, "encoder stats")
        noise = self.total_std(mechanism.noise_std)
        encoder.fit_stats(summed, noise_std=noise)
        count = noisy_count(summed[N_ROWS], noise)
        if self.unit == "record":
            self.ledger.check_delta(count)
        return count

    def needs_moments(self, gen_cls) -> bool:
        """The Gaussian generator always; the GAN's moment target only per record (per
        party, its local training reads its rows freely: only the clipped update leaves)."""
        if "moments" not in gen_cls.dp_parts:
            return False
        return "training" not in gen_cls.dp_parts or self.unit == "record"

    def fit_moments(self, ctx, client, model, X: np.ndarray, count: float) -> None:
        from smpc_synth.dp.noise import grid_max_error, on_grid
        from smpc_synth.models.gaussian import (
            clip_rows,
            moments_sensitivity,
            noisy_moments,
            sufficient_stats,
        )
        from smpc_synth.models.private import apply_moments, plan_moments

        n, total, outer = sufficient_stats(clip_rows(X, model.layout))
        size = total.size + outer.shape[0] * (outer.shape[0] + 1) // 2
        bound = self.sensitivity(moments_sensitivity(model.layout), size)
        mechanism = plan_moments(self.ledger, type(model), model.layout, self.dp, bound)
        std = self.share_std(mechanism.noise_std)
        if self.unit == "party":  # this party's distribution, on the grid (see sensitivity)
            total, outer = on_grid(total / max(n, 1)), on_grid(outer / max(n, 1))
        total, outer = noisy_moments(total, outer, std, self.source)
        exact = grid_max_error(self.parties) if self.unit == "party" else MOMENTS_MAX_ERROR
        summed = _secure_stats(ctx, client, {"sum": total, "outer": outer}, "moments", exact)
        apply_moments(model, count, summed["sum"], summed["outer"])

    def plan_updates(self, model, rounds: int) -> float:
        """DP-FedAvg: the noise multiplier of the rounds' clipped updates."""
        n_values = sum(t.numel() for t in _parameters(model).values())
        mechanism = self.ledger.sgd(
            "training",
            1.0,
            rounds,
            self.sensitivity(self.dp.clip_norm, n_values),
            "each party's clipped model update, summed over parties, once per round",
        )
        return mechanism.noise_multiplier * mechanism.sensitivity / self.dp.clip_norm

    def plan_local_sgd(self, model, epochs: int, rows: float):
        from smpc_synth.models.private import SGD_WHAT, plan_sgd

        batch = model.hparams.batch_size
        return plan_sgd(self.ledger, epochs, batch, rows, self.dp.clip_norm, SGD_WHAT)

    def record(self, count: float) -> dict[str, Any]:
        """The party's training metrics: the ledger, and the released row count."""
        out: dict[str, Any] = {"privacy": self.ledger.to_dict(), "dp_unit": self.unit}
        if self.unit == "record":
            out["rows_released"] = round(count)
        return out


UNIT_NOISE = {
    "record": (
        "every party adds the full noise to what it sends, so its rows are protected "
        "against the other parties and the aggregator too; the sums carry that noise once "
        "per party"
    ),
    "party": (
        "each party adds a 1/n share of the noise variance; against a coalition of k "
        "parties only (n - k)/n of it remains (docs/federated-security.md)"
    ),
}


BUFFER_BOUND = 1.0  # released buffers are scales in (0, 1] (the VAE clamps its sigma)


def _average_buffers(client, model, r: int, weight: float, frozen) -> None:
    """Released non-weight tensors (the VAE's noise scale): their weighted mean over parties.

    They are computed from local rows outside the clipped update, so under DP they are not
    averaged but kept at their initial values (``frozen``): nothing escapes the accountant.
    """
    buffers = getattr(model, "buffers", {})
    if not buffers:
        return
    if frozen is not None:
        model.buffers = {k: v.clone() for k, v in frozen.items()}
        return
    weighted = {k: v.to(torch.float64) * weight for k, v in buffers.items()}
    summed = client.sum(f"round {r + 1} buffers", weighted, max_abs=BUFFER_BOUND, max_error=1e-4)
    model.buffers = {k: summed[k].to(buffers[k].dtype) for k in buffers}


def _agree_on_resume(ctx: PartyContext, first: int) -> None:
    """Every party must resume from the same round, or none may start."""
    for peer in ctx.parties:
        if peer != ctx.name:
            ctx.channel.send(peer, RESUME_TAG, np.array([first]))
    for peer in ctx.parties:
        if peer != ctx.name:
            theirs = int(np.asarray(ctx.channel.recv(peer, RESUME_TAG))[0])
            if theirs != first:
                raise PeerError(
                    f"{peer} would resume at round {theirs + 1}, {ctx.name} at {first + 1}: "
                    "their checkpoints differ",
                    peer=peer,
                )


__all__ = ["FederatedStrategy", "serve_aggregator"]
