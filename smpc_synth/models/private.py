"""DP-SGD for the neural generators with Opacus, and the plan every mode shares.

The networks that read real rows (:attr:`NeuralGenerator.private_modules`: the VAE's encoder
and decoder, the GAN's discriminator) get Opacus's ghost clipping (per-example gradient
norms from the layers' hooks, :class:`PrivateTraining`) and its optimizer that clips each
example's gradient to ``clip_norm`` over all those parameters together, adds Gaussian noise
and divides by the *expected* batch size. The noise comes from
:class:`~smpc_synth.dp.noise.NoiseSource` (the OS CSPRNG) rather than torch's generator.
Batches are Poisson samples (each row independently with rate ``q``, from the same CSPRNG),
which is what the RDP accountant assumes; an empty sample is a step of noise alone. One
epoch is ``round(1 / q)`` steps.

Everything a step depends on besides the sampled rows and the model's own draws (secret,
:meth:`~smpc_synth.dp.noise.NoiseSource.generator`) is public: ``q`` and the expected batch
size come from the *noisy* row count, the step count from them and the epochs. The
VAE's noise scale ``sigma`` (an RMS error over real rows) stays at its initial value, and
the GAN matches noisy moments (:func:`smpc_synth.models.gaussian.noisy_moments`) instead of
each batch's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from smpc_synth.dp.budget import Ledger
from smpc_synth.dp.noise import NoiseSource


@dataclass(frozen=True)
class SgdPlan:
    """Public parameters of DP-SGD, fixed before training."""

    sample_rate: float
    steps: int
    steps_per_epoch: int
    noise_multiplier: float
    clip_norm: float
    expected_batch: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_sgd(
    ledger: Ledger,
    epochs: int,
    batch_size: int,
    rows: float,
    clip_norm: float,
    what: str,
    sensitivity: float | None = None,
) -> SgdPlan:
    """Poisson rate ``batch_size / rows`` (``rows`` the noisy count), ``epochs / rate`` steps,
    and the noise multiplier the rest of the ledger's budget allows (``sensitivity``: what one
    example can move a step's sum by, where the computation adds to ``clip_norm``)."""
    rate = min(1.0, batch_size / max(rows, 1.0))
    per_epoch = max(1, round(1 / rate))
    steps = epochs * per_epoch
    bound = clip_norm if sensitivity is None else sensitivity
    mechanism = ledger.sgd("training", rate, steps, bound, what)
    multiplier = mechanism.noise_multiplier * bound / clip_norm  # noise std over the clip
    return SgdPlan(rate, steps, per_epoch, multiplier, clip_norm, rate * rows)


def _secure_optimizer_class():
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    class SecureNoiseOptimizer(DPOptimizerFastGradientClipping):
        """Opacus's optimizer for ghost clipping with its noise from a :class:`NoiseSource`."""

        def __init__(self, optimizer, *, source: NoiseSource, **kwargs):
            super().__init__(optimizer, **kwargs)
            self.source = source

        def add_noise(self):
            std = self.noise_multiplier * self.max_grad_norm
            for p in self.params:
                _check_processed_flag(p.summed_grad)
                summed = p.summed_grad.detach().to(torch.float64).numpy()
                noisy = torch.from_numpy(self.source.privatize(summed, std))
                p.grad = noisy.to(p.dtype).view_as(p)
                _mark_as_processed(p.summed_grad)

    return SecureNoiseOptimizer


