"""``smpc-synth simulate``: a whole session on this machine, one process per member.

The launcher plays the role of the organisations' operators: it splits a table into one file
per party (keeping a holdout that no party trains on), writes certificates and party
configs, starts every member on free loopback ports with mutual TLS, shows their progress in
one place, and gathers outputs, logs and an evaluation against the holdout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w

from smpc_synth.config import RunConfig
from smpc_synth.dp.support import PUBLIC_SCHEMA_NEEDED, refuse_drafted_schema
from smpc_synth.errors import InputError
from smpc_synth.net.addresses import split_address
from smpc_synth.net.netns import GLOO_PORT, Host
from smpc_synth.release.run import PENDING_NAME, released_metrics
from smpc_synth.runtime.network import (
    LOOPBACK,
    PROFILES,
    EmulatedNetwork,
    NetworkProfile,
    load_profile,
    plan_hosts,
    require_emulation,
)
from smpc_synth.runtime.outdir import check_output_dir, claim_output_dir, fresh_path
from smpc_synth.runtime.progress import (
    EVENTS_ENV,
    ProgressView,
    RunProgress,
    parse_progress,
)
from smpc_synth.runtime.roles import SERVICE_ROLES
from smpc_synth.runtime.supervision import FAULT_EVENT, SUPERVISED_ENV, RootCause, Supervisor

log = logging.getLogger(__name__)

PARTY_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
MAX_PARTIES = len(PARTY_NAMES)
DEFAULT_DATASET = "fair"


@dataclass
class SimulationResult:
    """What a simulated session produced."""

    run_dir: Path
    exit_code: int
    metrics: dict[str, Any]
    synthetic: pd.DataFrame | None = None
    exit_codes: dict[str, int] = field(default_factory=dict)
    gate: Any = None  # smpc_synth.release.GateDecision, once the synthetic table was gated
    root_cause: RootCause | None = None  # whom a failed session is blamed on


@dataclass
class _Outcome:
    """How the members ended: exit codes, when each exit was seen (Unix time), root cause."""

    codes: dict[str, int]
    exited_at: dict[str, float]
    root_cause: RootCause | None


@dataclass
class _Member:
    name: str
    role: str
    address: str
    config_path: Path
    process: subprocess.Popen | None = None
    host: Host | None = None  # its place on an emulated network; None on loopback


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
    source: str = ""  # where the rows came from: "built-in:NAME" or the file given
    network: NetworkProfile = field(default_factory=lambda: PROFILES[LOOPBACK])

    def describe(self) -> str:
        """One line saying what runs: mode, generator, data, members, epochs, directory."""
        from smpc_synth.models import planned_epochs, trains_in_epochs

        cfg = self.config
        data = sum(m.role == "data" for m in self.members)
        services = [m.role for m in self.members if m.role != "data"]
        who = f"{data} data parties" + "".join(f" + {r}" for r in services)
        if trains_in_epochs(cfg.generator):
            epochs = planned_epochs(cfg.generator, cfg.epochs, cfg.generator_params)
            length = f"{epochs} epochs"
        else:
            length = "no epochs"
        network = f"; network {self.network.describe()}" if self.network.emulated else ""
        return (
            f"simulate: {cfg.mode} mode, generator {cfg.generator}, data {self.source} "
            f"({len(self.train)} training rows, {len(self.holdout)} held out); {who}; "
            f"{length}{network}; run directory {self.run_dir}"
        )

    @property
    def title(self) -> str:
        """``'mpc · vae · fair'``: what the progress bar is about."""
        data = self.source.removeprefix("built-in:")
        return f"{self.config.mode} · {self.config.generator} · {Path(data).name}"


def simulate(
    parties: int = 3,
    *,
    show_progress: bool = True,
    override_gate: bool = False,
    **options: Any,
) -> SimulationResult:
    """Run ``parties`` data parties (plus dealer/aggregator as the mode needs) locally.

    ``options`` are those of :func:`prepare_session` (dataset or data, schema, out, config,
    resume, rows, network) and :class:`RunConfig` fields (mode, generator, epochs, seed,
    split, ...). With an emulated ``network`` every member runs in its own namespace over
    links shaped to the profile (:mod:`smpc_synth.runtime.network`).
    """
    from smpc_synth.models import planned_epochs

    session = prepare_session(parties, **options)
    cfg = session.config
    if show_progress:
        print(session.describe(), flush=True)
    progress = RunProgress(
        session.title, planned_epochs(cfg.generator, cfg.epochs, cfg.generator_params)
    )
    started = time.perf_counter()
    resume = bool(options.get("resume", False))
    network = _network_for(session)
    view_mode = "auto" if show_progress else "off"
    with network or nullcontext(), ProgressView(progress, view_mode) as view:
        outcome = _run_members(session.members, session.run_dir, resume, cfg, view)
        link = network.describe() if network else session.network.as_dict()
    wall = time.perf_counter() - started
    return _gather(session, outcome, wall, override_gate, progress, link)


def _network_for(session: Session) -> EmulatedNetwork | None:
    if not session.network.emulated:
        return None
    return EmulatedNetwork(session.network, {m.name: m.host for m in session.members})


def prepare_session(
    parties: int = 3,
    *,
    dataset: str | None = None,
    data: str | Path | None = None,
    schema: str | Path | None = None,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    resume: bool = False,
    rows: int | None = None,
    network: str | Path | NetworkProfile | None = None,
    **run_options: Any,
) -> Session:
    """Validate the input, split it, and write data, certificates and member configs.

    ``rows`` resamples the table to that many rows first (with replacement when it has
    fewer; seeded), for cost curves. ``network`` is a profile name, a TOML file or a
    :class:`NetworkProfile`. Everything a user can get wrong is checked here, before any
    process starts.
    """
    from smpc_synth.models import check_epochs_apply
    from smpc_synth.runtime.party_config import check_session

    cfg = config or RunConfig.from_dict(run_options, source="simulate options")
    check_epochs_apply(cfg.generator, cfg.epochs, "simulate(): epochs")
    profile = load_profile(network)
    require_emulation(profile)
    if cfg.mode == "mpc" and parties < 2:
        raise InputError("--mode mpc needs at least 2 parties")
    if not 1 <= parties <= MAX_PARTIES:
        raise InputError(f"--parties must be between 1 and {MAX_PARTIES}, got {parties}")
    roles = _roles(parties, cfg)
    services = {r: [n for n, role in roles.items() if role == r] for r in SERVICE_ROLES}
    data_parties = tuple(n for n, role in roles.items() if role == "data")
    check_session(cfg, data_parties, services, source="simulate")
    run_dir = Path(out).resolve() if out else _default_run_dir()
    if not resume:
        check_output_dir(run_dir, "--out", resume_hint=True)
    table = split_table(parties, dataset=dataset, data=data, schema=schema, config=cfg, rows=rows)
    check_schedule(cfg, table)
    if cfg.mode == "mpc":
        from smpc_synth.train.mpc.limits import check_mpc_inputs

        check_mpc_inputs(
            table.schema, cfg.generator, cfg.generator_params, str(schema or table.source)
        )
    _prepare_run_dir(run_dir, resume)
    members = _write_session(
        run_dir, cfg, table.schema, table.shares, table.holdout, table.source, roles, profile
    )
    split = describe_split(cfg.split, table.names, table.shares)
    return Session(
        run_dir,
        cfg,
        members,
        table.train,
        table.holdout,
        table.schema,
        split,
        table.source,
        profile,
    )


@dataclass
class SplitTable:
    """A table shared among named parties, with a holdout no party trains on."""

    names: list[str]
    shares: list[pd.DataFrame]
    train: pd.DataFrame
    holdout: pd.DataFrame
    schema: Any
    source: str  # "built-in:NAME" or the file given


def split_table(
    parties: int,
    *,
    dataset: str | None = None,
    data: str | Path | None = None,
    schema: str | Path | None = None,
    config: RunConfig | None = None,
    rows: int | None = None,
) -> SplitTable:
    """Load and validate a table, keep a holdout, and share the rest among ``parties``.

    Uses ``config``'s seed, split, holdout fraction and target; a built-in data set's own
    target fills in ``config.target`` when it is unset. ``rows`` resamples the validated
    table to that many rows (seeded; with replacement only when it has fewer).
    """
    from smpc_synth.data import holdout_split, split_parties

    cfg = config or RunConfig()
    if not 1 <= parties <= MAX_PARTIES:
        raise InputError(f"--parties must be between 1 and {MAX_PARTIES}, got {parties}")
    if rows is not None and rows < 2 * parties:
        raise InputError(f"--rows must be at least {2 * parties} for {parties} parties, got {rows}")
    frame, table_schema, target, source = _load_table(dataset, data, schema, cfg)
    if rows is not None:
        frame = frame.sample(n=rows, replace=rows > len(frame), random_state=cfg.seed).reset_index(
            drop=True
        )
        source = f"{source} resampled to {rows} rows"
    if cfg.target is None and target is not None:
        cfg.target = target
    stratify = cfg.target if _is_discrete(table_schema, cfg.target) else None
    train, holdout = holdout_split(frame, cfg.holdout_fraction, cfg.seed, stratify=stratify)
    shares = split_parties(train, parties, how=cfg.split, seed=cfg.seed)
    names = list(PARTY_NAMES[:parties])
    return SplitTable(names, shares, train, holdout, table_schema, source)


def check_schedule(cfg: RunConfig, table: SplitTable) -> None:
    """Refuse a schedule whose batch exceeds the rows it is drawn from: every party's in
    federated mode (local epochs), the pooled table otherwise."""
    from smpc_synth.models import check_batch_rows

    if cfg.mode == "federated":
        rows, what = min(len(s) for s in table.shares), "rows of the smallest party"
    else:
        rows, what = len(table.train), "training rows"
    check_batch_rows(cfg.generator, cfg.generator_params, rows, "simulate", what)


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
        if given is None and cfg.dp.enabled:
            raise InputError(f"--epsilon: {PUBLIC_SCHEMA_NEEDED}")
        if cfg.dp.enabled:
            refuse_drafted_schema(given, str(schema_path))
        frame = read_table(data, given)
        source = str(data)
        target = cfg.target
        # a schema inferred from the rows says so, whoever reuses it later
        table_schema = given or dataclasses.replace(
            infer_schema(frame, target=target, source=source), drafted_from_data=True
        )
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
        if cfg.dp.enabled and schema_path:  # as for --data: a given schema is vouched public
            refuse_drafted_schema(table_schema, str(schema_path))
    if cfg.target is not None and cfg.target not in frame.columns:
        raise InputError(f"{source}: --target column {cfg.target!r} not found")
    frame = validate(frame, table_schema, source=source)
    return frame, table_schema, target, source


def _is_discrete(schema, column: str | None) -> bool:
    if column is None:
        return False
    return schema.column(column).kind in ("categorical", "boolean")


def _roles(parties: int, cfg: RunConfig) -> dict[str, str]:
    """Member name -> role: the data parties, plus the dealer or aggregator the mode needs."""
    roles = dict.fromkeys(PARTY_NAMES[:parties], "data")
    if cfg.mode == "mpc" and cfg.mpc.provider == "dealer":
        roles["dealer"] = "dealer"
    if cfg.mode == "federated":
        roles["aggregator"] = "aggregator"
    return roles


def _default_run_dir() -> Path:
    """``runs/simulate-TIME``, with a suffix if a run started in the same second."""
    return fresh_path(Path(f"runs/simulate-{time.strftime('%Y%m%d-%H%M%S')}").resolve())


def _prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """A new or empty folder; with ``resume``, the one a stopped run left.

    Nothing already in the folder is deleted or overwritten: an earlier run's certificates
    (and CA key), logs and outputs stay as they are, so a non-empty ``--out`` is refused.
    """
    if resume:
        if not (run_dir / "session.json").is_file():
            raise InputError(f"{run_dir}: nothing to resume (no session.json)")
        return
    claim_output_dir(run_dir, "--out", resume_hint=True)


def _write_session(
    run_dir: Path,
    cfg: RunConfig,
    schema,
    shares,
    holdout,
    source,
    roles: dict[str, str],
    profile: NetworkProfile,
) -> list[_Member]:
    """Data files, schema, certificates and one config per member."""
    from smpc_synth.net import free_ports, write_certificates

    hosts = plan_hosts(list(roles)) if profile.emulated else {}
    session_file = run_dir / "session.json"
    if session_file.is_file():  # resume: same addresses, same certificates, same network
        session = json.loads(session_file.read_text())
        addresses = session["addresses"]
        before = session.get("network", {}).get("name", LOOPBACK)
        if before != profile.name:
            raise InputError(
                f"{session_file}: the run started on network {before!r}; resume it with "
                f"--network {before}, not {profile.name!r}"
            )
    else:
        if hosts:
            addresses = {name: hosts[name].address() for name in roles}
        else:
            ports = free_ports(len(roles))
            addresses = {name: f"127.0.0.1:{port}" for name, port in zip(roles, ports)}
        write_certificates(list(roles), run_dir / "certs")
        session = {
            "session": f"sim-{os.getpid()}-{int(time.time())}",
            "addresses": addresses,
            "network": profile.as_dict(),
        }
        session_file.write_text(json.dumps(session, indent=2))
    if cfg.mode == "mpc" and cfg.mpc.transport == "gloo" and cfg.mpc.rendezvous is None:
        first = next(iter(roles))  # the first data party hosts the rendezvous
        host, _ = split_address(addresses[first], first)
        port = GLOO_PORT if hosts else free_ports(1)[0]
        cfg.mpc.rendezvous = f"tcp://{host}:{port}"
        if hosts:  # emulated links: plain TCP between namespaces, never off this machine
            cfg.network.allow_insecure = True

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
        members.append(_Member(name, role, addresses[name], path, host=hosts.get(name)))
    log.info("session written to %s (%s; data from %s)", run_dir, ", ".join(roles), source)
    return members


def _run_members(members, run_dir: Path, resume: bool, cfg: RunConfig, view) -> _Outcome:
    """Start every member, watch them until all have exited (telling the others at once
    when one dies or is stopped), and name the root cause of a failure."""
    from smpc_synth.net import Limits

    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        **{EVENTS_ENV: "json"},  # members report to this launcher, which shows one bar
        **{SUPERVISED_ENV: "1"},  # and follow its notices (runtime.supervision)
    )
    limits = Limits.from_network(cfg.network)
    supervisor = Supervisor(
        {},
        # as late as heartbeats would have named it: peers that heard from it decide first
        stopped_limit_s=limits.silence_limit_s + limits.heartbeat_interval_s,
        stop_within_s=limits.peer_timeout_s + limits.exit_allowance_s,
    )
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
        member_env = env
        if member.host is not None:  # inside its namespace, on its own address
            cmd = member.host.command(cmd)
            member_env = {**env, **member.host.env()}
        member.process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,  # the launcher's notices (runtime.supervision)
            env=member_env,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops members itself
        )
        supervisor.processes[member.name] = member.process
        reader = threading.Thread(
            target=_pump,
            args=(member, logs / f"{member.name}.log", view, supervisor),
            daemon=True,
        )
        reader.start()
        supervisor.readers[member.name] = reader
    try:
        codes = supervisor.wait()
    except KeyboardInterrupt:
        print("interrupted: stopping every member", file=sys.stderr)
        supervisor.interrupt()
        codes = supervisor.wait()
    for reader in supervisor.readers.values():
        reader.join(timeout=5)
    for member in members:
        if member.process.stdin is not None:
            with contextlib.suppress(OSError):
                member.process.stdin.close()
    return _Outcome(codes, dict(supervisor.exited_at), supervisor.root_cause(codes))


def _pump(member: _Member, log_path: Path, view: ProgressView, supervisor: Supervisor) -> None:
    """Copy a member's output to its log file; hand its progress events to the view and its
    fault report to the supervisor."""
    with open(log_path, "a") as sink:  # a resumed run keeps the stopped run's log
        for line in member.process.stdout:
            event = parse_progress(line)
            if event is None:
                sink.write(line)
                sink.flush()
            elif event.get("event") == FAULT_EVENT:
                supervisor.record(member.name, event)
                culprit, reason = event.get("culprit"), event.get("reason")
                sink.write(f"fault report: {culprit} is at fault: {reason}\n")
                sink.flush()
            else:
                view(event)


def _gather(
    session: Session,
    outcome: _Outcome,
    wall: float,
    override_gate: bool,
    progress: RunProgress,
    link: dict[str, Any] | None = None,
) -> SimulationResult:
    """Collect every member's metrics; evaluate against the holdout; gate, publish, sign."""
    from smpc_synth.eval import evaluate
    from smpc_synth.models import hyperparameters
    from smpc_synth.release import certificates_in, release_run

    run_dir, cfg, members = session.run_dir, session.config, session.members
    codes, cause = outcome.codes, outcome.root_cause
    worst = 0 if cause is None else cause.exit_code
    party_metrics = {}
    for m in members:
        path = m.config_path.parent / "metrics.json"
        if path.is_file():
            party_metrics[m.name] = json.loads(path.read_text())
    metrics: dict[str, Any] = {
        "run": cfg.to_dict(),
        "hyperparameters": hyperparameters(cfg.generator, cfg.generator_params, cfg.epochs),
        "exit_codes": codes,
        "exited_at": outcome.exited_at,
        "wall_seconds": wall,
        "data": session.source,
        "progress": progress.summary(),
        "parties": party_metrics,
        "split": session.split,
        "network": link or session.network.as_dict(),
    }
    if cause is not None:
        metrics["root_cause"] = cause.to_dict()
    result = SimulationResult(run_dir, worst, metrics, None, codes, root_cause=cause)
    producers = [m for m in members if (m.config_path.parent / PENDING_NAME).is_file()]
    privacy = _privacy(party_metrics, [m.name for m in producers]) if cfg.dp.enabled else None
    if privacy is not None:
        metrics["privacy"] = privacy["privacy"]
        metrics["rows_released"] = privacy["rows_released"]
    if worst != 0 or not producers:
        written = (
            released_metrics(metrics, metrics.get("privacy", {})) if cfg.dp.enabled else metrics
        )
        (run_dir / "metrics.json").write_text(json.dumps(written, indent=2, default=str) + "\n")
        for name, code in codes.items():
            if code != 0:
                log.error(
                    "%s exited with code %d (log: %s)", name, code, run_dir / "logs" / f"{name}.log"
                )
        if cause is not None:
            log.error("%s", cause.describe())
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
    names = [m.name for m in members]
    gated = report or cfg.dp.enabled  # under DP the gate reads the privacy record alone
    policy = cfg.gate if gated else dataclasses.replace(cfg.gate, enabled=False)
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
        privacy=metrics.get("privacy"),
    )
    if result.gate.released:
        result.synthetic = synthetic
    return result


def _privacy(party_metrics: dict[str, Any], producers: list[str]) -> dict[str, Any] | None:
    """The DP ledger and released row count of the run, from a party that produced it."""
    for name in producers:
        training = party_metrics.get(name, {}).get("training", {})
        if "privacy" in training:
            return {"privacy": training["privacy"], "rows_released": training.get("rows_released")}
    return None
