"""What CrypTen's basic operations cost over each transport: ``smpc-synth bench mpc-ops``.

Measures a 256x256 matmul, a relu on 65,536 elements and one SGD step of an MLP
64-128-128-64 (batch 256) over three set-ups in one run, each party a local process:

- ``grpc+tls``: our communicator over the mutually authenticated gRPC mesh, dealer triples;
- ``gloo``: CrypTen's own torch.distributed/gloo communicator, dealer triples;
- ``stock``: CrypTen as shipped (gloo, trusted-first-party triples, default gradient clipping,
  none of :mod:`smpc_synth.crypten_backend.compat`'s speed-only fixes).

Every record has CrypTen's own counters (``bytes_per_party`` and ``rounds`` as CrypTen counts
them, the same yardstick for all three), and for ``grpc+tls`` also what our links measured:
payload bytes actually sent to other parties, latency rounds, and bytes from the dealer.
``theory`` records give the Beaver lower bound in payload bytes (see :func:`theoretical_bytes`).
"""

from __future__ import annotations

import itertools
import json
import statistics
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smpc_synth.config import NetworkConfig
from smpc_synth.errors import PeerError
from smpc_synth.net.addresses import free_ports
from smpc_synth.net.netns import GLOO_PORT, Host
from smpc_synth.runtime.network import (
    PROFILES,
    NetworkProfile,
    emulated,
    load_profiles,
    require_emulation,
)
from smpc_synth_bench.member_cpu import MemberCpu, cores, floor_seconds

MATMUL_SIZE = 256
RELU_ELEMENTS = 65_536
MLP_WIDTHS = (64, 128, 128, 64)
BATCH = 256
LEARNING_RATE = 0.01
REPEATS = 3  # measured runs of each op per trial (after one warm-up run)
TRIALS = 2  # fresh sessions of each set-up
BYTES_PER_ELEMENT = 8
DEALER = "dealer"
PARTY_NAMES = ("alice", "bob", "carol", "dave", "erin")
MEMBER_TIMEOUT_S = 900.0
OPS = ("matmul", "relu", "train_step")
# CrypTen counts each element sent *and* received (an all_reduce of n elements logs 2n);
# the grpc rows, where both are known, show its count is twice the payload bytes sent.
CRYPTEN_BYTES_PER_SENT_BYTE = 2


@dataclass(frozen=True)
class Setup:
    """One way of running CrypTen."""

    name: str
    transport: str
    provider: str
    grad_threshold: float | None  # update_parameters' clipping; CrypTen's default is 100


SETUPS = (
    Setup("grpc+tls", "grpc", "dealer", None),
    Setup("gloo", "gloo", "dealer", None),
    Setup("stock", "gloo", "tfp", 100.0),
)


def theoretical_bytes(op: str, parties: int) -> int:
    """Payload bytes one party must send for the op's masked openings alone (dealer
    triples): a Beaver product opens its two masked operands to every other party, 8 bytes
    per element, and a relu its masked input (its product with the sign can reuse that
    opening). The comparison's bits are left out, so relu and the training step are loose
    lower bounds."""
    n, widths = BATCH, MLP_WIDTHS
    if op == "matmul":
        elements = 2 * MATMUL_SIZE * MATMUL_SIZE
    elif op == "relu":
        elements = RELU_ELEMENTS  # x + r, whose opening also serves x * sign(x)
    elif op == "train_step":
        layers = list(itertools.pairwise(widths))
        forward = sum(n * k + k * m for k, m in layers)
        weight_grads = sum(n * k + n * m for k, m in layers)
        input_grads = sum(n * m + k * m for k, m in layers[1:])
        relus = 2 * sum(n * m for _, m in layers[:-1])  # x + r; the backward's gradient
        elements = forward + weight_grads + input_grads + relus
    else:
        raise ValueError(f"unknown op {op!r}")
    return BYTES_PER_ELEMENT * elements * (parties - 1)


