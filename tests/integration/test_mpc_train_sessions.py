"""MPC mode end to end: real member processes over gRPC + mutual TLS with the dealer.

Default run: the gaussian fitted from secure sums equals the plaintext fit. Slow: a wire tap
shows that no member ever receives another party's rows (while plaintext mode, the control,
visibly sends them); the parity, gan and resume runs are in test_mpc_train_parity.py.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from smpc_synth.data import load_builtin, read_table, validate
from smpc_synth.models import Synthesizer
from smpc_synth.net.tap import ENV as WIRE_TAP_ENV
from smpc_synth.runtime.simulate import simulate

FIXED_POINT_SCALE = 2**16  # CrypTen's encoding of reals
TINY_VAE = {"hidden": [16], "latent_dim": 4, "batch_size": 200}  # the wire tap needs no quality


def _pooled_training_rows(run_dir: Path) -> pd.DataFrame:
    """The parties' rows, concatenated in rank order (what plaintext mode would pool)."""
    parts = sorted((run_dir / "parties").glob("*/data.csv"))
    order = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
    parts.sort(key=lambda p: order.index(p.parent.name))
    return pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)


def test_gaussian_from_secure_sums_equals_the_plaintext_fit(tmp_path, cli):
    result = simulate(
        2,
        dataset="breast_cancer",
        mode="mpc",
        generator="gaussian",
        out=tmp_path / "run",
        show_progress=False,
    )
    assert result.exit_code == 0, result.exit_codes
    ours = Synthesizer.load(result.run_dir / "generator.pt")
    pooled = _pooled_training_rows(result.run_dir)
    reference = Synthesizer.fit(pooled, ours.schema, generator="gaussian", seed=0)
    for key in ("mean", "cov"):
        got, expected = ours.generator.state_dict()[key], reference.generator.state_dict()[key]
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4, msg=key)
    training = result.metrics["parties"]["alice"]["training"]
    assert training["rows_trained"] == len(pooled)
    assert training["traffic_by_phase"]["encoder stats"]["bytes_sent"] > 0
    assert "quality_score" in result.metrics["evaluation"]["fidelity"]
    sampled = cli(
        "sample", "--model", result.run_dir / "generator.pt", "-n", 50, "-o", tmp_path / "s.csv"
    )
    assert sampled.code == 0, sampled.output
    assert len(pd.read_csv(tmp_path / "s.csv")) == 50


# --- what crosses the wire ---------------------------------------------------------------------

PLANTED_COLUMN = "mean radius"
PLANTED = [
    13.371337,
    14.242424,
    15.151515,
    16.616161,
    17.717171,
    12.828282,
    11.939393,
    13.047474,
    14.585858,
    15.696969,
    16.303030,
    12.454545,
]


def _planted_table(path: Path) -> Path:
    frame = load_builtin("breast_cancer").frame.copy()
    rows = np.linspace(0, len(frame) - 1, len(PLANTED)).astype(int)
    frame.loc[rows, PLANTED_COLUMN] = PLANTED
    frame.to_csv(path, index=False)
    return path


def _owners(run_dir: Path) -> dict[float, str]:
    """Which party got each planted value (the holdout may have kept some)."""
    owners = {}
    for data in (run_dir / "parties").glob("*/data.csv"):
        values = pd.read_csv(data)[PLANTED_COLUMN].to_numpy()
        for v in PLANTED:
            if np.isclose(values, v, atol=1e-9, rtol=0).any():
                owners[v] = data.parent.name
    return owners


def _patterns(values: list[float], neighbours: list[tuple[float, float]]) -> dict[str, bytes]:
    """8-byte patterns a planted value would show on the wire: as float64, as CrypTen fixed
    point (int64, +-1 for rounding), and as float32 next to its row neighbour (a row sent as
    a float32 tensor; a lone 4-byte float32 would match random shares by chance)."""
    found = {}
    for v in values:
        found[f"{v} float64"] = struct.pack("<d", v)
        fixed = int((torch.tensor([v], dtype=torch.float32) * FIXED_POINT_SCALE).long())
        for delta in (-1, 0, 1):
            found[f"{v} fixed{delta:+d}"] = struct.pack("<q", fixed + delta)
    for a, b in neighbours:
        found[f"{a},{b} float32"] = struct.pack("<ff", a, b)
    return found


def _planted_row(run_dir: Path, owner: str, value: float):
    """The planted row as validated raw values and as the encoded model input (what is shared)."""
    model = Synthesizer.load(run_dir / "generator.pt")
    path = run_dir / "parties" / owner / "data.csv"
    frame = validate(read_table(path, model.schema), model.schema, source=str(path))
    row = frame[np.isclose(frame[PLANTED_COLUMN], value, atol=1e-9, rtol=0)]
    encoded = [float(x) for x in model.encoder.transform(row)[0]]
    span = next(s for s in model.encoder.layout.spans if s.column == PLANTED_COLUMN)
    raw = row.select_dtypes("number").iloc[0].tolist()
    at = list(row.select_dtypes("number").columns).index(PLANTED_COLUMN)
    values = [value] + [x for x in encoded[span.start : span.stop] if x not in (0.0, 1.0)]
    neighbours = [(raw[at], raw[at + 1]), (encoded[span.start], encoded[span.start + 1])]
    return values, neighbours


