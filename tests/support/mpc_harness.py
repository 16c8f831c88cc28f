"""Shared helpers for the MPC integration tests (no tests here).

Members run as spawned processes over the real gRPC PeerMesh with TLS
(:mod:`smpc_synth.runtime.local`); the functions below are what they run.
"""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from smpc_synth.config import NetworkConfig
from smpc_synth.net.addresses import free_ports
from smpc_synth.runtime.checkpoints import MemoryCheckpoints
from smpc_synth.runtime.local import MemberOutcome, launch

PARTY_NAMES = ("alice", "bob", "carol")
DEALER = "dealer"
NETWORK = NetworkConfig(
    heartbeat_interval_s=0.5, peer_timeout_s=10.0, connect_timeout_s=30.0, call_deadline_s=10.0
)
RECV_TIMEOUT_S = 20.0
# long sessions on a busy machine: a member may go without CPU for many seconds
PATIENT_NETWORK = NetworkConfig(
    heartbeat_interval_s=1.0,
    peer_timeout_s=600.0,
    progress_timeout_s=600.0,
    connect_timeout_s=300.0,
    call_deadline_s=60.0,
)
SEED = 20240611


# --- what the members run ---------------------------------------------------------------------


def party_member(
    mesh,
    parties: tuple[str, ...],
    program,
    program_kwargs: dict[str, Any],
    transport: str,
    provider: str,
    seed: int | None,
    rendezvous: str | None,
    recv_timeout: float = RECV_TIMEOUT_S,
    allow_insecure: bool = False,
) -> dict[str, Any]:
    from smpc_synth.mpc.session import crypten, crypten_session, traffic

    rank = parties.index(mesh.me)
    with crypten_session(
        mesh,
        parties,
        rank,
        provider,
        transport,
        insecure_dev=seed is not None or provider == "tfp",
        timeout=recv_timeout,
        rendezvous=rendezvous,
        insecure_debug_seed=seed,
        allow_insecure=allow_insecure,
    ):
        result = program(rank=rank, **program_kwargs)
        stats = asdict(traffic())
        communicator = type(crypten.communicator.get()).__name__
    return {"result": result, "traffic": stats, "communicator": communicator}


def dealer_member(
    mesh,
    parties: tuple[str, ...],
    seed: int | None,
    lookahead: int | None = None,
    recv_timeout: float = RECV_TIMEOUT_S,
    limit: int | None = None,
) -> dict[str, int]:
    from smpc_synth.mpc.dealer import protocol
    from smpc_synth.mpc.dealer.server import LOOKAHEAD_DEPTH, serve_dealer

    if limit is not None:  # tests of large requests, at a small scale
        protocol.MAX_TUPLE_ELEMENTS = limit
    depth = LOOKAHEAD_DEPTH if lookahead is None else lookahead
    return serve_dealer(
        mesh, parties, timeout=recv_timeout, insecure_debug_seed=seed, lookahead=depth
    )


def run_mpc(
    tmp_path: Path,
    n_parties: int,
    program,
    *,
    transport: str = "grpc",
    provider: str = "dealer",
    seed: int | None = None,
    timeout: float = 120.0,
    lookahead: int | None = None,
    network: NetworkConfig = NETWORK,
    dealer_limit: int | None = None,
    **program_kwargs: Any,
) -> dict[str, MemberOutcome]:
    """Run ``program`` on ``n_parties`` parties (+ the dealer) and return every outcome.
    ``dealer_limit`` lowers the dealer's ``MAX_TUPLE_ELEMENTS`` (the program must lower
    the parties' too)."""
    session = start_mpc(
        tmp_path,
        n_parties,
        program,
        transport=transport,
        provider=provider,
        seed=seed,
        lookahead=lookahead,
        network=network,
        dealer_limit=dealer_limit,
        **program_kwargs,
    )
    return session.wait(timeout)


def start_mpc(
    tmp_path: Path,
    n_parties: int,
    program,
    *,
    transport: str = "grpc",
    provider: str = "dealer",
    seed: int | None = None,
    lookahead: int | None = None,
    network: NetworkConfig = NETWORK,
    dealer_limit: int | None = None,
    **program_kwargs: Any,
):
    parties = PARTY_NAMES[:n_parties]
    rendezvous = f"tcp://127.0.0.1:{free_ports(1)[0]}" if transport == "gloo" else None
    party_args = {
        "parties": parties,
        "program": program,
        "program_kwargs": program_kwargs,
        "transport": transport,
        "provider": provider,
        "seed": seed,
        "rendezvous": rendezvous,
        "recv_timeout": max(RECV_TIMEOUT_S, network.peer_timeout_s),
    }
    members: dict[str, tuple[Any, dict[str, Any]]] = {
        name: (party_member, party_args) for name in parties
    }
    if provider == "dealer":
        dealer_args = {
            "parties": parties,
            "seed": seed,
            "lookahead": lookahead,
            "recv_timeout": max(RECV_TIMEOUT_S, network.peer_timeout_s),
            "limit": dealer_limit,
        }
        members[DEALER] = (dealer_member, dealer_args)
    return launch(members, tmp_path, tls=True, network=network)


