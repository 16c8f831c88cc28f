"""CrypTen over our gRPC mesh with the dealer: results match plaintext and gloo, faults end it."""

from __future__ import annotations

import pytest
import torch
from mpc_harness import (
    DEALER,
    PARTY_NAMES,
    SEED,
    SENT_OBJECT,
    activation_width_program,
    arithmetic_program,
    assert_all_ok,
    branching_loop_program,
    comparison_rounds_program,
    dealer_cpu_program,
    loop_program,
    mlp_twin_program,
    network_backward_program,
    op_inputs,
    ops_program,
    plaintext_ops,
    products_program,
    rekey_program,
    run_mpc,
    small_network,
    spawn_event,
    start_mpc,
)

from smpc_synth.errors import InputError
from smpc_synth.models.nets import mlp
from smpc_synth.mpc.dealer.protocol import FRAME_WORDS
from smpc_synth.mpc.primitives import compare
from smpc_synth.mpc.session import start_crypten

SURVIVOR_DEADLINE_S = 30.0

TOLERANCE = {  # (absolute, relative): CrypTen's 16-bit fixed point and its approximations
    "src_only": (1e-4, 0),
    "add": (1e-4, 0),
    "mul": (1e-3, 1e-3),
    "matmul": (1e-3, 1e-3),
    "conv2d": (1e-3, 1e-3),
    "relu": (1e-4, 0),
    "sigmoid": (5e-3, 0),  # CrypTen's reciprocal approximation, plus 3-party truncation
    "exp": (1e-2, 2e-2),
    "reciprocal": (1e-3, 1e-2),
    "sum": (1e-3, 0),
    "gt": (0, 0),
    "lt_zero": (0, 0),
}
GRAD_TOLERANCE = (2e-3, 2e-2)


def _check_against_plaintext(result: dict[str, list]) -> None:
    result = dict(result)
    objects = result.pop("objects")
    assert objects == [list(SENT_OBJECT["size"]), SENT_OBJECT["values"], SENT_OBJECT["tensor"]]
    expected = plaintext_ops()
    assert set(result) == set(expected)
    for name, value in expected.items():
        atol, rtol = TOLERANCE.get(name, GRAD_TOLERANCE)
        got = torch.tensor(result[name], dtype=value.dtype).reshape(value.shape)
        torch.testing.assert_close(
            got, value, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("n_parties", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_ops_over_grpc_match_plaintext_and_gloo(tmp_path, n_parties):
    grpc = run_mpc(tmp_path / "grpc", n_parties, ops_program, seed=SEED)
    gloo = run_mpc(tmp_path / "gloo", n_parties, ops_program, transport="gloo", seed=SEED)
    assert_all_ok(grpc)
    assert_all_ok(gloo)
    parties = PARTY_NAMES[:n_parties]
    first = grpc[parties[0]].result["result"]
    _check_against_plaintext(first)
    for name in parties:
        assert grpc[name].result["communicator"] == "ChannelCommunicator"
        assert gloo[name].result["communicator"] == "GlooCommunicator"  # no pickled objects
        assert grpc[name].result["result"] == first, f"{name} revealed something else"
        assert gloo[name].result["result"] == first, f"gloo differs from grpc at {name}"
    assert grpc[DEALER].result["requests"] > 0
    assert grpc[DEALER].result == gloo[DEALER].result
    _check_traffic({name: grpc[name].result["traffic"] for name in parties})


def _check_traffic(traffic: dict[str, dict]) -> None:
    """What each party recorded adds up, and only party 0 gets the dealer's corrections."""
    names = list(traffic)
    sent = sum(t["bytes_sent"] for t in traffic.values())
    assert sent == sum(t["bytes_received"] for t in traffic.values()) > 0
    for t in traffic.values():
        assert t["rounds"] > 0 and t["messages_sent"] > 0
    if len(names) == 2:
        assert traffic[names[0]]["bytes_sent"] == traffic[names[1]]["bytes_received"]
    dealer_bytes = [t["by_phase"]["default"]["dealer_bytes_received"] for t in traffic.values()]
    assert dealer_bytes[0] > 8 * 64  # corrections
    assert all(0 < b < 64 for b in dealer_bytes[1:])  # a seed only


@pytest.mark.parametrize(
    ("victim", "n_parties"),
    [
        (DEALER, 2),
        pytest.param("bob", 2, marks=pytest.mark.slow),
        pytest.param("alice", 3, marks=pytest.mark.slow),
    ],
)
def test_killed_member_is_named_by_every_survivor(tmp_path, victim, n_parties):
    busy = spawn_event()
    session = start_mpc(tmp_path, n_parties, loop_program, iterations=100_000, busy=busy)
    assert busy.wait(120), "the parties never got going"
    session.kill(victim)
    outcomes = session.wait(SURVIVOR_DEADLINE_S)  # a survivor still running then: "Hung"
    survivors = [n for n in outcomes if n != victim]
    for name in survivors:
        outcome = outcomes[name]
        assert not outcome.ok and outcome.error_type == "PeerError", (name, outcome)
        assert outcome.peer == victim, (name, outcome.error)
        assert outcome.exitcode == 0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"provider": "tfp"}, r"mpc\.provider"),
        ({"provider": "beaver"}, r"mpc\.provider"),
        ({"transport": "mpi"}, r"mpc\.transport"),
        ({"transport": "gloo", "rendezvous": None}, r"mpc\.transport"),
        ({"insecure_debug_seed": 1}, r"mpc\.insecure_dev"),
    ],
)
def test_bad_session_arguments_are_refused_before_any_traffic(kwargs, key):
    arguments = {"provider": "dealer", "transport": "gloo", "rendezvous": "tcp://127.0.0.1:1"}
    with pytest.raises(InputError, match=key):
        start_crypten(None, ("alice", "bob"), 0, **{**arguments, **kwargs})


