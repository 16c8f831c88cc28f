"""Odd CSV files like real public tables: wide and Zipf categoricals, heavy tails, point
masses, huge integers, extreme floats, constant and empty columns, missing cells, booleans,
dates, unicode names, BOM, CRLF, quoted newlines, duplicate headers, tiny files.

Each builder is deterministic for a seed and returns the CSV's text (written by
:func:`write_all`), so tests and the command-line sweep read the same files.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROWS = 400


def _csv(df: pd.DataFrame, lineterminator: str = "\n") -> str:
    buffer = io.StringIO()
    df.to_csv(buffer, index=False, lineterminator=lineterminator, quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


def _base(rng: np.random.Generator, rows: int) -> dict[str, object]:
    return {"g": rng.choice(["a", "b", "c"], rows), "x": np.round(rng.normal(0, 1, rows), 4)}


def wide_categorical(seed: int = 0, rows: int = ROWS, levels: int = 2000) -> str:
    """An ID-like column with ``levels`` distinct values (more than rows: mostly unique)."""
    rng = np.random.default_rng(seed)
    ids = [f"id{v:06d}" for v in rng.choice(levels * 10, rows, replace=False)]
    return _csv(pd.DataFrame({"id": ids, **_base(rng, rows)}))


def zipf_categorical(seed: int = 0, rows: int = 3000, levels: int = 300) -> str:
    """300 categories with Zipf(1.1) frequencies: many appear once or not at all."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, levels + 1) ** 1.1
    codes = rng.choice(levels, rows, p=weights / weights.sum())
    return _csv(pd.DataFrame({"city": [f"c{c}" for c in codes], **_base(rng, rows)}))


def heavy_tails(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    return _csv(
        pd.DataFrame(
            {
                "lognormal": rng.lognormal(0, 5, rows),
                "pareto": rng.pareto(0.7, rows) + 1,
                **_base(rng, rows),
            }
        )
    )


def point_masses(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    zeros = np.where(rng.random(rows) < 0.8, 0.0, rng.gamma(2, 50, rows))
    spike = np.full(rows, 7)
    spike[0] = 3  # 99.75%: one row differs
    return _csv(pd.DataFrame({"amount": zeros, "spike": spike, **_base(rng, rows)}))


def huge_integers(seed: int = 0, rows: int = ROWS) -> str:
    """Integers above 2^53 (an id-like count), near the int64 limits."""
    rng = np.random.default_rng(seed)
    big = (2**53 + rng.integers(1, 1000, rows)).astype(np.int64)
    near = np.where(rng.random(rows) < 0.5, 2**63 - 1 - rng.integers(0, 9, rows), -(2**63))
    return _csv(pd.DataFrame({"big": big, "near_int64": near, **_base(rng, rows)}))


def big_int_text_ok(seed: int = 0, rows: int = ROWS) -> str:
    """Integers up to 2^53 - 1: the largest exactly representable ones."""
    rng = np.random.default_rng(seed)
    top = (2**53 - 1 - rng.integers(0, 1000, rows)).astype(np.int64)
    return _csv(pd.DataFrame({"top": top, **_base(rng, rows)}))


def extreme_floats(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    huge = rng.choice([1e300, -1e300, 3.5e299], rows)
    tiny = rng.choice([-1e-300, 1e-300, 0.0], rows)
    return _csv(pd.DataFrame({"huge": huge, "tiny": tiny, **_base(rng, rows)}))


def tiny_floats(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    return _csv(pd.DataFrame({"tiny": rng.normal(0, 1e-300, rows), **_base(rng, rows)}))


def negatives(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    return _csv(
        pd.DataFrame(
            {
                "debt": -rng.lognormal(8, 2, rows),
                "delta": rng.integers(-50, -1, rows),
                **_base(rng, rows),
            }
        )
    )


def constant_column(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    return _csv(
        pd.DataFrame({"one": np.full(rows, 5), "label": ["same"] * rows, **_base(rng, rows)})
    )


def empty_column(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    return _csv(pd.DataFrame({"nothing": [None] * rows, **_base(rng, rows)}))


def missing_values(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    base = _base(rng, rows)
    x = pd.Series(base["x"]).astype(object)
    x[rng.random(rows) < 0.1] = None
    g = pd.Series(base["g"]).astype(object)
    g[rng.random(rows) < 0.1] = None
    return _csv(pd.DataFrame({"g": g, "x": x}))


def booleans(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    flags = rng.random(rows) < 0.3
    return _csv(
        pd.DataFrame(
            {
                "flag_word": np.where(flags, "true", "false"),
                "flag_bit": rng.integers(0, 2, rows),
                "Flag_Cap": np.where(rng.random(rows) < 0.5, "True", "False"),
                **_base(rng, rows),
            }
        )
    )


def dates(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    days = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, rows), unit="D")
    return _csv(pd.DataFrame({"day": days.strftime("%Y-%m-%d"), **_base(rng, rows)}))


def unicode_names(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    return _csv(
        pd.DataFrame(
            {
                "Größe (cm)": np.round(rng.normal(170, 10, rows), 1),
                "città natale": rng.choice(["Zürich", "Åre", "東京"], rows),
                " padded ": rng.integers(0, 5, rows),
                **_base(rng, rows),
            }
        )
    )


def bom_crlf_quoted(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "note": rng.choice(["a, b", 'say "hi"', "two\nlines", "plain"], rows),
            **_base(rng, rows),
        }
    )
    return "\ufeff" + _csv(df, lineterminator="\r\n")


def duplicate_names(seed: int = 0, rows: int = ROWS) -> str:
    rng = np.random.default_rng(seed)
    lines = ["a,b,a"] + [f"{i},{rng.integers(9)},{i}" for i in range(rows)]
    return "\n".join(lines) + "\n"


def empty_file(seed: int = 0) -> str:
    return ""


def header_only(seed: int = 0) -> str:
    return "a,b,c\n"


def single_row(seed: int = 0) -> str:
    return "a,b,c\n1,x,2.5\n"


BUILDERS: dict[str, Callable[..., str]] = {
    "wide_categorical": wide_categorical,
    "zipf_categorical": zipf_categorical,
    "heavy_tails": heavy_tails,
    "point_masses": point_masses,
    "huge_integers": huge_integers,
    "big_int_text_ok": big_int_text_ok,
    "extreme_floats": extreme_floats,
    "tiny_floats": tiny_floats,
    "negatives": negatives,
    "constant_column": constant_column,
    "empty_column": empty_column,
    "missing_values": missing_values,
    "booleans": booleans,
    "dates": dates,
    "unicode_names": unicode_names,
    "bom_crlf_quoted": bom_crlf_quoted,
    "duplicate_names": duplicate_names,
    "empty_file": empty_file,
    "header_only": header_only,
    "single_row": single_row,
}


def write_all(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Write every odd table as ``NAME.csv`` under ``folder``; return name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, build in BUILDERS.items():
        path = folder / f"{name}.csv"
        path.write_bytes(build(seed).encode("utf-8"))
        out[name] = path
    return out
