"""What jointly training the VAE on secret shares costs: ``benchmarks/mpc_train.py``.

Two data parties and the dealer run as local processes over the mutually authenticated gRPC
mesh, on the built-in mixed table ``fair`` (5,000 training rows, split between them). In one
run it measures, per party:

- ``ours``: :mod:`smpc_synth.train.mpc.trainer` (hand-written backward passes, one flat Adam
  update, batched span softmax) for whole epochs of the plaintext VAE's architecture and
  hyperparameters. The per-epoch figure is the steady state: the median of the last
  ``steady_epochs`` of ``epochs``. The first epochs cost more, because Adam's bias
  correction weighs each new squared gradient heavily for the first ~50 steps (5 epochs of
  10 steps), so its ``1/sqrt(v)`` needs more Newton steps and restarts more often (see
  :mod:`smpc_synth.train.mpc.optim`); every epoch's seconds are reported as well, with the mean
  epoch of a whole default-length run (300 epochs) that follows from them;
- ``stock``: the same networks in stock ``crypten.nn`` with CrypTen autograd, CrypTen's own
  protocols and code as shipped (:func:`smpc_synth.crypten_backend.compat.shipped_crypten`), the
  shared losses of :mod:`smpc_synth.models.losses` and ``update_parameters`` with its
  default settings (SGD, gradient clipping at 100) — a few steps, scaled to an epoch (over
  the same transport and dealer, so the gap is CrypTen's protocols and code);
- ``plaintext``: the torch VAE's ``train_epoch`` on the same rows (one thread), timed by
  the first party right after ours while the other members wait.

Seconds, payload bytes sent and latency rounds per epoch are printed and written as JSON.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from smpc_synth.config import NetworkConfig
from smpc_synth.errors import InputError, PeerError
from smpc_synth.net.netns import Host
from smpc_synth.runtime.checkpoints import MemoryCheckpoints
from smpc_synth.runtime.network import NetworkProfile, emulated, load_profiles, require_emulation
from smpc_synth_bench.member_cpu import MemberCpu, cores

PARTIES = ("alice", "bob")
DEALER = "dealer"
DATASET = "fair"
ROWS = 5000
SEED = 0
MEMBER_TIMEOUT_S = 3600.0


@dataclass
class BenchConfig:
    """What to measure (defaults: the published benchmark)."""

    rows: int = ROWS
    epochs: int = 8  # of ours: Adam's warm-up takes ~50 steps (5 epochs)
    steady_epochs: int = 3  # the per-epoch figure is the median of these last epochs
    stock_steps: int = 2  # of stock crypten.nn, scaled to an epoch
    plaintext_epochs: int = 20  # median of these: one takes ~0.06-0.09 s, and drifts
    schedule: str = "default"  # generator_params.schedule of ours (smpc_synth.models.schedule)


def _table(rows: int):
    """The benchmark's rows, schema and encoder spec (the same in every process)."""
    from smpc_synth.data import infer_schema, load_builtin, validate

    builtin = load_builtin(DATASET)
    schema = infer_schema(builtin.frame, target=builtin.target)
    frame = validate(builtin.frame, schema, source=DATASET).iloc[:rows].reset_index(drop=True)
    return frame, schema