def _bench_party(
    mesh,
    parties: tuple[str, ...],
    setup: Setup,
    rendezvous: str | None,
    emulated_links: bool = False,
) -> list[dict[str, Any]]:
    """Runs on each party: every op, once to warm up, then ``REPEATS`` times measured."""
    import torch

    from smpc_synth.crypten_backend import compat
    from smpc_synth.mpc import session

    crypten = session.crypten
    torch.manual_seed(0)
    rank = parties.index(mesh.me)
    records = []
    with session.crypten_session(
        mesh,
        parties,
        rank,
        setup.provider,
        setup.transport,
        insecure_dev=setup.provider == "tfp",
        rendezvous=rendezvous,
        # gloo between the namespaces of an emulated network: plain TCP within this machine
        allow_insecure=emulated_links,
    ):
        as_shipped = compat.shipped_crypten() if setup.name == "stock" else nullcontext()
        with as_shipped:
            for op in OPS:
                step = _make_op(crypten, op, setup)
                step()
                crypten.communicator.get().barrier()
                session.reset_traffic()
                seconds = []
                cpu = MemberCpu(session, rank, mesh.me, with_dealer=setup.provider == "dealer")
                for _ in range(REPEATS):
                    start = time.perf_counter()
                    step()
                    seconds.append(time.perf_counter() - start)
                record = _record(session, op, setup, len(parties), seconds)
                spent = {member: s / REPEATS for member, s in cpu.lap().items()}
                records.append({**record, "cpu_seconds_by_member": spent})
                crypten.communicator.get().barrier()
    return records


def _make_op(crypten, op: str, setup: Setup):
    import torch

    from smpc_synth.mpc import session

    if op == "matmul":
        x = crypten.cryptensor(torch.randn(MATMUL_SIZE, MATMUL_SIZE), src=0)
        w = crypten.cryptensor(torch.randn(MATMUL_SIZE, MATMUL_SIZE), src=1)
        return lambda: x.matmul(w)
    if op == "relu":
        x = crypten.cryptensor(torch.randn(RELU_ELEMENTS), src=0)
        return x.relu
    layers = []
    for k, m in itertools.pairwise(MLP_WIDTHS):
        layers += [crypten.nn.Linear(k, m), crypten.nn.ReLU()]
    model = crypten.nn.Sequential(*layers[:-1]).encrypt(src=0)
    model.train()
    loss_fn = crypten.nn.MSELoss()
    x = crypten.cryptensor(torch.randn(BATCH, MLP_WIDTHS[0]), src=0)
    y = crypten.cryptensor(torch.randn(BATCH, MLP_WIDTHS[-1]), src=1)

    def train_step() -> None:
        with session.phase("forward"):
            loss = loss_fn(model(x), y)
        with session.phase("backward"):
            model.zero_grad()
            loss.backward()
        with session.phase("update"):
            model.update_parameters(LEARNING_RATE, grad_threshold=setup.grad_threshold)

    return train_step


def _record(session, op: str, setup: Setup, parties: int, seconds: list[float]) -> dict:
    counters = session.crypten_counters()
    traffic = session.traffic()
    measured = setup.transport == "grpc"
    dealer_bytes = sum(p.get("dealer_bytes_received", 0) for p in traffic.by_phase.values())
    phases = {
        name: {"bytes_sent": c["bytes_sent"] / REPEATS, "rounds": c["rounds"] / REPEATS}
        for name, c in traffic.by_phase.items()
    }
    return {
        "op": op,
        "transport": setup.name,
        "parties": parties,
        "seconds": statistics.median(seconds),
        "bytes_per_party": (
            traffic.bytes_sent if measured else counters["bytes"] / CRYPTEN_BYTES_PER_SENT_BYTE
        )
        / REPEATS,
        "rounds": (traffic.rounds if measured else counters["rounds"]) / REPEATS,
        "measured_on": "our links" if measured else "CrypTen's counters",
        "crypten_bytes": counters["bytes"] / REPEATS,
        "crypten_rounds": counters["rounds"] / REPEATS,
        "dealer_bytes_received": dealer_bytes / REPEATS,
        "phases": phases if measured else {},
    }


