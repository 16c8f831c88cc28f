"""The public schema: TOML round trip, fingerprints, load errors, inference on built-ins."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpc_synth.data import ColumnSpec, Schema, infer_schema, list_builtin, load_builtin
from smpc_synth.data.schema import round_outward
from smpc_synth.errors import InputError


def _schema() -> Schema:
    return Schema(
        (
            ColumnSpec("age", "integer", min=0, max=120),
            ColumnSpec("income", "numeric", min=0.0, max=1e6),
            ColumnSpec("city", "categorical", categories=("Oslo", "NA", "Zürich")),
            ColumnSpec("smoker", "boolean"),
        ),
        target="smoker",
    )


def test_toml_round_trip_keeps_schema_and_fingerprint(tmp_path):
    schema = _schema()
    path = tmp_path / "schema.toml"
    schema.save(path)
    loaded = Schema.load(path)
    assert loaded == schema
    assert loaded.fingerprint() == schema.fingerprint()
    assert loaded.column("city").categories == ("Oslo", "NA", "Zürich")
    assert isinstance(loaded.column("age").min, int)
    assert isinstance(loaded.column("income").max, float)


def test_fingerprint_changes_with_any_field():
    base = _schema()
    changed = Schema(
        (*base.columns[:1], ColumnSpec("income", "numeric", min=0.0, max=2e6), *base.columns[2:]),
        target=base.target,
    )
    assert base.fingerprint() != changed.fingerprint()
    assert base.fingerprint() != Schema(base.columns).fingerprint()


def test_column_lookup_and_names():
    schema = _schema()
    assert schema.names == ["age", "income", "city", "smoker"]
    assert schema.column("city").kind == "categorical"
    with pytest.raises(InputError, match="'nope'"):
        schema.column("nope")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("columns = [", "not valid TOML"),
        ('[[columns]]\nname = "a"\nkind = "text"\n', "unknown kind"),
        ('[[columns]]\nname = "a"\n', "columns[1].kind"),
        ('[[columns]]\nname = "a"\nkind = "numeric"\nmin = 0\n', "'max' is missing"),
        ('[[columns]]\nname = "a"\nkind = "numeric"\nmin = 3\nmax = 1\n', "must be below"),
        ('[[columns]]\nname = "a"\nkind = "categorical"\n', "'categories'"),
        ('[[columns]]\nname = "a"\nkind = "boolean"\ncolour = 1\n', "unknown key 'colour'"),
        ('target = "b"\n[[columns]]\nname = "a"\nkind = "boolean"\n', "'target'"),
        ('version = 7\n[[columns]]\nname = "a"\nkind = "boolean"\n', "'version'"),
        ('title = "x"\n', "unknown key 'title'"),
        ("", "'columns' is missing"),
        ('[[columns]]\nname = "a"\nkind = "integer"\nmin = 0\nmax = 1e30\n', "'max'"),
        (
            '[[columns]]\nname = "a"\nkind = "integer"\nmin = 0\nmax = 9223372036854775807\n',
            "beyond ±2^53",
        ),
        ('[[columns]]\nname = "a"\nkind = "numeric"\nmin = -1e308\nmax = 1e308\n', "span"),
    ],
)
def test_load_rejects_bad_schema_naming_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        Schema.load(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(InputError, match=r"nothere\.toml"):
        Schema.load(tmp_path / "nothere.toml")


def test_round_outward_contains_and_coarsens():
    rng = np.random.default_rng(0)
    for _ in range(500):
        lo = float(rng.uniform(-1e4, 1e4)) * 10.0 ** int(rng.integers(-4, 3))
        span = float(rng.exponential(1.0)) * 10.0 ** int(rng.integers(-4, 4))
        hi = lo + span
        new_lo, new_hi = round_outward(lo, hi)
        assert new_lo <= lo and new_hi >= hi and new_lo < new_hi
        step = 10.0 ** math.floor(math.log10(hi - lo))
        assert new_hi - new_lo <= (hi - lo) + 2 * step * (1 + 1e-9)
    assert round_outward(17.5, 42.0) == (10.0, 50.0)
    assert round_outward(3.0, 3.0)[0] <= 3.0 <= round_outward(3.0, 3.0)[1]


@pytest.mark.parametrize("name", list_builtin())
def test_infer_on_builtin_covers_data(name):
    ds = load_builtin(name)
    schema = infer_schema(ds.frame, target=ds.target)
    assert schema.names == list(ds.frame.columns)
    assert schema.target == ds.target
    kinds = {c.kind for c in schema.columns}
    assert kinds & {"numeric", "integer"}
    for spec in schema.columns:
        values = ds.frame[spec.name]
        if spec.is_numeric:
            assert spec.min <= values.min() and values.max() <= spec.max
        elif spec.kind == "categorical":
            assert set(values.astype(str)) == set(spec.categories)
        else:
            assert values.dtype == bool
    assert Schema.from_dict(schema.to_dict()).fingerprint() == schema.fingerprint()


def test_infer_kinds_from_text_columns():
    df = pd.DataFrame(
        {
            "n": ["1", "2", "3"],
            "x": ["0.5", "1e3", "2"],
            "b": ["True", "false", "TRUE"],
            "c": ["a", "b", "a"],
        }
    )
    schema = infer_schema(df)
    assert [c.kind for c in schema.columns] == ["integer", "numeric", "boolean", "categorical"]


def test_infer_reads_through_missing_markers_and_odd_dtypes():
    df = pd.DataFrame(
        {
            "income": ["10.5", "NA", "", "99"],
            "s": pd.Series(["a", "b", None, "a"], dtype="string"),
            "cat": pd.Series(["x", "y", "x", "x"], dtype="category"),
            "flag": pd.Series([True, None, False, True], dtype=object),
            "nullable": pd.Series([1, None, 3, 4], dtype="Int64"),
        }
    )
    schema = infer_schema(df)
    assert [c.kind for c in schema.columns] == [
        "numeric",
        "categorical",
        "categorical",
        "boolean",
        "integer",
    ]
    assert schema.column("s").categories == ("a", "b")


def test_infer_refuses_free_text_naming_column():
    df = pd.DataFrame({"id": [f"user{i}" for i in range(30)], "x": range(30)})
    with pytest.raises(InputError, match="'id'"):
        infer_schema(df, max_categories=10)
    assert infer_schema(df, max_categories=30).column("id").kind == "categorical"


def test_infer_unknown_target_and_empty_column():
    df = pd.DataFrame({"a": [1, 2], "b": [None, None]})
    with pytest.raises(InputError, match="'zz'"):
        infer_schema(df, target="zz")
    with pytest.raises(InputError, match="'b'"):
        infer_schema(df)


@pytest.mark.parametrize("huge", [10**30, 2**63 + 5, -(2**60), 2**53])
def test_infer_refuses_integers_the_encoder_cannot_hold(huge):
    """Inference used to accept max = 1e30 and validation then cast it to int64 garbage."""
    df = pd.DataFrame({"age": [str(v) for v in [30, 41, huge, 52]], "x": [1.5, 2.5, 3.5, 4.5]})
    with pytest.raises(InputError) as err:
        infer_schema(df, source="people.csv")
    msg = str(err.value)
    assert "people.csv" in msg and "'age'" in msg and "row 3 (line 4)" in msg
    assert str(huge) in msg  # the value as written, not a rounded float


def test_inferred_integer_bounds_stay_exact_near_the_limit():
    top = 2**53 - 1
    spec = infer_schema(pd.DataFrame({"n": [0, top]})).column("n")
    assert spec.kind == "integer" and spec.min <= 0 and top <= spec.max <= 2**53


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        (["1e308", "-1e308", "0"], "span more than a float can hold"),
        (["1.7e308", "1.0", "2.5"], "leave no room"),
    ],
)
def test_infer_refuses_numbers_whose_bounds_overflow(values, fragment):
    with pytest.raises(InputError) as err:
        infer_schema(pd.DataFrame({"v": values}), source="t.csv")
    assert "t.csv" in str(err.value) and "'v'" in str(err.value) and fragment in str(err.value)


def test_infer_names_the_text_cells_of_a_numeric_column():
    """Used to say '300 distinct text values ... free text' with no row."""
    cells = [str(20 + i % 60) + ".5" for i in range(300)]
    cells[9] = "forty"
    cells[200] = "n/a?"
    with pytest.raises(InputError) as err:
        infer_schema(pd.DataFrame({"age": cells}), source="people.csv")
    msg = str(err.value)
    assert "people.csv" in msg and "'age'" in msg
    assert "row 10 (line 11): 'forty'" in msg and "row 201 (line 202): 'n/a?'" in msg
    assert "free text" not in msg


def test_infer_on_an_empty_table_names_the_source():
    with pytest.raises(InputError, match=r"people\.csv"):
        infer_schema(pd.DataFrame({"a": []}), source="people.csv")


def test_round_outward_never_cuts_off_the_data_at_extreme_magnitudes():
    for lo, hi in [(5e-324, 1e-323), (1e20, 1e20 + 16384), (-1e300, -1e300), (0.0, 1e-310)]:
        new_lo, new_hi = round_outward(lo, hi)
        assert new_lo <= lo and hi <= new_hi and new_lo < new_hi


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    numbers=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=40, max_size=300),
    word_at=st.data(),
)
def test_stray_words_among_numbers_are_named_never_turned_into_categories(numbers, word_at):
    """However few distinct numbers a column holds, a rare word among them is a bad cell."""
    cells = [repr(x) for x in numbers]
    stray = word_at.draw(st.integers(1, max(1, len(cells) // 20)))
    rows = word_at.draw(
        st.lists(st.integers(0, len(cells) - 1), min_size=stray, max_size=stray, unique=True)
    )
    for row in rows:
        cells[row] = "oops"
    with pytest.raises(InputError) as err:
        infer_schema(pd.DataFrame({"x": cells}), source="t.csv")
    first = min(rows)
    assert f"row {first + 1} (line {first + 2}): 'oops'" in str(err.value)


def test_codes_with_a_common_word_stay_categorical():
    cells = ["1", "2", "3", "unknown"] * 30
    spec = infer_schema(pd.DataFrame({"code": cells}), source="t.csv").column("code")
    assert spec.kind == "categorical" and set(spec.categories) == {"1", "2", "3", "unknown"}


def test_the_drafted_mark_round_trips_and_enters_the_fingerprint(tmp_path):
    plain = Schema((ColumnSpec("a", "numeric", min=0.0, max=1.0),))
    drafted = Schema(plain.columns, drafted_from_data=True)
    assert "drafted_from_data" not in plain.to_dict()  # older schemas keep their fingerprint
    drafted.save(tmp_path / "s.toml")
    assert Schema.load(tmp_path / "s.toml") == drafted
    assert drafted.fingerprint() != plain.fingerprint()
    raw = {**plain.to_dict(), "drafted_from_data": "yes"}
    with pytest.raises(InputError, match="drafted_from_data"):
        Schema.from_dict(raw)
