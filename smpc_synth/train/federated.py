"""Federated mode: local training, secure aggregation of updates, optional DP (DP-FedAvg).

Round structure, identical on every data party:

1. the encoder is fitted from secure sums of additive statistics (only totals are revealed);
2. ``gaussian``: one secure sum of (n, sum, sum of outer products) and the closed-form fit;
3. neural generators (same initial weights everywhere, from the run seed): per round, local
   epochs on local rows, then the secure sum of the weighted update (weight n_k / N, so the
   sum is FedAvg's weighted mean). With ``--dp`` each party clips its update to
   ``clip_norm`` and adds its share of Gaussian noise; the mean is unweighted and epsilon is
   accounted per round with Opacus's RDP accountant (sample rate 1: every party every round).
   This is party-level DP (DP-FedAvg, McMahan et al. 2018), which covers any row a party holds.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from typing import Any

import numpy as np
import torch

from smpc_synth.errors import InputError, PeerError
from smpc_synth.train.aggregation import AggregationClient, serve_aggregator
from smpc_synth.train.base import PartyContext, Strategy, TrainingResult

log = logging.getLogger(__name__)

STATS_MAX_ERROR = 0.05  # counts are rounded after the sum: any error below 0.5 is exact
BOUND_TAG = "fed/bound"
RESUME_TAG = "fed/resume"
CHECKPOINT = "federated"


class FederatedStrategy(Strategy):
    """Federated averaging with CKKS-encrypted, pairwise-masked aggregation."""

    name = "federated"

    def run(self, ctx: PartyContext) -> TrainingResult:
        from smpc_synth.data import TableEncoder
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
        encoder = TableEncoder(ctx.schema, numeric=gen_cls.numeric_encoding)
        stats = _secure_stats(ctx, client, encoder.sufficient_stats(ctx.data), "encoder stats")
        encoder.fit_stats(stats)
        total_rows = round(float(np.sum(stats[N_ROWS])))
        X = encoder.transform(ctx.data)
        model = gen_cls(encoder.layout, **cfg.generator_params)
        metrics: dict[str, Any] = {"rows_trained": total_rows, "local_rows": len(ctx.data)}
        if hasattr(model, "fit_stats"):
            _fit_gaussian(ctx, client, model, X)
            metrics["epochs"] = [{"epoch": 1, "seconds": time.perf_counter() - started}]
        else:
            metrics.update(_fedavg(ctx, client, model, X, total_rows, started))
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
            synthesizer = Synthesizer.from_parts(ctx.schema, encoder, model, meta=meta)
        return TrainingResult(synthesizer, metrics)


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


def _secure_stats(ctx, client: AggregationClient, stats: dict[str, np.ndarray], name: str):
    tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in stats.items()}
    local_max = max((float(t.abs().max()) for t in tensors.values() if t.numel()), default=1.0)
    bound = _public_bound(ctx, local_max)
    summed = client.sum(name, tensors, max_abs=bound, max_error=STATS_MAX_ERROR)
    return {k: v.numpy() for k, v in summed.items()}


def _fit_gaussian(ctx, client, model, X: np.ndarray) -> None:
    from smpc_synth.models.gaussian import sufficient_stats

    n, total, outer = sufficient_stats(X)
    # Moments need finer resolution than counts: they are divided by n afterwards.
    tensors = {
        "n": torch.tensor([float(n)]),
        "sum": torch.as_tensor(total),
        "outer": torch.as_tensor(outer),
    }
    local_max = max(float(t.abs().max()) for t in tensors.values())
    bound = _public_bound(ctx, local_max)
    summed = client.sum("gaussian moments", tensors, max_abs=bound, max_error=1e-3)
    model.fit_stats(round(float(summed["n"][0])), summed["sum"].numpy(), summed["outer"].numpy())
    ctx.progress({"event": "epoch", "epoch": 1, "epochs": 1})


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


def _fedavg(ctx, client, model, X, total_rows: int, started: float) -> dict[str, Any]:
    from smpc_synth.dp.accountant import epsilon, noise_multiplier_for
    from smpc_synth.dp.clip import clip_update
    from smpc_synth.dp.noise import add_noise_share, value_bound

    cfg = ctx.config
    fed = cfg.federated
    rounds = cfg.epochs or model.hparams.epochs
    model.initialize(cfg.seed)  # the same starting point on every party
    rng = torch.Generator().manual_seed(cfg.seed * 7919 + ctx.rank + 1)
    noise_rng = torch.Generator().manual_seed(secrets.randbits(63))  # never from the run seed
    parties = len(ctx.parties)
    weight = len(X) / total_rows
    sigma = None
    if fed.dp:
        sigma = fed.noise_multiplier
        if fed.target_epsilon is not None:
            sigma = noise_multiplier_for(fed.target_epsilon, 1.0, rounds, fed.delta)
        if sigma is None:
            raise InputError("key 'federated.dp' needs 'target_epsilon' or 'noise_multiplier'")
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
            losses = model.train_epoch(X, rng)
        delta = {k: v - global_params[k] for k, v in _parameters(model).items()}
        if sigma is not None:
            delta, _norm = clip_update(delta, fed.clip_norm)
            delta = add_noise_share(delta, sigma, fed.clip_norm, parties, noise_rng)
            n_values = sum(t.numel() for t in delta.values())
            bound, max_error = value_bound(fed.clip_norm, sigma, parties, n_values), 1e-4
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
        _average_buffers(client, model, r, weight, frozen=initial_buffers if sigma else None)
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
    result: dict[str, Any] = {"epochs": history, "rounds": rounds, "clamped_values": clamped}
    if sigma is not None:
        result.update(
            {
                "noise_multiplier": sigma,
                "epsilon": epsilon(sigma, 1.0, rounds, fed.delta),
                "delta": fed.delta,
                "clip_norm": fed.clip_norm,
                "dp_unit": "party (DP-FedAvg); implies the same bound for any single row",
            }
        )
    return result


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
