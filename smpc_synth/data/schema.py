"""The public schema of a table: column names, kinds, categories and bounds.

All parties of a session agree on one schema before any data moves, and its fingerprint
enters the handshake. The schema is **public**: every party and the aggregator or dealer see
it, and it is stored next to the released generator. So think about what it says:

- ``min`` / ``max`` of a numeric column bound the data. Bounds taken from the data reveal
  the most extreme row (the oldest patient, the largest loan). :func:`infer_schema` therefore
  rounds bounds *outward* to a coarse grid (a power of ten of the column's range), which hides
  the exact extremes but still tells roughly where they lie. Prefer bounds from domain
  knowledge (age 0-120) over bounds from data; differential-privacy guarantees assume the
  bounds do not depend on the data at all.
- ``categories`` list every value a categorical column may take. A category drawn from the
  data proves that at least one row has it: a rare category can single a person out. List
  the domain's full set of values by hand where it matters, and merge rare ones.
- Inferring a schema from one party's file leaks that party's ranges and categories to the
  others: draft it on public or synthetic data where you can, then edit it.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import tomli_w

from smpc_synth.data.defaults import (
    MAX_CATEGORIES,
    MAX_EXACT_INTEGER,
    MAX_REPORTED_PROBLEMS,
    MISSING_TOKENS,
    RARE_TEXT_FRACTION,
)
from smpc_synth.data.rows import row_label
from smpc_synth.errors import InputError

BEYOND_EXACT = (
    "is beyond ±2^53, the largest integers the encoder represents exactly (an identifier? "
    'drop the column; a measurement? declare it kind = "numeric", read as a float: its '
    "last digits are rounded)"
)

Kind = Literal["numeric", "integer", "categorical", "boolean"]
KINDS: tuple[str, ...] = ("numeric", "integer", "categorical", "boolean")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its kind, and the categories (categorical) or bounds (numeric, integer)."""

    name: str
    kind: Kind
    categories: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        where = f"column '{self.name}'"
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"column name {self.name!r}: must be a non-empty string")
        if self.kind not in KINDS:
            raise InputError(f"{where}: unknown kind {self.kind!r} (use one of {KINDS})")
        if self.kind == "categorical":
            self._check_categories(where)
        elif self.categories is not None:
            raise InputError(f"{where}: key 'categories' is only for categorical columns")
        if self.is_numeric:
            self._check_bounds(where)
        elif self.min is not None or self.max is not None:
            raise InputError(f"{where}: keys 'min'/'max' are only for numeric/integer columns")

    def _check_categories(self, where: str) -> None:
        cats = self.categories
        if cats is None or isinstance(cats, str) or len(cats) == 0:
            raise InputError(f"{where}: key 'categories' must list at least one value")
        if not all(isinstance(c, str) for c in cats):
            raise InputError(f"{where}: key 'categories' must hold strings")
        dupes = sorted({c for c in cats if list(cats).count(c) > 1})
        if dupes:
            raise InputError(f"{where}: key 'categories' repeats {dupes}")
        object.__setattr__(self, "categories", tuple(cats))

    def _check_bounds(self, where: str) -> None:
        cast = int if self.kind == "integer" else float
        for key in ("min", "max"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise InputError(f"{where}: key '{key}' must be a number, got {value!r}")
            if not math.isfinite(value):
                raise InputError(f"{where}: key '{key}' must be finite, got {value!r}")
            if self.kind == "integer" and value != int(value):
                raise InputError(f"{where}: key '{key}' must be a whole number, got {value!r}")
            if self.kind == "integer" and abs(value) > MAX_EXACT_INTEGER:
                raise InputError(f"{where}: key '{key}' = {int(value)} {BEYOND_EXACT}")
            object.__setattr__(self, key, cast(value))
        if not self.min < self.max:
            raise InputError(f"{where}: key 'min' ({self.min}) must be below 'max' ({self.max})")
        if not math.isfinite(float(self.max) - float(self.min)):
            raise InputError(
                f"{where}: keys 'min' ({self.min}) and 'max' ({self.max}) span more than a "
                "float can hold; rescale the column"
            )

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("numeric", "integer")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.is_numeric:
            out["min"] = self.min
            out["max"] = self.max
        return out


@dataclass(frozen=True)
class Schema:
    """The ordered columns of a table and, optionally, the target column for utility."""

    columns: tuple[ColumnSpec, ...]
    target: str | None = None
    drafted_from_data: bool = False  # written by `schema infer`; a DP run refuses it
    _index: dict[str, ColumnSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cols = tuple(self.columns)
        if not cols:
            raise InputError("schema: key 'columns' must list at least one column")
        object.__setattr__(self, "columns", cols)
        index: dict[str, ColumnSpec] = {}
        for spec in cols:
            if spec.name in index:
                raise InputError(f"schema: column '{spec.name}' is listed twice")
            index[spec.name] = spec
        object.__setattr__(self, "_index", index)
        if self.target is not None and self.target not in index:
            raise InputError(f"schema: key 'target': '{self.target}' is not a column")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        """The spec of ``name``; an unknown name is an :class:`InputError` listing the known."""
        try:
            return self._index[name]
        except KeyError:
            raise InputError(
                f"schema: no column '{name}' (columns: {', '.join(self.names)})"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": SCHEMA_VERSION}
        if self.drafted_from_data:
            out["drafted_from_data"] = True
        if self.target is not None:
            out["target"] = self.target
        out["columns"] = [c.to_dict() for c in self.columns]
        return out

    @classmethod
    def from_dict(cls, raw: Any, source: str = "schema") -> Schema:
        """Build from a mapping (TOML or JSON); errors name ``source`` and the key."""
        try:
            return _from_dict(raw)
        except InputError as exc:
            msg = str(exc).removeprefix("schema: ")
            raise InputError(f"{source}: {msg}") from None

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON form; all parties must agree on it."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write as TOML (the format users edit)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tomli_w.dumps(self.to_dict()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        """Read a TOML schema; a missing file, bad TOML or a bad key names the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"{path}: schema file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read schema file ({exc})") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: not valid TOML ({exc})") from None
        return cls.from_dict(raw, source=str(path))


_COLUMN_KEYS = frozenset({"name", "kind", "categories", "min", "max"})
_SCHEMA_KEYS = frozenset({"version", "target", "columns", "drafted_from_data"})


def _from_dict(raw: Any) -> Schema:
    if not isinstance(raw, dict):
        raise InputError("schema: must be a table with a 'columns' list")
    unknown = sorted(set(raw) - _SCHEMA_KEYS)
    if unknown:
        raise InputError(f"schema: unknown key '{unknown[0]}' (known: {sorted(_SCHEMA_KEYS)})")
    version = raw.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InputError(f"schema: key 'version': {version!r} is not supported")
    target = raw.get("target")
    if target is not None and not isinstance(target, str):
        raise InputError(f"schema: key 'target' must be a column name, got {target!r}")
    drafted = raw.get("drafted_from_data", False)
    if not isinstance(drafted, bool):
        raise InputError(f"schema: key 'drafted_from_data' must be true or false, got {drafted!r}")
    columns = raw.get("columns")
    if not isinstance(columns, list) or not columns:
        raise InputError("schema: key 'columns' is missing or empty")
    specs = []
    for i, col in enumerate(columns, start=1):
        if not isinstance(col, dict):
            raise InputError(f"schema: key 'columns' entry {i} must be a table")
        for key in ("name", "kind"):
            if key not in col:
                raise InputError(f"schema: key 'columns[{i}].{key}' is missing")
        unknown = sorted(set(col) - _COLUMN_KEYS)
        if unknown:
            raise InputError(f"schema: column '{col['name']}': unknown key '{unknown[0]}'")
        if col["kind"] in ("numeric", "integer"):
            for key in ("min", "max"):
                if key not in col:
                    raise InputError(f"schema: column '{col['name']}': key '{key}' is missing")
        cats = col.get("categories")
        specs.append(
            ColumnSpec(
                name=col["name"],
                kind=col["kind"],
                categories=tuple(cats) if isinstance(cats, list) else cats,
                min=col.get("min"),
                max=col.get("max"),
            )
        )
    return Schema(tuple(specs), target=target, drafted_from_data=drafted)


def infer_schema(
    df: pd.DataFrame,
    target: str | None = None,
    max_categories: int = MAX_CATEGORIES,
    source: str | None = None,
) -> Schema:
    """Draft a schema from a table: kinds, sorted categories, bounds rounded outward.

    A draft to review, not a verdict: see the module docstring for what it reveals.
    Text columns with more than ``max_categories`` distinct values (free text, identifiers)
    are refused with an :class:`InputError` naming the column; so are a numeric column with
    a few text cells (naming their rows) and integers the encoder cannot represent.
    ``source`` (the file) prefixes every message.
    """
    prefix = f"{source}: " if source else ""
    if df.shape[1] == 0 or len(df) == 0:
        raise InputError(f"{prefix}cannot infer a schema from an empty table (no data rows)")
    if target is not None and target not in df.columns:
        raise InputError(
            f"{prefix}target column '{target}' is not in the table "
            f"(columns: {', '.join(map(str, df))})"
        )
    df = df.reset_index(drop=True)  # positions, for row numbers in messages
    return Schema(
        tuple(_infer_column(str(name), df[name], max_categories, source) for name in df.columns),
        target=target,
    )


def _infer_column(
    name: str, series: pd.Series, max_categories: int, source: str | None
) -> ColumnSpec:
    prefix = f"{source}: " if source else ""
    values = series.dropna()
    if pd.api.types.is_bool_dtype(values.dtype) or (
        pd.api.types.is_object_dtype(values.dtype)
        and len(values) > 0
        and values.map(lambda v: isinstance(v, bool | np.bool_)).all()
    ):
        return ColumnSpec(name, "boolean")
    if pd.api.types.is_numeric_dtype(values.dtype):
        return _numeric_spec(name, values, values.astype(float), source)
    cells = values.astype(str).str.strip()
    cells = cells[cells != ""]
    # "NA", "null", ... are missing in a number column, yet values of a categorical one
    text = cells[~cells.str.lower().isin(MISSING_TOKENS)]
    if text.empty:
        raise InputError(
            f"{prefix}column '{name}': every cell is empty or a missing-value marker; drop "
            "the column"
        )
    numbers = parse_numbers(text)
    if numbers.notna().all() and not zero_padded(text).any():
        return _numeric_spec(name, text, numbers, source)
    if numbers.notna().all():  # codes such as "007": as numbers "007" and "7" would merge
        cats = sorted(set(cells))
        if len(cats) > max_categories:
            raise InputError(
                f"{prefix}column '{name}': {len(cats)} distinct zero-padded codes (such as "
                f"{_show(text[zero_padded(text)].iloc[0])}), more than "
                f"max_categories={max_categories}; an identifier cannot be modelled: drop the "
                "column, or declare it in a schema"
            )
        return ColumnSpec(name, "categorical", categories=tuple(cats))
    if set(text.str.lower()) <= {"true", "false"}:
        return ColumnSpec(name, "boolean")
    cats = sorted(set(cells))
    words = text[numbers.isna()]
    # numbers with a few stray words (or, past the category limit, mostly numbers): bad
    # cells to name, not categories
    rare_words = len(words) <= RARE_TEXT_FRACTION * len(text)
    if rare_words or (len(cats) > max_categories and len(words) < numbers.notna().sum()):
        listed = "; ".join(
            f"{row_label(int(p), source)}: {_show(words[p])}"
            for p in words.index[:MAX_REPORTED_PROBLEMS]
        )
        more = len(words) - MAX_REPORTED_PROBLEMS
        raise InputError(
            f"{prefix}column '{name}' holds numbers but {len(words)} cell(s) are not: "
            f"{listed}{f'; ... and {more} more' if more > 0 else ''} (fix them, leave a "
            "missing value empty, or declare the column categorical in a schema)"
        )
    if len(cats) > max_categories:
        if _dates(text):
            raise InputError(
                f"{prefix}column '{name}': {len(cats)} distinct dates (such as "
                f"{_show(text.iloc[0])}); dates are not a column kind: convert them to "
                "numbers (days since a fixed day, say) or drop the column"
            )
        raise InputError(
            f"{prefix}column '{name}': {len(cats)} distinct text values, more than "
            f"max_categories={max_categories}; free text or identifiers cannot be modelled: "
            "drop the column, or raise the limit (`schema infer --max-categories`) and review "
            "the categories, which every party sees"
        )
    return ColumnSpec(name, "categorical", categories=tuple(cats))


def _numeric_spec(
    name: str, cells: pd.Series, numbers: pd.Series, source: str | None
) -> ColumnSpec:
    """Kind and bounds of a numeric column; ``cells`` are the original values (for messages),
    indexed like ``numbers`` by row position."""
    prefix = f"{source}: " if source else ""
    finite = numbers[np.isfinite(numbers)]
    if finite.empty:
        raise InputError(f"{prefix}column '{name}': no finite number; drop the column")
    if pd.api.types.is_integer_dtype(cells.dtype):
        literal = pd.Series(True, index=cells.index)
    else:
        literal = cells.astype(str).str.fullmatch(r"[+-]?\d+")
    huge = finite.index[(finite.abs() >= MAX_EXACT_INTEGER) & literal[finite.index]]
    if len(huge):  # an integer as written, that a float would round
        where = row_label(int(huge[0]), source)
        raise InputError(f"{prefix}column '{name}', {where}: {cells[huge[0]]} {BEYOND_EXACT}")
    integral = bool(((finite == np.round(finite)) & (finite.abs() < MAX_EXACT_INTEGER)).all())
    low, high = finite.idxmin(), finite.idxmax()
    if not math.isfinite(float(finite[high]) - float(finite[low])):
        raise InputError(
            f"{prefix}column '{name}': values from {cells[low]} ({row_label(int(low), source)}) "
            f"to {cells[high]} ({row_label(int(high), source)}) span more than a float can "
            "hold; rescale the column"
        )
    lo, hi = round_outward(float(finite[low]), float(finite[high]))
    if integral:  # rounding outward must not leave the exactly representable integers
        lo, hi = max(lo, -MAX_EXACT_INTEGER), min(hi, MAX_EXACT_INTEGER)
    if not math.isfinite(hi - lo):
        raise InputError(
            f"{prefix}column '{name}': values up to {cells[high]} leave no room for schema "
            "bounds a float can hold; rescale the column"
        )
    return ColumnSpec(name, "integer" if integral else "numeric", min=lo, max=hi)


_EXPONENT = r"\s*[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+\s*"


def parse_numbers(text: pd.Series) -> pd.Series:
    """Each cell's number as a float, NaN where it is not one; a number beyond a float's range
    (``1e999``) is +-inf, not NaN, so it is reported as too large rather than as text."""
    numbers = pd.to_numeric(text, errors="coerce").astype(float)
    parsed = numbers.notna()
    if parsed.any():  # pandas' parser can be one unit in the last place off: Python's is exact
        cells = zip(text[parsed], numbers[parsed], strict=True)
        numbers[parsed] = [_exact(cell, value) for cell, value in cells]
    missed = numbers.isna() & text.notna()
    if missed.any():  # only an overflowing exponent parses as a float yet not for pandas
        exponent = text[missed].astype(str).str.fullmatch(_EXPONENT)
        for position in exponent.index[exponent]:
            numbers[position] = float(str(text[position]))
    return numbers


def _dates(text: pd.Series) -> bool:
    """Whether every cell reads as an ISO 8601 date or time ("2020-01-31", "2020-01-31 10:00")."""
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    return bool(parsed.notna().all())


def _exact(cell: object, value: float) -> float:
    try:
        return float(str(cell))
    except ValueError:
        return value


_ZERO_PADDED = r"\s*[+-]?0\d+(\.\d*)?\s*"


def zero_padded(text: pd.Series) -> pd.Series:
    """Whether each cell is digits with a leading zero ("007", "01"; not "0" or "0.5"): a
    code whose zeros a number would drop."""
    return text.astype(str).str.fullmatch(_ZERO_PADDED).fillna(False).astype(bool)


def _show(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def round_outward(lo: float, hi: float) -> tuple[float, float]:
    """Widen [lo, hi] to multiples of a power of ten of its span, so exact extremes stay hidden.

    E.g. ages 17-42 give 10-50; 0.053-0.163 gives 0.0-0.2. A constant column gets a range
    one step wide.
    """
    span = hi - lo
    scale = span if span > 0 else (abs(lo) or 1.0)
    exponent = max(math.floor(math.log10(scale)), -300)  # 10**-324 is 0.0 in a float
    step = 10.0**exponent
    digits = max(0, -exponent)
    new_lo = round(math.floor(lo / step) * step, digits)
    new_hi = round(math.ceil(hi / step) * step, digits)
    if new_lo > lo:  # float rounding landed just inside
        new_lo = round(new_lo - step, digits)
    if new_hi < hi:
        new_hi = round(new_hi + step, digits)
    if new_hi <= new_lo:
        new_hi = round(new_lo + step, digits)
    # a step below the floats' spacing near lo/hi cannot move them: never cut the data off
    return min(new_lo, lo), max(new_hi, hi)
