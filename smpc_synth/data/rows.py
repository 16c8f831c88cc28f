"""Where a cell is, in words a user can find in the file: data row and, for CSV, the line."""

from __future__ import annotations

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")


def row_label(position: int, source: str | None) -> str:
    """``row 4 (line 5)`` for 0-based ``position`` 3 of a CSV file (the header is line 1);
    ``row 4`` for other sources. A quoted cell spanning lines shifts later line numbers."""
    row = f"row {position + 1}"
    if source is not None and source.lower().endswith(CSV_SUFFIXES):
        return f"{row} (line {position + 2})"
    return row
