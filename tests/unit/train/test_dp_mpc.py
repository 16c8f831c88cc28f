"""DP-SGD on shares, with the dealer, over the real gRPC mesh: the clip holds for whatever
the shares hold, the clipped sum is the plaintext one, and the dealt noise is what it says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dp_mpc_programs import CLIP, LAYOUT, ROWS, clip_program, model, rows, run
from scipy import stats

from smpc_synth.models.losses import kl_divergence_rows, reconstruction_loss_rows
from smpc_synth.train.mpc.dp_sgd import CLIP_MARGIN, CLIP_TOLERANCE, MAX_NORM_RATIO_SQ

WRAPPED = 7  # the example whose output gradient the program pushes out of range


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    outcomes = run(tmp_path_factory.mktemp("dp"), 2, clip_program, wrap_row=WRAPPED)
    failed = {n: f"{o.error_type}: {o.error}" for n, o in outcomes.items() if not o.ok}
    assert not failed, failed
    return outcomes["alice"].result


def _norms_sq(kept) -> np.ndarray:
    """Each example's squared gradient norm, from the opened inputs and output gradients."""
    total = np.zeros(ROWS)
    for a, g in kept:
        a, g = np.asarray(a, dtype=np.float64), np.asarray(g, dtype=np.float64)
        total += (g**2).sum(1) * ((a**2).sum(1) + 1)
    return total


def test_every_clipped_example_stays_within_the_bound_whatever_its_shares(opened):
    factors = np.asarray(opened["factors"])
    norms = np.sqrt(_norms_sq(opened["kept"]))
    assert (factors >= 0).all()
    contribution = np.delete(factors * norms, WRAPPED)
    assert contribution.max() <= CLIP * math.sqrt(1 + CLIP_TOLERANCE)
    assert (norms > 2 * CLIP).sum() >= 4  # the bound had something to clip
    assert factors[WRAPPED] == 0  # out of range: dropped, not clipped from a wrong norm
    assert factors[-1] == 0  # masked (padding)
    others = [i for i in range(ROWS - 1) if i != WRAPPED]
    expected = np.minimum(1.0, CLIP / norms[others]) * (1 - CLIP_MARGIN)
    expected[norms[others] ** 2 > MAX_NORM_RATIO_SQ * CLIP**2] = 0.0  # beyond range: dropped
    np.testing.assert_allclose(factors[others], expected, rtol=5e-3, atol=1e-4)


def test_clipped_sum_is_the_plaintext_per_example_clipped_sum(opened):
    """Against torch: each row's own loss, its gradient, clipped by the factors the shares
    gave (the forward pass on shares differs by CrypTen's approximations of tanh and exp)."""
    factors = np.asarray(opened["factors"])
    vae = model()
    X = rows()
    generator = torch.Generator().manual_seed(3)
    mu, logvar, raw = vae._forward(X, generator)
    sigma = vae.buffers["sigma"]
    hp = vae.hparams
    losses = hp.recon_weight * reconstruction_loss_rows(
        raw, X, LAYOUT, vae._continuous, sigma
    ) + hp.kl_weight * kl_divergence_rows(mu, logvar)
    params = [p for net in ("encoder", "decoder") for p in vae.modules()[net].parameters()]
    expected = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for i in range(ROWS):
        if i == WRAPPED or factors[i] == 0:
            continue
        grads = torch.autograd.grad(losses[i], params, retain_graph=True)
        for total, grad in zip(expected, grads, strict=True):
            total += float(factors[i]) * grad.double()
    got = [
        torch.tensor(s, dtype=torch.float64).view(p.shape) for s, p in zip(opened["sums"], params)
    ]
    for name, a, b in zip(range(len(params)), got, expected, strict=True):
        gap = float((a - b).norm() / max(float(b.norm()), 1e-3))
        assert gap < 0.1, (name, gap)


@pytest.mark.parametrize("bits", [16, 48])
def test_dealt_noise_has_its_deviation_at_either_scale(opened, bits):
    units = np.asarray(opened[f"noise{bits}"], dtype=np.int64)
    values = units / 2.0**bits
    n = values.size
    lo = 0.25 * stats.chi2.ppf(0.0005, n - 1) / (n - 1)
    hi = 0.25 * stats.chi2.ppf(0.9995, n - 1) / (n - 1)
    assert lo * 0.999 <= values.var() <= hi * 1.001
    assert stats.kstest(values / 0.5, "norm").pvalue > 1e-3
