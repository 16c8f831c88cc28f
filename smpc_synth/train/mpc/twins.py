"""MPC twins of the neural generators: the same networks, losses and random draws as
:mod:`smpc_synth.models.vae` and :mod:`smpc_synth.models.gan`, on secret-shared batches.

Each twin starts from the plaintext model's seeded weights, consumes the public training
generator exactly as the plaintext ``train_step`` does (so the same seed draws the same
batches and noise), computes the losses of :mod:`smpc_synth.models.losses` and their
gradients by hand, and reveals only the scalar losses of each step (for the metrics and the
wrap-around guard) and, per optimizer, the sum of ``x y^2`` over its inverse square root's
last Newton step (about the number of parameters by construction: a check, see
:mod:`.optim`). Weights stay shared until :meth:`Twin.reveal_released`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from smpc_synth.crypten_backend.compat import comparison_provider, import_crypten
from smpc_synth.mpc.primitives import beaver, functions
from smpc_synth.mpc.primitives.spans import Activation, SpanMap
from smpc_synth.train.mpc.guard import CHECK_PREFIX
from smpc_synth.train.mpc.nn import Mlp, ParameterVector, named_parameters
from smpc_synth.train.mpc.optim import AdamSettings, SharedAdam

crypten = import_crypten()
log = logging.getLogger(__name__)


def _reveal_scalars(*values) -> list[float]:
    """Open several shared scalars (or short vectors, flattened in turn) in one round."""
    stacked = crypten.cat([v.reshape(-1) for v in values])
    return [float(x) for x in stacked.get_plain_text()]


class Twin:
    """One generator trained on shares: networks, their flat parameters and optimizers."""

    def __init__(self, model, groups: dict[str, tuple[str, ...]], settings: AdamSettings):
        self.phase: Callable[[str], AbstractContextManager] = lambda _name: nullcontext()
        self.failed_checks: list[str] = []  # groups whose root check failed last step
        self.model = model
        self.spans = SpanMap(model.layout)
        nets = model.modules()
        self.params: dict[str, ParameterVector] = {}
        self.opts: dict[str, SharedAdam] = {}
        self.nets: dict[str, Mlp] = {}
        for group, members in groups.items():
            vector = ParameterVector(named_parameters({m: nets[m] for m in members}))
            self.params[group] = vector
            self.opts[group] = SharedAdam(settings, vector.size)
            for m in members:
                self.nets[m] = Mlp(nets[m], vector, m)

    def _update(self, group: str) -> None:
        with self.phase("update"):
            vector = self.params[group]
            grad = vector.flat_grad(list(vector.slots))
            vector.flat = self.opts[group].step(vector.flat, grad)
            vector.zero_grad()

    def _reveal(self, **losses) -> dict[str, float]:
        """Open the step's losses and every optimizer's root check in one round: the losses,
        and a health check per parameter group for the guard (see :mod:`.optim`)."""
        groups = [g for g, opt in self.opts.items() if opt.root_check is not None]
        with self.phase("reveal"):
            values = _reveal_scalars(*losses.values(), *(self.opts[g].root_check for g in groups))
        revealed = dict(zip(losses, values))
        self.failed_checks = []
        at = len(losses)
        for group in groups:
            opt = self.opts[group]
            width = opt.root_check.nelement()
            error = opt.root_check_error(values[at : at + width])
            at += width
            revealed[f"{CHECK_PREFIX}adam {group}"] = error
            if not error <= 1:
                self.failed_checks.append(group)
            opt.root_check = None
        return revealed

    def begin_epoch(self) -> None:
        """Hook before each epoch."""

    def end_epoch(self) -> None:
        """Hook after each epoch (may reveal aggregates the released model needs)."""

    def reset_optimizer_roots(self) -> None:
        """After a rollback: every optimizer converges from cold, and one whose root check
        failed in the step rolled back keeps its moments at a lower scale (a gradient too
        large for fixed point's window, see :mod:`.optim`)."""
        for group, opt in self.opts.items():
            opt.reset_root()
            if group in self.failed_checks and opt.shrink_scale():
                log.warning(
                    "%s: gradients too large for fixed point at their scale: moments now "
                    "kept for gradients x %g",
                    group,
                    opt.grad_scale,
                )
        self.failed_checks = []

    def state(self) -> dict[str, Any]:
        """This party's shares of everything trainable, plus public buffers."""
        return {
            "params": {g: v.flat.share.clone() for g, v in self.params.items()},
            "opts": {g: o.state() for g, o in self.opts.items()},
            "buffers": {k: t.clone() for k, t in self.model.buffers.items()},
            "epoch": self._epoch_state(),
        }

    def _epoch_state(self) -> dict[str, Any]:
        """Accumulators of the running epoch (so a rollback does not count a step twice)."""
        return {}

    def _load_epoch_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_epoch_state`."""

    def load(self, state: dict[str, Any]) -> None:
        from_shares = crypten.mpc.MPCTensor.from_shares
        for group, share in state["params"].items():
            self.params[group].flat = from_shares(share.clone())
            self.opts[group].load(state["opts"][group])
        for key, value in state["buffers"].items():
            self.model.buffers[key] = value.clone()
        self._load_epoch_state(state.get("epoch", {}))

    def reveal_released(self, dst: int) -> None:
        """Open the released networks' weights to party ``dst`` (every party takes part)."""
        for name in self.model.released_modules:
            group = next(g for g, v in self.params.items() if f"{name}.0.weight" in v.slots)
            vector = self.params[group]
            names = [n for n in vector.slots if n.startswith(f"{name}.")]
            plain = vector.reveal(names, dst=dst)
            if plain is not None:
                prefix = len(name) + 1
                state = {n[prefix:]: t for n, t in plain.items()}
                self.model.modules()[name].load_state_dict(state)

    def step(self, batch, generator: torch.Generator) -> dict[str, float]:
        raise NotImplementedError

    @classmethod
    def largest_requests(cls, width: int, hparams) -> tuple[int, int]:
        """Upper bounds, for an encoded ``width``, on the elements of the largest tuple and
        of the largest comparison (not cut into pieces) one training step asks the dealer
        for: what :mod:`.limits` checks a schema against before a session."""
        raise NotImplementedError


class VaeTwin(Twin):
    """:class:`~smpc_synth.models.vae.VAEGenerator` on shares."""

    def __init__(self, model):
        hp = model.hparams
        super().__init__(
            model,
            {"vae": ("encoder", "decoder")},
            AdamSettings(lr=hp.lr, weight_decay=hp.weight_decay),
        )
        self.sq_err = None
        self.rows = 0

    def begin_epoch(self) -> None:
        self.sq_err, self.rows = None, 0

    @classmethod
    def largest_requests(cls, width: int, hparams) -> tuple[int, int]:
        hp, batch = hparams, hparams.batch_size
        encoder = [width, *hp.hidden, 2 * hp.latent_dim]
        decoder = [hp.latent_dim, *reversed(hp.hidden), width]
        params = _parameters(encoder) + _parameters(decoder)
        widest = max(hp.hidden, default=1)
        # the span softmax's slots: a unit each, two per continuous unit; Adam's last
        # Newton step multiplies two stacked vectors of parameters
        tuples = max(2 * batch * width, width * widest, 2 * params)
        return tuples, max(batch * width, batch * widest, params)

    def _epoch_state(self) -> dict[str, Any]:
        share = None if self.sq_err is None else self.sq_err.share.clone()
        return {"sq_err": share, "rows": self.rows}

    def _load_epoch_state(self, state: dict[str, Any]) -> None:
        share = state.get("sq_err")
        self.sq_err = None if share is None else crypten.mpc.MPCTensor.from_shares(share)
        self.rows = int(state.get("rows", 0))

    def end_epoch(self) -> None:
        """sigma = RMS reconstruction error per continuous unit (a revealed aggregate)."""
        if self.sq_err is None or not len(self.spans.continuous):
            return
        rms = (self.sq_err.get_plain_text().double() / max(self.rows, 1)).sqrt()
        self.model.buffers["sigma"] = rms.float().clamp(self.model.hparams.min_sigma, 1.0)

    def step(self, batch, generator: torch.Generator) -> dict[str, float]:
        loss, recon, kl, sq_err = vae_backprop(
            self.model, self.spans, self.nets, batch, generator, batch.size(0), self.phase
        )
        self._update("vae")
        if sq_err is not None:
            sq = sq_err.sum(0)
            self.sq_err = sq if self.sq_err is None else self.sq_err + sq
            self.rows += batch.size(0)
        return self._reveal(loss=loss, reconstruction=recon, kl=kl)


def vae_backprop(model, spans: SpanMap, nets, batch, generator, per: int, phase):
    """The VAE's forward pass, losses and backward pass on a shared ``batch``: each
    network's ``backward`` receives its output gradient. Returns ``(loss, reconstruction,
    kl, squared errors of the continuous units or None)``.

    ``per`` divides every loss: the batch size for the batch mean (training), 1 for each
    row's own loss, whose gradients DP-SGD clips one by one (:mod:`.dp_sgd`).
    """
    hp = model.hparams
    n, latent, bound = batch.size(0), hp.latent_dim, hp.logvar_bound
    with phase("forward: encoder"):  # finer phases: what each operation costs
        out = nets["encoder"].forward(batch)
    with phase("forward: tanh, exp"):
        mu, r = out[:, :latent], out[:, latent:]
        # t and std = exp(logvar / 2) from one tanh's rounds (no exp of logvar after it)
        t, std = functions.tanh_and_exp(r * (1.0 / bound), bound / 2, comparison_provider())
        logvar = t * bound
        eps = torch.randn((n, latent), generator=generator)
        z = mu + std * eps
    with phase("forward: decoder"):
        raw = nets["decoder"].forward(z)
    with phase("loss"):
        sigma = model.buffers["sigma"]
        recon = 0
        d_cont = d_oh = sq_err = None
        target = batch[:, spans.onehot] if spans.n_spans else None
        with phase("loss: span softmax"):
            c, p, pending = spans.activate_for_log_hit(raw, target)
        # every square the loss and the backward pass need, and the true categories'
        # logits (for their log-probabilities), in one round
        squares = [("square", v, None) for v in (std, mu, t)]
        if c is not None:
            err = c - batch[:, spans.continuous]
            squares += [("square", err, None), ("square", c, None)]
        if pending is not None:
            squares.append(pending.product)
        var, mu_sq, t_sq, *continuous_squares = beaver.products(squares)
        log_hit = pending.finish(continuous_squares.pop()) if pending is not None else None
        # and every product of the gradients' factors, in one more: tanh's derivative
        # 1 - t^2 goes into the factors of d_logvar here, so the backward pass is left
        # with one product for it instead of two
        d_tanh = 1 - t_sq
        factors = [("mul", std, d_tanh), ("mul", var, d_tanh)]
        if c is not None:
            sq_err, c_sq = continuous_squares
            # public factors folded into one multiplication: smaller products (see optim)
            recon = (sq_err * (1.0 / (2 * per * sigma.square()))).sum()
            factors.append(("mul", err * (hp.recon_weight / per / sigma.square()), 1 - c_sq))
        std_d_tanh, var_d_tanh, *continuous_grad = beaver.products(factors)
        if c is not None:
            (d_cont,) = continuous_grad
        if p is not None:
            recon = recon - log_hit.sum() * (1.0 / per)
            d_oh = (p - target) * (hp.recon_weight / per)
        kl = (mu_sq + var - logvar - 1).sum() * (0.5 / per)
        loss = recon * hp.recon_weight + kl * hp.kl_weight
    with phase("backward: decoder"):
        dz = nets["decoder"].backward(spans.assemble(d_cont, d_oh), need_input=True)
    with phase("backward: encoder"):
        d_mu = dz + mu * (hp.kl_weight / per)
        # d_logvar = (dz eps) std / 2 + (var - 1) kl_weight / (2 per), times tanh's derivative
        kl_part = (var_d_tanh - d_tanh) * (0.5 * hp.kl_weight / per)
        d_r = (dz * eps) * std_d_tanh * 0.5 + kl_part
        nets["encoder"].backward(crypten.cat([d_mu, d_r], dim=1))
    return loss, recon, kl, sq_err


def critic_backprop(model, nets, batch) -> None:
    """The GAN critic's pass over shared real rows under DP-SGD (``pac`` = 1): each row's
    own loss, binary cross-entropy against ``1 - label_smoothing``, whose gradient with
    respect to its logit is ``sigmoid(logit) - label``; ``sigmoid(x) = (1 + tanh(x/2)) / 2``."""
    critic = nets["discriminator"]
    logits = critic.forward(batch)
    prob = (functions.tanh(logits * 0.5, comparison_provider()) + 1) * 0.5
    critic.backward(prob - (1.0 - model.hparams.label_smoothing))


class GanTwin(Twin):
    """:class:`~smpc_synth.models.gan.GANGenerator` on shares (the discriminator stays so)."""

    def __init__(self, model):
        hp = model.hparams
        super().__init__(
            model,
            {"generator": ("generator",), "discriminator": ("discriminator",)},
            AdamSettings(lr=hp.lr, beta1=hp.beta1, beta2=hp.beta2, weight_decay=hp.weight_decay),
        )
        self.activation = Activation(self.spans)

    @classmethod
    def largest_requests(cls, width: int, hparams) -> tuple[int, int]:
        hp, batch = hparams, hparams.batch_size
        generator = [hp.noise_dim, *hp.generator_hidden, width]
        critic = [width * hp.pac, *hp.discriminator_hidden, 1]
        params = max(_parameters(generator), _parameters(critic))
        widest = max(*hp.generator_hidden, *hp.discriminator_hidden, 1)
        # the moment loss's [F; R]^T [F; -R] is width x width; Adam's last Newton step
        # multiplies two stacked vectors of parameters
        tuples = max(width * width, 2 * batch * width, width * hp.pac * widest, 2 * params)
        return tuples, max(batch * width, batch * widest, params)

    def _fake(self, rows: int, generator: torch.Generator):
        z = torch.randn(rows, self.model.hparams.noise_dim, generator=generator)
        return self.activation.forward(self.nets["generator"].forward(z))

    def step(self, batch, generator: torch.Generator) -> dict[str, float]:
        hp, width = self.model.hparams, self.model.layout.width
        rows = batch.size(0) - batch.size(0) % hp.pac
        if rows == 0:
            return {}
        packs = rows // hp.pac
        real = batch[:rows]
        critic = self.nets["discriminator"]

        provider = comparison_provider()
        fake = self._fake(rows, generator)
        logits = critic.forward(crypten.cat([real, fake]).reshape(2 * packs, width * hp.pac))
        prob, log_p, log_q = functions.sigmoid_and_logs(logits, provider)
        label = torch.cat([torch.full((packs, 1), 1.0 - hp.label_smoothing), torch.zeros(packs, 1)])
        critic.backward((prob - label) * (1.0 / packs))
        self._update("discriminator")
        d_loss = -(log_p * label + log_q * (1 - label)).sum() * (1.0 / packs)

        fake = self._fake(rows, generator)
        logits = critic.forward(fake.reshape(packs, width * hp.pac))
        prob, log_p, _ = functions.sigmoid_and_logs(logits, provider)
        d_fake = critic.backward((prob - 1) * (1.0 / packs), accumulate=False, need_input=True)
        d_fake = d_fake.reshape(rows, width)
        g_loss = -log_p.sum() * (1.0 / packs)
        if hp.moment_weight:
            moment, d_moment = _moment_loss_and_grad(fake, real)
            g_loss = g_loss + moment * hp.moment_weight
            d_fake = d_fake + d_moment * hp.moment_weight
        self.nets["generator"].backward(self.activation.backward(d_fake))
        self._update("generator")
        return self._reveal(discriminator=d_loss, generator=g_loss)


def _parameters(sizes: list[int]) -> int:
    """Weights and biases of an MLP whose layers have ``sizes`` units."""
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def _moment_loss_and_grad(fake, real):
    """:func:`smpc_synth.models.losses.moment_loss` and its gradient w.r.t. ``fake``."""
    rows = fake.size(0)
    mean_gap = (fake - real).sum(0) * (1.0 / rows)
    # F^T F - R^T R as one product: [F; R]^T [F; -R]
    second_gap = crypten.cat([fake, real]).t().matmul(crypten.cat([fake, -real])) * (1.0 / rows)
    squares = crypten.cat([mean_gap.reshape(-1), second_gap.reshape(-1)]).square()
    grad = fake.matmul(second_gap) * (4.0 / rows) + mean_gap * (2.0 / rows)
    return squares.sum(), grad


TWINS = {"vae": VaeTwin, "gan": GanTwin}
