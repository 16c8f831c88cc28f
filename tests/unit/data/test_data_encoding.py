"""Table encoding: faithful round trips, small values, fits from summed party statistics."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest

from smpc_synth.data import (
    ColumnSpec,
    Schema,
    TableEncoder,
    flatten_stats,
    infer_schema,
    list_builtin,
    load_builtin,
    split_parties,
    sum_stats,
    unflatten_stats,
    validate,
)
from smpc_synth.data.defaults import MAX_ABS_ENCODED, NUMERIC_MODES
from smpc_synth.errors import InputError


@functools.cache
def _builtin(name: str) -> tuple[pd.DataFrame, Schema]:
    ds = load_builtin(name)
    schema = infer_schema(ds.frame, target=ds.target)
    return validate(ds.frame, schema, source=name), schema


def _assert_faithful(back: pd.DataFrame, df: pd.DataFrame, schema: Schema) -> None:
    assert list(back.columns) == schema.names
    for spec in schema.columns:
        got, want = back[spec.name], df[spec.name].reset_index(drop=True)
        if spec.kind == "numeric":
            tol = 1e-4 * (spec.max - spec.min)
            np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=tol)
        else:
            assert got.dtype == want.dtype, spec.name
            assert (got == want).all(), spec.name


@pytest.mark.parametrize("numeric", NUMERIC_MODES)
@pytest.mark.parametrize("name", list_builtin())
def test_round_trip_on_builtin(name, numeric):
    df, schema = _builtin(name)
    encoder = TableEncoder(schema, numeric=numeric).fit(df)
    X = encoder.transform(df)
    assert X.dtype == np.float32
    assert X.shape == (len(df), encoder.layout.width)
    assert np.abs(X).max() <= MAX_ABS_ENCODED
    _assert_faithful(encoder.inverse_transform(X), df, schema)


@pytest.mark.parametrize("numeric", NUMERIC_MODES)
def test_layout_spans_tile_the_matrix(numeric):
    df, schema = _builtin("fair")
    encoder = TableEncoder(schema, numeric=numeric).fit(df)
    layout = encoder.layout
    X = encoder.transform(df)
    assert [s.start for s in layout.spans] == [0] + [s.stop for s in layout.spans[:-1]]
    assert {s.column for s in layout.spans} == set(schema.names)
    for span in layout.spans:
        block = X[:, span.start : span.stop]
        if span.kind == "onehot":
            assert set(np.unique(block)) <= {0.0, 1.0}
            np.testing.assert_array_equal(block.sum(axis=1), 1.0)


@pytest.mark.parametrize("numeric", NUMERIC_MODES)
@pytest.mark.parametrize("name", ["fair", "wine"])
def test_fit_on_summed_party_stats_equals_pooled_fit(name, numeric):
    df, schema = _builtin(name)
    parties = split_parties(df, 3, how=f"noniid:{schema.target}", seed=1)
    encoders = [TableEncoder(schema, numeric=numeric) for _ in parties]
    summed = sum_stats(e.sufficient_stats(p) for e, p in zip(encoders, parties))
    joint = encoders[0].fit_stats(summed)
    pooled = TableEncoder(schema, numeric=numeric).fit(df)
    _assert_states_close(joint.state_dict(), pooled.state_dict())
    np.testing.assert_allclose(joint.transform(df), pooled.transform(df), atol=1e-6)


def test_fit_tolerates_encryption_noise_on_counts():
    df, schema = _builtin("fair")
    encoder = TableEncoder(schema, numeric="quantile")
    stats = encoder.sufficient_stats(df)
    rng = np.random.default_rng(0)
    noisy = {k: v + rng.normal(0, 1e-7, v.shape) for k, v in stats.items()}
    exact = TableEncoder(schema, numeric="quantile").fit_stats(stats)
    assert encoder.fit_stats(noisy).state_dict() == exact.state_dict()


def _assert_states_close(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_states_close(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_states_close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    else:
        assert a == b


def _assert_plain(value) -> None:
    """Only built-in JSON types: numpy scalars would break torch.load(weights_only=True)."""
    assert type(value) in (dict, list, str, int, float, bool, type(None)), type(value)
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain(item)


@pytest.mark.parametrize("numeric", NUMERIC_MODES)
def test_state_dict_is_plain_json_and_restores(numeric, tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    df, schema = _builtin("fair")
    encoder = TableEncoder(schema, numeric=numeric).fit(df)
    state = encoder.state_dict()
    assert json.loads(json.dumps(state)) == state
    _assert_plain(state)
    torch.save({"encoder": state}, tmp_path / "g.pt")
    loaded = torch.load(tmp_path / "g.pt", weights_only=True)["encoder"]
    restored = TableEncoder.from_state_dict(loaded)
    assert restored.layout == encoder.layout
    X = encoder.transform(df)
    np.testing.assert_array_equal(restored.transform(df), X)
    pd.testing.assert_frame_equal(restored.inverse_transform(X), encoder.inverse_transform(X))


@pytest.mark.parametrize("numeric", NUMERIC_MODES)
def test_decoding_arbitrary_samples_respects_schema(numeric):
    df, schema = _builtin("randhie")
    encoder = TableEncoder(schema, numeric=numeric).fit(df)
    noise = np.random.default_rng(0).normal(0, 3, (500, encoder.layout.width))
    out = encoder.inverse_transform(noise)
    validate(out, schema, source="decoded")  # raises if any value breaks the schema
    assert out["visits"].dtype == np.int64 and out["deductible"].dtype == bool


def test_decoded_gaussian_copula_keeps_marginals():
    """Standard-normal scores decode to the fitted marginal (the copula property)."""
    df, schema = _builtin("randhie")
    encoder = TableEncoder(schema, numeric="quantile").fit(df)
    layout = encoder.layout
    z = np.random.default_rng(0).standard_normal((20000, layout.width))
    out = encoder.inverse_transform(z)
    for spec in schema.columns:
        if spec.kind == "numeric":
            real = np.quantile(df[spec.name], [0.25, 0.5, 0.75])
            synth = np.quantile(out[spec.name], [0.25, 0.5, 0.75])
            np.testing.assert_allclose(synth, real, atol=0.03 * (spec.max - spec.min))


def test_mode_encoding_finds_separate_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(20, 1, 3000), rng.normal(70, 2, 1000)])
    schema = Schema((ColumnSpec("x", "numeric", min=0.0, max=100.0),))
    encoder = TableEncoder(schema, numeric="mode").fit(pd.DataFrame({"x": values}))
    onehot = next(s for s in encoder.layout.spans if s.kind == "onehot")
    modes = encoder.transform(pd.DataFrame({"x": [20.0, 70.0]}))[:, onehot.start : onehot.stop]
    assert modes[0].argmax() != modes[1].argmax()


def test_stats_flatten_round_trip_and_mismatch():
    df, schema = _builtin("wine")
    encoder = TableEncoder(schema, numeric="standard")
    stats = encoder.sufficient_stats(df)
    template = encoder.stats_template()
    assert list(template) == list(stats)
    back = unflatten_stats(flatten_stats(stats), template)
    assert all(np.array_equal(back[k], stats[k]) for k in stats)
    with pytest.raises(ValueError):
        unflatten_stats(np.zeros(3), template)
    with pytest.raises(ValueError):
        sum_stats([stats, {"n_rows": stats["n_rows"]}])
    with pytest.raises(ValueError, match="lack"):
        TableEncoder(schema, numeric="standard").fit_stats({"n_rows": np.ones(1)})


def test_usage_errors():
    df, schema = _builtin("wine")
    with pytest.raises(InputError, match="'median'"):
        TableEncoder(schema, numeric="median")
    with pytest.raises(RuntimeError, match="not fitted"):
        TableEncoder(schema).transform(df)
    encoder = TableEncoder(schema).fit(df)
    with pytest.raises(InputError, match="'cultivar'"):
        encoder.transform(df.assign(cultivar="class_9"))
    with pytest.raises(ValueError, match="columns"):
        encoder.inverse_transform(np.zeros((2, 3)))
