"""Reading and writing tables (CSV, Parquet), with errors that name the file.

CSV cells are read as pandas infers them, except: only an empty cell counts as missing (a
category called "NA" stays "NA"), blank lines are kept as rows (so row numbers match file
lines; trailing blank lines are dropped), and columns the schema declares categorical or
boolean are read as text, so "007" stays "007"; without a schema, a number column holding
zero-padded codes is read as text too. Floats are parsed exactly (as Python's ``float``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pyarrow as pa

from smpc_synth.data.rows import CSV_SUFFIXES
from smpc_synth.data.schema import Schema, zero_padded
from smpc_synth.errors import InputError

PARQUET_SUFFIXES = (".parquet", ".pq")
ENCODING = "utf-8-sig"  # UTF-8, with or without the byte-order mark spreadsheets write
OTHER_DELIMITERS = ";\t|"  # separators hinted at when a file reads as one column
SNIFF_BYTES = 64 * 1024


def table_format(path: str | Path) -> str:
    """``"csv"`` or ``"parquet"`` from the file name; anything else is an InputError."""
    name = Path(path).name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    known = ", ".join(CSV_SUFFIXES[:1] + PARQUET_SUFFIXES)
    raise InputError(f"{path}: unknown table format (file name should end in {known})")


def read_table(path: str | Path, schema: Schema | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame with a fresh 0-based index.

    With ``schema``, categorical and boolean columns of a CSV are read as text. A missing,
    empty or unreadable file is an :class:`InputError` naming the file.
    """
    path = Path(path)
    fmt = table_format(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    try:
        df = _read_csv(path, schema) if fmt == "csv" else _read_parquet(path)
    except InputError:
        raise
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty (no header line)") from None
    except (pd.errors.ParserError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV file ({str(exc).strip()})") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable {fmt} file ({exc})") from None
    return df.reset_index(drop=True)


def _read_csv(path: Path, schema: Schema | None) -> pd.DataFrame:
    _refuse_other_delimiters(path)
    header = pd.read_csv(
        path, nrows=1, header=None, dtype=str, keep_default_na=False, encoding=ENCODING
    )
    names = list(header.iloc[0]) if len(header) else []
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{path}: line 1: column name(s) {dupes} appear more than once")
    unnamed = [i for i, n in enumerate(names, start=1) if not str(n).strip()]
    if unnamed:
        raise InputError(
            f"{path}: line 1: column {unnamed[0]} has no name (was the file written with its "
            "row index? drop that column, or name it)"
        )
    text_cols = {}
    if schema is not None:
        text_cols = {c.name: str for c in schema.columns if not c.is_numeric}
    df = pd.read_csv(path, dtype=text_cols or None, **_CSV_OPTIONS)
    if schema is None:
        df = _keep_zero_padded(path, df)
    if not isinstance(df.index, pd.RangeIndex):  # pandas took the first column as the index
        raise InputError(
            f"{path}: line 2 has more fields than the {len(names)} of the header line "
            "(a missing header name, or an unquoted separator in a cell?)"
        )
    blank = df.isna().all(axis=1).to_numpy()
    end = len(df)
    while end > 0 and blank[end - 1]:
        end -= 1
    if end == 0:
        raise InputError(f"{path}: no data rows (only the header line {', '.join(names)})")
    return df.iloc[:end]


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet table whose columns hold what a schema can declare: names are text (as in a
    schema), and date, time and byte columns are refused rather than turned into text that
    differs between reading and checking."""
    df = pd.read_parquet(path)
    names = [str(n) for n in df.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{path}: column name(s) {dupes} appear more than once")
    df.columns = names
    for name in names:
        dtype = df[name].dtype
        if (
            pd.api.types.is_datetime64_any_dtype(dtype)
            or pd.api.types.is_timedelta64_dtype(dtype)
            or isinstance(dtype, pd.PeriodDtype)
        ):
            raise InputError(
                f"{path}: column '{name}' holds dates or times ({dtype}); they are not a column "
                "kind: convert them to numbers (days since a fixed day, say) or drop the column"
            )
        if pd.api.types.is_object_dtype(dtype) and df[name].map(type).eq(bytes).any():
            raise InputError(
                f"{path}: column '{name}' holds bytes; store it as text (UTF-8 strings)"
            )
    return df


_CSV_OPTIONS = {
    "keep_default_na": False,
    "na_values": [""],
    "skip_blank_lines": False,
    "encoding": ENCODING,
    "float_precision": "round_trip",  # pandas' default parser can be one unit in the last place off
}


def _keep_zero_padded(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """Without a schema, a number column whose cells include zero-padded digits ("007",
    "01") is kept as text: as a number, "007" and "7" would become the same value."""
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c].dtype)]
    if not numeric or df.columns.has_duplicates:
        return df
    raw = pd.read_csv(path, usecols=numeric, dtype=str, **_CSV_OPTIONS)
    for column in numeric:
        if zero_padded(raw[column]).any():
            df[column] = raw[column]
    return df


def _refuse_other_delimiters(path: Path) -> None:
    """A header without a comma may start a file separated by ';', tab or '|' (often with
    decimal commas): say so, naming it, rather than read each line as one text cell."""
    with _open_text(path) as handle:
        sample = handle.read(SNIFF_BYTES)
    header = sample.lstrip("\r\n").split("\n", 1)[0]
    if "," in header:
        return
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=OTHER_DELIMITERS).delimiter
    except csv.Error:
        return  # no consistent separator: a genuine one-column table
    if delimiter in header:
        shown = {"\t": "tab"}.get(delimiter, repr(delimiter))
        raise InputError(
            f"{path}: line 1 has no ',' but is split by {shown}: the file looks "
            f"{shown}-separated; smpc-synth reads comma-separated files, so save it with ','"
        )


def _open_text(path: Path):
    """The file as text, through its compression if its name says so (as pandas reads it)."""
    import bz2
    import gzip
    import lzma

    name = path.name.lower()
    for suffix, opener in ((".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open)):
        if name.endswith(suffix):
            return opener(path, "rt", encoding=ENCODING, errors="replace")
    if name.endswith(".zip"):
        import io
        import zipfile

        archive = zipfile.ZipFile(path)
        return io.TextIOWrapper(archive.open(archive.namelist()[0]), encoding=ENCODING)
    return open(path, encoding=ENCODING, errors="replace")


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write CSV or Parquet (by file name) without the index, creating parent folders."""
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