class PrivateTraining:
    """Opacus ghost clipping on a generator's private networks, for a ``with`` block.

    The per-example gradient norms of every Linear layer come from its input and output
    gradient alone (``|a_i|^2 |g_i|^2``, plus ``|g_i|^2`` for the bias: Li et al. 2022,
    "ghost clipping"), summed over all the private networks together; a second backward pass
    of the clip-weighted per-example losses gives the clipped sum. No per-example gradient
    is ever materialised.
    """

    def __init__(self, model, plan: SgdPlan, source: NoiseSource):
        self.model, self.plan, self.source = model, plan, source
        self.wrapper = None
        self._plain: dict[str, torch.optim.Optimizer] = {}

    def __enter__(self) -> PrivateTraining:
        from opacus.grad_sample import GradSampleModuleFastGradientClipping

        model, plan = self.model, self.plan
        nets = model.modules()
        together = nn.ModuleDict({name: nets[name] for name in model.private_modules})
        # the hooks live on the layers: the generator keeps calling its own networks
        self.wrapper = GradSampleModuleFastGradientClipping(
            together, max_grad_norm=plan.clip_norm, use_ghost_clipping=True, loss_reduction="mean"
        )
        private = {id(p) for p in together.parameters()}
        optimizer_class = _secure_optimizer_class()
        for key, opt in model.optimizers.items():
            owned = [id(p) for group in opt.param_groups for p in group["params"]]
            if not any(i in private for i in owned):
                continue
            if not all(i in private for i in owned):
                raise RuntimeError(f"optimizer '{key}' mixes private and public parameters")
            self._plain[key] = opt
            model.optimizers[key] = optimizer_class(
                opt,
                source=self.source,
                noise_multiplier=plan.noise_multiplier,
                max_grad_norm=plan.clip_norm,
                expected_batch_size=plan.expected_batch,
                loss_reduction="mean",
            )
        return self

    def __exit__(self, *exc) -> None:
        for key, opt in self._plain.items():
            self.model.optimizers[key] = opt
        self.wrapper._close()
        self.wrapper = None

    def step(self, key: str, loss_rows: torch.Tensor) -> None:
        """Clip each row's gradient of ``loss_rows`` (one loss per example), sum, add noise
        and step the optimizer ``key``; an empty Poisson sample is a step of noise alone."""
        from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

        opt = self.model.optimizers[key]
        opt.zero_grad(set_to_none=True)
        if loss_rows.numel():
            with warnings.catch_warnings():  # the first layer's input needs no gradient
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                DPTensorFastGradientClipping(self.wrapper, opt, loss_rows, "mean").backward()
        else:
            for p in opt.params:
                p.grad = torch.zeros_like(p)
        opt.step()

    def public_pass(self):
        """A block in which the private networks compute no per-example norms (a GAN's
        generator step backpropagates through the critic, whose update it does not make)."""
        return _HooksOff(self.wrapper)


def clipped_sum(net: nn.Module, optimizer, loss_rows, clip_norm: float) -> dict[int, torch.Tensor]:
    """The sum over examples of each one's gradient of ``loss_rows()`` (one loss per
    example) clipped to ``clip_norm``, by Opacus's ghost clipping, without noise: for rows
    that are public anyway (a GAN's generated rows next to a sum made on shares). Returns
    ``id(parameter) -> sum``; the gradients of ``optimizer`` are cleared."""
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

    wrapper = GradSampleModuleFastGradientClipping(
        net, max_grad_norm=clip_norm, use_ghost_clipping=True, loss_reduction="sum"
    )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            DPTensorFastGradientClipping(wrapper, optimizer, loss_rows(), "sum").backward()
        out = {id(p): p.grad.detach().clone() for p in net.parameters()}
    finally:
        wrapper._close()
        optimizer.zero_grad(set_to_none=True)
    return out


class _HooksOff:
    def __init__(self, wrapper):
        self.wrapper = wrapper

    def __enter__(self):
        self.wrapper.disable_hooks()

    def __exit__(self, *exc):
        self.wrapper.enable_hooks()


def train_private(
    model,
    X: np.ndarray | torch.Tensor,
    plan: SgdPlan,
    source: NoiseSource,
    generator: torch.Generator,
    *,
    steps: int | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> None:
    """Run ``steps`` (default: the plan's) DP-SGD steps of ``model`` on rows ``X``.

    ``generator`` drives the model's own draws (its latent noise): a secret one
    (:meth:`NoiseSource.generator`); the Poisson samples come from ``source``. ``on_epoch``
    gets the mean losses of each completed epoch (local diagnostics: they read real rows, so
    DP runs do not release them).
    """
    data = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32)
    total = plan.steps if steps is None else steps
    totals: dict[str, float] = {}
    counted = 0
    with PrivateTraining(model, plan, source) as private:
        for step in range(total):
            mask = torch.from_numpy(source.poisson_mask(data.shape[0], plan.sample_rate))
            losses = model.private_step(data[mask], generator, private)
            for key, value in losses.items():
                if math.isfinite(value):
                    totals[key] = totals.get(key, 0.0) + value
            counted += 1 if losses else 0
            if on_epoch is not None and (step + 1) % plan.steps_per_epoch == 0:
                on_epoch(
                    step // plan.steps_per_epoch,
                    {k: v / max(counted, 1) for k, v in totals.items()},
                )
                totals, counted = {}, 0


# -- the plan every mode shares --------------------------------------------------------

SCHEMA_NOTE = (
    "public input, not read from the rows: column kinds, bounds and categories come from the "
    "schema (for --data without --schema, a DP run is refused)"
)
EVALUATION_NOTE = (
    "not released: the quality report reads real rows, so it is written for the operator "
    "only (evaluation.private.json, outside the manifest) and the release gate does not "
    "decide the release"
)
ROWS_NOTE = (
    "the encoder's noisy row count sets the synthetic table's size, the sampling rate and "
    "the number of steps; no exact count is released"
)


