"""Ring products by float64 limbs equal torch's int64 products bit for bit."""

from __future__ import annotations

import pytest
import torch

from smpc_synth.mpc.primitives import ring

EDGES = torch.tensor(
    [-(2**63), 2**63 - 1, -1, 0, 1, 2**21, -(2**21), 2**21 - 1, 2**43, -(2**44), 2**63 - 2**21]
)


def _ring_values(*size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randint(-(2**63), 2**63 - 1, size, generator=generator)
    flat = values.view(-1)
    flat[: len(EDGES)] = EDGES[: flat.numel()]
    return values


def test_limbs_recompose_every_value_and_stay_in_their_bounds():
    x = _ring_values(4000)
    low, middle, high = ring.limbs(x)
    for limb in (low, middle, high):  # float64 holds them exactly: they are whole
        assert torch.equal(limb, limb.round())
    assert low.abs().max() <= 2**21 and middle.abs().max() <= 2**21
    assert high.abs().max() <= 2**19
    recomposed = low.long() + (middle.long() << 22) + (high.long() << 44)
    assert torch.equal(recomposed, x)


@pytest.mark.parametrize(
    ("size0", "size1"),
    [
        ((500, 44), (44, 128)),  # a twin layer's forward product
        ((128, 500), (500, 128)),  # a weight gradient: the batch is the inner dimension
        ((7, 2500), (2500, 9)),  # inner dimension cut into three chunks
        ((3, 300, 40), (40, 20)),  # batched
        ((600, 300), (300,)),  # matrix-vector
        ((3000,), (3000, 50)),  # vector-matrix, chunked
        ((5, 4), (4, 3)),  # too small to split: torch's own loop
    ],
)
def test_matmul_equals_torch_int64(size0, size1):
    x, y = _ring_values(*size0, seed=1), _ring_values(*size1, seed=2)
    expected = torch.matmul(x, y)
    assert torch.equal(ring.limb_matmul(x, y), expected)
    assert torch.equal(ring.matmul(x, y), expected)  # whichever way this CPU prefers


def test_matmul_is_exact_at_the_worst_case_inner_dimension():
    # every limb at -2^21 makes each weight's partial sums as large as they get: 2^53
    worst = -(2**21) - (2**21 << 22)
    x = torch.full((130, ring.MAX_INNER), worst, dtype=torch.long)
    y = torch.full((ring.MAX_INNER, 130), worst, dtype=torch.long)
    x[0, 0] = y[0, 0] = worst + 1  # not all equal: a rounding would show somewhere
    assert torch.equal(ring.limb_matmul(x, y), torch.matmul(x, y))


def test_product_sends_only_matmul_through_limbs():
    x, y = _ring_values(300, 400, seed=3), _ring_values(300, 400, seed=4)
    assert torch.equal(ring.product("mul", x, y), x * y)
    assert torch.equal(ring.product("matmul", x, y.t()), torch.matmul(x, y.t()))