def test_stock_protocols_switch_to_cryptens_protocols_and_back(tmp_path):
    outcomes = run_mpc(tmp_path, 2, comparison_rounds_program, seed=SEED)
    assert_all_ok(outcomes)
    result = outcomes[PARTY_NAMES[0]].result["result"]
    x = torch.linspace(-3, 3, 256)
    expected_matmul = x @ torch.linspace(-1, 1, 256 * 3).view(256, 3)
    for name in ("ours", "stock", "after"):
        got = torch.tensor(result[name]["value"])
        torch.testing.assert_close(got, torch.relu(x), atol=1e-4, rtol=0, msg=name)
        got = torch.tensor(result[name]["matmul"])
        torch.testing.assert_close(got, expected_matmul, atol=1e-2, rtol=0, msg=name)
    # ours: 4 rounds (the product is free) + the opening; CrypTen's: 8 + 1 + 1
    assert result["ours"]["rounds"] == result["after"]["rounds"] == 5
    assert result["stock"]["rounds"] == 10
    assert (
        result["ours"]["beaver"] == result["after"]["beaver"] == "smpc_synth.mpc.primitives.beaver"
    )
    assert result["stock"]["beaver"] == "crypten.mpc.primitives.beaver"


def test_copy_free_arithmetic_matches_cryptens_and_leaves_inputs_alone(tmp_path):
    outcomes = run_mpc(tmp_path, 2, arithmetic_program, seed=SEED)
    assert_all_ok(outcomes)
    for party in PARTY_NAMES[:2]:
        result = outcomes[party].result["result"]
        assert result["untouched"], party
        ours, stock = result["ours"], result["stock"]
        deterministic = ("add", "sub", "add_public", "sub_tensor", "mul_public", "mul_tensor")
        for name in (*deterministic, "mul_int", "matmul_public"):
            assert ours[name] == stock[name], (party, name)
        for name in ("mul", "square", "matmul"):  # one unit of fixed point: 2^-16
            torch.testing.assert_close(
                torch.tensor(ours[name]), torch.tensor(stock[name]), atol=2**-15, rtol=0
            )


