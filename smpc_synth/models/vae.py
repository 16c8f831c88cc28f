"""A TVAE-like variational autoencoder on the mode-encoded table.

Encoder and decoder are MLPs; the encoder's log-variance is bounded by a scaled ``tanh`` so
that ``exp`` stays within fixed-point range in MPC. As in TVAE, each continuous unit has a
noise scale ``sigma``: here the root mean squared reconstruction error of the previous epoch
(the closed-form optimum of TVAE's learned sigma), used as a constant in the loss and as
output noise when sampling. The decoder and ``sigma`` are released.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from smpc_synth.models.base import NeuralGenerator, NeuralParams
from smpc_synth.models.losses import (
    bounded_logvar,
    kl_divergence,
    kl_divergence_rows,
    reconstruction_loss,
    reconstruction_loss_rows,
)
from smpc_synth.models.nets import mlp
from smpc_synth.models.registry import register
from smpc_synth.models.spans import continuous_index


@dataclass
class VAEParams(NeuralParams):
    """Hyperparameters of :class:`VAEGenerator` (defaults follow TVAE where they can)."""

    epochs: int = 300
    batch_size: int = 500
    lr: float = 1e-3
    weight_decay: float = 1e-5
    hidden: tuple[int, ...] = (128, 128)
    latent_dim: int = 64
    recon_weight: float = 2.0  # TVAE's loss_factor
    kl_weight: float = 1.0
    logvar_bound: float = 4.0  # |log-variance| < bound, so exp(logvar) < e^4
    init_sigma: float = 0.1  # noise scale of continuous units before the first epoch
    min_sigma: float = 0.01  # floor of the noise scale (bounds the loss weight 1/sigma^2)


@register
class VAEGenerator(NeuralGenerator):
    """Encoder to a Gaussian latent, decoder back to encoded rows."""

    name = "vae"
    numeric_encoding = "mode"
    Params = VAEParams
    released_modules = ("decoder",)
    private_modules = ("encoder", "decoder")
    sampler = "decoder"

    @property
    def noise_dim(self) -> int:
        return self.hparams.latent_dim

    def _build(self) -> dict[str, nn.Module]:
        hp, width = self.hparams, self.layout.width
        self._continuous = continuous_index(self.layout)
        self.buffers["sigma"] = torch.full((len(self._continuous),), hp.init_sigma)
        self._sq_err = torch.zeros(len(self._continuous))
        self._rows = 0
        return {
            "encoder": mlp(width, hp.hidden, 2 * hp.latent_dim),
            "decoder": mlp(hp.latent_dim, tuple(reversed(hp.hidden)), width),
        }

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        params = [p for net in self._nets.values() for p in net.parameters()]
        return {
            "vae": torch.optim.Adam(
                params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
            )
        }

    def _forward(self, batch: torch.Tensor, generator: torch.Generator):
        """``(mu, logvar, raw decoder output)`` of a batch."""
        hp = self.hparams
        out = self._nets["encoder"](batch)
        mu = out[:, : hp.latent_dim]
        logvar = bounded_logvar(out[:, hp.latent_dim :], hp.logvar_bound)
        eps = torch.randn(mu.shape, generator=generator)
        z = mu + eps * (0.5 * logvar).exp()
        return mu, logvar, self._nets["decoder"](z)

    def train_step(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        hp = self.hparams
        mu, logvar, raw = self._forward(batch, generator)
        recon = reconstruction_loss(
            raw, batch, self.layout, self._continuous, self.buffers["sigma"]
        )
        kl = kl_divergence(mu, logvar)
        loss = hp.recon_weight * recon + hp.kl_weight * kl
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            err = raw[:, self._continuous].tanh() - batch[:, self._continuous]
            self._sq_err += err.square().sum(dim=0)
            self._rows += batch.shape[0]
        return {"loss": loss.item(), "reconstruction": recon.item(), "kl": kl.item()}

    def private_step(self, batch: torch.Tensor, generator: torch.Generator, private) -> dict:
        """:meth:`train_step` under DP-SGD, one loss per row (``sigma`` stays put: it is
        an error over real rows)."""
        hp = self.hparams
        mu, logvar, raw = self._forward(batch, generator)
        sigma = self.buffers["sigma"]
        recon = reconstruction_loss_rows(raw, batch, self.layout, self._continuous, sigma)
        kl = kl_divergence_rows(mu, logvar)
        private.step("vae", hp.recon_weight * recon + hp.kl_weight * kl)
        if not len(batch):
            return {}
        return {"reconstruction": recon.mean().item(), "kl": kl.mean().item()}

    def train_epoch(
        self, X: torch.Tensor | np.ndarray, generator: torch.Generator
    ) -> dict[str, float]:
        """One pass; then ``sigma`` becomes this epoch's RMS reconstruction error per unit."""
        self._sq_err.zero_()
        self._rows = 0
        metrics = super().train_epoch(X, generator)
        rms = (self._sq_err / max(self._rows, 1)).sqrt()
        self.buffers["sigma"] = rms.clamp(self.hparams.min_sigma, 1.0)
        return metrics

    def _perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cont = self._continuous
        noise = torch.randn(x.shape[0], len(cont), generator=generator) * self.buffers["sigma"]
        x[:, cont] = (x[:, cont] + noise).clamp(-1.0, 1.0)
        return x
