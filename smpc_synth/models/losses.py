"""Every training loss, as a plain function the MPC twin mirrors op for op.

They use only what CrypTen computes well on bounded inputs: slicing, sums, means, squares,
``tanh``, ``exp`` of a bounded input, softmax / log-softmax over a small one-hot span and
binary cross-entropy with logits (``sigmoid`` then ``log``). Each returns a scalar averaged
over the rows of the batch, and each runs unchanged on CrypTen tensors (the MPC twin calls
these very functions; ``tests/unit/models/test_models_losses.py`` checks that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smpc_synth.data.layout import Layout


def reconstruction_loss(
    raw: torch.Tensor,
    target: torch.Tensor,
    layout: Layout,
    continuous: torch.Tensor,
    sigma: torch.Tensor,
) -> torch.Tensor:
    """Gaussian negative log-likelihood of continuous units plus cross-entropy per one-hot span.

    ``continuous`` is :func:`smpc_synth.models.spans.continuous_index` of ``layout``; the
    continuous units are ``tanh(raw)`` with noise scale ``sigma`` (one per unit, a constant
    here), so their term is the squared error divided by ``2 sigma^2``.
    """
    return reconstruction_loss_rows(raw, target, layout, continuous, sigma).sum() / raw.shape[0]


def reconstruction_loss_rows(raw, target, layout: Layout, continuous, sigma) -> torch.Tensor:
    """:func:`reconstruction_loss` of each row (its mean over rows is that loss): the
    per-example losses DP-SGD clips."""
    err = raw[:, continuous].tanh() - target[:, continuous]
    loss = (err.square() / (2 * sigma.square())).sum(dim=1)
    for s in layout.spans:
        if s.kind == "onehot":
            logp = raw[:, s.start : s.stop].log_softmax(dim=1)
            loss = loss - (target[:, s.start : s.stop] * logp).sum(dim=1)
    return loss


def bounded_logvar(raw: torch.Tensor, bound: float) -> torch.Tensor:
    """``bound · tanh(raw / bound)``: a log-variance whose ``exp`` stays in fixed-point range."""
    return (raw / bound).tanh() * bound


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent units, mean over rows."""
    return kl_divergence_rows(mu, logvar).sum() / mu.shape[0]


def kl_divergence_rows(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """:func:`kl_divergence` of each row."""
    return 0.5 * (mu.square() + logvar.exp() - logvar - 1.0).sum(dim=1)


def bce_with_logits(logits: torch.Tensor, label: float) -> torch.Tensor:
    """Mean binary cross-entropy of ``logits`` against the constant ``label``.

    CrypTen tensors bring their own ``binary_cross_entropy_with_logits`` method, which wants
    the (public) label as a CrypTen tensor too; torch tensors use the functional form.
    """
    target = torch.full(tuple(logits.size()), float(label))
    if isinstance(logits, torch.Tensor):
        return F.binary_cross_entropy_with_logits(logits, target)
    return logits.binary_cross_entropy_with_logits(logits.new(target))


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """BCE with logits: real rows labelled ``1 - smoothing``, generated rows 0."""
    return bce_with_logits(real_logits, 1.0 - smoothing) + bce_with_logits(fake_logits, 0.0)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss: BCE with logits of generated rows against label 1."""
    return bce_with_logits(fake_logits, 1.0)


def moment_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Squared gaps between the first and second moments of a generated and a real batch.

    Compares column means and the matrix of mean products ``X^T X / rows`` (so variances and
    correlations): in the spirit of table-GAN's "information loss", it pulls category
    frequencies and dependencies toward the data where the adversarial signal alone is too
    weak. Costs one matrix product per batch in MPC.
    """
    rows = fake.shape[0]
    mean_gap = fake.mean(dim=0) - real.mean(dim=0)
    second_gap = (fake.t() @ fake - real.t() @ real) / rows
    return mean_gap.square().sum() + second_gap.square().sum()


def moment_loss_to(fake: torch.Tensor, mean: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """:func:`moment_loss` against given moments (column ``mean``, ``second`` = E[x x^T]):
    under DP, the noisy moments of all rows instead of a real batch's."""
    mean_gap = fake.mean(dim=0) - mean
    second_gap = fake.t() @ fake / fake.shape[0] - second
    return mean_gap.square().sum() + second_gap.square().sum()