def _party(mesh, parties: tuple[str, ...], config: BenchConfig) -> dict[str, Any]:
    """One data party: fit the encoder securely, train ours, then time stock crypten.nn."""
    import numpy as np
    import torch

    from smpc_synth.crypten_backend import compat
    from smpc_synth.data import TableEncoder
    from smpc_synth.models.vae import VAEGenerator
    from smpc_synth.mpc import session
    from smpc_synth.mpc.secure_stats import party_sizes, secure_sum
    from smpc_synth.train.mpc.trainer import TrainLoop, train

    torch.set_num_threads(1)
    rank = parties.index(mesh.me)
    frame, schema = _table(config.rows)
    mine = np.array_split(np.arange(len(frame)), len(parties))[rank]
    local = frame.iloc[mine].reset_index(drop=True)
    with session.crypten_session(mesh, parties, rank, "dealer", "grpc"):
        encoder = TableEncoder(schema, numeric=VAEGenerator.numeric_encoding)
        encoder.fit_stats(secure_sum(encoder.sufficient_stats(local), rank, len(parties)))
        sizes = party_sizes(len(local), rank, len(parties))
        X = encoder.transform(local)
        model = VAEGenerator(encoder.layout, schedule=config.schedule)
        cpu = MemberCpu(session, rank, mesh.me)
        epoch_cpu: list[dict[str, float]] = []

        def progress(event: dict[str, Any]) -> None:
            epoch_cpu.append(cpu.lap())
            if rank == 0:  # one line per epoch: a run takes minutes
                seconds = event["epoch_seconds"]
                _say(f"ours: epoch {event['epoch']}/{event['epochs']}, {seconds:.1f} s")

        loop = TrainLoop(rank, sizes, SEED, config.epochs, MemoryCheckpoints(), progress)
        train(model, X, loop, agree=lambda first: first)
        traffic_by_phase = session.traffic().by_phase
        # timed moments after ours on the same machine, while the other members wait idle,
        # so a drift in the machine's speed hits both sides of the ratio alike
        plaintext = _plaintext_seconds(config) if rank == 0 else None
        session.crypten.communicator.get().barrier()
        if rank == 0:
            _say(f"stock crypten.nn: {config.stock_steps} steps, then the summary")
        stock = None
        if config.stock_steps:
            with compat.shipped_crypten():  # stock: CrypTen's protocols and code as shipped
                stock = _stock_steps(session, model, X, sizes, rank, config.stock_steps)
    steps = sum(sizes) // min(model.hparams.batch_size, sum(sizes))
    return {
        "ours": loop.history,
        "ours_phases": _per_epoch(traffic_by_phase, config.epochs),
        "ours_cpu_seconds": epoch_cpu,
        "stock": stock,
        "steps_per_epoch": steps,
        "plaintext_seconds": plaintext,
    }


def _say(line: str) -> None:
    print(f"mpc-train: {line}", file=sys.stderr, flush=True)


def _per_epoch(by_phase: dict[str, dict[str, float]], epochs: int) -> dict[str, dict]:
    """Seconds, bytes sent and rounds of each training phase, averaged per epoch."""
    return {
        name: {key: c[key] / epochs for key in ("seconds", "bytes_sent", "rounds")}
        for name, c in by_phase.items()
    }


def _stock_steps(session, model, X, sizes, rank: int, steps: int) -> dict[str, Any]:
    """The VAE in stock crypten.nn + autograd + update_parameters defaults, ``steps`` times."""
    import torch

    from smpc_synth.models.losses import bounded_logvar, kl_divergence, reconstruction_loss
    from smpc_synth.models.spans import continuous_index
    from smpc_synth.train.mpc.trainer import pooled_table

    crypten = session.crypten
    hp, layout = model.hparams, model.layout
    model.initialize(SEED)
    nets = {}
    for name, net in model.modules().items():
        dummy = torch.empty(1, net[0].in_features)
        nets[name] = crypten.nn.from_pytorch(net, dummy).encrypt(src=0)
        nets[name].train()
    table = pooled_table(X, sizes, rank)
    cont = continuous_index(layout)
    sigma = model.buffers["sigma"]
    rng = torch.Generator().manual_seed(SEED)
    order = torch.randperm(table.size(0), generator=rng)
    crypten.communicator.get().barrier()
    session.reset_traffic()
    seconds = []
    for i in range(steps):
        started = time.perf_counter()
        batch = table[order[i * hp.batch_size : (i + 1) * hp.batch_size]]
        out = nets["encoder"](batch)
        mu = out[:, : hp.latent_dim]
        logvar = bounded_logvar(out[:, hp.latent_dim :], hp.logvar_bound)
        eps = torch.randn(tuple(mu.size()), generator=rng)
        z = mu + (logvar * 0.5).exp() * eps
        raw = nets["decoder"](z)
        recon = reconstruction_loss(raw, batch, layout, cont, sigma)
        loss = recon * hp.recon_weight + kl_divergence(mu, logvar) * hp.kl_weight
        for net in nets.values():
            net.zero_grad()
        loss.backward()
        for net in nets.values():
            net.update_parameters(hp.lr)  # CrypTen's defaults: SGD, gradient clipping at 100
        seconds.append(time.perf_counter() - started)
    traffic = session.traffic()
    return {
        "seconds_per_step": statistics.median(seconds),
        "bytes_per_step": traffic.bytes_sent / steps,
        "rounds_per_step": traffic.rounds / steps,
    }