def spawn_event():
    """An event members can set (they are spawned processes)."""
    return multiprocessing.get_context("spawn").Event()


def assert_all_ok(outcomes: dict[str, MemberOutcome]) -> None:
    failed = {n: f"{o.error_type}: {o.error}" for n, o in outcomes.items() if not o.ok}
    assert not failed, failed


# --- programs (run on every party; inputs are the same everywhere) ----------------------------


def op_inputs() -> dict[str, torch.Tensor]:
    """Inputs of :func:`ops_program`, reproducible anywhere."""
    g = torch.Generator().manual_seed(7)
    return {
        "x": torch.rand(4, 5, generator=g) * 8 - 4,
        "y": torch.rand(4, 5, generator=g) * 8 - 4,
        "w": torch.rand(5, 3, generator=g) * 2 - 1,
        "img": torch.rand(1, 1, 6, 6, generator=g) * 2 - 1,
        "kernel": torch.rand(2, 1, 3, 3, generator=g) * 2 - 1,
        "pos": torch.rand(4, 5, generator=g) * 3.5 + 0.5,
        "target": torch.rand(4, 2, generator=g),
    }


def small_network() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def plaintext_ops() -> dict[str, torch.Tensor]:
    """What :func:`ops_program` computes, in the clear."""
    t = op_inputs()
    x, y = t["x"], t["y"]
    out = {
        "src_only": y,
        "add": x + y,
        "mul": x * y,
        "matmul": x @ t["w"],
        "conv2d": torch.nn.functional.conv2d(t["img"], t["kernel"], padding=1),
        "relu": torch.relu(x),
        "sigmoid": torch.sigmoid(x),
        "exp": torch.exp(x / 2),
        "reciprocal": 1 / t["pos"],
        "sum": x.sum(),
        "gt": (x > y).float(),
        "lt_zero": (x < 0).float(),
    }
    model = small_network()
    loss = torch.nn.functional.mse_loss(model(x), t["target"])
    loss.backward()
    for index, param in enumerate(model.parameters()):
        out[f"grad{index}"] = param.grad
    return out


def ops_program(rank: int) -> dict[str, list]:
    """Every op the harness covers, on shares from parties 0 and 1, revealed to all."""
    from smpc_synth.crypten_backend.compat import import_crypten

    crypten = import_crypten()
    t = op_inputs()
    x = crypten.cryptensor(t["x"], src=0)
    y = crypten.cryptensor(t["y"], src=1)
    w = crypten.cryptensor(t["w"], src=1)
    out = {
        "src_only": crypten.cryptensor(  # party 1 broadcasts the size (an object)
            t["y"] if rank == 1 else torch.empty(0), src=1, broadcast_size=True
        ),
        "add": x + y,
        "mul": x * y,
        "matmul": x.matmul(w),
        "conv2d": crypten.cryptensor(t["img"], src=0).conv2d(
            crypten.cryptensor(t["kernel"], src=1), padding=1
        ),
        "relu": x.relu(),
        "sigmoid": x.sigmoid(),
        "exp": (x / 2).exp(),
        "reciprocal": crypten.cryptensor(t["pos"], src=0).reciprocal(),
        "sum": x.sum(),
        "gt": x > y,
        "lt_zero": x < 0,
    }
    model = crypten.nn.from_pytorch(small_network(), torch.zeros(1, 5)).encrypt(src=0)
    model.train()
    x.requires_grad = True
    loss = crypten.nn.MSELoss()(model(x), crypten.cryptensor(t["target"], src=1))
    model.zero_grad()
    loss.backward()
    for index, param in enumerate(model.parameters()):
        out[f"grad{index}"] = param.grad
    result = {name: value.get_plain_text().tolist() for name, value in out.items()}
    result["objects"] = exchange_objects(crypten, rank)
    return result


SENT_OBJECT = {"size": (2, 3), "values": [1, 2.5, "x"], "tensor": [[1, -2], [3, 4]]}


def exchange_objects(crypten, rank: int) -> list:
    """Party 1 broadcasts an object, then sends it to party 0: what party 0/others got."""
    comm = crypten.communicator.get()
    sent = {**SENT_OBJECT, "size": torch.Size(SENT_OBJECT["size"])}
    sent["tensor"] = torch.tensor(SENT_OBJECT["tensor"])
    got = comm.broadcast_obj(sent if rank == 1 else None, 1)
    if rank == 1:
        comm.send_obj(sent, 0)
    elif rank == 0:
        got = comm.recv_obj(1)
    return [list(got["size"]), got["values"], got["tensor"].tolist()]


