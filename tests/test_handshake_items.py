"""A handshake mismatch names the config key or schema column that differs, not a hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from smpc_synth.config import RunConfig
from smpc_synth.data import infer_schema
from smpc_synth.net.mesh import _differences
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


def _set(run: RunConfig, dotted: str, value) -> RunConfig:
    *tables, key = dotted.split(".")
    target = run
    for table in tables:
        target = getattr(target, table)
    setattr(target, key, value)
    return run


def _other_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 3
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "carol"]
    if isinstance(value, dict):
        return {**value, "hidden": [8]}
    return 5  # None: any value differs


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(FLAT_KEYS))
def test_exactly_the_changed_config_key_is_named_with_both_values(key):
    schema = _schema()
    mine = RunConfig()
    default = config_items(mine)[key]
    theirs = _set(RunConfig(), key, _other_value(default))
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
