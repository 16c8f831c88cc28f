"""A DP flag that cannot be honoured is refused with exit code 2, before any network traffic."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import tomli_w

from smpc_synth.config import MODES, RunConfig
from smpc_synth.dp.support import SUPPORTED
from smpc_synth.errors import InputError

GENERATORS = ("gaussian", "vae", "gan", "aim", "mst")
UNITS = ("record", "party")


def _raw(mode: str, generator: str, unit: str) -> dict:
    raw = {"mode": mode, "generator": generator, "dp": {"epsilon": 1.0, "unit": unit}}
    if unit == "party":
        raw["sample_rows"] = 100
    return raw


@pytest.mark.parametrize(
    ("mode", "generator", "unit"), list(itertools.product(MODES, GENERATORS, UNITS))
)
def test_every_combination_is_either_supported_or_refused_naming_generator_and_flag(
    mode, generator, unit
):
    raw = _raw(mode, generator, unit)
    if unit in SUPPORTED.get((mode, generator), ()):
        cfg = RunConfig.from_dict(raw)
        assert cfg.dp.enabled
        if generator == "gan":
            assert cfg.generator_params["pac"] == 1
        return
    with pytest.raises(InputError) as err:
        RunConfig.from_dict(raw, source="run.toml")
    message = str(err.value)
    assert "run.toml" in message and f"'{generator}'" in message
    assert "--epsilon" in message or f"--mode {mode}" in message


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"dp": {"epsilon": -1.0}}, "dp.epsilon"),
        ({"dp": {"epsilon": 1.0, "delta": 2.0}}, "dp.delta"),
        ({"dp": {"epsilon": 1.0, "accountant": "moments"}}, "dp.accountant"),
        ({"dp": {"epsilon": 1.0, "clip_norm": 0.0}}, "dp.clip_norm"),
        ({"dp": {"epsilon": 1.0, "encoder_share": 1.0}}, "dp.encoder_share"),
        ({"dp": {"insecure_debug_seed": 3}}, "dp.insecure"),
        ({"dp": {"epsilon": 1.0, "insecure_null_data": True}}, "dp.insecure_null_data"),
        ({"mode": "federated", "dp": {"epsilon": 1.0, "unit": "party"}}, "sample_rows"),
        ({"generator": "gan", "generator_params": {"pac": 10}, "dp": {"epsilon": 1.0}}, "pac"),
        (
            {
                "mode": "mpc",
                "mpc": {"provider": "tfp", "insecure_dev": True},
                "dp": {"epsilon": 1.0},
            },
            "dealer",
        ),
        ({"federated": {"dp": True, "target_epsilon": 1.0}}, "federated.dp"),
    ],
)
def test_bad_dp_settings_name_the_key(raw, named):
    with pytest.raises(InputError, match=named.replace(".", r"\.")):
        RunConfig.from_dict(raw, source="run.toml")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--mode", "mpc", "--generator", "gan", "--epsilon", "1", "--dp-unit", "party"], "gan"),
        (["--mode", "plaintext", "--epsilon", "1", "--dp-unit", "party"], "party"),
        (["--mode", "federated", "--epsilon", "1", "--dp-unit", "party"], "--sample-rows"),
        (["--mode", "mpc", "--insecure-dev", "--epsilon", "1"], "dealer"),
        (["--dp"], "--target-epsilon"),
        (["--target-epsilon", "2"], "--dp"),
        (["--dp", "--target-epsilon", "2", "--epsilon", "3"], "disagree"),
        (["--delta", "1e-7"], "--epsilon"),
        (["--data", "{data}", "--epsilon", "1"], "--schema"),
    ],
)
def test_simulate_refuses_before_it_writes_or_starts_anything(cli, tmp_path, args, named):
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,x\n2,y\n" * 10)
    out = tmp_path / "run"
    args = [a.replace("{data}", str(data)) for a in args]
    result = cli("simulate", "--parties", "2", *args, "--out", out, "--quiet", timeout=120)
    assert result.code == 2, result.output
    assert named in result.stderr
    assert not out.exists()  # no split, no certificates, no member started


def _alice_config(tmp_path, run: dict, dealer: bool = False, **party) -> Path:
    """A party config for alice (data alice.csv, schema schema.toml) whose peers are never
    started: bob, and a dealer if asked."""
    peers = [{"name": "bob", "address": "127.0.0.1:2"}]
    if dealer:
        peers.append({"name": "dealer", "address": "127.0.0.1:3", "role": "dealer"})
    doc = {
        "party": {
            "name": "alice",
            "listen": "127.0.0.1:1",
            "data": "alice.csv",
            "schema": "schema.toml",
            "allow_insecure": True,
            **party,
        },
        "peers": peers,
        "run": run,
    }
    config = tmp_path / "alice.toml"
    config.write_text(tomli_w.dumps(doc))
    return config


def test_a_party_refuses_an_unsupported_dp_run_before_connecting(cli, tmp_path):
    """Its peers do not exist: a party that tried to connect would wait for them."""
    (tmp_path / "schema.toml").write_text(
        '[[columns]]\nname = "a"\nkind = "numeric"\nmin = 0\nmax = 1\n'
    )
    (tmp_path / "alice.csv").write_text("a\n0.5\n" * 20)
    config = _alice_config(
        tmp_path,
        {"mode": "mpc", "generator": "gan", "dp": {"epsilon": 1.0, "unit": "party"}},
        dealer=True,
    )
    started = time.monotonic()
    result = cli("party", "--config", config, timeout=120)
    assert result.code == 2, result.output
    assert "gan" in result.stderr and "--epsilon" in result.stderr
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("command", ["train", "simulate", "simulate-builtin", "party"])
def test_a_dp_run_refuses_a_schema_drafted_from_the_rows(cli, tmp_path, command):
    """`schema infer` marks its draft; with --epsilon every command refuses it, naming the
    file and the key, before it writes, starts or connects anything."""
    data = tmp_path / "alice.csv"
    data.write_text("a,c\n" + "".join(f"{i / 20},{'xy'[i % 2]}\n" for i in range(20)))
    schema = tmp_path / "schema.toml"
    assert cli("schema", "infer", data, "-o", schema).code == 0
    assert "drafted_from_data = true" in schema.read_text()
    out = tmp_path / "run"
    if command == "party":
        run = {"mode": "plaintext", "generator": "mst", "dp": {"epsilon": 1.0}}
        args = ["party", "--config", _alice_config(tmp_path, run, out="run")]
    elif command == "simulate-builtin":
        args = ["simulate", "--dataset", "fair", "--schema", schema, "--generator", "mst"]
        args += ["--epsilon", "1", "--out", out, "--quiet"]
    else:
        args = [command, "--data", data, "--schema", schema, "--generator", "mst"]
        args += ["--epsilon", "1", "--out", out, "--quiet"]
    result = cli(*args, timeout=120)
    assert result.code == 2, result.output
    assert str(schema) in result.stderr and "drafted_from_data" in result.stderr, result.stderr
    assert not out.exists()


def test_a_schema_a_run_inferred_from_rows_is_marked_and_refused_under_dp(capsys, tmp_path):
    from smpc_synth.cli import main

    data = tmp_path / "rows.csv"
    data.write_text("a,c\n" + "".join(f"{i / 40},{'xy'[i % 2]}\n" for i in range(40)))
    first = tmp_path / "first"
    assert (
        main(["train", "--data", str(data), "--out", str(first), "--quiet", "--override-gate"]) == 0
    )
    kept = first / "schema.toml"
    assert "drafted_from_data = true" in kept.read_text()
    capsys.readouterr()
    argv = ["train", "--data", str(data), "--schema", str(kept), "--generator", "mst"]
    code = main([*argv, "--epsilon", "1", "--out", str(tmp_path / "second")])
    stderr = capsys.readouterr().err
    assert code == 2 and str(kept) in stderr and "drafted_from_data" in stderr, stderr
    assert not (tmp_path / "second").exists()