def loop_program(rank: int, iterations: int, busy=None) -> int:
    """Matmul + relu over and over (a long operation to kill members in)."""
    from smpc_synth.crypten_backend.compat import import_crypten

    crypten = import_crypten()
    x = crypten.cryptensor(torch.randn(64, 64), src=0)
    for i in range(iterations):
        x = x.matmul(x).relu() / 64
        if i == 2 and busy is not None:
            busy.set()
    return int(x.get_plain_text().numel())


def branching_loop_program(rank: int, iterations: int) -> dict[str, Any]:
    """A loop whose steps repeat but for one that takes another branch (as a rollback or
    an optimizer restart does): each party's final shares and the revealed values."""
    from smpc_synth.crypten_backend.compat import import_crypten

    crypten = import_crypten()
    x = crypten.cryptensor(torch.linspace(-2, 2, 48 * 48).view(48, 48), src=0)
    values = []
    for i in range(iterations):
        x = x.matmul(x).relu() / 48 if i != iterations // 2 else (x * x - 0.25).relu()
        values.append(x.sum().get_plain_text().item())
    return {"shares": x.share.tolist(), "values": values}


def comparison_rounds_program(rank: int) -> dict[str, Any]:
    """Rounds and results of one relu with our comparison and with CrypTen's own."""
    from crypten.mpc.primitives import beaver as crypten_beaver

    from smpc_synth.crypten_backend import compat
    from smpc_synth.mpc import session
    from smpc_synth.mpc.primitives.beaver import PROTOCOL_NAME

    x = session.crypten.cryptensor(torch.linspace(-3, 3, 256), src=0)
    w = session.crypten.cryptensor(torch.linspace(-1, 1, 256 * 3).view(256, 3), src=1)

    def run() -> dict[str, Any]:
        before = session.traffic().rounds
        value = x.relu().get_plain_text()
        return {
            "rounds": session.traffic().rounds - before,
            "value": value.tolist(),
            "matmul": x.matmul(w).get_plain_text().tolist(),
            "beaver": getattr(crypten_beaver, PROTOCOL_NAME).__module__,
        }

    out = {"ours": run()}
    with compat.shipped_crypten():
        out["stock"] = run()
    out["after"] = run()
    return out


def products_program(rank: int, batched: bool) -> dict[str, Any]:
    """Independent Beaver products, in one round (``batched``) or one at a time: each
    party's shares, the revealed values and the rounds the products took."""
    from smpc_synth.mpc import session
    from smpc_synth.mpc.primitives import beaver

    crypten = session.crypten
    x = crypten.cryptensor(torch.linspace(-3, 3, 64).view(8, 8), src=0)
    y = crypten.cryptensor(torch.linspace(-1, 2, 64).view(8, 8), src=1)
    w = crypten.cryptensor(torch.linspace(-2, 2, 32).view(8, 4), src=1)
    positive = x > 0  # a 0/1 factor of scale 1: the product keeps x's encoding
    items = [("mul", x, y), ("matmul", x, w), ("square", y, None), ("mul", x, positive)]

    def one_at_a_time() -> list:
        return [x * y, x.matmul(w), y.square(), x * positive]

    before = session.traffic().rounds
    results = beaver.products(items) if batched else one_at_a_time()
    rounds = session.traffic().rounds - before
    return {
        "rounds": rounds,
        "shares": [r.share.tolist() for r in results],
        "values": [r.get_plain_text().tolist() for r in results],
    }


def activation_width_program(rank: int) -> dict[str, Any]:
    """The MLP twin's LeakyReLU (forward and backward) and CrypTen's relu on the same
    values, with the dealer bytes party 0 received for each: which comparison width each
    asked for shows in the size of its material."""
    from smpc_synth.mpc import session
    from smpc_synth.train.mpc.nn import LeakyReLU

    crypten = session.crypten
    values = torch.linspace(-300, 300, 1000)
    x = crypten.cryptensor(values, src=0)
    upstream = crypten.cryptensor(torch.linspace(-1, 1, 1000), src=1)

    def dealer_bytes(name: str) -> float:
        return session.traffic().by_phase.get(name, {}).get("dealer_bytes_received", 0)

    layer = LeakyReLU(0.2)
    with session.phase("twin"):
        out = layer.forward(x)
        grad = layer.backward(upstream)
        twin = [out.get_plain_text().tolist(), grad.get_plain_text().tolist()]
    with session.phase("crypten"):
        relu = x.relu().get_plain_text().tolist()
    return {
        "twin": twin,
        "relu": relu,
        "dealer_bytes": {name: dealer_bytes(name) for name in ("twin", "crypten")},
    }


