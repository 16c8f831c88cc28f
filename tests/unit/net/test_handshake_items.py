"""A handshake mismatch names the config key or schema column that differs, not a hash."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smpc_synth.config import RunConfig
from smpc_synth.data import infer_schema
from smpc_synth.errors import InputError
from smpc_synth.net.mesh.handshake import _differences
from smpc_synth.net.v1 import session_pb2
from smpc_synth.runtime.party import config_items, session_fingerprints
from smpc_synth.runtime.party_config import Member, PartyConfig

FLAT_KEYS = sorted(config_items(RunConfig()))


def _member(name: str, run: RunConfig) -> PartyConfig:
    others = [Member(n, f"127.0.0.1:{i + 7000}") for i, n in enumerate(("alice", "bob"))]
    return PartyConfig(
        name=name,
        role="data",
        listen="127.0.0.1:1",
        session="s",
        out=Path("out"),
        run=run,
        peers=[m for m in others if m.name != name],
    )


def _schema(rows: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {"age": rng.integers(18, 90, rows), "city": rng.choice(["Oslo", "Bergen"], rows)}
    )
    return infer_schema(frame)


def _hello(cfg: PartyConfig, schema) -> session_pb2.Hello:
    return session_pb2.Hello(session_id="s", fingerprints=session_fingerprints(cfg, schema))


def _candidates(value):
    """Values to try in place of ``value``, of its kind."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2, max(value - 1, 0)]
    if isinstance(value, float):
        return [value / 2, value * 2, value + 1]
    if isinstance(value, str):
        return [
            *("federated", "mpc", "none", "gloo", "tfp", "noniid:age", "vae", "party", "record"),
            value + "x",
        ]
    if isinstance(value, list):
        return [["alice"]]
    if isinstance(value, dict):
        return [{"ridge": 0.5}]
    return [5, 0.5, "age", "tcp://127.0.0.1:5"]  # None


# Starting points: the defaults, and configs where coupled keys (DP settings, debug-only
# MPC settings) may change one at a time.
BASES = [
    {},
    {"mode": "federated", "dp": {"epsilon": 8.0}},
    {"mode": "federated", "dp": {"epsilon": 8.0, "unit": "party"}, "sample_rows": 100},
    {"mode": "mpc", "dp": {"epsilon": 8.0}},
    {"mode": "mpc", "dp": {"epsilon": 8.0, "insecure_debug_seed": 3}},
    {"dp": {"epsilon": 8.0}},
    {"mode": "mpc", "mpc": {"insecure_dev": True, "provider": "tfp"}},
    {"mode": "mpc", "mpc": {"insecure_dev": True}},
]


def _changed(key: str) -> tuple[RunConfig, RunConfig] | None:
    """Two valid run configs that differ in ``key`` alone."""
    *tables, last = key.split(".")
    for base in BASES:
        mine = RunConfig.from_dict(base)
        for value in _candidates(config_items(mine)[key]):
            raw = json.loads(json.dumps(base))
            table = raw
            for name in tables:
                table = table.setdefault(name, {})
            table[last] = value
            try:
                theirs = RunConfig.from_dict(raw)
            except InputError:
                continue
            differ = {k for k, v in config_items(theirs).items() if config_items(mine).get(k) != v}
            if differ == {key}:
                return mine, theirs
    return None


def test_a_member_with_dp_on_is_named_by_its_budget():
    """DP is on exactly when a budget is set: the one key names the difference."""
    plain = RunConfig.from_dict({"mode": "federated"})
    private = RunConfig.from_dict({"mode": "federated", "dp": {"epsilon": 8.0}})
    schema = _schema()
    found = _differences(
        _hello(_member("alice", plain), schema), _hello(_member("bob", private), schema), "bob"
    )
    assert found == [
        "config key 'dp.accountant' (unset here, \"rdp\" at bob)",  # resolved with the budget
        "config key 'dp.epsilon' (unset here, 8.0 at bob)",
    ]


@pytest.mark.parametrize("key", FLAT_KEYS)
def test_exactly_the_changed_config_key_is_named_with_both_values(key):
    pair = _changed(key)
    assert pair is not None, f"no valid pair of configs differs in {key} alone"
    mine, theirs = pair
    schema = _schema()
    found = _differences(
        _hello(_member("alice", mine), schema), _hello(_member("bob", theirs), schema), "bob"
    )
    assert len(found) == 1, found
    assert found[0].startswith(f"config key '{key}' ("), found
    assert found[0].endswith(" at bob)")


def test_a_changed_schema_column_is_named_and_the_rest_is_not():
    schema = _schema()
    columns = list(schema.columns)
    columns[0] = dataclasses.replace(columns[0], max=columns[0].max + 1000)
    changed = dataclasses.replace(schema, columns=tuple(columns))
    found = _differences(
        _hello(_member("alice", RunConfig()), schema),
        _hello(_member("bob", RunConfig()), changed),
        "bob",
    )
    assert found == [f"schema column '{columns[0].name}' " + found[0].split("' ", 1)[1]]
    assert "config" not in found[0]


def test_the_handshake_items_carry_no_rows():
    """Per-column items are hashes: the only values sent are the public run config's."""
    schema = _schema()
    items = session_fingerprints(_member("alice", RunConfig()), schema)
    column_items = [v for k, v in items.items() if k.startswith("schema")]
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in column_items)
    assert not [k for k in items if not k.startswith(("config key", "schema", "version", "mem"))]
