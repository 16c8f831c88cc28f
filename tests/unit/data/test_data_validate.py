"""Validation: every bad input is refused naming the file, column and row (and CSV line)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from smpc_synth.data import ColumnSpec, Schema, read_table, validate
from smpc_synth.errors import InputError

SCHEMA = Schema(
    (
        ColumnSpec("age", "integer", min=0, max=120),
        ColumnSpec("income", "numeric", min=0.0, max=1000.0),
        ColumnSpec("city", "categorical", categories=("Oslo", "Bergen", "NA")),
        ColumnSpec("smoker", "boolean"),
    )
)
GOOD_ROW = ["40", "512.5", "Oslo", "true"]
N_ROWS = 12


def _csv(tmp_path, bad: dict[int, dict[str, str]] | None = None, name: str = "data.csv"):
    """A CSV of N_ROWS good rows, with cells replaced per 1-based data row."""
    rows = [list(GOOD_ROW) for _ in range(N_ROWS)]
    for row, cells in (bad or {}).items():
        for column, value in cells.items():
            rows[row - 1][SCHEMA.names.index(column)] = value
    path = tmp_path / name
    lines = [",".join(SCHEMA.names)] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _check(tmp_path, bad, column: str, rows: list[int], fragment: str) -> str:
    path = _csv(tmp_path, bad)
    with pytest.raises(InputError) as err:
        validate(read_table(path, SCHEMA), SCHEMA, source=str(path))
    msg = str(err.value)
    assert str(path) in msg
    assert f"column '{column}'" in msg
    for row in rows:
        assert f"row {row} (line {row + 1})" in msg
    assert fragment in msg
    return msg


def test_good_file_is_typed(tmp_path):
    path = _csv(tmp_path, {3: {"city": "NA", "smoker": "0"}})
    df = validate(read_table(path, SCHEMA), SCHEMA, source=str(path))
    assert df["age"].dtype == np.int64
    assert df["income"].dtype == np.float64
    assert df["smoker"].dtype == bool
    assert df["city"].map(type).eq(str).all()
    assert df["city"].iloc[2] == "NA" and not df["smoker"].iloc[2] and df["smoker"].iloc[0]
    assert list(df.columns) == SCHEMA.names


@pytest.mark.parametrize(
    ("bad", "column", "rows", "fragment"),
    [
        ({4: {"income": ""}}, "income", [4], "empty cell"),
        ({5: {"age": ""}}, "age", [5], "empty cell"),
        ({6: {"city": ""}}, "city", [6], "empty cell"),
        ({2: {"smoker": ""}}, "smoker", [2], "empty cell"),
        ({3: {"income": "NaN"}}, "income", [3], "missing value 'NaN'"),
        ({7: {"income": "inf"}}, "income", [7], "infinite"),
        ({8: {"income": "-Infinity"}}, "income", [8], "infinite"),
        ({9: {"city": "Paris"}}, "city", [9], "'Paris' is not a known category"),
        ({10: {"income": "lots"}}, "income", [10], "'lots' is not a number"),
        ({1: {"age": "forty"}}, "age", [1], "'forty' is not a number"),
        ({2: {"age": "40.5"}}, "age", [2], "not a whole number"),
        ({11: {"income": "1000.01"}}, "income", [11], "outside the schema bounds"),
        ({12: {"age": "-1"}}, "age", [12], "outside the schema bounds"),
        ({5: {"smoker": "maybe"}}, "smoker", [5], "'maybe' is not true/false"),
        ({4: {"age": str(2**63 + 5)}}, "age", [4], f"{2**63 + 5} is outside the schema bounds"),
        ({4: {"age": str(10**30)}}, "age", [4], f"{10**30} is outside the schema bounds"),
        ({6: {"income": "1e999"}}, "income", [6], "'1e999' is infinite or beyond"),
        ({6: {"income": "nan"}}, "income", [6], "missing value 'nan'"),
    ],
)
def test_bad_cell_names_file_column_row_and_line(tmp_path, bad, column, rows, fragment):
    _check(tmp_path, bad, column, rows, fragment)


def test_several_bad_rows_reported_in_row_order(tmp_path):
    bad = {r: {"income": "x"} for r in (2, 4, 6, 8, 10, 12)} | {3: {"city": "Rome"}}
    msg = _check(tmp_path, bad, "income", [2, 3, 4, 6], "is not a number")
    assert "column 'city', row 3 (line 4)" in msg
    assert "7 bad cell(s)" in msg and "... and 2 more" in msg
    listed = [int(m) for m in re.findall(r"row (\d+) ", msg)]
    assert listed == sorted(listed)


def test_blank_line_is_reported_at_its_line(tmp_path):
    path = _csv(tmp_path)
    lines = path.read_text().splitlines()
    lines.insert(4, "")  # becomes data row 4, file line 5
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        validate(read_table(path, SCHEMA), SCHEMA, source=str(path))
    assert "row 4 (line 5): empty cell" in str(err.value)


def _frame(rows: int = N_ROWS) -> pd.DataFrame:
    return pd.DataFrame([GOOD_ROW] * rows, columns=SCHEMA.names)


@pytest.mark.parametrize(
    ("df", "fragment"),
    [
        (_frame().iloc[:0], "no data rows"),
        (pd.DataFrame(index=range(3)), "no columns"),
        (_frame().drop(columns=["city", "age"]), "missing column(s) 'age', 'city'"),
        (_frame().assign(extra=1), "'extra' are not in the schema"),
        (_frame().assign(**{"Unnamed: 0": 1}), "row index"),
        (_frame(3), "3 data rows; at least 10"),
    ],
)
def test_table_shape_problems(df, fragment):
    with pytest.raises(InputError) as err:
        validate(df, SCHEMA, source="site_a.parquet")
    assert "site_a.parquet" in str(err.value)
    assert fragment in str(err.value)


def test_duplicate_columns_in_frame():
    df = _frame()
    df.columns = ["age", "income", "city", "city"]
    with pytest.raises(InputError, match="'city' appear more than once"):
        validate(df, SCHEMA, source="mem")


def test_min_rows_is_adjustable():
    assert len(validate(_frame(3), SCHEMA, source="x", min_rows=1)) == 3


def test_typed_frame_inputs_and_non_csv_row_numbers():
    df = pd.DataFrame(
        {
            "age": [30.0, 31.0, np.nan],
            "income": [1.0, np.inf, 3.0],
            "city": ["Oslo", "Bergen", "Oslo"],
            "smoker": [True, False, True],
        }
    )
    with pytest.raises(InputError) as err:
        validate(df, SCHEMA, source="site_b.parquet", min_rows=1)
    msg = str(err.value)
    assert "column 'age', row 3: empty cell" in msg
    assert "column 'income', row 2: infinite value" in msg
    assert "line" not in msg


def test_parquet_file_validates(tmp_path):
    path = tmp_path / "d.parquet"
    df = _frame().astype({"age": int, "income": float})
    df["smoker"] = True
    df.to_parquet(path)
    out = validate(read_table(path), SCHEMA, source=str(path))
    assert out["age"].tolist() == [40] * N_ROWS and out["smoker"].all()
