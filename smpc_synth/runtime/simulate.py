"""``smpc-synth simulate``: a whole session on this machine, one process per member.

The launcher plays the role of the organisations' operators: it splits a table into one file
per party (keeping a holdout that no party trains on), writes certificates and party
configs, starts every member on free loopback ports with mutual TLS, shows their progress in
one place, and gathers outputs, logs and an evaluation against the holdout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w

from smpc_synth.config import RunConfig
from smpc_synth.errors import InputError
from smpc_synth.release.manifest import MANIFEST_NAME
from smpc_synth.release.run import PENDING_NAME, SYNTHETIC_NAME
from smpc_synth.runtime.progress import describe, parse_progress

log = logging.getLogger(__name__)

PARTY_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
MAX_PARTIES = len(PARTY_NAMES)
DEFAULT_DATASET = "fair"
# After the first member fails, how long the others get to notice (beyond peer_timeout)
# before the launcher kills them: the promise is that nothing hangs.
GRACE_AFTER_FAILURE_S = 15.0


@dataclass
class SimulationResult:
    """What a simulated session produced."""

    run_dir: Path
    exit_code: int
    metrics: dict[str, Any]
    synthetic: pd.DataFrame | None = None
    exit_codes: dict[str, int] = field(default_factory=dict)
    gate: Any = None  # smpc_synth.release.GateDecision, once the synthetic table was gated


@dataclass
class _Member:
    name: str
    role: str
    address: str
    config_path: Path
    process: subprocess.Popen | None = None


@dataclass
class Session:
    """A simulated session written to disk and ready to start."""

    run_dir: Path
    config: RunConfig
    members: list[_Member]
    train: pd.DataFrame
    holdout: pd.DataFrame
    schema: Any
    split: dict[str, Any] = field(default_factory=dict)


def simulate(
    parties: int = 3,
    *,
    show_progress: bool = True,
    override_gate: bool = False,
    **options: Any,
) -> SimulationResult:
    """Run ``parties`` data parties (plus dealer/aggregator as the mode needs) locally.

    ``options`` are those of :func:`prepare_session` (dataset or data, schema, out, config,
    resume) and :class:`RunConfig` fields (mode, generator, epochs, seed, split, ...).
    """
    session = prepare_session(parties, **options)
    started = time.perf_counter()
    resume = bool(options.get("resume", False))
    codes = _run_members(session.members, session.run_dir, resume, session.config, show_progress)
    return _gather(session, codes, time.perf_counter() - started, override_gate)


def prepare_session(
    parties: int = 3,
    *,
    dataset: str | None = None,
    data: str | Path | None = None,
    schema: str | Path | None = None,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    resume: bool = False,
    **run_options: Any,
) -> Session:
    """Validate the input, split it, and write data, certificates and member configs.

    Everything a user can get wrong is checked here, before any process starts.
    """
    from smpc_synth.data import holdout_split, split_parties

    cfg = config or RunConfig.from_dict(run_options, source="simulate options")
    if not 1 <= parties <= MAX_PARTIES:
        raise InputError(f"--parties must be between 1 and {MAX_PARTIES}, got {parties}")
    if cfg.mode == "mpc" and parties < 2:
        raise InputError("--mode mpc needs at least 2 parties")
    from smpc_synth.models import get_generator
    from smpc_synth.models.synthesizer import check_mode, check_privacy

    check_privacy(get_generator(cfg.generator), cfg.dp.epsilon)
    check_mode(get_generator(cfg.generator), cfg.mode)
    if cfg.dp.epsilon is not None and data is not None and schema is None:
        raise InputError(
            "--epsilon needs --schema: a schema inferred from the rows depends on them "
            "(bounds, categories), and epsilon could not cover it"
        )
    frame, table_schema, target, source = _load_table(dataset, data, schema, cfg)
    if cfg.target is None and target is not None:
        cfg.target = target
    if cfg.mode == "mpc" and cfg.mpc.transport == "gloo" and cfg.mpc.rendezvous is None:
        from smpc_synth.net import free_ports

        cfg.mpc.rendezvous = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    run_dir = Path(out or f"runs/simulate-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    _prepare_run_dir(run_dir, resume)
    stratify = cfg.target if _is_discrete(table_schema, cfg.target) else None
    train, holdout = holdout_split(frame, cfg.holdout_fraction, cfg.seed, stratify=stratify)
    shares = split_parties(train, parties, how=cfg.split, seed=cfg.seed)
    members = _write_session(run_dir, cfg, table_schema, shares, holdout, source)
    split = describe_split(cfg.split, [m.name for m in members if m.role == "data"], shares)
    return Session(run_dir, cfg, members, train, holdout, table_schema, split)


def describe_split(how: str, names: list[str], shares: list[pd.DataFrame]) -> dict[str, Any]:
    """Rows per party and, for ``noniid:COLUMN``, each party's distribution of that column."""
    summary: dict[str, Any] = {"how": how, "rows": {n: len(s) for n, s in zip(names, shares)}}
    if how.startswith("noniid:"):
        column = how.split(":", 1)[1]
        if all(
            pd.api.types.is_numeric_dtype(s[column]) and s[column].nunique() > 10 for s in shares
        ):
            summary[column] = {n: {"mean": float(s[column].mean())} for n, s in zip(names, shares)}
        else:
            summary[column] = {
                n: {
                    str(k): round(float(v), 4)
                    for k, v in s[column].value_counts(normalize=True).items()
                }
                for n, s in zip(names, shares)
            }
    return summary


