"""Clipping, noise from the CSPRNG with the configured scale, and Opacus accounting."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from smpc_synth.dp.accountant import epsilon, noise_multiplier_for
from smpc_synth.dp.clip import clip_update, global_norm
from smpc_synth.dp.noise import GRID, NoiseSource, add_noise_share, share_std, value_bound
from smpc_synth.errors import InputError

torch.set_num_threads(1)


def _update(seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {
        "w": scale * torch.randn(30, 20, generator=g),
        "b": scale * torch.randn(20, generator=g),
    }


def test_clip_scales_large_updates_to_the_bound_keeping_direction():
    update = _update(scale=3.0)
    clipped, norm = clip_update(update, 1.0)
    assert norm == pytest.approx(global_norm(update))
    assert global_norm(clipped) <= 1.0 + 1e-6
    assert global_norm(clipped) == pytest.approx(1.0, rel=1e-6)
    ratio = clipped["w"] / update["w"]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))


def test_clip_leaves_small_updates_alone():
    update = _update(scale=0.001)
    clipped, _ = clip_update(update, 1.0)
    assert all(torch.equal(clipped[k], update[k]) for k in update)


def test_noise_shares_sum_to_the_configured_std():
    sigma, clip, parties = 1.3, 0.7, 5
    zero = {"x": torch.zeros(20_000, dtype=torch.float64)}
    source = NoiseSource()
    total = sum(add_noise_share(zero, sigma, clip, parties, source)["x"] for _ in range(parties))
    target = sigma * clip
    n = total.numel()
    var = float(total.var())
    # chi-square 99.9% interval for the sample variance of n normal draws
    lo = target**2 * stats.chi2.ppf(0.0005, n - 1) / (n - 1)
    hi = target**2 * stats.chi2.ppf(0.9995, n - 1) / (n - 1)
    assert lo <= var <= hi
    assert abs(float(total.mean())) < 4 * target / math.sqrt(n)
    assert stats.kstest(total.numpy() / target, "norm").pvalue > 0.001
    assert share_std(sigma, clip, parties) == pytest.approx(target / math.sqrt(parties))


def test_noised_clipped_values_stay_within_value_bound():
    sigma, clip, parties = 1.0, 1.0, 3
    clipped, _ = clip_update(_update(scale=5.0), clip)
    noisy = add_noise_share(clipped, sigma, clip, parties, NoiseSource())
    bound = value_bound(clip, sigma, parties, n_values=620)
    assert max(float(t.abs().max()) for t in noisy.values()) <= bound
    assert bound > clip + 5 * share_std(sigma, clip, parties)


def test_epsilon_falls_with_noise_and_rises_with_steps():
    assert epsilon(2.0, 1.0, 10, 1e-5) < epsilon(1.0, 1.0, 10, 1e-5)
    assert epsilon(1.0, 1.0, 20, 1e-5) > epsilon(1.0, 1.0, 10, 1e-5)
    assert epsilon(1.0, 0.1, 10, 1e-5) < epsilon(1.0, 1.0, 10, 1e-5)


@pytest.mark.parametrize("target", [1.0, 8.0])
def test_noise_multiplier_for_target_epsilon_is_tight(target):
    sigma = noise_multiplier_for(target, 1.0, 20, 1e-5)
    assert epsilon(sigma, 1.0, 20, 1e-5) <= target
    assert epsilon(sigma * 0.9, 1.0, 20, 1e-5) > target


def test_bad_accounting_inputs_name_the_key():
    with pytest.raises(InputError, match=r"dp.delta"):
        epsilon(1.0, 1.0, 10, 0.0)
    with pytest.raises(InputError, match=r"dp.epsilon"):
        noise_multiplier_for(-1.0, 1.0, 10, 1e-5)
    with pytest.raises(InputError, match="steps"):
        epsilon(1.0, 1.0, 0, 1e-5)
    assert np.isfinite(epsilon(1.0, 1.0, 1, 1e-5))


def test_secure_noise_is_standard_normal_on_the_grid_and_never_repeats():
    source = NoiseSource()
    z = source.normal(50_000)
    n = z.size
    lo = stats.chi2.ppf(0.0005, n - 1) / (n - 1)
    hi = stats.chi2.ppf(0.9995, n - 1) / (n - 1)
    assert lo <= float(z.var()) <= hi
    assert stats.kstest(z, "norm").pvalue > 0.001
    noisy = source.gaussian(1000, 0.37)
    assert np.array_equal(noisy, np.rint(noisy / GRID) * GRID)
    assert not np.array_equal(NoiseSource().normal(8), NoiseSource().normal(8))
    assert source.secure and "urandom" in source.describe()


def test_debug_noise_repeats_per_label_and_says_it_is_insecure():
    a, b = NoiseSource(7, "alice"), NoiseSource(7, "alice")
    assert np.array_equal(a.normal(16), b.normal(16))
    assert not np.array_equal(NoiseSource(7, "alice").normal(16), NoiseSource(7, "bob").normal(16))
    assert not a.secure and "INSECURE" in a.describe()
    nulled = NoiseSource(7, "x", debug_null_data=True)
    assert np.array_equal(
        nulled.privatize(np.arange(5.0), 1.0), NoiseSource(7, "x").privatize(np.zeros(5), 1.0)
    )
    with pytest.raises(ValueError):
        NoiseSource(None, debug_null_data=True)


def test_poisson_mask_samples_each_row_at_the_rate():
    mask = NoiseSource().poisson_mask(200_000, 0.03)
    assert abs(mask.mean() - 0.03) < 4 * math.sqrt(0.03 * 0.97 / 200_000)
