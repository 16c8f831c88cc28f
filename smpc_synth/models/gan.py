"""An MLP GAN on the mode-encoded table, without gradient penalty (too costly in MPC).

The generator's output is activated span by span (``tanh`` / softmax). The discriminator
sees ``pac`` rows at a time (PacGAN), which counters mode collapse at no MPC-specific cost.
The generator's loss adds :func:`moment_loss` (means and second moments of the batch), which
without a gradient penalty is what keeps category frequencies and correlations on track.
Only the generator is released.

Under DP-SGD (:meth:`GANGenerator.private_step`) the critic takes one pass over the Poisson
sample of real rows together with a public number of generated ones, so that each real row
is one example Opacus clips; the moment loss matches the noisy moments of all rows
(:meth:`GANGenerator.fit_moments`), and the generator's step reads no real row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smpc_synth.models.base import NeuralGenerator, NeuralParams
from smpc_synth.models.losses import (
    discriminator_loss,
    generator_loss,
    moment_loss,
    moment_loss_to,
)
from smpc_synth.models.nets import mlp
from smpc_synth.models.registry import register
from smpc_synth.models.spans import activate


@dataclass
class GANParams(NeuralParams):
    """Hyperparameters of :class:`GANGenerator` (defaults follow CTGAN where they can)."""

    epochs: int = 150
    batch_size: int = 500
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.9
    weight_decay: float = 1e-6
    noise_dim: int = 128
    generator_hidden: tuple[int, ...] = (128, 128)
    discriminator_hidden: tuple[int, ...] = (128, 128)
    pac: int = 10
    label_smoothing: float = 0.1
    moment_weight: float = 10.0  # weight of moment_loss in the generator's loss


@register
class GANGenerator(NeuralGenerator):
    """Generator and discriminator MLPs trained with the non-saturating BCE loss."""

    name = "gan"
    numeric_encoding = "mode"
    Params = GANParams
    released_modules = ("generator",)
    private_modules = ("discriminator",)
    dp_parts = ("encoder", "moments", "training")
    sampler = "generator"
    moment_target: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def noise_dim(self) -> int:
        return self.hparams.noise_dim

    def _build(self) -> dict[str, nn.Module]:
        hp, width = self.hparams, self.layout.width
        return {
            "generator": mlp(hp.noise_dim, hp.generator_hidden, width),
            "discriminator": mlp(width * hp.pac, hp.discriminator_hidden, 1, "leaky_relu"),
        }

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        hp = self.hparams
        return {
            name: torch.optim.Adam(
                net.parameters(),
                lr=hp.lr,
                betas=(hp.beta1, hp.beta2),
                weight_decay=hp.weight_decay,
            )
            for name, net in self._nets.items()
        }

    def _fake(self, rows: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(rows, self.hparams.noise_dim, generator=generator)
        return activate(self._nets["generator"](z), self.layout)

    def _critic(self, rows: torch.Tensor) -> torch.Tensor:
        return self._nets["discriminator"](rows.reshape(-1, self.layout.width * self.hparams.pac))

    def train_step(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        hp = self.hparams
        rows = batch.shape[0] - batch.shape[0] % hp.pac
        if rows == 0:
            return {}
        real = batch[:rows]
        d_opt, g_opt = self.optimizers["discriminator"], self.optimizers["generator"]

        fake = self._fake(rows, generator).detach()
        d_loss = discriminator_loss(self._critic(real), self._critic(fake), hp.label_smoothing)
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()

        fake = self._fake(rows, generator)
        g_loss = generator_loss(self._critic(fake))
        if hp.moment_weight:
            g_loss = g_loss + hp.moment_weight * moment_loss(fake, real)
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        return {"discriminator": d_loss.item(), "generator": g_loss.item()}

    def fit_moments(self, mean, second) -> None:
        """Column means and ``E[x x^T]`` the moment loss pulls generated rows toward (DP)."""
        self.moment_target = tuple(
            torch.as_tensor(np.asarray(m), dtype=torch.float32) for m in (mean, second)
        )

    def private_step(self, batch: torch.Tensor, generator: torch.Generator, private) -> dict:
        hp = self.hparams
        if hp.pac != 1:
            raise ValueError("DP-SGD trains the GAN with pac = 1")
        rows = max(1, round(private.plan.expected_batch))  # public, unlike len(batch)
        fake = self._fake(rows, generator).detach()
        logits = self._critic(torch.cat([batch, fake]))
        labels = torch.cat(
            [torch.full((batch.shape[0], 1), 1.0 - hp.label_smoothing), torch.zeros(rows, 1)]
        )
        d_rows = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")[:, 0]
        private.step("discriminator", d_rows)
        with private.public_pass():
            g_loss = self.generator_step(rows, generator)
        return {"discriminator": d_rows.mean().item(), "generator": g_loss}

    def generator_step(self, rows: int, generator: torch.Generator) -> float:
        """The generator's step under DP: through the critic, towards the noisy moments; it
        reads no real row (``rows`` generated ones, a public number)."""
        hp = self.hparams
        fake = self._fake(rows, generator)
        g_loss = generator_loss(self._critic(fake))
        if hp.moment_weight and self.moment_target is not None:
            g_loss = g_loss + hp.moment_weight * moment_loss_to(fake, *self.moment_target)
        g_opt = self.optimizers["generator"]
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        return g_loss.item()