def _run_setup(
    setup: Setup, parties: tuple[str, ...], workdir: Path, hosts: dict[str, Host] | None = None
) -> list[list[dict]]:
    from smpc_synth.mpc.dealer.server import serve_dealer
    from smpc_synth.runtime.local import launch

    rendezvous = None
    if setup.transport == "gloo":
        host = hosts[parties[0]].ip if hosts else "127.0.0.1"
        port = GLOO_PORT if hosts else free_ports(1)[0]
        rendezvous = f"tcp://{host}:{port}"
    members: dict[str, tuple[Any, dict[str, Any]]] = {
        name: (
            _bench_party,
            {
                "parties": parties,
                "setup": setup,
                "rendezvous": rendezvous,
                "emulated_links": bool(hosts),
            },
        )
        for name in parties
    }
    if setup.provider == "dealer":
        members[DEALER] = (serve_dealer, {"parties": parties})
    session = launch(members, workdir, tls=True, network=NetworkConfig(), hosts=hosts)
    outcomes = session.wait(MEMBER_TIMEOUT_S)
    failed = [o for o in outcomes.values() if not o.ok]
    if failed:
        first = failed[0]
        raise PeerError(f"{setup.name}: {first.name} failed: {first.error}", first.peer)
    return [outcomes[name].result for name in parties]


def _merge(per_party: list[list[dict]]) -> list[dict]:
    """One record per op: the slowest party's time, the busiest party's traffic."""
    merged = []
    for records in zip(*per_party):
        record = dict(records[0])
        for key in ("seconds", "bytes_per_party", "rounds", "crypten_bytes", "crypten_rounds"):
            values = [r[key] for r in records if r[key] is not None]
            record[key] = max(values) if values else None
        by_member = {k: v for r in records for k, v in r["cpu_seconds_by_member"].items()}
        record["cpu_seconds_by_member"] = by_member
        record["cpu_seconds"] = sum(by_member.values())
        merged.append(record)
    return merged


def run_mpc_ops(
    out_dir: str | Path,
    parties: int = 2,
    trials: int = TRIALS,
    networks: list[NetworkProfile] | None = None,
) -> list[dict[str, Any]]:
    """Run every set-up ``trials`` times (interleaved, keeping each op's fastest trial, so a
    burst of load on a shared machine hits all set-ups alike) on each network profile (all
    set-ups of a profile over the same emulated links), write ``mpc_ops.json`` in
    ``out_dir``, print a table and return the records."""
    if not 2 <= parties <= len(PARTY_NAMES):
        raise ValueError(f"parties must be between 2 and {len(PARTY_NAMES)}")
    networks = networks or [PROFILES["loopback"]]
    for profile in networks:
        require_emulation(profile)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = PARTY_NAMES[:parties]
    records: list[dict[str, Any]] = []
    for profile in networks:
        records += _on_network(profile, names, trials)
    records += [_theory_record(op, parties) for op in OPS]
    (out / "mpc_ops.json").write_text(json.dumps(records, indent=2))
    for profile in networks:
        mine = [r for r in records if r.get("network") in (profile.name, None)]
        if len(networks) > 1:
            print(f"network: {profile.describe()}")
        print(format_table(mine))
        print(format_ratios(mine))
    if len(networks) > 1:
        print(f"plot: {plot_by_network(records, out / 'mpc_ops_by_network.png')}")
    return records


