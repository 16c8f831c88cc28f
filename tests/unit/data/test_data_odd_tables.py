"""Odd tables (tests/support/odd_tables.py) through reading, inference and validation:
each either types every value exactly as written, or is refused naming the file."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from odd_tables import BUILDERS  # tests/support, on pytest's pythonpath

from smpc_synth.data import infer_schema, read_table, validate
from smpc_synth.errors import InputError


def _typed(path):
    """read -> infer -> read with the schema -> validate, as `schema infer` then `train`."""
    schema = infer_schema(read_table(path), source=str(path))
    return schema, validate(read_table(path, schema), schema, source=str(path), min_rows=1)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_an_odd_table_is_typed_exactly_or_refused_naming_the_file(tmp_path, name):
    path = tmp_path / f"{name}.csv"
    path.write_bytes(BUILDERS[name](seed=0).encode("utf-8"))
    try:
        schema, typed = _typed(path)
    except InputError as exc:
        assert str(path) in str(exc)
        return
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    header, cells = rows[0], rows[1:]
    assert list(typed.columns) == header
    for j, spec in enumerate(schema.columns):
        written = [row[j].strip() for row in cells]
        values = typed[spec.name]
        if spec.kind == "integer":
            assert values.dtype == np.int64
            assert [int(v) for v in written] == values.tolist()  # no rounding, no float
        elif spec.kind == "numeric":
            assert [float(v) for v in written] == values.tolist()
        elif spec.kind == "categorical":
            assert written == values.tolist()
            assert set(values) <= set(spec.categories)
        if spec.is_numeric:
            assert spec.min <= values.min() and values.max() <= spec.max


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    codes=st.lists(st.integers(0, 999), min_size=12, max_size=40),
    width=st.integers(2, 5),
    padded=st.lists(st.booleans(), min_size=12, max_size=40),
)
def test_zero_padded_codes_stay_text(tmp_path_factory, codes, width, padded):
    written = [f"{c:0{width}d}" if pad else str(c) for c, pad in zip(codes, padded + [False] * 40)]
    if not any(len(w) > 1 and w.startswith("0") for w in written):
        written[0] = "0" * width + "1"  # at least one code with a leading zero
    path = tmp_path_factory.mktemp("codes") / "codes.csv"
    pd.DataFrame({"code": written, "x": np.arange(len(written)) / 7}).to_csv(path, index=False)
    schema, typed = _typed(path)
    assert schema.column("code").kind == "categorical"
    assert typed["code"].tolist() == written  # "007" is not "7"


def test_too_many_zero_padded_codes_are_refused_as_an_identifier(tmp_path):
    path = tmp_path / "ids.csv"
    ids = [f"{i:06d}" for i in range(300)]
    pd.DataFrame({"id": ids, "x": np.arange(300)}).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"ids\.csv: column 'id': 300 distinct zero-padded"):
        infer_schema(read_table(path), source=str(path))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_numbers_in_text_parse_exactly(values):
    from smpc_synth.data.schema import parse_numbers

    text = pd.Series([repr(v) for v in values])
    assert parse_numbers(text).tolist() == values


MARKERS = ("NA", "N/A", "null", "None", "nan")


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    words=st.lists(st.sampled_from(["north", "south", "east", *MARKERS]), min_size=12),
)
def test_missing_value_markers_are_categories_of_a_text_column(tmp_path_factory, words):
    """A category called "NA" (North America, "None" of a list) is read as text, so the
    inferred schema must list it, or the table would fail its own schema."""
    if all(w in MARKERS for w in words):
        words = ["north", *words]
    path = tmp_path_factory.mktemp("markers") / "regions.csv"
    pd.DataFrame({"region": words, "x": np.arange(len(words))}).to_csv(path, index=False)
    schema, typed = _typed(path)
    assert set(schema.column("region").categories) == set(words)
    assert typed["region"].tolist() == words


def test_a_column_without_a_name_is_refused_naming_the_file_and_column(tmp_path):
    path = tmp_path / "indexed.csv"
    pd.DataFrame({"x": np.arange(12) / 3}).to_csv(path)  # pandas writes an unnamed index
    with pytest.raises(InputError, match=r"indexed\.csv: line 1: column 1 has no name"):
        read_table(path)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(days=st.integers(250, 2000), with_time=st.booleans())
def test_a_wide_date_column_is_refused_as_dates(tmp_path_factory, days, with_time):
    stamps = pd.Timestamp("2001-02-03") + pd.to_timedelta(range(days), unit="D")
    written = stamps.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")
    path = tmp_path_factory.mktemp("dates") / "days.csv"
    pd.DataFrame({"day": written, "x": np.arange(days)}).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"days\.csv: column 'day': \d+ distinct dates"):
        infer_schema(read_table(path), source=str(path))


PARQUET_COLUMNS = {
    "dates": (lambda n: pd.date_range("2020-01-01", periods=n), "holds dates or times"),
    "durations": (lambda n: pd.to_timedelta(np.arange(n), unit="s"), "holds dates or times"),
    "raw": (lambda n: [b"ab", b"cd"] * (n // 2), "holds bytes"),
}


@pytest.mark.parametrize("kind", sorted(PARQUET_COLUMNS))
def test_a_parquet_column_no_kind_can_hold_is_refused_naming_it(tmp_path, kind):
    make, message = PARQUET_COLUMNS[kind]
    path = tmp_path / "t.parquet"
    pd.DataFrame({"odd": make(20), "x": np.arange(20) / 3}).to_parquet(path)
    with pytest.raises(InputError, match=rf"t\.parquet: column 'odd' {message}"):
        read_table(path)


@pytest.mark.parametrize("how", ["parquet", "frame"])
def test_column_names_that_are_not_text_are_read_as_text(tmp_path, how):
    frame = pd.DataFrame({0: np.arange(20), 1: np.arange(20) * 2.5})
    if how == "parquet":
        frame.to_parquet(tmp_path / "t.parquet")
        frame = read_table(tmp_path / "t.parquet")
    schema = infer_schema(frame)
    typed = validate(frame, schema, source="t")
    assert list(typed.columns) == ["0", "1"] and typed["0"].tolist() == list(range(20))
