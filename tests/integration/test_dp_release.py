"""With DP on, nothing a run releases depends on the rows except through its mechanisms.

The check: with ``dp.insecure_null_data`` every accounted mechanism ignores its data input
(releases noise alone, from a fixed debug seed), so two neighbouring tables must give
byte-identical released files; and the same run with the mechanisms reading the rows must
give different ones (so the comparison can see the data at all). An exact count, a loss, an
encoder fitted from exact sums or any other path around the mechanisms makes the first
assertion fail (it does on the code before DP covered the encoder, counts and metrics).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from smpc_synth.config import DpConfig, RunConfig, drop_none
from smpc_synth.data import infer_schema, load_builtin
from smpc_synth.models import Synthesizer
from smpc_synth.runtime.simulate import simulate

torch.set_num_threads(1)

RELEASED_FILES = ("generator.pt", "synthetic.csv", "metrics.json", "config.toml", "schema.toml")


def _neighbours(rows: int = 300) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """A table and the same table plus one outlying row (extreme numbers, rarest levels)."""
    frame = load_builtin("fair").frame.sample(rows, random_state=4).reset_index(drop=True)
    schema = infer_schema(load_builtin("fair").frame, target="had_affair")  # public data set
    outlier = frame.iloc[[0]].copy()
    for spec in schema.columns:
        if spec.kind in ("numeric", "integer"):
            outlier[spec.name] = spec.max
        elif spec.kind == "categorical":
            outlier[spec.name] = frame[spec.name].value_counts().index[-1]
    return frame, pd.concat([frame, outlier], ignore_index=True), schema


def _state(model: Synthesizer) -> dict:
    payload = {
        "generator": model.generator.state_dict(),
        "encoder": model.encoder.state_dict(),
        "meta": model.meta,
        "sample": model.sample(50, seed=1),
    }
    return payload


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, pd.DataFrame):
        return a.equals(b)
    return a == b


@pytest.mark.parametrize(
    "generator", ["gaussian", "vae", "gan", "mst", pytest.param("aim", marks=pytest.mark.slow)]
)
def test_plaintext_fit_depends_on_rows_only_through_its_mechanisms(generator):
    table, neighbour, schema = _neighbours()
    params = {
        "gaussian": {},
        "mst": {},
        "aim": {"rounds_per_column": 1, "iters": 100, "final_iters": 100},
    }.get(generator, {"batch_size": 64})
    epochs = 1 if generator in ("vae", "gan") else None

    def fit(frame, null_data):
        dp = DpConfig(epsilon=2.0, insecure_debug_seed=9, insecure_null_data=null_data)
        return _state(
            Synthesizer.fit(frame, schema, generator, epochs=epochs, seed=3, params=params, dp=dp)
        )

    nulled = fit(table, True)
    assert _same(nulled, fit(neighbour, True))
    assert not _same(nulled, fit(table, False))


def _released(run_dir) -> dict:
    out = {}
    for name in RELEASED_FILES:
        path = run_dir / name
        out[name] = path.read_bytes() if path.is_file() else None
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for key in ("created", "certificates", "ca", "signatures"):
        manifest.pop(key)
    manifest["files"] = {k: v["sha256"] for k, v in manifest["files"].items()}
    out["manifest.json"] = manifest
    generator = torch.load(run_dir / "generator.pt", weights_only=True)
    out["generator.pt"] = generator  # zip metadata aside, the content
    return out


def _differences(a: dict, b: dict) -> list[str]:
    return [name for name in a if not _same(a[name], b[name])]


def _simulate(tmp_path, name, frame, schema, mode, generator, null_data, unit="record"):
    folder = tmp_path / name
    folder.mkdir()
    frame.to_csv(folder / "data.csv", index=False)
    schema.save(folder / "schema.toml")
    raw = {
        "mode": mode,
        "generator": generator,
        "epochs": 1 if generator in ("vae", "gan") else None,
        "seed": 3,
        "holdout_fraction": 0.0,
        "generator_params": {"batch_size": 64} if generator in ("vae", "gan") else {},
        "dp": {
            "epsilon": 2.0,
            "unit": unit,
            "insecure_debug_seed": 9,
            "insecure_null_data": null_data,
        },
    }
    if unit == "party":
        raw["sample_rows"] = 200
    if mode == "mpc":  # the dealer's noise key derives from the MPC debug seed
        raw["mpc"] = {"insecure_dev": True, "debug_seed": 9}
    result = simulate(
        2,
        data=folder / "data.csv",
        schema=folder / "schema.toml",
        out=folder / "run",
        config=RunConfig.from_dict(drop_none(raw)),
        show_progress=False,
    )
    assert result.exit_code == 0, result.exit_codes
    return _released(folder / "run")


def _check_session(tmp_path, mode, generator, unit="record"):
    table, neighbour, schema = _neighbours()
    nulled = _simulate(tmp_path, "a", table, schema, mode, generator, True, unit)
    neighbours = _simulate(tmp_path, "b", neighbour, schema, mode, generator, True, unit)
    assert _differences(nulled, neighbours) == []
    reading = _simulate(tmp_path, "c", table, schema, mode, generator, False, unit)
    assert "generator.pt" in _differences(nulled, reading)
    privacy = json.loads(nulled["metrics.json"])["privacy"]
    assert privacy["epsilon"] <= 2.0 and privacy["unit"] == unit
    assert nulled["manifest.json"]["privacy"] == privacy
    return nulled


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_federated_dp_session_releases_nothing_else_of_the_rows(tmp_path):
    released = _check_session(tmp_path, "federated", "vae")
    metrics = json.loads(released["metrics.json"])
    assert "evaluation" not in metrics and "parties" not in metrics
    assert [p["label"] for p in metrics["privacy"]["parts"]] == ["encoder", "training"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    ("mode", "generator", "unit"),
    [
        ("plaintext", "gaussian", "record"),
        ("plaintext", "vae", "record"),
        ("plaintext", "gan", "record"),
        ("federated", "gaussian", "record"),
        ("federated", "gan", "record"),
        ("federated", "gaussian", "party"),
        ("federated", "vae", "party"),
        ("federated", "gan", "party"),
        ("mpc", "gaussian", "record"),
        ("mpc", "vae", "record"),
        ("mpc", "gan", "record"),
        ("plaintext", "mst", "record"),
        ("mpc", "mst", "record"),
    ],
)
def test_every_dp_session_releases_nothing_else_of_the_rows(tmp_path, mode, generator, unit):
    _check_session(tmp_path, mode, generator, unit)


def test_neighbours_differ_where_a_leak_would_show():
    table, neighbour, schema = _neighbours()
    assert len(neighbour) == len(table) + 1
    numeric = [s.name for s in schema.columns if s.kind in ("numeric", "integer")]
    assert all(np.isclose(neighbour[c].iloc[-1], schema.column(c).max) for c in numeric)


@pytest.mark.parametrize(
    ("generator", "limit", "released"), [("gaussian", 1.0, False), ("mst", 3.0, True)]
)
def test_max_epsilon_gates_every_dp_generator_on_the_ledger_alone(
    tmp_path, generator, limit, released
):
    """gate.max_epsilon reads the privacy record, not the rows: a run over the limit is
    withheld (exit 3), one within it released, whatever the generator's accountant."""
    from smpc_synth.config import GateConfig
    from smpc_synth.errors import ReleaseRefused
    from smpc_synth.release import PENDING_NAME, enforce, release_run

    table, _, schema = _neighbours()
    model = Synthesizer.fit(table, schema, generator, dp=DpConfig(epsilon=2.0, accountant=None))
    model.sample(50, seed=0).to_csv(tmp_path / PENDING_NAME, index=False)
    decision = release_run(
        tmp_path,
        candidate=tmp_path / PENDING_NAME,
        report={},
        policy=GateConfig(max_epsilon=limit),
        config={},
        metrics={},
        privacy=model.privacy,
    )
    assert decision.released is released
    assert (tmp_path / "synthetic.csv").is_file() is released
    assert json.loads((tmp_path / "manifest.json").read_text())["privacy"] == model.privacy
    if not released:
        assert decision.failures[0].metric == "epsilon"
        with pytest.raises(ReleaseRefused):
            enforce(decision)
