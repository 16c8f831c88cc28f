"""Shared helpers for the generator tests: a small mixed table and its encoding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from smpc_synth.data.encoding import TableEncoder
from smpc_synth.data.schema import infer_schema

torch.set_num_threads(1)


def mixed_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Two correlated numeric columns, one skewed, two categoricals and a binary target."""
    rng = np.random.default_rng(seed)
    a = rng.normal(40, 10, rows)
    b = 0.8 * (a - 40) / 10 + 0.6 * rng.normal(size=rows)
    c = rng.lognormal(1.0, 0.5, rows)
    colour = rng.choice(["red", "green", "blue"], rows, p=[0.6, 0.3, 0.1])
    logit = 0.1 * (a - 40) + 1.5 * (colour == "red") - 0.8
    target = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame({"a": a, "b": b, "c": c, "colour": colour, "target": target})


def encoded(rows: int = 400, numeric: str = "mode", seed: int = 0):
    """``(X, layout, encoder)`` of a small mixed table, encoded by the real TableEncoder."""
    frame = mixed_frame(rows, seed)
    encoder = TableEncoder(infer_schema(frame, target="target"), numeric=numeric).fit(frame)
    return encoder.transform(frame), encoder.layout, encoder
