"""Generators on encoded matrices: registry, shapes, determinism, state round trips, quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_models_support import encoded

from smpc_synth.data.layout import Layout, Span
from smpc_synth.errors import InputError
from smpc_synth.models import (
    GaussianGenerator,
    NeuralGenerator,
    available_generators,
    get_generator,
    sufficient_stats,
)
from smpc_synth.models.nets import ALLOWED_LAYERS

NAMES = ("gaussian", "vae", "gan")
FAST = {"vae": {"batch_size": 100}, "gan": {"batch_size": 100, "pac": 5}}


def _fitted(name: str, seed: int = 0, epochs: int = 2):
    cls = get_generator(name)
    X, layout, _ = encoded(300, cls.numeric_encoding)
    return cls(layout, **FAST.get(name, {})).fit(X, epochs=epochs, seed=seed), X, layout


def _is_onehot(sample: np.ndarray, layout: Layout) -> bool:
    blocks = [sample[:, s.start : s.stop] for s in layout.spans if s.kind == "onehot"]
    return all(
        np.array_equal(b.sum(axis=1), np.ones(len(b))) and set(np.unique(b)) <= {0, 1}
        for b in blocks
    )


def test_registry_lists_all_and_names_unknown():
    assert set(NAMES) <= set(available_generators())
    for name in NAMES:
        assert get_generator(name).name == name
    with pytest.raises(InputError, match=r"available: .*gaussian"):
        get_generator("nope")


def test_bad_hyperparameters_are_named():
    _, layout, _ = encoded(50)
    with pytest.raises(InputError, match="unknown parameter 'hiden'"):
        get_generator("vae")(layout, hiden=(64,))
    with pytest.raises(InputError, match="'batch_size'"):
        get_generator("gan")(layout, batch_size="big")
    with pytest.raises(InputError, match="'latent_dim' must be at least 1"):
        get_generator("vae")(layout, latent_dim=0)
    assert get_generator("vae")(layout, hidden=[32, 16]).hparams.hidden == (32, 16)


@pytest.mark.parametrize("name", NAMES)
def test_fit_sample_shape_onehot_and_determinism(name):
    gen, _, layout = _fitted(name)
    a, b = gen.sample(64, seed=5), gen.sample(64, seed=5)
    assert a.shape == (64, layout.width) and np.isfinite(a).all()
    assert _is_onehot(a, layout)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, gen.sample(64, seed=6))
    again, _, _ = _fitted(name)  # same training seed: same model, same samples
    np.testing.assert_array_equal(a, again.sample(64, seed=5))


@pytest.mark.parametrize("name", ("vae", "gan"))
def test_training_seed_matters_and_on_epoch_reports(name):
    seen: list[tuple[int, dict]] = []
    cls = get_generator(name)
    X, layout, _ = encoded(300)
    gen = cls(layout, **FAST[name]).fit(
        X, epochs=3, seed=1, on_epoch=lambda e, m: seen.append((e, m))
    )
    assert [e for e, _ in seen] == [0, 1, 2]
    assert all(np.isfinite(v) for _, m in seen for v in m.values())
    other, _, _ = _fitted(name, seed=2, epochs=3)
    assert not np.array_equal(gen.sample(32, seed=0), other.sample(32, seed=0))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_identical_samples(name):
    gen, _, layout = _fitted(name)
    state = gen.state_dict()
    fresh = get_generator(name)(layout, **FAST.get(name, {}))
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(gen.sample(50, seed=3), fresh.sample(50, seed=3))


@pytest.mark.parametrize("name", ("vae", "gan"))
def test_networks_are_mpc_friendly_and_release_only_the_sampler(name):
    gen, _, _ = _fitted(name, epochs=1)
    assert isinstance(gen, NeuralGenerator)
    for net in gen.modules().values():
        assert isinstance(net, torch.nn.Sequential)
        assert all(isinstance(layer, ALLOWED_LAYERS) for layer in net)
    assert set(gen.state_dict()["modules"]) == set(gen.released_modules)
    assert set(gen.released_modules) < set(gen.modules())


@pytest.mark.parametrize("name", ("vae", "gan"))
def test_training_state_resumes_exactly(name):
    cls = get_generator(name)
    X, layout, _ = encoded(300)
    data = torch.as_tensor(X)
    straight = cls(layout, **FAST[name])
    straight.initialize(seed=4)
    rng = torch.Generator().manual_seed(9)
    for _ in range(2):
        straight.train_epoch(data, rng)
    resumed = cls(layout, **FAST[name])
    resumed.initialize(seed=4)
    rng2 = torch.Generator().manual_seed(9)
    resumed.train_epoch(data, rng2)
    checkpoint = resumed.training_state_dict()
    restored = cls(layout, **FAST[name])
    restored.load_training_state_dict(checkpoint)
    restored.train_epoch(data, rng2)
    np.testing.assert_array_equal(straight.sample(40, seed=1), restored.sample(40, seed=1))


def test_wrong_input_shape_and_state_are_input_errors():
    gen, X, _ = _fitted("vae", epochs=1)
    with pytest.raises(InputError, match="expected \\(rows, "):
        gen.fit(X[:, :-1], epochs=1)
    with pytest.raises(InputError, match="NaN"):
        gen.fit(np.full_like(X, np.nan), epochs=1)
    other = Layout((Span("x", 0, 2, "continuous"),))
    with pytest.raises(InputError, match="module 'decoder' does not fit"):
        get_generator("vae")(other).load_state_dict(gen.state_dict())
    with pytest.raises(InputError, match="gaussian"):
        GaussianGenerator(other).load_state_dict({"mean": torch.zeros(3)})


def test_gaussian_recovers_means_and_correlations():
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.7, -0.4], [0.7, 2.0, 0.1], [-0.4, 0.1, 0.5]])
    mean = rng.normal(size=3)
    X = rng.multivariate_normal(mean, cov, size=20_000)
    layout = Layout(tuple(Span(f"c{i}", i, 1, "continuous") for i in range(3)))
    gen = GaussianGenerator(layout, ridge=0.0).fit(X)
    S = gen.sample(20_000, seed=1)
    np.testing.assert_allclose(S.mean(axis=0), X.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(np.corrcoef(S.T), np.corrcoef(X.T), atol=0.03)


def test_gaussian_fit_stats_equals_sum_of_party_stats():
    X, layout, _ = encoded(300, "quantile")
    parts = [sufficient_stats(X[:100]), sufficient_stats(X[100:])]
    n, total, outer = (sum(p[i] for p in parts) for i in range(3))
    pooled = GaussianGenerator(layout).fit_stats(n, total, outer)
    local = GaussianGenerator(layout).fit(X)
    torch.testing.assert_close(pooled.cov, local.cov)
    with pytest.raises(InputError, match="expected"):
        GaussianGenerator(layout).fit_stats(n, total[:-1], outer)


def test_gaussian_keeps_category_frequencies():
    X, layout, _ = encoded(2000, "quantile")
    gen = GaussianGenerator(layout).fit(X)
    S = gen.sample(20_000, seed=0)
    for span in layout.spans:
        if span.kind == "onehot":
            real = X[:, span.start : span.stop].mean(axis=0)
            fake = S[:, span.start : span.stop].mean(axis=0)
            np.testing.assert_allclose(fake, real, atol=0.06)


def test_vae_learns_a_correlation_and_frequencies():
    """After a short training the decoded samples keep the a-b correlation and colour mix."""
    X, layout, encoder = encoded(3000)
    gen = get_generator("vae")(layout, batch_size=100).fit(X, epochs=40, seed=0)
    real = encoder.inverse_transform(X)
    fake = encoder.inverse_transform(gen.sample(3000, seed=0))
    assert real["a"].corr(real["b"]) > 0.6
    assert abs(fake["a"].corr(fake["b"]) - real["a"].corr(real["b"])) < 0.15
    shares = fake["colour"].value_counts(normalize=True)
    for colour, share in real["colour"].value_counts(normalize=True).items():
        assert abs(shares.get(colour, 0.0) - share) < 0.08