def mlp_twin_program(rank: int) -> dict[str, Any]:
    """The MLP twin's forward and backward pass (weight and input gradients) on a batch
    party 1 holds, with the bytes each party sent in the backward pass."""
    from smpc_synth.models.nets import mlp
    from smpc_synth.mpc import session
    from smpc_synth.train.mpc.nn import Mlp, ParameterVector, named_parameters

    crypten = session.crypten
    torch.manual_seed(0)
    net = mlp(6, (16, 8), 3, "leaky_relu")
    x = crypten.cryptensor(torch.randn(32, 6), src=1)
    upstream = crypten.cryptensor(torch.randn(32, 3) * 0.1, src=1)
    params = ParameterVector(named_parameters({"net": net}))
    twin = Mlp(net, params, "net")
    out = twin.forward(x)
    with session.phase("backward"):
        d_input = twin.backward(upstream, need_input=True)
    grads = {
        n: params.grads[n].get_plain_text().reshape(s.shape).tolist()
        for n, s in params.slots.items()
    }
    sent = session.traffic().by_phase["backward"]["bytes_sent"]
    return {
        "out": out.get_plain_text().tolist(),
        "grads": grads,
        "d_input": d_input.get_plain_text().tolist(),
        "backward_bytes": sent,
    }


def rekey_program(rank: int) -> dict[str, Any]:
    """The same sharing, products and comparison after re-keying to the same labels twice
    (with something else drawn in between), and after re-keying to other labels: each
    party's shares, and the revealed values."""
    from smpc_synth.mpc import session

    crypten = session.crypten

    def work() -> list:
        x = crypten.cryptensor(torch.linspace(-3, 3, 64).view(8, 8), src=0)
        y = crypten.cryptensor(torch.linspace(-1, 2, 64).view(8, 8), src=1)
        return [x, x * y, x.matmul(y), (x - 0.5).relu()]

    runs = {}
    for name, labels in (("first", (3, 0)), ("again", (3, 0)), ("other", (3, 1))):
        rekeyed = session.rekey(*labels)
        results = work()
        runs[name] = {
            "rekeyed": rekeyed,
            "shares": [r.share.tolist() for r in results],
            "values": [r.get_plain_text().tolist() for r in results],
        }
    return runs


def network_backward_program(rank: int) -> dict[str, Any]:
    """Rounds of one crypten.nn backward pass with our protocols and with CrypTen's, and
    the gradients each computed (the data needs no gradient)."""
    from smpc_synth.crypten_backend import compat
    from smpc_synth.mpc import session

    crypten = session.crypten
    t = op_inputs()
    x = crypten.cryptensor(t["x"], src=0)
    target = crypten.cryptensor(t["target"], src=1)

    def run() -> dict[str, Any]:
        model = crypten.nn.from_pytorch(small_network(), torch.zeros(1, 5)).encrypt(src=0)
        model.train()
        loss = crypten.nn.MSELoss()(model(x), target)
        model.zero_grad()
        before = session.traffic().rounds
        loss.backward()
        rounds = session.traffic().rounds - before
        grads = [p.grad.get_plain_text().tolist() for p in model.parameters()]
        return {"rounds": rounds, "grads": grads}

    out = {"ours": run()}
    with compat.shipped_crypten():
        out["stock"] = run()
    return out


def arithmetic_program(rank: int) -> dict[str, Any]:
    """Shares of the copy-free arithmetic ops (ours) and of CrypTen's (stock) on the same
    inputs, and whether updating a result in place changed an input."""
    from smpc_synth.crypten_backend import compat
    from smpc_synth.mpc import session

    crypten = session.crypten
    x = crypten.cryptensor(torch.linspace(-3, 3, 64).view(8, 8), src=0)
    y = crypten.cryptensor(torch.linspace(-1, 2, 64).view(8, 8), src=1)
    public = torch.linspace(0.5, 1.5, 64).view(8, 8)
    before = x.share.clone(), y.share.clone()
    deterministic = {  # no tuple is drawn: the shares themselves must agree bit for bit
        "add": lambda: x + y,
        "sub": lambda: x - y,
        "add_public": lambda: x + 1.25,
        "sub_tensor": lambda: x - public,
        "mul_public": lambda: x * 0.37,
        "mul_tensor": lambda: x * public,
        "mul_int": lambda: x * 3,
        "matmul_public": lambda: x.matmul(public),
    }
    products = {  # Beaver products: the triples differ, the opened values may differ by an ulp
        "mul": lambda: x * y,
        "square": lambda: x.square(),
        "matmul": lambda: x.matmul(y),
    }

    def run() -> dict[str, Any]:
        out = {name: op().share.tolist() for name, op in deterministic.items()}
        out.update({name: op().get_plain_text().tolist() for name, op in products.items()})
        for op in (*deterministic.values(), *products.values()):
            op().add_(1000.0).mul_(7)  # in place on the result only
        return out

    ours = run()
    with compat.shipped_crypten():
        stock = run()
    untouched = torch.equal(x.share, before[0]) and torch.equal(y.share, before[1])
    return {"ours": ours, "stock": stock, "untouched": untouched}


