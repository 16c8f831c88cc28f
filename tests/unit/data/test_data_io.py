"""Reading and writing tables: round trips and errors that name the file."""

from __future__ import annotations

import pandas as pd
import pytest

from smpc_synth.data import ColumnSpec, Schema, read_table, write_table
from smpc_synth.errors import InputError


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"x": [0.5, 1.25, -3.0], "n": [1, 2, 3], "c": ["a", "NA", "b"], "b": [True, False, True]}
    )


@pytest.mark.parametrize("name", ["t.csv", "t.parquet", "sub/dir/t.csv.gz"])
def test_write_read_round_trip(tmp_path, name):
    df = _frame()
    write_table(df, tmp_path / name)
    back = read_table(tmp_path / name)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["c"].tolist() == ["a", "NA", "b"]  # "NA" is a value, not a missing cell


def test_schema_reads_categorical_columns_as_text(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text("zip,x\n007,1.5\n120,2.5\n", encoding="utf-8")
    schema = Schema(
        (
            ColumnSpec("zip", "categorical", categories=("007", "120")),
            ColumnSpec("x", "numeric", min=0.0, max=10.0),
        )
    )
    assert read_table(path, schema)["zip"].tolist() == ["007", "120"]
    assert read_table(path)["zip"].tolist() == ["007", "120"]  # zero-padded: a code


def test_blank_lines_keep_line_numbers(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("a,b\n1,2\n\n3,4\n\n\n", encoding="utf-8")
    df = read_table(path)
    assert len(df) == 3  # the interior blank line stays (as a row of empty cells)
    assert df.iloc[1].isna().all()
    assert df.iloc[2].tolist() == [3, 4]


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", b"", "empty"),
        ("blank.csv", b"\n\n", "empty"),
        ("latin.csv", "a,b\ncaf\u00e9,1\n".encode("latin-1"), "UTF-8"),
        ("ragged.csv", b"a,b\n1,2\n3,4,5\n", "not a readable CSV"),
        # pandas would take the first column as the index and shift every value silently
        ("ragged_first.csv", b"a,b\n1,2,3\n4,5\n", "line 2 has more fields"),
        ("dupes.csv", b"a,b,a\n1,2,3\n", "more than once"),
        ("junk.parquet", b"this is not parquet at all", "not a readable parquet"),
        ("table.xlsx", b"PK\x03\x04", "unknown table format"),
        ("header.csv", b"age,city\n", "no data rows"),
        ("header_blank.csv", b"age,city\n\n\n", "no data rows"),
        ("semi.csv", b"age;income;city\n40;1,5;Oslo\n41;2,5;Bergen\n", "';'-separated"),
        ("tabs.csv", b"age\tcity\n40\tOslo\n41\tBergen\n", "tab-separated"),
        ("pipes.csv.gz", None, "'|'-separated"),
    ],
)
def test_bad_files_name_the_file(tmp_path, name, content, expected):
    if content is None:  # compressed: the hint reads through the compression
        import gzip

        content = gzip.compress(b"a|b\n1|2\n3|4\n")
    path = _write(tmp_path / name, content)
    with pytest.raises(InputError) as err:
        read_table(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"nothere\.csv: file not found"):
        read_table(tmp_path / "nothere.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match=r"dir\.csv: not a file"):
        read_table(tmp_path / "dir.csv")


def test_write_unknown_format(tmp_path):
    with pytest.raises(InputError, match=r"out\.json"):
        write_table(_frame(), tmp_path / "out.json")


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    path = _write(tmp_path / "excel.csv", b"\xef\xbb\xbfage,city\n40,Oslo\n")
    assert list(read_table(path).columns) == ["age", "city"]


def test_a_one_column_file_is_still_read(tmp_path):
    path = _write(tmp_path / "one.csv", b"note\nx;y\nz\nw|v\n")
    assert read_table(path)["note"].tolist() == ["x;y", "z", "w|v"]
