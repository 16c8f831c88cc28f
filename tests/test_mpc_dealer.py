"""The dealer serves only what CrypTen's protocols ask for, and its tuples are correct."""

from __future__ import annotations

import pytest
import torch

from smpc_synth.mpc import dealer
from smpc_synth.mpc.compat import import_crypten

crypten = import_crypten()
from crypten.common.rng import generate_random_ring_element  # noqa: E402
from crypten.common.util import count_wraps  # noqa: E402

SEEDS = (11, -22, 33)


def _party_generators(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in SEEDS[:n]]


def _ring(generator: torch.Generator, size) -> torch.Tensor:
    return generate_random_ring_element(torch.Size(size), generator=generator)


@pytest.mark.parametrize("n_parties", [2, 3])
@pytest.mark.parametrize(
    ("op", "size0", "size1", "kwargs"),
    [
        ("mul", (3, 4), (3, 4), {}),
        ("matmul", (3, 4), (4, 2), {}),
        ("conv2d", (1, 1, 5, 5), (2, 1, 3, 3), {"padding": 1, "stride": 2}),
    ],
)
def test_additive_triple_reconstructs(n_parties, op, size0, size1, kwargs):
    maker = dealer._TupleMaker(SEEDS[:n_parties])
    request = {"f": "additive", "args": [torch.Size(size0), torch.Size(size1), op]}
    c0 = dealer._serve_one(maker, {**request, "kwargs": kwargs})
    gens = _party_generators(n_parties)
    a = sum(_ring(g, size0) for g in gens)
    b = sum(_ring(g, size1) for g in gens)
    c = c0 + sum(_ring(g, c0.shape) for g in gens[1:])
    assert torch.equal(c, getattr(torch, op)(a, b, **kwargs))  # int64: exact mod 2^64


def test_wraps_reconstruct():
    maker = dealer._TupleMaker(SEEDS[:2])
    theta0 = dealer._serve_one(maker, {"f": "wraps", "args": [torch.Size([50])]})
    gens = _party_generators(2)
    shares = [_ring(g, (50,)) for g in gens]
    assert torch.equal(theta0 + _ring(gens[1], (50,)), count_wraps(shares))


@pytest.mark.parametrize(
    "request_",
    [
        {"f": "additive", "args": [torch.Size([2]), torch.Size([2]), "__import__"]},
        {"f": "additive", "args": [torch.Size([2]), torch.Size([2]), "mul"], "kwargs": {"out": 1}},
        {"f": "additive", "args": [torch.Size([1 << 14, 1 << 13]), torch.Size([1]), "mul"]},
        {"f": "additive", "args": [[2], torch.Size([2]), "mul"]},
        {"f": "square", "args": [torch.Size([-1])]},
        {"f": "generators", "args": []},
        {"f": "binary", "args": [torch.Size([2]), torch.Size([2])], "kwargs": {"stride": 1}},
        ["not", "a", "request"],
    ],
)
def test_bad_requests_are_refused(request_):
    maker = dealer._TupleMaker(SEEDS[:2])
    with pytest.raises((ValueError, TypeError, RuntimeError)):
        dealer._serve_one(maker, request_)


def test_fresh_seeds_differ_and_debug_seeds_repeat():
    assert dealer._fresh_seed() != dealer._fresh_seed()
    assert dealer.derive_seed(1, "dealer", "alice") == dealer.derive_seed(1, "dealer", "alice")
    assert dealer.derive_seed(1, "dealer", "alice") != dealer.derive_seed(1, "dealer", "bob")