def _load_table(dataset, data, schema_path, cfg: RunConfig):
    from smpc_synth.data import Schema, infer_schema, load_builtin, read_table, validate

    if dataset and data:
        raise InputError("give either --dataset or --data, not both")
    if data is not None:
        given = Schema.load(schema_path) if schema_path is not None else None
        frame = read_table(data, given)
        source = str(data)
        target = cfg.target
        table_schema = given or infer_schema(frame, target=target)
        if given is None:
            log.warning("no --schema given: inferred one from %s (review it for real use)", data)
    else:
        builtin = load_builtin(dataset or DEFAULT_DATASET)
        frame, target, source = (
            builtin.frame,
            builtin.target,
            f"built-in:{dataset or DEFAULT_DATASET}",
        )
        table_schema = (
            Schema.load(schema_path) if schema_path else infer_schema(frame, target=target)
        )
    if cfg.target is not None and cfg.target not in frame.columns:
        raise InputError(f"{source}: --target column {cfg.target!r} not found")
    frame = validate(frame, table_schema, source=source)
    return frame, table_schema, target, source


def _is_discrete(schema, column: str | None) -> bool:
    if column is None:
        return False
    return schema.column(column).kind in ("categorical", "boolean")


def _prepare_run_dir(run_dir: Path, resume: bool) -> None:
    if resume:
        if not (run_dir / "session.json").is_file():
            raise InputError(f"{run_dir}: nothing to resume (no session.json)")
        return
    stale_files = ("generator.pt", SYNTHETIC_NAME, PENDING_NAME, "metrics.json", MANIFEST_NAME)
    for stale in ("parties", "logs", "certs", "session.json", *stale_files):
        target = run_dir / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def _write_session(run_dir: Path, cfg: RunConfig, schema, shares, holdout, source) -> list[_Member]:
    """Data files, schema, certificates and one config per member."""
    from smpc_synth.net import free_ports, write_certificates

    names = list(PARTY_NAMES[: len(shares)])
    roles = dict.fromkeys(names, "data")
    if cfg.mode == "mpc" and cfg.mpc.provider == "dealer":
        roles["dealer"] = "dealer"
    if cfg.mode == "federated":
        roles["aggregator"] = "aggregator"
    session_file = run_dir / "session.json"
    if session_file.is_file():  # resume: same ports, same certificates
        session = json.loads(session_file.read_text())
        addresses = session["addresses"]
    else:
        ports = free_ports(len(roles))
        addresses = {name: f"127.0.0.1:{port}" for name, port in zip(roles, ports)}
        write_certificates(list(roles), run_dir / "certs")
        session = {"session": f"sim-{os.getpid()}-{int(time.time())}", "addresses": addresses}
        session_file.write_text(json.dumps(session, indent=2))

    schema.save(run_dir / "schema.toml")
    holdout.to_csv(run_dir / "holdout.csv", index=False)
    (run_dir / "config.toml").write_text(tomli_w.dumps(cfg.to_toml_dict()))
    members = []
    for i, (name, role) in enumerate(roles.items()):
        folder = run_dir / "parties" / name
        folder.mkdir(parents=True, exist_ok=True)
        party: dict[str, Any] = {
            "name": name,
            "role": role,
            "listen": addresses[name],
            "session": session["session"],
            "out": ".",
            "schema": "../../schema.toml",
            "release": False,  # the launcher gates and signs, against the holdout
        }
        if role == "data":
            shares[i].to_csv(folder / "data.csv", index=False)
            party["data"] = "data.csv"
        doc = {
            "party": party,
            "tls": {
                "ca": "../../certs/ca.pem",
                "cert": f"../../certs/{name}.pem",
                "key": f"../../certs/{name}.key",
            },
            "peers": [
                {"name": other, "address": addresses[other], "role": roles[other]}
                for other in roles
                if other != name
            ],
            "run": cfg.to_toml_dict(),
        }
        path = folder / "party.toml"
        path.write_text(tomli_w.dumps(doc))
        members.append(_Member(name, role, addresses[name], path))
    log.info("session written to %s (%s; data from %s)", run_dir, ", ".join(roles), source)
    return members


