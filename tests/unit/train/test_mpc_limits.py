"""What MPC training cannot carry is refused before any network traffic, naming the column
and the limit (exit code 2); everything within the limits is accepted."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from smpc_synth.data import ColumnSpec, Schema, TableEncoder, infer_schema
from smpc_synth.data.defaults import MAX_CATEGORIES as INFERRED_CATEGORIES
from smpc_synth.data.generated import ColumnShape, table_from_columns
from smpc_synth.errors import InputError
from smpc_synth.mpc.dealer import protocol
from smpc_synth.mpc.primitives import compare
from smpc_synth.runtime.simulate import prepare_session
from smpc_synth.train.mpc.limits import (
    MAX_CATEGORIES,
    MAX_LOGVAR_BOUND,
    check_mpc_inputs,
    encoded_width_bound,
)


def _categorical(name: str, count: int) -> ColumnSpec:
    return ColumnSpec(name, "categorical", categories=tuple(f"v{i}" for i in range(count)))


def _schema(*columns: ColumnSpec) -> Schema:
    return Schema((ColumnSpec("x", "numeric", min=0.0, max=1.0), *columns))


@pytest.mark.parametrize("generator", ["vae", "gan"])
def test_schemas_up_to_the_inference_limit_are_accepted(generator):
    assert INFERRED_CATEGORIES >= 200
    schema = _schema(_categorical("wide", INFERRED_CATEGORIES), _categorical("narrow", 2))
    check_mpc_inputs(schema, generator, {}, "schema.toml")


def test_a_column_with_too_many_categories_is_refused_naming_it_and_the_limit():
    schema = _schema(_categorical("zip_code", MAX_CATEGORIES + 1))
    with pytest.raises(InputError, match=f"'zip_code' has {MAX_CATEGORIES + 1} categories") as e:
        check_mpc_inputs(schema, "vae", {}, "schema.toml")
    assert f"at most {MAX_CATEGORIES}" in str(e.value) and "schema.toml" in str(e.value)
    check_mpc_inputs(_schema(_categorical("zip_code", MAX_CATEGORIES)), "gaussian", {}, "s")


@pytest.mark.parametrize(("generator", "columns"), [("vae", 90), ("gan", 40)])
def test_a_table_too_wide_for_the_dealers_requests_is_refused(generator, columns):
    schema = _schema(*(_categorical(f"c{i}", 200) for i in range(columns)))
    with pytest.raises(InputError, match="would ask the dealer for") as e:
        check_mpc_inputs(schema, generator, {}, "schema.toml")
    assert "'c0' (200)" in str(e.value) and f"{protocol.MAX_TUPLE_ELEMENTS // 8:,}" in str(e.value)
    # a smaller batch fits the same table through (the VAE's requests scale with it)
    if generator == "vae":
        check_mpc_inputs(schema, generator, {"batch_size": 100}, "schema.toml")


def test_a_table_the_latency_schedules_batch_is_too_large_for_names_the_schedule():
    """The schedule's batch, not the user's, is what the dealer would be asked for."""
    schema = _schema(*(_categorical(f"c{i}", 200) for i in range(20)))
    check_mpc_inputs(schema, "vae", {}, "schema.toml")  # batch 500 fits
    with pytest.raises(InputError, match="batch size 2500") as e:
        check_mpc_inputs(schema, "vae", {"schedule": "latency"}, "schema.toml")
    assert "use the default schedule (generator_params.schedule)" in str(e.value)


def test_the_vaes_logvar_bound_is_limited_to_what_fixed_point_holds():
    schema = _schema()
    check_mpc_inputs(schema, "vae", {"logvar_bound": MAX_LOGVAR_BOUND}, "s")
    with pytest.raises(InputError, match=r"logvar_bound 12\.0 is outside"):
        check_mpc_inputs(schema, "vae", {"logvar_bound": 12.0}, "s")


def test_comparisons_are_cut_below_the_dealers_bound():
    assert compare.MAX_COUNT <= protocol.MAX_TUPLE_ELEMENTS // 8


@seed(23)
@settings(max_examples=12, deadline=None, database=None)
@given(
    shapes=st.lists(
        st.one_of(
            st.builds(ColumnShape, categories=st.integers(2, 60)),
            st.builds(
                ColumnShape,
                scale=st.floats(1e-3, 1e9),
                skew=st.floats(1e-4, 2.5),
                zeros=st.sampled_from([0.0, 0.5, 0.95]),
            ),
        ),
        min_size=1,
        max_size=8,
    ),
    data_seed=st.integers(0, 2**31 - 1),
)
def test_the_width_bound_holds_for_every_fitted_encoder(shapes, data_seed):
    frame = table_from_columns(shapes, 200, data_seed)
    schema = infer_schema(frame)
    for numeric in ("mode", "standard", "quantile"):
        width = TableEncoder(schema, numeric=numeric).fit(frame).layout.width
        assert width <= encoded_width_bound(schema, numeric)


def _wide_schema_file(path):
    schema = _schema(_categorical("zip_code", MAX_CATEGORIES + 5))
    schema.save(path)
    return path


def test_simulate_refuses_before_starting_any_party(cli, tmp_path):
    rows = 40
    frame = pd.DataFrame(
        {
            "x": np.linspace(0, 1, rows),
            "zip_code": [f"v{i % (MAX_CATEGORIES + 5)}" for i in range(rows)],
        }
    )
    data = tmp_path / "data.csv"
    frame.to_csv(data, index=False)
    schema = _wide_schema_file(tmp_path / "schema.toml")
    out = tmp_path / "run"
    args = ("simulate", "--mode", "mpc", "--generator", "vae", "--data", data)
    result = cli(*args, "--schema", schema, "--out", out, "--parties", "2")
    assert result.code == 2, result.output
    assert "zip_code" in result.stderr and f"at most {MAX_CATEGORIES}" in result.stderr
    assert "Traceback" not in result.output and "unexpected" not in result.output
    assert not (out / "parties").exists()  # no session was written, no process started


def test_a_party_refuses_before_connecting(tmp_path):
    """A party whose schema MPC cannot carry stops at once with exit code 2 (its peers are
    not even running: it never tries to reach them)."""
    session = prepare_session(
        2, dataset="breast_cancer", out=tmp_path / "run", mode="mpc", generator="vae"
    )
    alice = next(m for m in session.members if m.name == "alice")
    _wide_schema_file(session.run_dir / "schema.toml")
    proc = subprocess.run(
        [sys.executable, "-m", "smpc_synth", "party", "--config", str(alice.config_path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "zip_code" in proc.stderr and f"at most {MAX_CATEGORIES}" in proc.stderr
    assert "listening" not in proc.stderr and "bob" not in proc.stderr