def start_ledger(dp, generator: str, label: str = "") -> tuple[Ledger, NoiseSource]:
    """The run's ledger and noise source, from its ``[dp]`` settings (``dp.accountant``
    unset: ``generator``'s own, :func:`smpc_synth.dp.support.accountant_for`)."""
    from smpc_synth.dp.budget import Budget
    from smpc_synth.dp.support import accountant_for

    source = NoiseSource(dp.insecure_debug_seed, label, dp.insecure_null_data)
    accountant = accountant_for(generator, dp.accountant)
    ledger = Ledger(Budget(dp.epsilon, dp.delta, accountant, dp.unit), source.describe())
    ledger.note("schema", SCHEMA_NOTE)
    ledger.note("evaluation", EVALUATION_NOTE)
    ledger.note("rows", ROWS_NOTE)
    return ledger, source


def plan_encoder(ledger: Ledger, encoder, dp, sensitivity: float | None = None):
    """The encoder's statistics: a Gaussian mechanism with ``dp.encoder_share``
    (``sensitivity``: a larger bound than one row's, where the mode needs it)."""
    what = (
        "the encoder's summed statistics (row count; per numeric column a histogram over its "
        "schema bounds, or sums of scaled values and squares)"
    )
    bound = encoder.stats_sensitivity() if sensitivity is None else sensitivity
    return ledger.gaussian("encoder", dp.encoder_share, bound, what)


def plan_moments(ledger: Ledger, gen_cls, layout, dp, sensitivity: float | None = None):
    """Column sums and the sum of outer products of the encoded rows: the Gaussian
    generator's whole model (the rest of the budget), or the GAN's moment target."""
    from smpc_synth.models.gaussian import moments_sensitivity

    share = dp.moments_share if "training" in gen_cls.dp_parts else 1.0 - dp.encoder_share
    what = (
        "sum of encoded rows (each clipped to a public norm) and upper triangle of the sum "
        "of their outer products"
    )
    bound = moments_sensitivity(layout) if sensitivity is None else sensitivity
    return ledger.gaussian("moments", share, bound, what)


def fit_private(rows, schema, gen_cls, params, dp, *, epochs, seed, on_epoch=None):
    """Plaintext DP fit on one (pooled) table: ``(encoder, model, ledger, rows released)``."""
    from smpc_synth.data.encoding import N_ROWS, TableEncoder, noisy_count
    from smpc_synth.dp.support import with_fixed_params
    from smpc_synth.models.gaussian import clip_rows, noisy_moments, sufficient_stats

    params = with_fixed_params(gen_cls.name, params)
    ledger, source = start_ledger(dp, gen_cls.name, "plaintext")
    encoder = TableEncoder(schema, numeric=gen_cls.numeric_encoding)
    enc = plan_encoder(ledger, encoder, dp)
    stats = {
        k: source.privatize(v, enc.noise_std) for k, v in encoder.sufficient_stats(rows).items()
    }
    encoder.fit_stats(stats, noise_std=enc.noise_std)
    n_hat = noisy_count(stats[N_ROWS], enc.noise_std)
    ledger.check_delta(n_hat)
    X = encoder.transform(rows)
    model = gen_cls(encoder.layout, **params)
    if "training" in gen_cls.dp_parts:
        model.initialize(seed)
    if "moments" in gen_cls.dp_parts:
        mom = plan_moments(ledger, gen_cls, encoder.layout, dp)
        _, total, outer = sufficient_stats(clip_rows(X, encoder.layout))
        total, outer = noisy_moments(total, outer, mom.noise_std, source)
        apply_moments(model, n_hat, total, outer)
    if "training" in gen_cls.dp_parts:
        epochs = model.hparams.epochs if epochs is None else epochs
        plan = plan_sgd(ledger, epochs, model.hparams.batch_size, n_hat, dp.clip_norm, SGD_WHAT)
        train_private(
            model, X, plan, source, torch.Generator().manual_seed(seed), on_epoch=on_epoch
        )
    elif on_epoch is not None:
        on_epoch(0, {})
    return encoder, model, ledger, round(n_hat)


SGD_WHAT = "per-example clipped gradient sums of the networks that read real rows"


def apply_moments(model, rows: float, total: np.ndarray, outer: np.ndarray) -> None:
    """Noisy moment sums over ``rows`` (a noisy count, at least 1) into the model: the
    Gaussian generator's fit, or the GAN's moment target."""
    rows = max(float(rows), 1.0)
    model.fit_moments(np.asarray(total) / rows, np.asarray(outer) / rows)
