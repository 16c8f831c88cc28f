"""DP-SGD inside MPC: per-example clipping on secret shares, one noisy sum opened per step.

Every step opens the clipped gradient sum plus Gaussian noise that the dealer deals as shares
(:meth:`~smpc_synth.mpc.dealer.provider.DealerProvider.noise_share`): the Gaussian mechanism of
DP-SGD, so the weights it produces are public (released to every party after each step, which the
accounting covers) and the optimizer runs in the clear, the same ``torch`` Adam as plaintext Opacus.
The forward and backward passes then multiply shares by public weights, locally; only the
activations and the loss need rounds (:func:`~smpc_synth.train.mpc.twins.vae_backprop`, or the GAN
critic's :func:`~smpc_synth.train.mpc.twins.critic_backprop`, with
:class:`~smpc_synth.train.mpc.nn.PublicMlp` networks). The GAN's generated rows are public: their
clipped gradients are summed in the clear and added to the opened sum, and its generator steps in
the clear.

Per step, each party draws a Poisson sample of its own rows from the CSPRNG (rate ``q``, as the
RDP accountant assumes), puts the sampled rows in a secret random order into a public number
of slots (:func:`slots`: enough for every sample but with a probability set aside from
delta), pads the rest with zero rows, and shares the slots with a shared validity bit each.
No one else learns which rows, or how many, were sampled; the model's public draws (the
VAE's latent noise) attach to slots, not to rows. On the shared slots:

1. ghost norms (Li et al. 2022): a Linear layer's per-example gradient is ``g_i a_i^T``, so
   ``|grad_i|^2 = sum over layers of |g_i|^2 (|a_i|^2 + 1)`` (the 1: the bias), from the
   layer's input ``a`` and output gradient ``g`` alone. The squares are exact (untruncated)
   products; every truncation after them is followed by adding its largest error, so the
   norm used is never below the norm of the values that are summed;
2. the clip factor ``c_i = 1 / sqrt(max(s_i / C^2, 1))`` by a comparison and Newton's
   inverse square root; an example is dropped (``c_i = 0``) if its norm is negative or
   above ``sqrt(MAX_NORM_RATIO_SQ) C`` (a wrap-around), or if the certificate
   ``c_i^2 max(s_i, C^2) <= C^2 (1 + CLIP_TOLERANCE)`` fails: whatever a wrap-around did
   before, each example then adds at most ``C sqrt(1 + CLIP_TOLERANCE)``;
3. the clipped sum ``sum_i (c_i g_i) a_i^T`` per layer: two rounds of exact products (scale
   2^-48, no truncation);
4. the dealer's exact discrete Gaussian noise on that grid (:mod:`smpc_synth.mpc.dealer.noise`),
   then one opening: the discrete Gaussian mechanism on an exact integer vector.

The sensitivity the ledger uses is :func:`sensitivity` (the clip and the certificate's
tolerance). Batches are Poisson samples at the planned rate, as the RDP accountant assumes; a
step whose opened sum is out of range (a wrap-around in the last products) still counts,
but its update is skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from smpc_synth.crypten_backend.compat import comparison_provider, import_crypten
from smpc_synth.dp.noise import GRID
from smpc_synth.errors import InputError
from smpc_synth.mpc.dealer.noise import discrete_gaussian_shares
from smpc_synth.mpc.primitives import beaver, compare
from smpc_synth.mpc.primitives.spans import SpanMap
from smpc_synth.mpc.secure_stats import share_from_each
from smpc_synth.mpc.session import cpu_clock, cpu_since, phase, traffic
from smpc_synth.train.mpc.nn import PublicMlp
from smpc_synth.train.mpc.optim import inverse_sqrt
from smpc_synth.train.mpc.trainer import resume_point

crypten = import_crypten()

CLIP_TOLERANCE = 2.0**-10  # a clipped example's norm is at most C sqrt(1 + this)
# Newton's root is exact to one unit of fixed point, which is 1.6% of the smallest factor
# (1/1024): factors are lowered by that much, so the certificate passes where it should
CLIP_MARGIN = 2.0**-6
MAX_NORM_RATIO_SQ = 2.0**20  # examples with gradient norm above 1024 C are dropped
SUM_BITS = 48  # the clipped sum is exact at this scale
SUM_LIMIT = 2.0**14  # every value of a noisy sum stays below this (2^63 / 2^48, halved)
SLOT_DELTA_SHARE = 0.01  # of delta: the chance that a Poisson sample ever overflows its slots
CHECKPOINT = "mpc-dp"
STEP_NOISE_TAG = 1 << 20  # dealer noise tags of the steps: this plus the step's number
_UNIT = GRID  # fixed point's unit at CrypTen's 16 fractional bits


def sensitivity(clip_norm: float) -> float:
    """What one example can move the opened sum by: its clip and the certificate's
    tolerance (the sum is exact, so nothing is rounded before the noise)."""
    return clip_norm * math.sqrt(1 + CLIP_TOLERANCE)


def slots(rows: int, rate: float, steps: int, parties: int, delta: float) -> int:
    """How many sampled rows a party with ``rows`` rows shares each step: its Poisson sample
    needs more in some step of the run with probability at most ``SLOT_DELTA_SHARE delta /
    parties`` (the excess rows are then left out: the ledger reserves that delta)."""
    from scipy.stats import binom

    tail = SLOT_DELTA_SHARE * delta / (steps * parties)
    return max(1, int(binom.isf(tail, rows, rate)))


def check_range(batch: int, clip_norm: float, noise_std: float) -> None:
    """Refuse a plan whose noisy sums (``batch`` slots a step) could leave the exact
    fixed-point range."""
    largest = batch * clip_norm * math.sqrt(1 + CLIP_TOLERANCE) + 12 * noise_std
    if largest >= SUM_LIMIT:
        raise InputError(
            f"dp in mpc: a step's noisy sum could reach {largest:.4g}, beyond the exact "
            f"fixed-point range {SUM_LIMIT:g}: lower generator_params.batch_size or dp.clip_norm"
        )


def _bits(flat_bits, count: int) -> list:
    """0/1 arithmetic shares (scale 1) from :class:`~smpc_synth.mpc.primitives.compare.SignBits`,
    split into ``count`` equal parts."""
    arithmetic = crypten.mpc.MPCTensor.from_shares(flat_bits.arithmetic(), precision=0)
    arithmetic.encoder._scale = 1
    n = arithmetic.numel() // count
    return [arithmetic[i * n : (i + 1) * n] for i in range(count)]


def _to_unit_scale(value, bits: int):
    """An exact product at ``2^bits`` truncated to CrypTen's 2^16 (an error below one unit
    per party, or a wrap-around that the range checks catch)."""
    out = crypten.mpc.MPCTensor.from_shares(value.share.clone())
    out._tensor.div_(2 ** (bits - 16))
    return out


def clip_factors(kept: list[tuple[Any, Any]], clip_norm: float, valid):
    """Each example's clip factor (0 for an invalid or a dropped example), see the module.

    ``kept`` holds each Linear layer's ``(input, output gradient)``, rows by example;
    ``valid`` is a 0/1 MPCTensor at scale 1 (shared validity bits), or a public 0/1 tensor.
    """
    provider = comparison_provider()
    slack = _UNIT * crypten.communicator.get().get_world_size()  # one truncation's error
    squares = beaver.products([("square", v, None) for pair in kept for v in pair], exact=True)
    sums = [_to_unit_scale(square.sum(1), 32) + slack for square in squares]
    layer_norms = beaver.products(
        [("mul", sums[2 * k + 1], sums[2 * k] + 1) for k in range(len(kept))]
    )
    s = layer_norms[0]
    for norm in layer_norms[1:]:
        s = s + norm
    s = s + slack * len(kept)  # never below the squared norm of what is summed
    c2 = clip_norm**2
    rows = s.numel()
    stacked = crypten.cat([s - c2, MAX_NORM_RATIO_SQ * c2 - s, s])
    relu, sign = compare.relu(stacked, provider, width=compare.BITS)
    _, over, negative = _bits(sign, 3)
    y = (relu[:rows] + c2) * (1.0 / c2)  # max(s, C^2) / C^2, in [1, MAX_NORM_RATIO_SQ]
    c = inverse_sqrt(y)[0] * (1 - CLIP_MARGIN)
    (cy,) = beaver.products([("mul", c, y)])  # ~sqrt(y): keeps the certificate precise
    (t,) = beaver.products([("mul", cy, c)])
    limit = 1 + CLIP_TOLERANCE - 4 * slack
    certified, _ = compare.sign_bits(crypten.cat([limit - t, t]).share, provider, width=64)
    above, below = _bits(certified, 2)
    keep = beaver.products([("mul", 1 - over, 1 - negative), ("mul", 1 - above, 1 - below)])
    if isinstance(valid, torch.Tensor):  # public: a local product
        c = crypten.mpc.MPCTensor.from_shares(c.share * valid.to(torch.long).view(c.share.size()))
        (ok,) = beaver.products([("mul", keep[0], keep[1])])
    else:
        ok, c = beaver.products([("mul", keep[0], keep[1]), ("mul", c, valid.reshape(c.size()))])
    (factor,) = beaver.products([("mul", c, ok)])  # exact: ok is a bit at scale 1
    return factor


def clipped_sums(kept: list[tuple[Any, Any]], factors) -> list[tuple[Any, Any]]:
    """``(sum_i c_i g_i a_i^T, sum_i c_i g_i)`` of every layer, exact at 2^-48: two rounds."""
    rows = factors.size(0)
    column = factors.reshape(rows, 1)
    scaled = beaver.products([("mul", column, g) for _, g in kept], exact=True)  # 2^-32
    weights = beaver.products(
        [("matmul", cg.t(), a) for cg, (a, _) in zip(scaled, kept, strict=True)], exact=True
    )
    biases = [cg.sum(0).share * 2**16 for cg in scaled]  # to 2^-48, exactly
    return [(w.share, b) for w, b in zip(weights, biases, strict=True)]


@dataclass
class DpLoop:
    """What one party needs to run the DP epochs (public plan, its rows, where to report)."""

    rank: int
    sizes: list[int]  # every party's row count, in rank order
    seed: int
    plan: Any  # smpc_synth.models.private.SgdPlan
    source: Any  # this party's smpc_synth.dp.noise.NoiseSource: its Poisson samples
    delta: float  # the run's: sizes the slots
    noise_std: float  # of the opened sum: noise multiplier x sensitivity
    checkpoints: Any
    progress: Callable[[dict[str, Any]], None]
    resume: bool = False
    null_data: bool = False  # tests only: the mechanism sees zeros
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # steps whose opened sum was out of range (counted, not applied)
    overflows: int = 0  # steps whose sample here did not fit its slots (excess left out)


def _linear_layers(nets: dict[str, PublicMlp]) -> list:
    return [linear for net in nets.values() for linear in net.linears]


def train_dp(model, X, loop: DpLoop, agree: Callable[[int], int]) -> None:
    """DP-SGD of ``model`` (its private networks) on every party's rows; ``X`` is this
    party's encoded rows."""
    plan = loop.plan
    parties = len(loop.sizes)
    model.initialize(loop.seed)
    spans = SpanMap(model.layout)
    modules = model.modules()
    nets = {name: PublicMlp(modules[name], name) for name in model.private_modules}
    (key,) = [k for k, opt in model.optimizers.items() if _owns(opt, modules, nets)]
    optimizer = model.optimizers[key]
    linears = _linear_layers(nets)
    rng = torch.Generator().manual_seed(loop.seed)  # the model's own draws, per slot
    counts = [slots(n, plan.sample_rate, plan.steps, parties, loop.delta) for n in loop.sizes]
    check_range(sum(counts), plan.clip_norm, loop.noise_std)
    first, state = resume_point(loop.checkpoints, CHECKPOINT, loop.resume, agree)
    if state is not None:
        model.load_training_state_dict(state["training"])
        rng.set_state(state["rng"])
        loop.history = list(state["history"])
        loop.skipped, loop.overflows = int(state["skipped"]), int(state["overflows"])
    epochs = plan.steps // plan.steps_per_epoch
    started = time.perf_counter()
    for epoch in range(first, epochs):
        epoch_started, before, cpu_before = time.perf_counter(), traffic(), cpu_clock()
        for step in range(epoch * plan.steps_per_epoch, (epoch + 1) * plan.steps_per_epoch):
            with phase("dp sample"):
                batch, valid = _shared_sample(X, counts, loop)
            opened = _noisy_sum(model, batch, valid, rng, spans, nets, linears, loop, step)
            if model.name == "gan":  # generated rows are public: clipped in the clear
                fake = max(1, round(plan.expected_batch))
                opened = opened + _generated_part(model, linears, fake, rng, plan.clip_norm)
            _apply(optimizer, linears, opened, plan.expected_batch, loop)
            if model.name == "gan":
                model.generator_step(max(1, round(plan.expected_batch)), rng)
        after = traffic()
        record = {
            "epoch": epoch + 1,
            "seconds": time.perf_counter() - started,
            "epoch_seconds": time.perf_counter() - epoch_started,
            "bytes": after.bytes_sent - before.bytes_sent,
            "rounds": after.rounds - before.rounds,
            "skipped_steps": loop.skipped,
            **cpu_since(cpu_before),
        }
        loop.history.append(record)
        loop.progress({"event": "epoch", "epochs": epochs, **record})
        loop.checkpoints.save(
            CHECKPOINT,
            {
                "epoch": epoch,
                "training": model.training_state_dict(),
                "rng": rng.get_state(),
                "history": loop.history,
                "skipped": loop.skipped,
                "overflows": loop.overflows,
            },
        )