def _run_members(members, run_dir: Path, resume: bool, cfg: RunConfig, show: bool) -> dict:
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    readers = []
    for member in members:
        cmd = [
            sys.executable,
            "-m",
            "smpc_synth",
            member.role if member.role != "data" else "party",
        ]
        cmd += ["--config", str(member.config_path)]
        if resume:
            cmd.append("--resume")
        member.process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops members itself
        )
        reader = threading.Thread(
            target=_pump, args=(member, logs / f"{member.name}.log", show), daemon=True
        )
        reader.start()
        readers.append(reader)
    try:
        codes = _wait_all(members, cfg.network.peer_timeout_s + GRACE_AFTER_FAILURE_S)
    except KeyboardInterrupt:
        print("interrupted: stopping every member", file=sys.stderr)
        for member in members:
            if member.process.poll() is None:
                member.process.send_signal(signal.SIGINT)
        codes = _wait_all(members, cfg.network.peer_timeout_s)
    for reader in readers:
        reader.join(timeout=5)
    return codes


def _pump(member: _Member, log_path: Path, show: bool) -> None:
    """Copy a member's output to its log file; show its progress events on the console."""
    with open(log_path, "w") as sink:
        for line in member.process.stdout:
            event = parse_progress(line)
            if event is None:
                sink.write(line)
                sink.flush()
            elif show:
                print(describe(event), flush=True)


def _wait_all(members, grace: float) -> dict[str, int]:
    """Wait for every member; once one fails, give the rest ``grace`` seconds, then kill."""
    deadline = None
    while True:
        codes = {m.name: m.process.poll() for m in members}
        if all(code is not None for code in codes.values()):
            return codes
        if deadline is None and any(code not in (None, 0) for code in codes.values()):
            deadline = time.monotonic() + grace
        if deadline is not None and time.monotonic() > deadline:
            for m in members:
                if m.process.poll() is None:
                    log.error("%s did not stop after a peer failed: killing it", m.name)
                    m.process.kill()
        time.sleep(0.1)


def _gather(
    session: Session, codes: dict[str, int], wall: float, override_gate: bool
) -> SimulationResult:
    """Collect every member's metrics; evaluate against the holdout; gate, publish, sign."""
    from smpc_synth.eval import evaluate
    from smpc_synth.release import certificates_in, release_run

    run_dir, cfg, members = session.run_dir, session.config, session.members
    worst = max(codes.values())
    party_metrics = {}
    for m in members:
        path = m.config_path.parent / "metrics.json"
        if path.is_file():
            party_metrics[m.name] = json.loads(path.read_text())
    metrics: dict[str, Any] = {
        "run": cfg.to_dict(),
        "exit_codes": codes,
        "wall_seconds": wall,
        "parties": party_metrics,
        "split": session.split,
    }
    result = SimulationResult(run_dir, worst, metrics, None, codes)
    producers = [m for m in members if (m.config_path.parent / PENDING_NAME).is_file()]
    if worst != 0 or not producers:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        for name, code in codes.items():
            if code != 0:
                log.error(
                    "%s exited with code %d (log: %s)", name, code, run_dir / "logs" / f"{name}.log"
                )
        return result
    folder = producers[0].config_path.parent
    shutil.copy(folder / "generator.pt", run_dir / "generator.pt")
    candidate = run_dir / PENDING_NAME
    shutil.copy(folder / PENDING_NAME, candidate)
    for other in producers:  # every output party holds the same table; one copy is released
        (other.config_path.parent / PENDING_NAME).unlink()
    synthetic = pd.read_csv(candidate)
    report: dict[str, Any] = {}
    if len(session.holdout):
        report = evaluate(
            session.train,
            synthetic,
            holdout=session.holdout,
            target=cfg.target,
            schema=session.schema,
            seed=cfg.seed,
        )
        metrics["evaluation"] = report
    dp = next(
        (p["training"]["dp"] for p in party_metrics.values() if "dp" in p.get("training", {})),
        None,
    )
    if dp is not None:  # the run's budget: recorded, signed, and gated (gate.max_epsilon)
        metrics["dp"] = dp
        report = {**report, "dp": dp} if report else report
    names = [m.name for m in members]
    policy = cfg.gate if report else dataclasses.replace(cfg.gate, enabled=False)
    result.gate = release_run(
        run_dir,
        candidate=candidate,
        report=report,
        policy=policy,
        config=cfg.to_dict(),
        metrics=metrics,
        override=override_gate,
        certificates=certificates_in(run_dir / "certs", names),
        ca_path=run_dir / "certs" / "ca.pem",
        keys={m.name: run_dir / "certs" / f"{m.name}.key" for m in members if m.role == "data"},
    )
    if result.gate.released:
        result.synthetic = synthetic
    return result
