"""CrypTen's API in an smpc-synth session (our communicator, protocols and dealer) gives
what CrypTen gives: cases its own test suite found (``scripts/crypten_suite.py``)."""

from __future__ import annotations

import pytest
import torch
from mpc_harness import (
    PARTY_NAMES,
    assert_all_ok,
    crypten_api_program,
    large_inputs,
    large_requests_program,
    run_mpc,
)


def test_crypten_api_calls_match_cryptens_over_grpc(tmp_path):
    outcomes = run_mpc(tmp_path, 2, crypten_api_program)
    assert_all_ok(outcomes)
    results = [outcomes[name].result["result"] for name in PARTY_NAMES[:2]]
    torch.manual_seed(100)  # party 0's layer: the one broadcast
    layer = torch.nn.Linear(3, 2)
    for result in results:
        # broadcast into a Parameter (CrypTen writes .data; copy_ would refuse a leaf)
        torch.testing.assert_close(torch.tensor(result["weight"]), layer.weight.detach())
        torch.testing.assert_close(torch.tensor(result["bias"]), layer.bias.detach())
        # all_gather's slot for this party is a copy of its input, not the input itself
        assert result["all_gather"] == [[0, 0], [1, 1]]
        # relu's gradient is 0 at exactly 0, as in CrypTen and torch
        assert result["relu_grad"] == [0.0, 0.0, 0.0, 1.0]
        assert result["module_relu_grad"] == [[0.0, 0.0, 1.0]]
        # crypten.cryptensor([]) is an empty encrypted tensor, not a shell
        assert result["empty"] == [[0], []]
    assert results[0]["gather"] == [[0, 0], [1, 1]]
    assert results[1]["irecv"] == [0.0, 1.0, 2.0, 3.0]  # received into a Parameter


LIMIT = 1024  # the dealer's MAX_TUPLE_ELEMENTS, lowered so that small tensors exceed it


def test_requests_over_the_dealers_limit_are_split_not_refused(tmp_path):
    """Every product, conversion and comparison larger than one dealer request may be is
    asked for in pieces: the results are right (the dealer would refuse them whole)."""
    outcomes = run_mpc(
        tmp_path, 2, large_requests_program, timeout=300.0, dealer_limit=LIMIT, limit=LIMIT
    )
    assert_all_ok(outcomes)
    result = outcomes[PARTY_NAMES[0]].result["result"]
    assert outcomes[PARTY_NAMES[1]].result["result"] == result
    t = large_inputs(LIMIT)
    x, y = t["x"], t["y"]
    assert x.numel() > LIMIT and (t["a"] @ t["b"]).numel() > LIMIT
    expected = {
        "mul": (x * y, 1e-3),
        "broadcast_mul": (x * t["column"], 1e-3),
        "square": (x * x, 1e-3),
        "matmul": (t["a"] @ t["b"], 1e-3),
        "conv2d": (torch.nn.functional.conv2d(t["image"], t["kernel"], padding=1), 5e-3),
        "relu": (torch.relu(x), 1e-4),
        "lt_zero": ((x < 0).float(), 0),
        "binary": ((x < 0).float(), 0),
        "relu_grad": ((x > 0).float(), 0),
    }
    assert (x == 0).any()  # relu's gradient at 0 is checked too
    for name, (want, atol) in expected.items():
        got = torch.tensor(result[name], dtype=want.dtype).reshape(want.shape)
        torch.testing.assert_close(
            got, want, atol=atol, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize(
    ("op", "x", "y", "kwargs"),
    [
        ("mul", (5, 3, 4), (3, 1), {}),
        ("mul", (1, 7), (6, 1), {}),
        ("matmul", (6, 5), (5, 9), {}),
        ("matmul", (4, 6, 5), (5, 3), {}),
        ("matmul", (5,), (3, 5, 7), {}),
        ("matmul", (3, 6, 5), (5,), {}),
        ("conv2d", (7, 2, 5, 5), (3, 2, 3, 3), {"padding": 1}),
        ("conv_transpose1d", (6, 2, 5), (2, 3, 3), {"stride": 2}),
    ],
)
@pytest.mark.usefixtures("crypten_patches")
def test_products_split_into_pieces_equal_the_whole(op, x, y, kwargs):
    """``beaver._in_pieces`` cuts a product along one dimension of its result into products
    of the operands' matching slices; put together they are the product (on plain int64
    tensors standing in for shares, with a product function that refuses anything over
    the limit)."""
    from smpc_synth.crypten_backend.compat import import_crypten
    from smpc_synth.mpc.primitives import beaver

    crypten = import_crypten()
    shares = crypten.mpc.primitives.ArithmeticSharedTensor.from_shares
    g = torch.Generator().manual_seed(3)
    a = torch.randint(-50, 50, x, generator=g)
    b = torch.randint(-50, 50, y, generator=g)
    whole = getattr(torch, op)(a, b, **kwargs)
    limit = max(whole.numel(), a.numel(), b.numel()) // 3
    calls = []

    def protocol(op, x, y, **kwargs):
        out = getattr(torch, op)(x.share, y.share, **kwargs)
        if max(out.numel(), x.share.numel(), y.share.numel()) > limit:
            return beaver._in_pieces(protocol, op, x, y, out.size(), limit, kwargs)
        calls.append(out.numel())
        return shares(out, precision=0)

    got = protocol(op, shares(a, precision=0), shares(b, precision=0), **kwargs)
    assert torch.equal(got.share, whole)
    assert len(calls) > 1 and max(calls) <= limit