def _shared_sample(X, counts: list[int], loop: DpLoop):
    """Every party's Poisson sample in its slots, shared: ``(rows, validity bits)``."""
    source, rank = loop.source, loop.rank
    mine = counts[rank]
    chosen = np.flatnonzero(source.poisson_mask(len(X), loop.plan.sample_rate))
    chosen = chosen[source.permutation(len(chosen))]  # a secret order: slots say nothing
    if len(chosen) > mine:
        loop.overflows += 1
        chosen = chosen[:mine]
    rows = np.zeros((mine, X.shape[1]), dtype=np.float32)
    rows[: len(chosen)] = X[chosen]
    valid = torch.zeros(mine, dtype=torch.long)
    valid[: len(chosen)] = 1
    width = X.shape[1]
    batch = share_from_each(torch.from_numpy(rows), [torch.Size((k, width)) for k in counts], rank)
    bits = [
        crypten.cryptensor(
            valid if j == rank else torch.zeros(k, dtype=torch.long), src=j, precision=0
        )
        for j, k in enumerate(counts)
    ]
    flags = crypten.cat(bits)
    flags.encoder._scale = 1
    return crypten.cat(batch), flags


def _owns(optimizer, modules, nets) -> bool:
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return any(id(p) in owned for name in nets for p in modules[name].parameters())