def plot_by_network(records: list[dict[str, Any]], path: Path) -> Path:
    """Each op's time per set-up, one group of bars per network (log scale): how much a
    link costs each set-up, measured in one run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in records if r.get("network") and r.get("seconds")]
    networks = list(dict.fromkeys(r["network"] for r in measured))
    setups = [s.name for s in SETUPS]
    fig, axes = plt.subplots(1, len(OPS), figsize=(4 * len(OPS), 3.8), squeeze=False)
    width = 0.8 / len(setups)
    for ax, op in zip(axes[0], OPS):
        for i, setup in enumerate(setups):
            seconds = {
                r["network"]: r["seconds"]
                for r in measured
                if r["op"] == op and r["transport"] == setup
            }
            xs = [n + (i - (len(setups) - 1) / 2) * width for n in range(len(networks))]
            ax.bar(xs, [1e3 * seconds.get(net, 0.0) for net in networks], width, label=setup)
        ax.set_xticks(range(len(networks)), networks)
        ax.set_yscale("log")
        ax.set_ylabel("ms per party")
        ax.set_title(op.replace("_", " "))
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _on_network(profile: NetworkProfile, names: tuple[str, ...], trials: int) -> list[dict]:
    """Every set-up's fastest trial over ``profile``'s links, tagged with the profile."""
    network = emulated(profile, [*names, DEALER])
    runs: dict[str, list[list[dict]]] = {setup.name: [] for setup in SETUPS}
    with network or nullcontext():
        hosts = network.hosts if network else None
        for _ in range(trials):
            for setup in SETUPS:
                with tempfile.TemporaryDirectory(prefix=f"mpc-ops-{setup.transport}-") as workdir:
                    merged = _merge(_run_setup(setup, names, Path(workdir), hosts))
                    runs[setup.name].append(merged)
        link = network.describe() if network else profile.as_dict()
    records = []
    for trial_records in runs.values():
        for per_op in zip(*trial_records):
            best = min(per_op, key=lambda record: record["seconds"])
            records.append({**best, "network": profile.name, "link": link})
    return records


def format_ratios(records: list[dict[str, Any]]) -> str:
    """The training step over gRPC+TLS and its ratios to gloo and to stock CrypTen, all
    measured in this run (the machine's speed swings, so only same-run ratios compare)."""
    step = {r["transport"]: r for r in records if r["op"] == "train_step"}
    ours, gloo, stock = step["grpc+tls"], step["gloo"], step.get("stock")
    seconds, nbytes, rounds = (ours[k] for k in ("seconds", "bytes_per_party", "rounds"))
    parts = [
        f"{seconds * 1e3:.0f} ms, {nbytes / 1e6:.2f} MB, {rounds:.0f} rounds",
        f"{seconds / gloo['seconds']:.2f}x the time over gloo",
    ]
    if stock:
        parts.append(
            f"stock CrypTen takes {stock['seconds'] / seconds:.1f}x the time, "
            f"{stock['rounds'] / rounds:.1f}x the rounds, "
            f"{stock['bytes_per_party'] / nbytes:.1f}x the bytes"
        )
    line = f"training step over grpc+tls, {ours['parties']} parties: " + "; ".join(parts)
    if ours.get("cpu_seconds"):
        floor = floor_seconds(ours["cpu_seconds"])
        line += f"; CPU floor on {cores()} cores: {floor * 1e3:.0f} ms"
    return line


def _theory_record(op: str, parties: int) -> dict[str, Any]:
    return {
        "op": op,
        "transport": "theory",
        "parties": parties,
        "seconds": None,
        "bytes_per_party": theoretical_bytes(op, parties),
        "rounds": None,
        "measured_on": "Beaver lower bound",
        "crypten_bytes": None,
        "crypten_rounds": None,
        "dealer_bytes_received": None,
        "phases": {},
        "cpu_seconds": None,
        "cpu_seconds_by_member": {},
    }


def format_table(records: list[dict[str, Any]]) -> str:
    """The records as a fixed-width text table (MB = 10^6 bytes)."""

    def cell(value: Any, scale: float = 1.0, digits: int = 1) -> str:
        return "-" if value is None else f"{value / scale:.{digits}f}"

    header = (
        f"{'op':<11}{'transport':<10}{'ms':>9}{'MB sent':>9}{'rounds':>8}"
        f"{'CrypTen MB':>12}{'CrypTen rounds':>16}{'dealer MB':>11}{'CPU ms':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        lines.append(
            f"{r['op']:<11}{r['transport']:<10}{cell(r['seconds'], 1e-3):>9}"
            f"{cell(r['bytes_per_party'], 1e6, 2):>9}{cell(r['rounds'], 1, 0):>8}"
            f"{cell(r['crypten_bytes'], 1e6, 2):>12}{cell(r['crypten_rounds'], 1, 0):>16}"
            f"{cell(r['dealer_bytes_received'], 1e6, 2):>11}{cell(r['cpu_seconds'], 1e-3):>9}"
        )
    lines.append(
        "per party, slowest/busiest party; 'MB sent', 'rounds': measured on our links for "
        "grpc+tls, from CrypTen's counters (bytes / 2, calls) for gloo and stock; 'CPU ms': "
        f"all members' processes together (parties and dealer), so on this machine's "
        f"{cores()} cores no op can take less than CPU ms / {cores()}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    run_mpc_ops(sys.argv[1] if len(sys.argv) > 1 else "results/mpc_ops")


def main(
    out: Path, config: Path | None = None, full: bool = False, network: str | None = None
) -> int:
    """``smpc-synth bench mpc-ops --out DIR [--network lan,wan]``: 2 parties (``--full``:
    also 3)."""
    networks = load_profiles(network)
    for parties in (2, 3) if full else (2,):
        run_mpc_ops(out / f"{parties}-parties" if full else out, parties=parties, networks=networks)
    return 0