def test_activations_compare_32_bits_wide_and_cryptens_relu_64(tmp_path):
    """The twin's LeakyReLU asks the dealer for 32-bit comparison material (its values lie
    far inside that range); CrypTen's relu, whose callers assume nothing, for 64 bits."""
    outcomes = run_mpc(tmp_path, 2, activation_width_program, seed=SEED)
    assert_all_ok(outcomes)
    result = outcomes[PARTY_NAMES[0]].result["result"]
    x = torch.linspace(-300, 300, 1000)
    upstream = torch.linspace(-1, 1, 1000)
    out, grad = (torch.tensor(v) for v in result["twin"])
    # the slope's fixed-point encoding is off by ~1e-5 of the value
    torch.testing.assert_close(out, torch.nn.functional.leaky_relu(x, 0.2), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(grad, torch.where(x > 0, 1.0, 0.2) * upstream, atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.tensor(result["relu"]), torch.relu(x), atol=1e-3, rtol=0)
    narrow = compare.Layout(1000, later=1, width=compare.ACTIVATION_BITS, times_x=True)
    full = compare.Layout(1000, later=0, width=64, times_x=True)
    frame = 8 * FRAME_WORDS  # each share comes framed by its request's number
    assert result["dealer_bytes"] == {
        "twin": 8 * narrow.correlated_size + frame,
        "crypten": 8 * full.correlated_size + frame,
    }


def test_twin_layers_reuse_their_forward_masks_in_the_backward_pass(tmp_path):
    """Over gRPC with the dealer, the MLP twin's gradients match torch, and its backward
    pass opens only each layer's output gradient (and the LeakyReLUs' products): the
    dealer kept the forward pass's masks of x and W."""
    outcomes = run_mpc(tmp_path, 2, mlp_twin_program, seed=SEED)
    assert_all_ok(outcomes)
    result = outcomes[PARTY_NAMES[0]].result["result"]
    torch.manual_seed(0)
    net = mlp(6, (16, 8), 3, "leaky_relu")
    x, upstream = torch.randn(32, 6, requires_grad=True), torch.randn(32, 3) * 0.1
    out = net(x)
    (out * upstream).sum().backward()
    torch.testing.assert_close(torch.tensor(result["out"]), out.detach(), atol=5e-3, rtol=0)
    torch.testing.assert_close(torch.tensor(result["d_input"]), x.grad, atol=5e-3, rtol=0.02)
    for name, got in result["grads"].items():
        expected = dict(net.named_parameters())[name.split(".", 1)[1]].grad
        torch.testing.assert_close(torch.tensor(got), expected, atol=5e-3, rtol=0.02, msg=name)
    # one opening of each layer's output gradient (32 x 3, 32 x 8, 32 x 16) and one of the
    # two LeakyReLUs' inputs to their kept products (32 x 8, 32 x 16), 8 bytes a word
    opened = 32 * (3 + 8 + 16) + 32 * (8 + 16)
    assert result["backward_bytes"] == 8 * opened


def test_rekeying_a_debug_seeded_session_repeats_its_randomness(tmp_path):
    """``session.rekey`` restarts CrypTen's generators and the dealer's streams from the
    debug seed: the same labels give the same shares whatever was drawn before, other
    labels give others; the values are right either way."""
    outcomes = run_mpc(tmp_path, 2, rekey_program, seed=SEED)
    assert_all_ok(outcomes)
    x = torch.linspace(-3, 3, 64).view(8, 8)
    y = torch.linspace(-1, 2, 64).view(8, 8)
    expected = [x, x * y, x @ y, torch.relu(x - 0.5)]
    for party in PARTY_NAMES[:2]:
        runs = outcomes[party].result["result"]
        assert all(run["rekeyed"] for run in runs.values())
        assert runs["first"]["shares"] == runs["again"]["shares"], party
        assert all(
            a != b for a, b in zip(runs["first"]["shares"], runs["other"]["shares"], strict=True)
        ), party
        for run in runs.values():
            for got, want in zip(run["values"], expected, strict=True):
                torch.testing.assert_close(torch.tensor(got), want, atol=2e-2, rtol=1e-3)


def test_rekeying_without_a_debug_seed_does_nothing(tmp_path):
    outcomes = run_mpc(tmp_path, 2, rekey_program)
    assert_all_ok(outcomes)
    for party in PARTY_NAMES[:2]:
        runs = outcomes[party].result["result"]
        assert not any(run["rekeyed"] for run in runs.values())
        assert runs["first"]["shares"] != runs["again"]["shares"], party


@pytest.mark.slow  # a minute or more of MPC sessions
def test_party_zero_reads_the_dealers_cpu_clock_between_tuples(tmp_path):
    """Benchmarks charge the dealer's CPU time to each op; the query must not disturb the
    tuple stream, and only party 0 (the one the dealer answers) may ask."""
    outcomes = run_mpc(tmp_path, 2, dealer_cpu_program, seed=SEED)
    assert_all_ok(outcomes)
    first = outcomes[PARTY_NAMES[0]].result["result"]
    # a 256x256 triple: the dealer draws and multiplies 2^16-element tensors in between
    assert first["after"] > first["before"] > 0
    expected = torch.linspace(-1, 1, 256 * 256).view(256, 256)
    torch.testing.assert_close(torch.tensor(first["product"]), expected, atol=1e-3, rtol=0)
    assert "only party 0" in outcomes[PARTY_NAMES[1]].result["result"]["refused"]


@pytest.mark.slow  # a minute or more of MPC sessions
def test_independent_products_share_one_round_and_match_one_at_a_time(tmp_path):
    """Same seed, same triples: the batched products' shares are those of the products one
    at a time, bit for bit, in one round instead of four."""
    runs = {}
    for batched in (False, True):
        outcomes = run_mpc(tmp_path / str(batched), 2, products_program, seed=SEED, batched=batched)
        assert_all_ok(outcomes)
        runs[batched] = {p: outcomes[p].result["result"] for p in PARTY_NAMES[:2]}
    for party in PARTY_NAMES[:2]:
        assert runs[True][party]["shares"] == runs[False][party]["shares"], party
    assert runs[False][PARTY_NAMES[0]]["rounds"] == 4
    assert runs[True][PARTY_NAMES[0]]["rounds"] == 1
    x = torch.linspace(-3, 3, 64).view(8, 8)
    y = torch.linspace(-1, 2, 64).view(8, 8)
    w = torch.linspace(-2, 2, 32).view(8, 4)
    expected = [x * y, x @ w, y * y, x * (x > 0)]
    for got, want in zip(runs[True][PARTY_NAMES[0]]["values"], expected, strict=True):
        torch.testing.assert_close(torch.tensor(got), want, atol=1e-3, rtol=1e-3)


@pytest.mark.slow  # a minute or more of MPC sessions
def test_network_backward_skips_unneeded_products_and_batches_the_rest(tmp_path):
    """A from_pytorch network (Gemm, ReLU, Gemm) and MSE: each layer's input and weight
    gradients in one round, none for the data, and no product for the gradient of Gemm's
    public alpha and beta (CrypTen computes all three, and drops them)."""
    outcomes = run_mpc(tmp_path, 2, network_backward_program, seed=SEED)
    assert_all_ok(outcomes)
    result = outcomes[PARTY_NAMES[0]].result["result"]
    # ours: MSE's square 1, Gemm 1, ReLU 1, Gemm 1 (weights only)
    # CrypTen's: MSE 1, Gemm 2 + 2 (alpha, beta), ReLU 1, Gemm 2 + 2
    assert result["ours"]["rounds"] == 4
    assert result["stock"]["rounds"] == 10
    t = op_inputs()
    model = small_network()
    torch.nn.functional.mse_loss(model(t["x"]), t["target"]).backward()
    for name in ("ours", "stock"):
        for got, param in zip(result[name]["grads"], model.parameters(), strict=True):
            torch.testing.assert_close(torch.tensor(got), param.grad, atol=2e-3, rtol=2e-2)


@pytest.mark.slow  # a minute or more of MPC sessions
def test_dealer_working_ahead_changes_no_share(tmp_path):
    """The dealer computes the tuples it expects before party 0 asks, and rewinds its
    streams where the loop branches: every share is what it is without looking ahead."""
    runs = {
        depth: run_mpc(
            tmp_path / str(depth),
            2,
            branching_loop_program,
            seed=SEED,
            lookahead=depth,
            iterations=24,
        )
        for depth in (0, 2)
    }
    for outcomes in runs.values():
        assert_all_ok(outcomes)
    for party in PARTY_NAMES[:2]:
        assert runs[2][party].result["result"] == runs[0][party].result["result"], party
    plain, ahead = runs[0][DEALER].result, runs[2][DEALER].result
    assert plain["requests"] == ahead["requests"]
    assert plain["computed_ahead"] == 0
    assert ahead["computed_ahead"] > plain["requests"] // 3
    assert ahead["guessed_wrong"] >= 1  # the branch