def _plaintext_seconds(config: BenchConfig) -> float:
    """Median seconds of one torch VAE epoch on the same rows, one thread."""
    import torch

    from smpc_synth.data import TableEncoder
    from smpc_synth.models.vae import VAEGenerator

    torch.set_num_threads(1)
    frame, schema = _table(config.rows)
    encoder = TableEncoder(schema, numeric=VAEGenerator.numeric_encoding).fit(frame)
    X = torch.as_tensor(encoder.transform(frame))
    model = VAEGenerator(encoder.layout)
    model.initialize(SEED)
    rng = torch.Generator().manual_seed(SEED)
    seconds = []
    for _ in range(config.plaintext_epochs):
        started = time.perf_counter()
        model.train_epoch(X, rng)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def run_mpc_train(
    config: BenchConfig, workdir: Path, hosts: dict[str, Host] | None = None
) -> dict[str, Any]:
    """Run the parties and the dealer (each on its host of an emulated network, if
    ``hosts``); return the figures per party and their summary."""
    from smpc_synth.mpc.dealer.server import serve_dealer
    from smpc_synth.runtime.local import launch

    members: dict[str, tuple[Any, dict[str, Any]]] = {
        name: (_party, {"parties": PARTIES, "config": config}) for name in PARTIES
    }
    members[DEALER] = (serve_dealer, {"parties": PARTIES})
    session = launch(members, workdir, tls=True, network=NetworkConfig(), hosts=hosts)
    outcomes = session.wait(MEMBER_TIMEOUT_S)
    failed = [o for o in outcomes.values() if not o.ok]
    if failed:
        raise PeerError(f"mpc-train: {failed[0].name} failed: {failed[0].error}", failed[0].peer)
    per_party = {name: outcomes[name].result for name in PARTIES}
    plaintext = per_party[PARTIES[0]]["plaintext_seconds"]
    run_epochs = _default_run_epochs()
    summary = summarize(per_party, plaintext, config.steady_epochs, run_epochs)
    return {"config": asdict(config), "parties": per_party, **summary}


def _default_run_epochs() -> int:
    from smpc_synth.models.vae import VAEParams

    return VAEParams().epochs


def summarize(
    per_party: dict[str, dict[str, Any]],
    plaintext_seconds: float,
    steady_epochs: int,
    run_epochs: int,
) -> dict[str, Any]:
    """Per-epoch figures of the first party: ours (the median of the last ``steady_epochs``
    epochs), stock, plaintext, ratios; and the mean epoch of a ``run_epochs``-epoch run whose
    first epochs are those measured and whose others are steady."""
    first = next(iter(per_party.values()))
    steps = first["steps_per_epoch"]
    history = first["ours"]
    steady = history[-steady_epochs:]

    def median(key: str) -> float:
        return statistics.median(e[key] for e in steady)

    ours_epoch = median("epoch_seconds")
    warmup = [e["epoch_seconds"] for e in history[: len(history) - len(steady)]]
    run_mean = (sum(warmup) + (run_epochs - len(warmup)) * ours_epoch) / run_epochs
    stock = first["stock"]  # None: not measured

    def stock_epoch(key: str) -> float | None:
        return None if stock is None else stock[key] * steps

    cpu = {
        name: statistics.median(epoch[name] for epoch in p["ours_cpu_seconds"][-len(steady) :])
        for p in per_party.values()
        for name in p["ours_cpu_seconds"][-1]
    }
    return {
        "steps_per_epoch": steps,
        "ours_seconds_per_epoch": ours_epoch,
        "ours_bytes_per_epoch": median("bytes"),
        "ours_rounds_per_epoch": median("rounds"),
        "ours_epoch_seconds": [e["epoch_seconds"] for e in history],
        "ours_first_epoch_seconds": history[0]["epoch_seconds"],
        "ours_run_mean_seconds_per_epoch": run_mean,
        "run_epochs": run_epochs,
        "steady_epochs": len(steady),
        "stock_seconds_per_epoch": stock_epoch("seconds_per_step"),
        "stock_bytes_per_epoch": stock_epoch("bytes_per_step"),
        "stock_rounds_per_epoch": stock_epoch("rounds_per_step"),
        "plaintext_seconds_per_epoch": plaintext_seconds,
        "mpc_over_plaintext": ours_epoch / plaintext_seconds,
        "run_mean_over_plaintext": run_mean / plaintext_seconds,
        "stock_over_ours": None if stock is None else stock_epoch("seconds_per_step") / ours_epoch,
        "ours_cpu_seconds_per_epoch": cpu,
        "cores": cores(),
    }


