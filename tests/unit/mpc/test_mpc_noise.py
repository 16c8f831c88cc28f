"""DP noise: exact samplers, and shares of noise that the dealer deals and no party knows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mpc_harness import DEALER, PARTY_NAMES, SEED, assert_all_ok, run_mpc

from smpc_synth.dp import sampling
from smpc_synth.mpc.dealer import server
from smpc_synth.mpc.primitives import prg
from smpc_synth.net import objects

KEYS = tuple(prg.debug_key(seed) for seed in (5, 6, 7))
NOISE_KEY = prg.debug_key(99, "noise")


def _exact_pmf(sigma2: float, support: np.ndarray) -> np.ndarray:
    reach = int(12 * math.sqrt(sigma2)) + 12
    grid = np.arange(-reach, reach + 1)
    norm = np.exp(-(grid.astype(float) ** 2) / (2 * sigma2)).sum()
    return np.exp(-(support.astype(float) ** 2) / (2 * sigma2)) / norm


@pytest.mark.parametrize("sigma", [0.6, 2.5, 11.3])
def test_discrete_gaussian_matches_its_pmf(sigma):
    """The empirical distribution of 30,000 draws is within sampling error of N_Z's pmf."""
    draws = sampling.draw_noise(NOISE_KEY, "dgauss", 1, 30_000, [sigma * sigma])
    values, counts = np.unique(draws, return_counts=True)
    support = np.arange(values.min() - 2, values.max() + 3)
    empirical = np.zeros(len(support))
    empirical[values - support[0]] = counts / counts.sum()
    tv = 0.5 * np.abs(empirical - _exact_pmf(sigma * sigma, support)).sum()
    # the expected TV of an empirical pmf over ~6 sigma cells is ~sqrt(cells / n) / 2
    assert tv < 0.6 * math.sqrt(len(support) / 30_000) + 0.005, tv
    assert abs(draws.mean()) < 5 * sigma / math.sqrt(30_000)


@settings(max_examples=25, deadline=None)
@given(
    sigma2=st.floats(0.01, 1e12, allow_nan=False),
    tag=st.integers(0, 2**40),
    count=st.integers(1, 40),
)
def test_noise_is_a_function_of_key_tag_and_parameters(sigma2, tag, count):
    one = sampling.draw_noise(NOISE_KEY, "dgauss", tag, count, [sigma2])
    assert np.array_equal(one, sampling.draw_noise(NOISE_KEY, "dgauss", tag, count, [sigma2]))
    other = sampling.draw_noise(NOISE_KEY, "dgauss", tag + 1, 64, [max(sigma2, 100.0)])
    assert not np.array_equal(other, sampling.draw_noise(NOISE_KEY, "dgauss", tag, 64, [100.0]))
    assert np.all(np.abs(one) <= 40 * math.sqrt(sigma2) + 40)


def test_discrete_gaussian_at_dp_sgd_scale_is_gaussian_down_to_its_low_bits():
    """At DP-SGD's scale (sigma ~2^48 grid steps, so numbers beyond int64 inside the
    sampler) the draws pass a KS test against N(0, sigma^2) and their low bits are uniform."""
    from scipy import stats

    sigma = 1.179 * 2.0**48
    draws = sampling.draw_noise(NOISE_KEY, "dgauss", 2, 20_000, [sigma * sigma])
    assert stats.kstest(draws / sigma, "norm").pvalue > 1e-4
    low = np.bincount(draws & 15, minlength=16)
    assert stats.chisquare(low).pvalue > 1e-4


