"""One session member's life: check inputs, connect, agree, do its role, write outputs.

Order matters (docs/design.md §5): every input is validated before any network traffic; all
members agree on the session and on one hash of (config, schema, version) before any work;
a member that dies or hangs stops everyone within the configured timeout (docs/faults.md).
A member reports every failure as a ``fault`` event naming the member at fault, and
succeeds only if the whole session ended as agreed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from smpc_synth import phases
from smpc_synth.config import RunConfig
from smpc_synth.data.schema import Schema
from smpc_synth.errors import PeerError
from smpc_synth.release.run import PENDING_NAME
from smpc_synth.runtime.checkpoints import DirectoryCheckpoints
from smpc_synth.runtime.party_config import PartyConfig
from smpc_synth.runtime.progress import ProgressEmitter
from smpc_synth.runtime.roles import ROLES, SERVICE_ROLES, player
from smpc_synth.runtime.supervision import follow_launcher, report_fault
from smpc_synth.version import __version__

log = logging.getLogger(__name__)


def session_fingerprints(cfg: PartyConfig, schema: Schema) -> dict[str, str]:
    """What every member must agree on at the handshake, item by item, so that a mismatch
    names the config key or schema column that differs: each ``[run]`` key with its value
    (the run config is the same public text on every member), a hash per schema column and
    of the column order, the package version and the member names. Never any data."""
    items = {
        f"config key '{key}'": "unset" if value is None else json.dumps(value, sort_keys=True)
        for key, value in config_items(cfg.run).items()
    }
    rest = schema.to_dict()
    columns = rest.pop("columns")
    items["schema column order"] = _digest([c["name"] for c in columns])
    items.update({f"schema column '{c['name']}'": _digest(c) for c in columns})
    items["schema target and version"] = _digest(rest)
    items["version"] = __version__
    items["members"] = ",".join(sorted([cfg.name] + [m.name for m in cfg.peers]))
    return items


def config_items(run: RunConfig) -> dict[str, Any]:
    """Every setting of ``run`` by its dotted key (``federated.clip_norm``); free-form
    tables such as ``generator_params`` stay one item."""
    flat: dict[str, Any] = {}
    for key, value in run.to_dict().items():
        if isinstance(value, dict) and not isinstance(getattr(run, key, None), dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_member(
    cfg: PartyConfig, resume: bool = False, override_gate: bool = False, show_progress: bool = True
) -> dict[str, Any]:
    """Run this member to completion; raises SmpcSynthError subclasses on failure.

    ``show_progress``: a bar on a terminal (plain lines now and then elsewhere); the events
    go to a launcher instead when it asked for them (see :mod:`smpc_synth.runtime.progress`).

    A data party that receives the generator also gates its synthetic table (against its
    own rows), publishes or withholds it, and signs the manifest with its own key, unless
    ``party.release`` is false (a simulation launcher then does it against the holdout).
    Any failure is also reported as a ``fault`` progress event naming the member at fault.
    """
    try:
        return _run_member(cfg, resume, override_gate, show_progress)
    except BaseException as exc:
        culprit = getattr(exc, "peer", None) or cfg.name
        reason = str(exc) or type(exc).__name__
        report_fault(cfg.name, culprit, reason)
        if culprit != cfg.name:
            log.error("%s stopped: %s is at fault: %s", cfg.name, culprit, reason)
        raise


def _run_member(
    cfg: PartyConfig, resume: bool, override_gate: bool, show_progress: bool
) -> dict[str, Any]:
    torch.set_num_threads(1)
    phases.injected_fault()  # a malformed test hook is refused before any traffic
    schema, frame = _load_inputs(cfg)
    from smpc_synth.net import PeerMesh, TlsFiles

    tls = TlsFiles(cfg.tls_ca, cfg.tls_cert, cfg.tls_key) if cfg.uses_tls else None
    mesh = PeerMesh(
        me=cfg.name,
        listen=cfg.listen,
        peers={m.name: m.address for m in cfg.peers},
        tls=tls,
        network=cfg.run.network,
        allow_insecure=cfg.allow_insecure,
    )
    started = time.perf_counter()
    emitter = ProgressEmitter(
        cfg.name, f"{cfg.name}: {cfg.run.mode} · {cfg.run.generator}", show=show_progress
    )
    progress = _stop_when_aborted(mesh, emitter)
    session_over = threading.Event()
    follow_launcher(mesh, session_over)
    with _abort_on_signals(mesh, cfg.name), emitter:
        mesh.start()
        try:
            phases.enter(cfg.name, "start-up")
            progress({"event": "stage", "stage": "connecting to peers"})
            mesh.connect()
            phases.enter(cfg.name, "handshake")
            mesh.handshake(cfg.session, session_fingerprints(cfg, schema))
            log.info("session %r agreed with %s", cfg.session, ", ".join(m.name for m in cfg.peers))
            progress({"event": "stage", "stage": ROLES[cfg.role].stage})
            result = player(cfg.role)(cfg, schema, frame, mesh, resume, progress)
            emitter({"event": "stage", "stage": "finished", "sent_bytes": mesh.stats().bytes_sent})
        except BaseException as exc:
            culprit = getattr(exc, "peer", None)
            mesh.abort(f"{cfg.name} stopped: {exc}", culprit=culprit or cfg.name)
            raise
        finally:
            mesh.close()
            session_over.set()
    if mesh.failure is not None:  # a peer failed or was late while the session closed
        raise mesh.failure
    result["progress"] = emitter.progress.summary()
    result["wall_seconds"] = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["peak_memory_mb"] = usage.ru_maxrss / 1024
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime  # unlike wall time, not load
    cfg.out.mkdir(parents=True, exist_ok=True)
    candidate = cfg.out / PENDING_NAME
    if cfg.release and candidate.is_file():
        _release(cfg, schema, frame, candidate, result, override_gate)
    else:
        _write_json(cfg.out / "metrics.json", result)
    return result


def _release(cfg: PartyConfig, schema, frame, candidate: Path, metrics, override: bool) -> None:
    """Evaluate against this party's own rows, gate, publish, sign; exit 3 if refused."""
    import pandas as pd
    import tomli_w

    from smpc_synth.eval import evaluate
    from smpc_synth.release import enforce, release_run

    log.info("evaluating the synthetic table against %s's own rows, then gating it", cfg.name)
    report = evaluate(
        frame, pd.read_csv(candidate), target=cfg.run.target, schema=schema, seed=cfg.run.seed
    )
    report["meta"]["reference"] = f"{cfg.name}'s own rows (no common holdout)"
    privacy = metrics.get("training", {}).get("privacy")
    if privacy is None:
        metrics["evaluation"] = report
    else:
        metrics["rows_released"] = metrics["training"]["rows_released"]
    (cfg.out / "config.toml").write_text(tomli_w.dumps(cfg.run.to_toml_dict()))
    schema.save(cfg.out / "schema.toml")
    certificates = {cfg.name: cfg.tls_cert} if cfg.tls_cert else {}
    decision = release_run(
        cfg.out,
        candidate=candidate,
        report=report,
        policy=cfg.run.gate,
        config=cfg.run.to_dict(),
        metrics=metrics,
        override=override,
        certificates=certificates,
        ca_path=cfg.tls_ca,
        keys={cfg.name: cfg.tls_key} if cfg.tls_key else {},
        privacy=privacy,
    )
    enforce(decision)