def format_table(summary: dict[str, Any]) -> str:
    rows = [
        (
            "ours (MPC)",
            summary["ours_seconds_per_epoch"],
            summary["ours_bytes_per_epoch"],
            summary["ours_rounds_per_epoch"],
        ),
        (
            "stock crypten.nn",
            summary["stock_seconds_per_epoch"],
            summary["stock_bytes_per_epoch"],
            summary["stock_rounds_per_epoch"],
        ),
        ("plaintext torch", summary["plaintext_seconds_per_epoch"], 0, 0),
    ]
    if summary["stock_seconds_per_epoch"] is None:  # not measured
        del rows[1]
    lines = [
        f"VAE on '{DATASET}', 2 parties + dealer, gRPC+TLS, {summary['steps_per_epoch']} "
        "steps per epoch (per party)",
        f"{'system':<18} {'s/epoch':>10} {'MB sent/epoch':>14} {'rounds/epoch':>13}",
    ]
    for name, seconds, nbytes, rounds in rows:
        lines.append(f"{name:<18} {seconds:>10.2f} {nbytes / 1e6:>14.1f} {rounds:>13.0f}")
    stock = summary["stock_over_ours"]
    lines.append(
        f"MPC / plaintext: {summary['mpc_over_plaintext']:.0f}x"
        + ("" if stock is None else f"; stock / ours: {stock:.1f}x")
        + " (measured in this run)"
    )
    lines.append(
        "our epochs: "
        + ", ".join(f"{s:.1f}" for s in summary["ours_epoch_seconds"])
        + f" s (ours above: the median of the last {summary['steady_epochs']}; Adam warms up "
        f"over the first ~50 steps); a {summary['run_epochs']}-epoch run averages "
        f"{summary['ours_run_mean_seconds_per_epoch']:.2f} s an epoch, "
        f"{summary['run_mean_over_plaintext']:.0f}x plaintext"
    )
    cpu = summary["ours_cpu_seconds_per_epoch"]
    total, n_cores = sum(cpu.values()), summary["cores"]  # the measuring machine's cores
    lines.append(
        "CPU per epoch (ours): "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items())
        + f"; {total:.1f} s in all, so at least {total / n_cores:.1f} s on {n_cores} cores"
    )
    return "\n".join(lines)


def run_on_network(config: BenchConfig, profile: NetworkProfile) -> dict[str, Any]:
    """:func:`run_mpc_train` with every member on ``profile``'s emulated links."""
    network = emulated(profile, [*PARTIES, DEALER])
    with tempfile.TemporaryDirectory(prefix="mpc-train-") as workdir, network or nullcontext():
        result = run_mpc_train(config, Path(workdir), network.hosts if network else None)
        link = network.describe() if network else profile.as_dict()
    return {**result, "network": profile.name, "link": link}


def main(out: Path, config: BenchConfig | None = None, network: str | None = None) -> int:
    """Measure on each profile of ``network`` (comma-separated; default loopback) in turn.
    Loopback alone writes ``mpc_train.json``; otherwise each profile writes
    ``mpc_train_NAME.json``."""
    config = config or BenchConfig()
    profiles = load_profiles(network)
    for profile in profiles:
        require_emulation(profile)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for profile in profiles:
        result = run_on_network(config, profile)
        only_loopback = len(profiles) == 1 and not profile.emulated
        path = out / ("mpc_train.json" if only_loopback else f"mpc_train_{profile.name}.json")
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"network: {profile.describe()}")
        print(format_table(result))
        print(f"written: {path}")
        results.append(result)
    if len(results) > 1:
        print(f"plot: {plot_by_network(results, out / 'mpc_train_by_network.png')}")
    return 0


