"""The hand-written losses (mirrored by the MPC twin) agree with torch's own definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from smpc_synth.data.layout import Layout, Span
from smpc_synth.models.losses import (
    bounded_logvar,
    discriminator_loss,
    generator_loss,
    kl_divergence,
    moment_loss,
    reconstruction_loss,
)
from smpc_synth.models.spans import activate, continuous_index

LAYOUT = Layout(
    (
        Span("x", 0, 1, "continuous"),
        Span("x", 1, 3, "onehot"),
        Span("y", 4, 1, "continuous"),
        Span("c", 5, 2, "onehot"),
    )
)


def _batch(rows: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(rows, LAYOUT.width, generator=g) * 2
    target = activate(torch.randn(rows, LAYOUT.width, generator=g), LAYOUT)
    for s in LAYOUT.spans:
        if s.kind == "onehot":
            pick = target[:, s.start : s.stop].argmax(dim=1)
            target[:, s.start : s.stop] = F.one_hot(pick, s.width).float()
    return raw, target


def test_reconstruction_loss_is_gaussian_nll_plus_cross_entropy():
    raw, target = _batch()
    sigma = torch.tensor([0.1, 0.5])
    cont = continuous_index(LAYOUT)
    ours = reconstruction_loss(raw, target, LAYOUT, cont, sigma)
    nll = F.gaussian_nll_loss(
        raw[:, cont].tanh(), target[:, cont], sigma.square().expand(len(raw), 2), reduction="sum"
    )
    # torch's Gaussian NLL adds 0.5 log(var) per unit: a constant here, so remove it
    nll = nll - 0.5 * sigma.square().log().sum() * len(raw)
    ce = sum(
        F.cross_entropy(
            raw[:, s.start : s.stop], target[:, s.start : s.stop].argmax(1), reduction="sum"
        )
        for s in LAYOUT.spans
        if s.kind == "onehot"
    )
    torch.testing.assert_close(ours, (nll + ce) / len(raw))


def test_kl_matches_torch_distributions_and_logvar_is_bounded():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(32, 8, generator=g)
    logvar = bounded_logvar(torch.randn(32, 8, generator=g) * 10, bound=4.0)
    assert logvar.abs().max() < 4.0
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum() / 32
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)


def test_gan_losses_match_bce_and_moment_loss_sees_differences():
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(16, 1, generator=g), torch.randn(16, 1, generator=g)
    expected = F.binary_cross_entropy(real.sigmoid(), torch.full_like(real, 0.9)) + (
        F.binary_cross_entropy(fake.sigmoid(), torch.zeros_like(fake))
    )
    torch.testing.assert_close(discriminator_loss(real, fake, smoothing=0.1), expected)
    assert math.isclose(
        generator_loss(fake).item(), -fake.sigmoid().log().mean().item(), rel_tol=1e-5
    )
    _, a = _batch(seed=3)
    _, b = _batch(seed=4)
    assert moment_loss(a, a).item() == 0.0
    assert moment_loss(a, b).item() > 0.0
    shifted = a.clone()
    shifted[:, 0] += 0.5
    assert moment_loss(shifted, a) > moment_loss(a, a)


@pytest.mark.usefixtures("crypten_patches")
def test_losses_run_unchanged_on_crypten_tensors():
    """The MPC twin reuses these functions: on secret shares they match plaintext closely."""
    from smpc_synth.crypten_backend.compat import import_crypten

    crypten = import_crypten()
    crypten.init()
    try:
        raw, target = _batch(rows=32, seed=5)
        sigma = torch.tensor([0.1, 0.5])
        cont = continuous_index(LAYOUT)
        g = torch.Generator().manual_seed(6)
        mu, pre = torch.randn(32, 4, generator=g), torch.randn(32, 4, generator=g) * 3
        logits = torch.randn(32, 1, generator=g) * 2
        enc = crypten.cryptensor
        pairs = [
            (
                reconstruction_loss(raw, target, LAYOUT, cont, sigma),
                reconstruction_loss(enc(raw), enc(target), LAYOUT, cont, sigma),
            ),
            (
                kl_divergence(mu, bounded_logvar(pre, 4.0)),
                kl_divergence(enc(mu), bounded_logvar(enc(pre), 4.0)),
            ),
            (moment_loss(raw, target), moment_loss(enc(raw), enc(target))),
            (
                discriminator_loss(logits, -logits, 0.1),
                discriminator_loss(enc(logits), enc(-logits), 0.1),
            ),
            (generator_loss(logits), generator_loss(enc(logits))),
        ]
        for plain, secret in pairs:
            revealed = secret.get_plain_text().item()
            assert math.isclose(revealed, plain.item(), rel_tol=0.03, abs_tol=0.01)
        outputs = activate(enc(raw), LAYOUT).get_plain_text()
        torch.testing.assert_close(outputs, activate(raw, LAYOUT), atol=0.01, rtol=0.0)
    finally:
        crypten.uninit()
