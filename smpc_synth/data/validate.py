"""Check a table against its schema before any work, and return a typed copy.

Every problem a user can fix is an :class:`InputError` naming the file, the column and the
row: both the 1-based data row and, for CSV files, the file line (the header is line 1;
a quoted cell spanning several lines shifts later line numbers). Several bad cells are
reported together, the first few by row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from smpc_synth.data.defaults import (
    FALSE_TOKENS,
    MAX_REPORTED_PROBLEMS,
    MIN_ROWS,
    MISSING_TOKENS,
    TRUE_TOKENS,
)
from smpc_synth.data.rows import row_label
from smpc_synth.data.schema import ColumnSpec, Schema, parse_numbers
from smpc_synth.errors import InputError


@dataclass(frozen=True)
class _Problem:
    position: int  # 0-based row position
    column: str
    message: str


def validate(
    df: pd.DataFrame, schema: Schema, source: str, min_rows: int = MIN_ROWS
) -> pd.DataFrame:
    """Return ``df`` typed by ``schema`` (in schema column order), or raise InputError.

    Categorical columns become ``str``, integer columns ``int64``, numeric ``float64`` and
    boolean ``bool``. ``source`` names the data in messages (normally the file path).
    """
    _check_shape(df, schema, source, min_rows)
    df = df.set_axis([str(c) for c in df.columns], axis=1)  # names as a schema writes them
    typed: dict[str, pd.Series] = {}
    problems: list[_Problem] = []
    counts: dict[str, int] = {}
    for spec in schema.columns:
        column = df[spec.name].reset_index(drop=True)
        values, bad = _COERCE[spec.kind](column, spec)
        typed[spec.name] = values
        positions = np.flatnonzero(bad.to_numpy() != "")
        if len(positions):
            counts[spec.name] = len(positions)
            problems += [
                _Problem(int(p), spec.name, bad.iat[p]) for p in positions[:MAX_REPORTED_PROBLEMS]
            ]
    if problems:
        raise InputError(_describe(problems, counts, source))
    return pd.DataFrame(typed)


def _check_shape(df: pd.DataFrame, schema: Schema, source: str, min_rows: int) -> None:
    if df.shape[1] == 0:
        raise InputError(f"{source}: the table has no columns")
    if len(df) == 0:
        raise InputError(f"{source}: the table has no data rows")
    names = [str(c) for c in df.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{source}: column(s) {_quoted(dupes)} appear more than once")
    missing = [n for n in schema.names if n not in names]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {_quoted(missing)} "
            f"(the schema expects {_quoted(schema.names)})"
        )
    extra = [n for n in names if n not in schema.names]
    if extra:
        hint = ""
        if any(n.startswith("Unnamed:") for n in extra):
            hint = " (an unnamed column: was the file written with its row index?)"
        raise InputError(
            f"{source}: column(s) {_quoted(extra)} are not in the schema; "
            f"drop them or add them to the schema{hint}"
        )
    if len(df) < min_rows:
        raise InputError(f"{source}: {len(df)} data rows; at least {min_rows} are needed")


Coerced = tuple[pd.Series, pd.Series]  # typed values, and a problem text per row ("" if fine)


def _text(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Stripped text of each cell, and whether the cell is empty."""
    text = column.astype(object).where(column.notna(), "").map(str).str.strip()
    return text, text == ""


def _numeric(column: pd.Series, spec: ColumnSpec) -> Coerced:
    # numpy on whole columns, messages only for the bad cells: a wide table stays quick
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype=float, na_value=np.nan)
        empty = np.isnan(values)
        text = None
    else:
        text, blank = _text(column)
        empty = (blank | text.str.lower().isin(MISSING_TOKENS)).to_numpy()
        values = parse_numbers(text.where(~empty)).to_numpy(dtype=float)
    bad = np.full(len(values), "", dtype=object)

    def shown(p: int) -> str:  # the cell as written, even beyond a float's digits
        return text.iat[p] if text is not None else str(column.iat[p])

    def mark(mask: np.ndarray, message) -> None:
        for p in np.flatnonzero(mask):
            bad[p] = message(p)

    finite = np.isfinite(values)
    if text is not None:
        mark(np.isnan(values) & ~empty, lambda p: f"{_show(shown(p))} is not a number")
    with np.errstate(invalid="ignore"):
        outside = finite & ((values < spec.min) | (values > spec.max))
        fraction = finite & (values != np.round(values)) if spec.kind == "integer" else None
    bounds = f"[{spec.min}, {spec.max}]"
    mark(outside, lambda p: f"{shown(p)} is outside the schema bounds {bounds}")
    if fraction is not None:
        mark(fraction, lambda p: f"{shown(p)} is not a whole number")
    infinite = ~np.isnan(values) & ~finite
    if text is not None:  # text like '1e999' reads as infinity too
        mark(infinite, lambda p: f"{_show(shown(p))} is infinite or beyond a float's range")
    else:
        mark(infinite, lambda p: "infinite value")
    mark(
        empty,
        lambda p: (
            f"missing value {_show(shown(p))}" if text is not None and shown(p) else "empty cell"
        ),
    )
    good = bad == ""
    if spec.kind == "integer":  # schema bounds lie within +-2**53: every kept value is exact
        typed = pd.Series(np.where(good, np.round(values), 0).astype("int64"))
    else:
        typed = pd.Series(np.where(good, values, 0.0))
    return typed, pd.Series(bad, index=column.index)


def _categorical(column: pd.Series, spec: ColumnSpec) -> Coerced:
    text, empty = _text(column)
    known = set(spec.categories or ())
    unknown = ~empty & ~text.isin(known)
    bad = pd.Series("", index=column.index, dtype=object)
    listed = _quoted(list(spec.categories or ())[:10]) + (", ..." if len(known) > 10 else "")
    bad[unknown] = [f"{_show(t)} is not a known category ({listed})" for t in text[unknown]]
    bad[empty] = "empty cell"
    return text.astype(object), bad


def _boolean(column: pd.Series, spec: ColumnSpec) -> Coerced:
    if pd.api.types.is_bool_dtype(column.dtype):
        return column.astype(bool), pd.Series("", index=column.index, dtype=object)
    text, empty = _text(column)
    lower = text.str.lower()
    truth = lower.isin(TRUE_TOKENS)
    unknown = ~empty & ~truth & ~lower.isin(FALSE_TOKENS)
    bad = pd.Series("", index=column.index, dtype=object)
    bad[unknown] = [f"{_show(t)} is not true/false" for t in text[unknown]]
    bad[empty] = "empty cell"
    return truth.astype(bool), bad


_COERCE: dict[str, Callable[[pd.Series, ColumnSpec], Coerced]] = {
    "numeric": _numeric,
    "integer": _numeric,
    "categorical": _categorical,
    "boolean": _boolean,
}


def _describe(problems: list[_Problem], counts: dict[str, int], source: str) -> str:
    total = sum(counts.values())
    shown = sorted(problems, key=lambda p: p.position)[:MAX_REPORTED_PROBLEMS]
    lines = [f"{source}: {total} bad cell(s) in column(s) {_quoted(list(counts))}:"]
    for p in shown:
        lines.append(f"  column '{p.column}', {row_label(p.position, source)}: {p.message}")
    if total > len(shown):
        lines.append(f"  ... and {total - len(shown)} more")
    return "\n".join(lines)


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _show(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