def _load_inputs(cfg: PartyConfig):
    """The schema, and (data parties) the rows validated against it."""
    from smpc_synth.data import Schema, read_table, validate
    from smpc_synth.dp.support import refuse_drafted_schema

    schema = Schema.load(cfg.schema)
    if cfg.run.dp.enabled:
        refuse_drafted_schema(schema, str(cfg.schema))
    if cfg.run.mode == "mpc":
        from smpc_synth.train.mpc.limits import check_mpc_inputs

        check_mpc_inputs(schema, cfg.run.generator, cfg.run.generator_params, str(cfg.schema))
    if cfg.role != "data":
        return schema, None
    frame = validate(read_table(cfg.data, schema), schema, source=str(cfg.data))
    if cfg.run.mode == "federated":  # local epochs: batches are drawn from this party's rows
        from smpc_synth.models import check_batch_rows

        check_batch_rows(
            cfg.run.generator, cfg.run.generator_params, len(frame), str(cfg.data), "rows here"
        )
    log.info("%s: %d rows valid against %s", cfg.data, len(frame), cfg.schema)
    return schema, frame


def play_data_party(
    cfg: PartyConfig, schema, frame, mesh, resume: bool, progress
) -> dict[str, Any]:
    """Train with the other data parties in the run's mode; sample if this party outputs."""
    from smpc_synth.models import hyperparameters
    from smpc_synth.train import PartyContext, get_strategy

    ctx = PartyContext(
        name=cfg.name,
        rank=cfg.data_parties.index(cfg.name),
        parties=cfg.data_parties,
        config=cfg.run,
        schema=schema,
        data=frame,
        channel=mesh,
        checkpoints=DirectoryCheckpoints(cfg.out / "checkpoints"),
        progress=progress,
        services={r: n for r in SERVICE_ROLES if (n := cfg.service(r))},
        output_parties=tuple(cfg.run.output_parties),
        resume=resume,
    )
    strategy = get_strategy(cfg.run.mode)
    result = strategy.run(ctx)
    phases.enter(cfg.name, "release")
    traffic = mesh.stats()
    metrics = {
        "party": cfg.name,
        "role": "data",
        "mode": cfg.run.mode,
        "generator": cfg.run.generator,
        "hyperparameters": hyperparameters(
            cfg.run.generator, cfg.run.generator_params, cfg.run.epochs
        ),
        "training": result.metrics,
        "traffic": _as_dict(traffic),
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    if result.synthesizer is not None:
        model_path = cfg.out / "generator.pt"
        result.synthesizer.save(model_path)
        rows = cfg.run.sample_rows or released_rows(result.metrics, len(frame))
        synthetic = result.synthesizer.sample(rows, seed=cfg.run.seed)
        synthetic.to_csv(cfg.out / PENDING_NAME, index=False)
        metrics["outputs"] = {"generator": str(model_path), "synthetic_rows": rows}
    return metrics


def released_rows(training: dict[str, Any], local_rows: int) -> int:
    """How many synthetic rows to draw by default: as many as were trained on, as far as the
    run may say (under DP, the noisy count it released)."""
    if "privacy" in training:
        return int(training["rows_released"])
    return int(training.get("rows_trained", local_rows))


def _stop_when_aborted(mesh, emit: ProgressEmitter):
    """Progress events double as cancellation points: a long local computation (an epoch)
    learns that the session was aborted at its next event and stops, naming the culprit.
    Each event also carries the bytes this member has sent so far."""

    def progress(event: dict[str, Any]) -> None:
        if mesh.aborted:
            raise mesh.failure or PeerError("the session was aborted")
        emit({**event, "sent_bytes": mesh.stats().bytes_sent})
        if event.get("event") == "epoch":
            phases.enter(mesh.me, "training")

    return progress


def play_dealer(cfg: PartyConfig, schema, frame, mesh, resume: bool, progress) -> dict[str, Any]:
    """Deal correlated randomness (Beaver triples, shares of noise) to the data parties."""
    from smpc_synth.mpc.dealer.server import serve_dealer

    serve_dealer(mesh, list(cfg.data_parties), insecure_debug_seed=cfg.run.mpc.debug_seed)
    phases.enter(cfg.name, "release")
    return {"party": cfg.name, "role": "dealer", "traffic": _as_dict(mesh.stats())}


def play_aggregator(
    cfg: PartyConfig, schema, frame, mesh, resume: bool, progress
) -> dict[str, Any]:
    """Sum the data parties' encrypted, masked updates without being able to read them."""
    from smpc_synth.train.aggregation import serve_aggregator

    summary = serve_aggregator(mesh, cfg.data_parties, cfg.run)
    phases.enter(cfg.name, "release")
    return {"party": cfg.name, "role": "aggregator", **summary, "traffic": _as_dict(mesh.stats())}


def _as_dict(stats) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(stats) if is_dataclass(stats) else dict(stats)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


@contextmanager
def _abort_on_signals(mesh, name: str):
    """Ctrl-C or SIGTERM: tell every peer we are leaving, then stop cleanly."""

    def handler(signum, _frame):
        reason = f"{name} was interrupted ({signal.Signals(signum).name})"
        mesh.abort(reason, culprit=name)
        raise PeerError(reason, peer=name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