def _within(hits: np.ndarray, p: float) -> bool:
    n = len(hits)
    return abs(hits.mean() - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12


@settings(max_examples=15, deadline=None)
@given(
    den=st.integers(2, 2**200),
    fraction=st.floats(0.0, 1.0),
    bits=st.integers(1, 62),
)
def test_exact_bernoulli_trials_have_their_probability(den, fraction, bits):
    """Bernoulli(a/b) from a uniform's digits, few at a time (ties, which need the next
    digits, are then common) or 62 at a time, for numbers far beyond int64."""
    num = min(den - 1, int(fraction * den))
    rng = sampling.RandomSource(NOISE_KEY, repr((num, den, bits)).encode())
    n = 4000
    nums, dens = np.full(n, num, dtype=object), np.full(n, den, dtype=object)
    assert _within(sampling._bernoulli_below(nums, dens, rng, bits), num / den)


@settings(max_examples=15, deadline=None)
@given(den=st.integers(1, 2**62 - 1), fraction=st.floats(0.0, 1.0), big=st.integers(0, 3))
def test_bernoulli_exp_trials_have_their_probability(den, fraction, big):
    """Bernoulli(exp(-a/b)): in int64 (with Python's integers once b K outgrows int64, which a
    b near 2^62 forces at once), and for a/b above 1 with numbers beyond int64."""
    num = int(fraction * den)
    rng = sampling.RandomSource(NOISE_KEY, repr((num, den, big)).encode())
    n = 4000
    small = sampling._bernoulli_exp_small(np.full(n, num, dtype=np.int64), den, rng)
    assert _within(small, math.exp(-num / den))
    scale = 2**100 + 1
    nums = np.full(n, (num + big * den) * scale, dtype=object)
    assert _within(sampling._bernoulli_exp_big(nums, den * scale, rng), math.exp(-num / den - big))


def test_gumbel_argmax_is_the_exponential_mechanism():
    """argmax(s_i + round(scale 2^bits G_i)) picks i with probability ∝ exp(s_i / scale)."""
    scale, bits = 2.0, 20
    scores = np.array([0.0, 1.0, 3.0, 3.0, -2.0])
    trials = 4000
    noise = sampling.draw_noise(NOISE_KEY, "gumbel", 3, trials * len(scores), [scale, bits])
    values = (scores * 2**bits).astype(np.int64) + noise.reshape(trials, len(scores))
    picked = np.bincount(values.argmax(axis=1), minlength=len(scores)) / trials
    expected = np.exp(scores / scale) / np.exp(scores / scale).sum()
    assert np.abs(picked - expected).max() < 4 * math.sqrt(0.25 / trials)
    assert sampling.gumbel_shift(scale, bits) < 2.0**-bits


def test_bad_noise_parameters_are_refused():
    for kind, params in [
        ("dgauss", [0.0]),
        ("dgauss", [float("nan")]),
        ("dgauss", [-1.0]),
        ("dgauss", [2.0**121]),
        ("gumbel", [1.0]),
        ("gumbel", [1.0, 2.5]),
        ("gumbel", [2.0**40, 20]),
        ("laplace", [1.0]),
    ]:
        with pytest.raises(ValueError):
            sampling.draw_noise(NOISE_KEY, kind, 1, 4, params)
    with pytest.raises(ValueError):
        sampling.draw_noise(NOISE_KEY, "dgauss", -1, 4, [1.0])
    with pytest.raises(ValueError):
        sampling.draw_noise(NOISE_KEY, "dgauss", 1, sampling.MAX_NOISE_ELEMENTS + 1, [1.0])


@pytest.mark.parametrize("n_parties", [2, 3])
def test_dealt_noise_reconstructs_and_other_shares_are_the_parties_own_streams(n_parties):
    maker = server._TupleMaker(KEYS[:n_parties], NOISE_KEY)
    size = torch.Size([3, 7])
    request = {"f": "noise", "args": ["dgauss", size, 12, 30.25], "kwargs": {}}
    nonce = prg.request_nonce(4, objects.encode(request))
    share0 = server._serve_at(maker, nonce, request, 4)
    others = [prg.Stream(key, nonce).ring(size) for key in KEYS[1:n_parties]]
    total = share0 + sum(others)
    expected = sampling.draw_noise(NOISE_KEY, "dgauss", 12, 21, [30.25]).reshape(3, 7)
    assert torch.equal(total, torch.from_numpy(expected))
    assert not torch.equal(share0, total)  # party 0's share is masked by the others'


def test_a_noise_tag_is_never_served_twice_and_bad_requests_are_refused():
    maker = server._TupleMaker(KEYS[:2], NOISE_KEY)
    request = {"f": "noise", "args": ["dgauss", torch.Size([4]), 3, 2.0]}
    server._serve_one(maker, request)
    with pytest.raises(ValueError, match="used before"):
        server._serve_one(maker, request)
    for args in (
        ["dgauss", torch.Size([4]), -1, 2.0],
        ["dgauss", torch.Size([4]), 4.0, 2.0],
        ["dgauss", [4], 5, 2.0],
        ["dgauss", torch.Size([sampling.MAX_NOISE_ELEMENTS + 1]), 6, 2.0],
        ["dgauss", torch.Size([4]), 7, 0.0],
        ["gumbel", torch.Size([4]), 8, 1.0],
        ["os.system", torch.Size([4]), 9, 1.0],
    ):
        with pytest.raises((ValueError, TypeError)):
            server._serve_one(maker, {"f": "noise", "args": args})


def test_the_dealer_never_guesses_noise_ahead():
    """Even where the dealer has learned that noise follows the current context, it does not
    draw it ahead (each draw has its own tag; a guess would draw noise nobody asked for),
    while a learned square is guessed."""
    lookahead = server._Lookahead(server._TupleMaker(KEYS[:2], NOISE_KEY), depth=2)
    square = {"f": "square", "args": [torch.Size([5])], "kwargs": {}}
    noise = {"f": "noise", "args": ["dgauss", torch.Size([5]), 0, 4.0], "kwargs": {}}
    lookahead.serve(square)
    lookahead.serve(noise)
    square_id, noise_id = 0, 1
    context = tuple(lookahead._recent)
    lookahead._successor[context] = noise_id
    assert list(lookahead.work_ahead()) == []
    lookahead._successor[context] = square_id
    assert [n for n, _, _ in lookahead.work_ahead()][:1] == [lookahead.number]


def noise_program(rank: int, sigma: float, tag: int, size: int) -> dict:
    from smpc_synth.mpc.dealer import noise

    shared = noise.discrete_gaussian((size,), sigma, tag=tag, precision=16)
    mine = shared.share.clone()
    opened = shared.get_plain_text().double().tolist()
    return {"opened": opened, "own_share": mine.tolist()}


def test_parties_open_exactly_the_noise_the_dealer_drew(tmp_path):
    """Over gRPC with 3 parties: the opened noise is the dealer's draw for that tag (debug
    seed), on CrypTen's 16-bit grid, and no party's own share equals it."""
    sigma, tag, size = 3.5, 41, 64
    outcomes = run_mpc(tmp_path, 3, noise_program, seed=SEED, sigma=sigma, tag=tag, size=size)
    assert_all_ok(outcomes)
    ring_sigma2 = (sigma * 2.0**16) ** 2
    drawn = sampling.draw_noise(server.noise_key(SEED), "dgauss", tag, size, [ring_sigma2])
    expected = (drawn / 2.0**16).tolist()
    for name in PARTY_NAMES:
        result = outcomes[name].result["result"]
        assert result["opened"] == pytest.approx(expected, abs=1e-9)
        assert result["own_share"] != drawn.tolist()
    assert outcomes[DEALER].result["requests"] >= 1