def crypten_api_program(rank: int) -> dict[str, Any]:
    """CrypTen API calls whose results over our communicator once differed from CrypTen's
    (its own test suite makes them): what each party got."""
    from smpc_synth.mpc import session

    crypten = session.crypten
    comm = crypten.communicator.get()
    out: dict[str, Any] = {}
    # parameters synced from party 0, as CrypTen's test helpers do (into .data)
    torch.manual_seed(100 + rank)
    layer = torch.nn.Linear(3, 2)
    comm.broadcast(layer.weight, 0)
    comm.broadcast([layer.bias], 0, batched=True)
    out["weight"] = layer.weight.tolist()
    out["bias"] = layer.bias.tolist()
    received = torch.nn.Parameter(torch.zeros(4))
    if rank == 0:
        comm.send(torch.arange(4.0), 1)
    elif rank == 1:
        comm.irecv(received, 0).wait()
    out["irecv"] = received.tolist()
    # gathered tensors are copies: changing the input afterwards changes none of them
    mine = torch.tensor([rank, rank])
    everyone, at_zero = comm.all_gather(mine), comm.gather(mine, 0)
    mine += 100
    out["all_gather"] = [t.tolist() for t in everyone]
    out["gather"] = [t.tolist() for t in at_zero] if rank == 0 else None
    # ReLU's gradient is [x > 0]: 0 at exactly 0
    x = crypten.cryptensor(torch.tensor([-1.5, 0.0, 0.0, 2.0]), src=0, requires_grad=True)
    x.relu().sum().backward()
    out["relu_grad"] = x.grad.get_plain_text().tolist()
    model = crypten.nn.Sequential(crypten.nn.ReLU()).encrypt(src=0)
    y = crypten.cryptensor(torch.tensor([[-1.0, 0.0, 3.0]]), src=0, requires_grad=True)
    model(y).sum().backward()
    out["module_relu_grad"] = y.grad.get_plain_text().tolist()
    # an empty encrypted tensor is one
    empty = crypten.cryptensor([])
    out["empty"] = [list(empty.size()), (empty + 1).get_plain_text().tolist()]
    return out


def large_requests_program(rank: int, limit: int) -> dict[str, Any]:
    """Products and comparisons larger than the dealer's ``limit`` (lowered for the test),
    through CrypTen's API: the revealed results, and each relu's gradient."""
    from smpc_synth.mpc import session
    from smpc_synth.mpc.dealer import protocol

    protocol.MAX_TUPLE_ELEMENTS = limit
    crypten = session.crypten
    t = large_inputs(limit)
    x = crypten.cryptensor(t["x"], src=0)
    y = crypten.cryptensor(t["y"], src=1)
    column = crypten.cryptensor(t["column"], src=1)
    a = crypten.cryptensor(t["a"], src=0)
    b = crypten.cryptensor(t["b"], src=1)
    image = crypten.cryptensor(t["image"], src=0)
    kernel = crypten.cryptensor(t["kernel"], src=1)
    grad_in = crypten.cryptensor(t["x"], src=0, requires_grad=True)
    grad_in.relu().sum().backward()
    out = {
        "mul": x * y,
        "broadcast_mul": x * column,
        "square": x.square(),
        "matmul": a.matmul(b),
        "conv2d": image.conv2d(kernel, padding=1),
        "relu": x.relu(),
        "lt_zero": (x < 0),
        # to binary (a carry adder: AND triples) and back (one random bit per element)
        "binary": (x < 0).to(crypten.mpc.ptype.binary).to(crypten.mpc.ptype.arithmetic, bits=1),
        "relu_grad": grad_in.grad,
    }
    return {name: value.get_plain_text().tolist() for name, value in out.items()}