def _backprop(model, spans, nets, batch, rng) -> None:
    """One chunk's forward and backward pass on shares, each row with its own loss: every
    public Linear keeps ``(input, output gradient)``."""
    from smpc_synth.train.mpc.twins import critic_backprop, vae_backprop

    if model.name == "vae":
        vae_backprop(model, spans, nets, batch, rng, 1, phase)
    elif model.name == "gan":
        critic_backprop(model, nets, batch)
    else:
        raise NotImplementedError(f"no DP-SGD on shares for generator '{model.name}'")


def _poisson(n: int, rate: float, sampler: torch.Generator) -> torch.Tensor:
    """The indices of a Poisson sample of ``n`` rows (public: see the module)."""
    return (torch.rand(n, generator=sampler) < rate).nonzero().flatten()


def _noisy_sum(model, batch, valid, rng, spans, nets, linears, loop: DpLoop, step: int):
    """One step's opened noisy clipped sum of the real rows' gradients, flat, float64."""
    plan = loop.plan
    totals = [
        (
            torch.zeros(linear.layer.weight.shape, dtype=torch.long),
            torch.zeros(linear.layer.bias.shape, dtype=torch.long),
        )
        for linear in linears
    ]
    for linear in linears:
        linear.kept.clear()
    _backprop(model, spans, nets, batch, rng)
    kept = [linear.kept[0] for linear in linears]
    with phase("dp clip"):
        factors = clip_factors(kept, plan.clip_norm, valid)
        sums = clipped_sums(kept, factors)
    for total, (weight, bias) in zip(totals, sums, strict=True):
        total[0].add_(weight)
        total[1].add_(bias)
    flat = torch.cat([t.reshape(-1) for pair in totals for t in pair])
    if loop.null_data:
        flat = flat * 0
    with phase("dp open"):
        ring_std = loop.noise_std * 2.0**SUM_BITS
        tag = STEP_NOISE_TAG + step
        flat = flat + discrete_gaussian_shares(flat.size(), ring_std * ring_std, tag=tag)
        opened = crypten.communicator.get().all_reduce(flat).to(torch.float64) / 2.0**SUM_BITS
    return opened


