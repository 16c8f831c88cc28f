"""Column kinds and the checks that make real, synthetic and holdout tables comparable.

Every metric sees tables in one canonical form: numeric and integer columns as float64,
categorical and boolean columns as string labels (``1`` and ``1.0`` get the same label, and
so do the data layer's spellings of true and false), missing values kept as missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from smpc_synth.data.defaults import FALSE_TOKENS, TRUE_TOKENS
from smpc_synth.data.schema import Kind, infer_schema
from smpc_synth.errors import InputError

if TYPE_CHECKING:
    from smpc_synth.data.schema import Schema

NUMERIC_KINDS: frozenset[str] = frozenset({"numeric", "integer"})


def column_kinds(real: pd.DataFrame, schema: Schema | None = None) -> dict[str, Kind]:
    """Kind of every column of ``real``: from the public schema, else as training infers it."""
    if schema is None:
        try:
            schema = infer_schema(real)
        except InputError as exc:
            raise InputError(f"real table: {exc}") from None
    declared = {spec.name: spec.kind for spec in schema.columns}
    missing = [c for c in real.columns if c not in declared]
    if missing:
        raise InputError(f"schema: no entry for column(s) {', '.join(map(repr, missing))}")
    return {c: declared[c] for c in real.columns}


def check_same_columns(real: pd.DataFrame, other: pd.DataFrame, name: str) -> None:
    """Raise InputError naming the columns that ``other`` lacks or adds relative to real."""
    missing = [c for c in real.columns if c not in other.columns]
    extra = [c for c in other.columns if c not in real.columns]
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"missing column(s) {', '.join(map(repr, missing))}")
    if extra:
        parts.append(f"unexpected column(s) {', '.join(map(repr, extra))}")
    raise InputError(f"{name} table does not match the real table: {'; '.join(parts)}")


def canonical(df: pd.DataFrame, kinds: dict[str, Kind], name: str) -> pd.DataFrame:
    """``df`` in canonical form, columns in ``kinds`` order; InputError names a bad cell."""
    if df.empty:
        raise InputError(f"{name} table has no rows")
    out = {}
    for col, kind in kinds.items():
        if kind in NUMERIC_KINDS:
            out[col] = _as_float(df[col], col, name)
        elif kind == "boolean":
            out[col] = _truth_labels(labels(df[col]))
        else:
            out[col] = labels(df[col])
    return pd.DataFrame(out, index=df.index)


def labels(col: pd.Series) -> pd.Series:
    """String labels of a categorical column; integral numbers lose their ``.0``."""
    if is_bool_dtype(col) or not is_numeric_dtype(col):
        return col.astype(str).astype(object).where(col.notna(), None)
    values = col.astype(float)
    integral = values.notna() & (values % 1 == 0)
    text = values.astype(str).astype(object)
    text[integral] = values[integral].astype("int64").astype(str)
    return text.where(values.notna(), None)


def _truth_labels(text: pd.Series) -> pd.Series:
    """``true`` / ``false`` for every spelling the data layer accepts; others kept as they are."""
    lower = text.str.lower()
    out = text.where(~lower.isin(TRUE_TOKENS), "true")
    return out.where(~lower.isin(FALSE_TOKENS), "false")


def _as_float(col: pd.Series, column: str, name: str) -> pd.Series:
    if is_bool_dtype(col):
        return col.astype(float)
    numbers = pd.to_numeric(col, errors="coerce")
    bad = numbers.isna() & col.notna()
    if bad.any():
        row = bad.idxmax()
        raise InputError(f"{name} table: column {column!r} row {row}: {col[row]!r} is not a number")
    return numbers.astype(float)
