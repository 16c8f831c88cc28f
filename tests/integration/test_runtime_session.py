"""Whole sessions: real party processes, real gRPC with mutual TLS, faults injected."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import tomli_w

from smpc_synth.runtime.simulate import prepare_session


def _start(config: Path, role: str = "party") -> subprocess.Popen:
    cmd = "party" if role == "data" else role
    return subprocess.Popen(
        [sys.executable, "-m", "smpc_synth", cmd, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def _finish(procs: dict[str, subprocess.Popen], timeout: float) -> dict[str, tuple[int, str]]:
    deadline = time.monotonic() + timeout
    out = {}
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{name} did not stop within {timeout} s")
        out[name] = (proc.returncode, err)
    return out


def test_three_party_plaintext_simulation_from_the_command_line(cli, tmp_path):
    out = tmp_path / "run"
    result = cli(
        "simulate",
        "--parties",
        "3",
        "--mode",
        "plaintext",
        "--generator",
        "vae",
        "--dataset",
        "breast_cancer",
        "--epochs",
        "3",
        "--override-gate",  # three epochs make a weak model; the gate is tested elsewhere
        "--out",
        out,
    )
    assert result.code == 0, result.output
    # it says what runs, shows one run-wide progress in human units, and records it
    text = result.output
    assert "simulate: plaintext mode, generator vae, data built-in:breast_cancer" in text
    assert "run finished (plaintext mode, generator vae, data built-in:breast_cancer)" in text
    progress_lines = [line for line in text.splitlines() if re.search(r"epoch \d/3", line)]
    assert 1 <= len(progress_lines) <= 3, text  # not one line per party per epoch
    assert "@@progress" not in text
    assert not re.search(r"\b\d{4,}\.\d+\b", "\n".join(progress_lines)), progress_lines
    progress = json.loads((out / "metrics.json").read_text())["progress"]
    assert progress["epochs_done"] == progress["epochs_total"] == 3
    assert [h["epoch"] for h in progress["history"]] == [1, 2, 3]
    assert progress["bytes_sent"] > 0  # bob and carol sent their rows to alice
    synthetic = pd.read_csv(out / "synthetic.csv")
    holdout = pd.read_csv(out / "holdout.csv")
    assert list(synthetic.columns) == list(holdout.columns)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["exit_codes"] == {"alice": 0, "bob": 0, "carol": 0}
    assert 0.0 <= metrics["evaluation"]["fidelity"]["quality_score"] <= 1.0
    assert metrics["evaluation"]["meta"]["rows"]["holdout"] == len(holdout)
    # the two non-leaders really sent their rows over the data plane
    for name in ("bob", "carol"):
        assert metrics["parties"][name]["traffic"]["bytes_sent"] > 0
        assert "IN THE CLEAR" in (out / "logs" / f"{name}.log").read_text()
    assert (out / "generator.pt").is_file() and (out / "config.toml").is_file()


def test_mismatched_run_configs_stop_every_party_naming_the_difference(tmp_path):
    session = prepare_session(2, dataset="breast_cancer", out=tmp_path / "run", mode="plaintext")
    bob = next(m for m in session.members if m.name == "bob")
    doc = tomllib.loads(bob.config_path.read_text())
    doc["run"]["seed"] = 7
    doc["run"]["federated"] = {"local_epochs": 3}
    bob.config_path.write_text(tomli_w.dumps(doc))
    procs = {m.name: _start(m.config_path) for m in session.members}
    results = _finish(procs, timeout=60)
    for name, (code, err) in results.items():
        assert code == 1, (name, err)
    # each side names the keys that differ, with both values; nothing else
    alice, bob_err = results["alice"][1], results["bob"][1]
    assert "config key 'seed' (0 here, 7 at bob)" in alice, alice
    assert "config key 'federated.local_epochs' (1 here, 3 at bob)" in alice, alice
    assert "config key 'seed' (7 here, 0 at alice)" in bob_err, bob_err
    verdict = next(line for line in alice.splitlines() if line.startswith("error: handshake"))
    assert "config key 'mode'" not in verdict and "schema" not in verdict, verdict


def test_a_killed_party_stops_the_others_within_the_timeout_naming_it(tmp_path):
    session = prepare_session(
        3,
        dataset="breast_cancer",
        out=tmp_path / "run",
        mode="federated",
        generator="vae",
        epochs=500,
    )
    procs = {m.name: _start(m.config_path, m.role) for m in session.members}
    metrics_seen = session.run_dir / "parties" / "carol" / "checkpoints"
    deadline = time.monotonic() + 120
    while not metrics_seen.exists():  # wait until training is under way
        assert time.monotonic() < deadline, "training never started"
        assert all(p.poll() is None for p in procs.values())
        time.sleep(0.2)
    procs["carol"].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    survivors = {n: p for n, p in procs.items() if n != "carol"}
    results = _finish(survivors, timeout=45)
    assert time.monotonic() - killed_at < 30 + 5
    for name, (code, err) in results.items():
        assert code == 1, (name, err)
        assert "carol" in err, (name, err)
    procs["carol"].wait()


def test_federated_simulation_with_ckks_and_masking(tmp_path):
    from smpc_synth.runtime.simulate import simulate

    result = simulate(
        3,
        dataset="breast_cancer",
        out=tmp_path / "fed",
        mode="federated",
        generator="vae",
        epochs=2,
        output_parties=["alice"],
        show_progress=False,
        override_gate=True,  # two rounds make a weak model; the gate is tested elsewhere
    )
    assert result.exit_code == 0, result.exit_codes
    # FedAvg shows every party the model; only an output party keeps it, and privately
    folders = tmp_path / "fed" / "parties"
    kept = folders / "alice" / "checkpoints" / "federated.pt"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    for name in ("bob", "carol"):
        assert not (folders / name / "checkpoints" / "federated.pt").exists(), name
        assert not (folders / name / "generator.pt").exists(), name
        log = (tmp_path / "fed" / "logs" / f"{name}.log").read_text()
        assert "is not an output party" in log, name
    parties = result.metrics["parties"]
    assert parties["aggregator"]["role"] == "aggregator" and parties["aggregator"]["rounds"] >= 3
    for name in ("alice", "bob", "carol"):
        training = parties[name]["training"]
        assert training["he"] == "ckks" and training["masking"] is True
        assert [e["epoch"] for e in training["epochs"]] == [1, 2]
    assert len(result.synthetic) == parties["alice"]["training"]["rows_trained"]