def large_inputs(limit: int) -> dict[str, torch.Tensor]:
    """Inputs of :func:`large_requests_program`: every product, its operands or result,
    and every comparison over the dealer's ``limit``."""
    g = torch.Generator().manual_seed(11)
    rows = limit // 8 + 3  # x: rows x 10 elements, over the limit
    return {
        "x": torch.randn(rows, 10, generator=g).round(decimals=1),  # exact zeros among them
        "y": torch.randn(rows, 10, generator=g),
        "column": torch.randn(rows, 1, generator=g),
        "a": torch.randn(limit // 16 + 5, 4, generator=g),  # result (rows, limit // 16 + 5)...
        "b": torch.randn(4, 20, generator=g),  # ...20 columns: over the limit
        "image": torch.randn(limit // 64 + 2, 2, 6, 6, generator=g),
        "kernel": torch.randn(3, 2, 3, 3, generator=g),
    }


def dealer_cpu_program(rank: int) -> dict[str, Any]:
    """Party 0 reads the dealer's CPU clock around a large matmul the dealer must serve;
    the result checks that the tuples still line up after the readings."""
    from smpc_synth.crypten_backend import compat
    from smpc_synth.mpc import session

    provider = compat.comparison_provider()
    x = session.crypten.cryptensor(torch.eye(256), src=0)
    w = session.crypten.cryptensor(torch.linspace(-1, 1, 256 * 256).view(256, 256), src=1)
    before = provider.dealer_cpu_seconds() if rank == 0 else None
    product = x.matmul(w).get_plain_text()
    after = provider.dealer_cpu_seconds() if rank == 0 else None
    refused = None
    if rank == 1:
        try:
            provider.dealer_cpu_seconds()
        except RuntimeError as err:
            refused = str(err)
    return {"before": before, "after": after, "product": product.tolist(), "refused": refused}


def functions_inputs() -> dict[str, torch.Tensor]:
    """Inputs of :func:`functions_program`, reproducible anywhere."""
    g = torch.Generator().manual_seed(5)
    return {
        "max_in": (torch.randn(6, 3, 7, generator=g) * 4).round(decimals=2),
        "recip_in": torch.linspace(1.0, 6.0, 50),
        "exp_in": torch.linspace(-2.0, 2.0, 81),
        "tanh_in": torch.cat([torch.linspace(-12.0, 12.0, 97), torch.tensor([0.05, -0.03, 200.0])]),
        "logits": torch.randn(30, 12, generator=g) * 3,
        # one-hot rows for the one-hot columns of tests/integration/test_mpc_functions.py's LAYOUT
        "target": torch.cat(
            [
                torch.nn.functional.one_hot(torch.randint(0, w, (30,), generator=g), w).float()
                for w in (3, 6, 2)
            ],
            dim=1,
        ),
    }


def functions_program(rank: int, layout) -> dict[str, Any]:
    """segment_maximum over every width 1..7, reciprocal_in_range, and the span softmax."""
    from smpc_synth.crypten_backend import compat
    from smpc_synth.mpc import session
    from smpc_synth.mpc.primitives import functions
    from smpc_synth.mpc.primitives.spans import SpanMap

    inputs = functions_inputs()
    provider = compat.comparison_provider()
    x = session.crypten.cryptensor(inputs["max_in"], src=0)
    maxima = [
        functions.segment_maximum(x[..., :w].reshape(-1, w), [w], provider)
        .get_plain_text()
        .view(*x.shape[:-1], 1)
        for w in range(1, 8)
    ]
    # every width at once, side by side: one tournament of 3 levels
    ragged = functions.segment_maximum(
        x.reshape(-1, 7)[:, :5].repeat(1, 3), [1, 2, 3, 4, 5], provider
    )
    y = session.crypten.cryptensor(inputs["recip_in"], src=1)
    spans = SpanMap(layout)
    logits = session.crypten.cryptensor(inputs["logits"], src=0)
    rounds = session.traffic().rounds
    probs = spans.softmax(logits)
    softmax_rounds = session.traffic().rounds - rounds
    target = session.crypten.cryptensor(inputs["target"], src=1)
    rounds = session.traffic().rounds
    span_tanh, _, log_hit = spans.activate_and_log_hit(logits, target)
    log_hit_rounds = session.traffic().rounds - rounds
    onehot_only = SpanMap(type(layout)(tuple(s for s in layout.spans if s.kind == "onehot")))
    rounds = session.traffic().rounds
    onehot_only.activate_and_log_hit(logits, target)
    without_tanh_rounds = session.traffic().rounds - rounds
    t = session.crypten.cryptensor(inputs["tanh_in"], src=1)
    rounds = session.traffic().rounds
    tanh = functions.tanh(t, provider).get_plain_text()
    tanh_rounds = session.traffic().rounds - rounds - 1  # less the opening
    rounds = session.traffic().rounds
    fused = functions.tanh_and_exp(t, 2.0, provider)  # the VAE's t and std (bound 4)
    fused = session.crypten.stack(list(fused)).get_plain_text()
    tanh_exp_rounds = session.traffic().rounds - rounds - 1
    rounds = session.traffic().rounds
    crypten_tanh = t.tanh().get_plain_text()
    crypten_tanh_rounds = session.traffic().rounds - rounds - 1
    e = session.crypten.cryptensor(inputs["exp_in"], src=0)
    rounds = session.traffic().rounds
    exp = functions.exp_in_range(e, -2.0, 2.0).get_plain_text()
    exp_rounds = session.traffic().rounds - rounds - 1
    rounds = session.traffic().rounds
    crypten_exp = e.exp().get_plain_text()
    crypten_exp_rounds = session.traffic().rounds - rounds - 1
    rounds = session.traffic().rounds
    reciprocal = functions.reciprocal_in_range(y, 1.0, 6.0).get_plain_text()
    reciprocal_rounds = session.traffic().rounds - rounds - 1
    return {
        "reciprocal": reciprocal.tolist(),
        "reciprocal_rounds": reciprocal_rounds,
        "exp": exp.tolist(),
        "exp_rounds": exp_rounds,
        "crypten_exp": crypten_exp.tolist(),
        "crypten_exp_rounds": crypten_exp_rounds,
        "tanh": tanh.tolist(),
        "tanh_rounds": tanh_rounds,
        "tanh_exp": fused.tolist(),
        "tanh_exp_rounds": tanh_exp_rounds,
        "crypten_tanh": crypten_tanh.tolist(),
        "crypten_tanh_rounds": crypten_tanh_rounds,
        "maxima": [m.tolist() for m in maxima],
        "ragged_maxima": ragged.get_plain_text().tolist(),
        "log": functions.log_in_range(y, 1.0, 6.0).get_plain_text().tolist(),
        "softmax": probs.get_plain_text().tolist(),
        "softmax_rounds": softmax_rounds,
        "log_hit": log_hit.get_plain_text().tolist(),
        "log_hit_rounds": log_hit_rounds,
        "span_tanh": span_tanh.get_plain_text().tolist(),
        "without_tanh_rounds": without_tanh_rounds,
    }


def activations_program(rank: int, layout) -> dict[str, Any]:
    """The span activations and log-probability of the target, whichever provider runs."""
    from smpc_synth.mpc import session
    from smpc_synth.mpc.primitives.spans import SpanMap

    inputs = functions_inputs()
    logits = session.crypten.cryptensor(inputs["logits"], src=0)
    target = session.crypten.cryptensor(inputs["target"], src=1)
    tanh, probs, log_hit = SpanMap(layout).activate_and_log_hit(logits, target)
    return {
        "tanh": tanh.get_plain_text().tolist(),
        "probs": probs.get_plain_text().tolist(),
        "log_hit": log_hit.get_plain_text().tolist(),
    }


# --- training on generated tables (tests/integration/test_mpc_any_table.py) ------------------


def case_table(case: dict[str, Any]):
    """``(frame, schema, fitted encoder, encoded rows)`` of a generated-table case:
    ``{"columns": [ColumnShape], "rows", "seed", "generator", "params", "epochs"}``."""
    import numpy as np

    from smpc_synth.data import TableEncoder, infer_schema, validate
    from smpc_synth.data.generated import table_from_columns
    from smpc_synth.models import get_generator

    frame = table_from_columns(case["columns"], case["rows"], case["seed"])
    schema = infer_schema(frame)
    frame = validate(frame, schema, source=f"case {case['seed']}")
    numeric = get_generator(case["generator"]).numeric_encoding
    encoder = TableEncoder(schema, numeric=numeric).fit(frame)
    return frame, schema, encoder, np.ascontiguousarray(encoder.transform(frame))


def table_cases_program(rank: int, cases: list[dict[str, Any]], tables: list) -> list[dict]:
    """For each case and its ``(layout, encoded rows)`` (:func:`case_table`, computed once
    by the caller): the losses of one twin step on the first batch (to compare with the
    plaintext step on the same batch and weights), then ``epochs`` epochs through the
    trainer (rows split between the parties in order) with the losses of every step it
    took, and the released weights."""
    from smpc_synth.models import get_generator
    from smpc_synth.mpc import session
    from smpc_synth.train.mpc import trainer
    from smpc_synth.train.mpc.guard import losses_only

    crypten = session.crypten
    world = crypten.communicator.get().get_world_size()
    out = []
    for case, (layout, X) in zip(cases, tables, strict=True):
        generator = get_generator(case["generator"])
        model = generator(layout, **case["params"])
        model.initialize(case["seed"])
        twin = trainer.make_twin(model)
        batch = torch.as_tensor(X[: min(model.hparams.batch_size, len(X))])
        rng = torch.Generator().manual_seed(case["seed"])
        first = losses_only(twin.step(crypten.cryptensor(batch, src=0), rng))

        steps: list[dict[str, float]] = []
        base = trainer.TWINS[model.name]

        class Recording(base):
            record = steps

            def step(self, batch, generator):
                losses = super().step(batch, generator)
                self.record.append(losses_only(losses))
                return losses

        n = len(X)
        sizes = [n * (r + 1) // world - n * r // world for r in range(world)]
        start = sum(sizes[:rank])
        loop = trainer.TrainLoop(
            rank, sizes, case["seed"], case["epochs"], MemoryCheckpoints(), lambda _e: None
        )
        trainer.TWINS[model.name] = Recording
        try:
            trained = generator(layout, **case["params"])
            twin = trainer.train(trained, X[start : start + sizes[rank]], loop, lambda f: f)
        finally:
            trainer.TWINS[model.name] = base
        twin.reveal_released(0)
        released = _as_lists(trained.state_dict()) if rank == 0 else None
        out.append({"first": first, "steps": steps, "history": loop.history, "state": released})
    return out


def _as_lists(value: Any) -> Any:
    """Tensors as nested lists (a member's torch tensors would be shared with the test
    process through file descriptors that vanish when the member exits)."""
    if isinstance(value, torch.Tensor):
        return {"tensor": value.tolist()}
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def as_tensors(value: Any) -> Any:
    """The inverse of :func:`_as_lists`."""
    if isinstance(value, dict):
        if set(value) == {"tensor"}:
            return torch.tensor(value["tensor"])
        return {k: as_tensors(v) for k, v in value.items()}
    return value


def approximation_inputs() -> dict[str, torch.Tensor]:
    """Points covering each approximation's whole declared range (see
    tests/integration/test_mpc_functions.py and docs/mpc-protocols.md)."""
    from smpc_synth.train.mpc.limits import MAX_CATEGORIES, MAX_LOGVAR_BOUND
    from smpc_synth.train.mpc.optim import EPS, X_MAX

    g = torch.Generator().manual_seed(23)
    half = MAX_LOGVAR_BOUND / 2
    return {
        "narrow": torch.linspace(1.0, 7.0, 601),
        "wide": torch.logspace(0.0, math.log10(MAX_CATEGORIES), 2001),
        "exp_default": torch.linspace(-2.0, 2.0, 401),
        "exp_widest": torch.linspace(-half, half, 801),
        "inv_sqrt": torch.logspace(math.log10(EPS), math.log10(X_MAX), 601),
        "tanh": torch.cat([torch.linspace(-12.0, 12.0, 961), torch.linspace(-250.0, 250.0, 101)]),
        "sigmoid": torch.cat(
            [torch.linspace(-16.0, 16.0, 641), torch.linspace(-250.0, 250.0, 101)]
        ),
        "logits": torch.randn(64, APPROXIMATION_LAYOUT.width, generator=g) * 4,
    }


APPROXIMATION_WIDTHS = (2, 7, 8, 41, 200)


def _approximation_layout():
    from smpc_synth.data.layout import Layout, Span

    spans, start = [Span("x", 0, 1, "continuous")], 1
    for i, width in enumerate(APPROXIMATION_WIDTHS):
        spans.append(Span(f"c{i}", start, width, "onehot"))
        start += width
    return Layout(tuple(spans))


APPROXIMATION_LAYOUT = _approximation_layout()


def approximation_targets() -> list[int]:
    """The true category of every row, per span (its first), among the one-hot columns."""
    starts, start = [], 0
    for width in APPROXIMATION_WIDTHS:
        starts.append(start)
        start += width
    return starts


def approximations_program(rank: int) -> dict[str, Any]:
    """Each approximation on its inputs (:func:`approximation_inputs`), with the dealer."""
    from smpc_synth.crypten_backend import compat
    from smpc_synth.mpc import session
    from smpc_synth.mpc.primitives import functions
    from smpc_synth.mpc.primitives.spans import SpanMap
    from smpc_synth.train.mpc.limits import MAX_CATEGORIES, MAX_LOGVAR_BOUND
    from smpc_synth.train.mpc.optim import inverse_sqrt

    crypten = session.crypten
    provider = compat.comparison_provider()
    inputs = approximation_inputs()
    x = {name: crypten.cryptensor(value, src=0) for name, value in inputs.items()}
    out: dict[str, Any] = {}
    for name, high in (("narrow", 7.0), ("wide", float(MAX_CATEGORIES))):
        recip, log = functions.reciprocal_and_log_in_range(x[name], 1.0, high, provider)
        out[f"{name}_reciprocal"], out[f"{name}_log"] = recip, log
    half = MAX_LOGVAR_BOUND / 2
    out["exp_default"] = functions.exp_in_range(x["exp_default"], -2.0, 2.0)
    out["exp_widest"] = functions.exp_in_range(x["exp_widest"], -half, half)
    out["inv_sqrt"] = inverse_sqrt(x["inv_sqrt"])[0]
    out["tanh"] = functions.tanh(x["tanh"], provider)
    for name, scale in (("default", 2.0), ("widest", half)):  # logvar_bound 4 and the largest
        t, out[f"tanh_exp_{name}"] = functions.tanh_and_exp(x["tanh"], scale, provider)
        out[f"tanh_exp_{name}_t"] = t
    out["sigmoid"], out["log_sigmoid"], out["log_1m_sigmoid"] = functions.sigmoid_and_logs(
        x["sigmoid"], provider
    )
    spans = SpanMap(APPROXIMATION_LAYOUT)
    logits = x["logits"]
    target = torch.zeros(logits.size(0), len(spans.onehot))
    target[:, approximation_targets()] = 1.0
    out["span_tanh"], out["span_probs"], out["span_log_hit"] = spans.activate_and_log_hit(
        logits, crypten.cryptensor(target, src=1)
    )
    return {name: value.get_plain_text().tolist() for name, value in out.items()}