def compare_schedules(
    out: Path, config: BenchConfig, network: str | None, schedules: list[str], pairs: int
) -> int:
    """Ours under each of ``schedules`` in turn, ``pairs`` times over (alternated, so that a
    drift in the machine's load hits every schedule alike), on one network profile; writes
    each run's figures and prints each schedule's against the first's."""
    from smpc_synth.models.schedule import SCHEDULES

    profiles = load_profiles(network)
    if len(profiles) != 1:  # ratios are within one network
        raise InputError("--schedules: give one --network to compare them on")
    (profile,) = profiles
    require_emulation(profile)
    unknown = [s for s in schedules if s not in SCHEDULES]
    if unknown:
        raise InputError(f"--schedules: unknown schedule {unknown[0]!r} (one of {SCHEDULES})")
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in schedules}
    for pair in range(1, pairs + 1):
        for schedule in schedules:
            result = run_on_network(replace(config, schedule=schedule), profile)
            path = out / f"mpc_train_{profile.name}_{schedule}_{pair}.json"
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"{schedule}, run {pair}: {_schedule_line(result)} ({path})", flush=True)
            runs[schedule].append(result)
    print(format_schedules(runs, profile.describe()))
    return 0


def _schedule_line(result: dict[str, Any]) -> str:
    return (
        f"{result['steps_per_epoch']} steps an epoch; epochs "
        + ", ".join(f"{s:.1f}" for s in result["ours_epoch_seconds"])
        + f" s; the last {result['steady_epochs']}: {result['ours_seconds_per_epoch']:.1f} s, "
        f"{result['ours_rounds_per_epoch']:.0f} rounds, "
        f"{result['ours_bytes_per_epoch'] / 1e6:.1f} MB sent per party"
    )


def format_schedules(runs: dict[str, list[dict[str, Any]]], network: str) -> str:
    """Each schedule's median epoch, rounds and MB, and the first schedule's over each."""
    keys = ("ours_seconds_per_epoch", "ours_rounds_per_epoch", "ours_bytes_per_epoch")
    medians = {
        s: [statistics.median(r[k] for r in results) for k in keys] for s, results in runs.items()
    }
    first = next(iter(medians))
    lines = [
        f"VAE on '{DATASET}' in MPC, 2 parties + dealer, {network}; the median of "
        f"{len(runs[first])} runs per schedule, alternated",
        f"{'schedule':<10} {'steps':>5} {'s/epoch':>8} {'rounds':>7} {'MB/party':>9} "
        f"{'time x':>7} {'rounds x':>8} {'MB x':>6}",
    ]
    for s, (seconds, rounds, nbytes) in medians.items():
        base = medians[first]
        lines.append(
            f"{s:<10} {runs[s][0]['steps_per_epoch']:>5} {seconds:>8.1f} {rounds:>7.0f} "
            f"{nbytes / 1e6:>9.1f} {base[0] / seconds:>7.2f} {base[1] / rounds:>8.2f} "
            f"{base[2] / nbytes:>6.2f}"
        )
    lines.append(f"(x: {first} over the schedule, measured in this run)")
    return "\n".join(lines)


def plot_by_network(results: list[dict[str, Any]], path: Path) -> Path:
    """Seconds an epoch of ours, stock crypten.nn and plaintext torch, one group of bars per
    network (log scale), from one run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = (
        ("ours (MPC)", "ours_seconds_per_epoch"),
        ("stock crypten.nn", "stock_seconds_per_epoch"),
        ("plaintext torch", "plaintext_seconds_per_epoch"),
    )
    names = [r["network"] for r in results]
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (label, key) in enumerate(systems):
        xs = [n + (i - (len(systems) - 1) / 2) * width for n in range(len(names))]
        ax.bar(xs, [r.get(key) or 0.0 for r in results], width, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("seconds an epoch")
    ax.set_title("VAE epoch on 'fair', 2 parties + dealer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