def _generated_part(model, linears, rows: int, rng, clip_norm: float) -> torch.Tensor:
    """The GAN critic's clipped gradient sum over ``rows`` generated rows (label 0), as
    plaintext Opacus takes them in the same step as the real ones; public, so computed in
    the clear, flat in the order of ``linears``."""
    from smpc_synth.models.private import clipped_sum

    fake = model._fake(rows, rng).detach()
    critic = model.modules()["discriminator"]

    def loss_rows():
        logits = critic(fake)
        return F.binary_cross_entropy_with_logits(
            logits, torch.zeros_like(logits), reduction="none"
        )[:, 0]

    grads = clipped_sum(critic, model.optimizers["discriminator"], loss_rows, clip_norm)
    order = [p for linear in linears for p in (linear.layer.weight, linear.layer.bias)]
    return torch.cat([grads[id(p)].reshape(-1).to(torch.float64) for p in order])


def _apply(optimizer, linears, opened: torch.Tensor, expected_batch: float, loop: DpLoop) -> None:
    """The plaintext optimizer's step on the opened noisy mean gradient; an opened value out
    of range (a wrap-around in the last products) skips the step."""
    if not torch.isfinite(opened).all() or float(opened.abs().max()) >= SUM_LIMIT:
        loop.skipped += 1
        return
    optimizer.zero_grad(set_to_none=True)
    start = 0
    for linear in linears:
        for param in (linear.layer.weight, linear.layer.bias):
            size = param.numel()
            grad = opened[start : start + size].view(param.shape) / expected_batch
            param.grad = grad.to(param.dtype)
            start += size
    optimizer.step()