def _leaks(tap: Path, owner: str, patterns: dict[str, bytes]) -> list[str]:
    leaks = []
    for capture in tap.glob("*-from-*.bin"):
        receiver = capture.name.split("-from-")[0]
        if receiver == owner:
            continue
        blob = capture.read_bytes()
        leaks += [f"{name} in {capture.name}" for name, p in patterns.items() if p in blob]
    return leaks


@pytest.mark.slow  # about 3 minutes: 3-party MPC and its plaintext control, 2 sessions
def test_no_member_receives_another_partys_rows_over_the_wire(tmp_path, monkeypatch):
    data = _planted_table(tmp_path / "planted.csv")
    tap = tmp_path / "tap-mpc"
    monkeypatch.setenv(WIRE_TAP_ENV, str(tap))
    result = simulate(
        3,
        data=data,
        target="diagnosis",
        mode="mpc",
        generator="vae",
        epochs=1,
        generator_params=TINY_VAE,
        out=tmp_path / "mpc",
        show_progress=False,
    )
    assert result.exit_code == 0, result.exit_codes
    assert {p.name for p in tap.glob("*.bin")} >= {"alice-from-bob.bin", "bob-from-alice.bin"}
    owners = _owners(result.run_dir)
    assert len(set(owners.values())) >= 2, owners
    for value, owner in owners.items():
        patterns = _patterns(*_planted_row(result.run_dir, owner, value))
        assert not _leaks(tap, owner, patterns), (owner, _leaks(tap, owner, patterns))
    shutil.rmtree(tap)  # gigabytes of shares

    # control: the same check catches plaintext mode, which sends rows in the clear
    control_tap = tmp_path / "tap-plain"
    monkeypatch.setenv(WIRE_TAP_ENV, str(control_tap))
    control = simulate(
        3,
        data=data,
        target="diagnosis",
        mode="plaintext",
        generator="gaussian",
        out=tmp_path / "plain",
        show_progress=False,
    )
    assert control.exit_code == 0, control.exit_codes
    sent = {v: o for v, o in _owners(control.run_dir).items() if o != "alice"}
    assert sent
    for value, owner in sent.items():
        patterns = _patterns(*_planted_row(control.run_dir, owner, value))
        assert _leaks(control_tap, owner, patterns), (owner, value)


def _tiny_vae_weights(tmp_path: Path, name: str, debug_seed: int) -> dict[str, torch.Tensor]:
    result = simulate(
        2,
        dataset="breast_cancer",
        mode="mpc",
        generator="vae",
        epochs=1,
        generator_params=TINY_VAE,
        mpc={"insecure_dev": True, "debug_seed": debug_seed},
        out=tmp_path / name,
        show_progress=False,
        override_gate=True,
    )
    assert result.exit_code == 0, result.exit_codes
    state = Synthesizer.load(result.run_dir / "generator.pt").generator.state_dict()
    return state["modules"]["decoder"]


def test_a_debug_seed_repeats_an_mpc_run_bit_for_bit(tmp_path):
    """With fresh dealer keys two runs differ in the last bits of fixed point (the dealer's
    and CrypTen's randomness decide truncation errors); with ``mpc.debug_seed`` (tests only)
    they are identical."""
    first = _tiny_vae_weights(tmp_path, "first", debug_seed=7)
    again = _tiny_vae_weights(tmp_path, "again", debug_seed=7)
    assert first.keys() == again.keys()
    for name in first:
        assert torch.equal(first[name], again[name]), name


@pytest.mark.slow
def test_the_latency_schedule_trains_in_mpc_and_is_recorded(tmp_path):
    """An MPC session with ``schedule = "latency"``: 5,093 pooled rows in two steps of
    2,500 an epoch, and the batch and learning rate it set recorded by the run and by
    every data party."""
    result = simulate(
        2,
        dataset="fair",
        mode="mpc",
        generator="vae",
        epochs=1,
        seed=0,
        generator_params={"schedule": "latency"},
        out=tmp_path / "run",
        show_progress=False,
    )
    assert result.exit_code == 0, result.exit_codes
    recorded = [result.metrics["hyperparameters"]] + [
        party["hyperparameters"]
        for party in result.metrics["parties"].values()
        if "training" in party
    ]
    assert len(recorded) == 3
    for hp in recorded:
        assert (hp["schedule"], hp["batch_size"], hp["lr"], hp["epochs"]) == (
            "latency", 2500, 5e-3, 1
        )  # fmt: skip
    trained = Synthesizer.load(result.run_dir / "generator.pt").generator.hparams
    assert (trained.batch_size, trained.lr) == (2500, 5e-3)
