"""Seeded tables of awkward shapes, for tests and benchmarks of what real tables look like.

:func:`mixed_table` mimics a public census extract: wide categorical columns (41 and 16
categories), heavy-tailed numbers with a point mass at zero, a spike at a round value and
a binary target that depends on several columns. :func:`table_from_columns` builds a table
from a list of :class:`ColumnShape` (what a generated-schema test draws): categorical
columns of any width, numeric columns of any scale, sign, skew and point mass. Both are
deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MIXED_ROWS = 5000
MIXED_TARGET = "income"
MAX_ABS_VALUE = 1e9  # generated numbers stay within +-1e9


def _skewed_choice(rng: np.random.Generator, n: int, levels: int, skew: float) -> np.ndarray:
    """Category indices 0..levels-1 with Zipf-like weights ``1 / (i + 1)^skew``; every
    category occurs at least once where ``n >= levels`` (so an inferred schema lists them
    all)."""
    weights = 1.0 / np.arange(1, levels + 1) ** skew
    codes = rng.choice(levels, size=n, p=weights / weights.sum())
    if n >= levels:
        codes[rng.choice(n, size=levels, replace=False)] = np.arange(levels)
    return codes


def mixed_table(rows: int = MIXED_ROWS, seed: int = 0) -> pd.DataFrame:
    """A 15-column table with a 41-category and a 16-category column, heavy-tailed numbers
    with a point mass at zero, and the binary target :data:`MIXED_TARGET`."""
    rng = np.random.default_rng(seed)
    age = np.clip(np.round(17 + rng.gamma(3.0, 7.0, rows)), 17, 90).astype(np.int64)
    education = _skewed_choice(rng, rows, 16, 1.1)
    education_num = np.clip(education + 1 + rng.integers(-1, 2, rows), 1, 16).astype(np.int64)
    sex = rng.choice(["female", "male"], size=rows, p=[0.33, 0.67])
    hours = np.where(
        rng.random(rows) < 0.45, 40, np.clip(np.round(rng.normal(40, 12, rows)), 1, 99)
    ).astype(np.int64)
    gains = rng.random(rows) < 0.08
    capital_gain = np.where(gains, np.round(np.minimum(rng.lognormal(8.0, 1.2, rows), 99999)), 0)
    losses = rng.random(rows) < 0.05
    capital_loss = np.where(losses, np.round(np.clip(rng.normal(1900, 350, rows), 150, 4400)), 0)
    weight = np.round(np.minimum(rng.lognormal(12.0, 0.55, rows), 1.5e6))
    score = (
        0.35 * (education_num - 10)
        + 0.04 * (age - 38)
        + 0.04 * (hours - 40)
        + 0.8 * (sex == "male")
        + 2.5 * gains
        + 1.0 * losses
        - 1.3
    )
    income = np.where(rng.random(rows) < 1 / (1 + np.exp(-score)), ">50K", "<=50K")
    return pd.DataFrame(
        {
            "age": age,
            "workclass": _labels("work", _skewed_choice(rng, rows, 8, 1.8)),
            "fnlwgt": weight.astype(np.int64),
            "education": _labels("edu", education),
            "education_num": education_num,
            "marital_status": _labels("marital", _skewed_choice(rng, rows, 7, 1.2)),
            "occupation": _labels("occ", _skewed_choice(rng, rows, 14, 0.6)),
            "relationship": _labels("rel", _skewed_choice(rng, rows, 6, 1.0)),
            "race": _labels("race", _skewed_choice(rng, rows, 5, 2.5)),
            "sex": sex,
            "capital_gain": capital_gain.astype(np.int64),
            "capital_loss": capital_loss.astype(np.int64),
            "hours_per_week": hours,
            "native_country": _labels("country", _skewed_choice(rng, rows, 41, 1.8)),
            MIXED_TARGET: income,
        }
    )


def _labels(prefix: str, codes: np.ndarray) -> np.ndarray:
    return np.char.add(f"{prefix}-", codes.astype(str))


@dataclass(frozen=True)
class ColumnShape:
    """One generated column: ``categories`` > 0 makes a categorical column of that many
    categories (Zipf-like frequencies of exponent ``skew``); otherwise a numeric column of
    log-normal magnitude (``skew`` its sigma) times ``scale``, shifted by ``offset`` (so
    negative values appear), with a share ``zeros`` of exact zeros and integers if
    ``integer``."""

    categories: int = 0
    scale: float = 1.0  # values are clipped to +-MAX_ABS_VALUE
    skew: float = 0.5
    zeros: float = 0.0
    offset: float = 0.0
    integer: bool = False

    def describe(self) -> str:
        if self.categories:
            return f"cat{self.categories}"
        kind = "int" if self.integer else "num"
        return f"{kind}(scale={self.scale:.3g}, skew={self.skew:.2g}, zeros={self.zeros:.2g})"


def table_from_columns(columns: list[ColumnShape], rows: int, seed: int) -> pd.DataFrame:
    """A table with one column per shape (named ``c0``, ``c1``, ...), deterministic in
    ``seed``. A numeric column's values are correlated with the first numeric column."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=rows)
    data: dict[str, np.ndarray] = {}
    for index, shape in enumerate(columns):
        if shape.categories:
            codes = _skewed_choice(rng, rows, shape.categories, shape.skew)
            data[f"c{index}"] = _labels("v", codes)
            continue
        noise = 0.6 * latent + 0.8 * rng.normal(size=rows)
        values = shape.scale * np.exp(shape.skew * noise) + shape.offset
        values = np.clip(values, -MAX_ABS_VALUE, MAX_ABS_VALUE)
        values = np.where(rng.random(rows) < shape.zeros, 0.0, values)
        if shape.integer:
            values = np.round(values)
        data[f"c{index}"] = values.astype(np.int64) if shape.integer else values
    return pd.DataFrame(data)
