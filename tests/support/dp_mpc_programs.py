"""What the parties run in tests/unit/train/test_dp_mpc.py (spawned processes import it by name)."""

from __future__ import annotations

from typing import Any

import torch

from smpc_synth.data.layout import Layout, Span
from smpc_synth.models.spans import activate

LAYOUT = Layout(
    (
        Span("x", 0, 1, "continuous"),
        Span("x", 1, 3, "onehot"),
        Span("y", 4, 1, "continuous"),
        Span("c", 5, 2, "onehot"),
    )
)
PARAMS = {"hidden": (16,), "latent_dim": 4, "batch_size": 24}
ROWS = 24
CLIP = 1.0


def rows() -> torch.Tensor:
    """The batch: activated rows, the first few with far-off continuous targets (large
    gradients, clipped hard)."""
    x = activate(
        torch.randn(ROWS, LAYOUT.width, generator=torch.Generator().manual_seed(5)), LAYOUT
    )
    x[:4, 0] = torch.tensor([-1.0, 1.0, -1.0, 1.0])
    return x


def model():
    from smpc_synth.models import get_generator

    vae = get_generator("vae")(LAYOUT, **PARAMS)
    vae.initialize(11)
    with torch.no_grad():  # large weights: several examples well above the clip
        vae.modules()["decoder"][-1].weight.mul_(2.0)
    return vae


def clip_program(rank: int, wrap_row: int) -> dict[str, Any]:
    """One chunk's clip on shares; returns every opened intermediate the test checks.
    ``wrap_row``: that example's first output gradient gets the error of a two-party
    truncation's wrap-around (2^64 / 2^16 ring units)."""
    from smpc_synth.crypten_backend.compat import import_crypten
    from smpc_synth.mpc.primitives.spans import SpanMap
    from smpc_synth.mpc.session import phase
    from smpc_synth.train.mpc import dp_sgd
    from smpc_synth.train.mpc.nn import PublicMlp
    from smpc_synth.train.mpc.twins import vae_backprop

    crypten = import_crypten()
    vae = model()
    nets = {name: PublicMlp(vae.modules()[name], name) for name in vae.private_modules}
    linears = [linear for net in nets.values() for linear in net.linears]
    table = crypten.cryptensor(rows(), src=0)
    vae_backprop(vae, SpanMap(LAYOUT), nets, table, torch.Generator().manual_seed(3), 1, phase)
    kept = [linear.kept[0] for linear in linears]
    if wrap_row >= 0:
        a, g = kept[-1]
        bump = torch.zeros(g.size(), dtype=torch.long)
        if rank == 0:
            bump[wrap_row, 0] = 2**48
        kept[-1] = (a, crypten.mpc.MPCTensor.from_shares(g.share + bump))
    mask = torch.ones(ROWS, dtype=torch.long)
    mask[-1] = 0
    factors = dp_sgd.clip_factors(kept, CLIP, mask)
    sums = dp_sgd.clipped_sums(kept, factors)
    opened_sums = [
        (crypten.communicator.get().all_reduce(w).double() / 2.0**48).tolist()
        for pair in sums
        for w in pair
    ]
    from smpc_synth.mpc.dealer.noise import discrete_gaussian_shares

    size = torch.Size([4000])
    noise16 = discrete_gaussian_shares(size, (0.5 * 2.0**16) ** 2, tag=100)
    noise48 = discrete_gaussian_shares(size, (0.5 * 2.0**dp_sgd.SUM_BITS) ** 2, tag=101)
    noise16, noise48 = (crypten.communicator.get().all_reduce(n) for n in (noise16, noise48))
    return {
        "factors": factors.get_plain_text().tolist(),
        "kept": [(a.get_plain_text().tolist(), g.get_plain_text().tolist()) for a, g in kept],
        "sums": opened_sums,
        "noise16": noise16.tolist(),
        "noise48": noise48.tolist(),
        "names": [linear.name for linear in linears],
    }


# --- members with deadlines for a busy machine (the harness's are tight) ------------------

TIMEOUT_S = 300.0


def party(mesh, parties: tuple[str, ...], program, program_kwargs: dict[str, Any]) -> Any:
    from smpc_synth.mpc.session import crypten_session

    rank = parties.index(mesh.me)
    with crypten_session(mesh, parties, rank, "dealer", "grpc", timeout=TIMEOUT_S):
        return program(rank=rank, **program_kwargs)


def dealer(mesh, parties: tuple[str, ...]) -> dict[str, int]:
    from smpc_synth.mpc.dealer.server import serve_dealer

    return serve_dealer(mesh, parties, timeout=TIMEOUT_S)


def run(tmp_path, n_parties: int, program, **program_kwargs) -> dict:
    """Every member's outcome of ``program`` on ``n_parties`` parties and the dealer."""
    from smpc_synth.config import NetworkConfig
    from smpc_synth.runtime.local import launch

    parties = ("alice", "bob", "carol")[:n_parties]
    network = NetworkConfig(peer_timeout_s=TIMEOUT_S, connect_timeout_s=120, call_deadline_s=120)
    members = {
        name: (party, {"parties": parties, "program": program, "program_kwargs": program_kwargs})
        for name in parties
    }
    members["dealer"] = (dealer, {"parties": parties})
    return launch(members, tmp_path, tls=True, network=network).wait(2 * TIMEOUT_S)
