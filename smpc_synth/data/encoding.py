"""Encode a validated table into a small float matrix for generators, and decode back.

Fitting needs only **additive sufficient statistics** (:meth:`TableEncoder.sufficient_stats`):
in MPC or federated mode each party computes them on its own rows, the parties reveal only
their sum (:func:`smpc_synth.data.stats.sum_stats`, or its secure equivalent), and every party
fits the same encoder with :meth:`TableEncoder.fit_stats`. What is revealed, per run:

- ``n_rows``: the pooled row count;
- "standard": the pooled sum and sum of squares of each numeric column (scaled to [0, 1]);
- "mode" / "quantile": the pooled histogram of each numeric column over ``n_bins`` equal
  bins of its schema bounds.

Categorical and boolean columns need no statistics (their one-hot groups follow the schema).

Under differential privacy the parties reveal these sums plus Gaussian noise instead
(:meth:`TableEncoder.stats_sensitivity` bounds what one row adds, in L2), and
:meth:`TableEncoder.fit_stats` is told the noise's scale, which it uses only to read the noisy
histograms (post-processing). For party-level DP each party contributes its statistics
divided by its own row count (:meth:`TableEncoder.normalized_stats`): a distribution whose
L2 norm is bounded like one row's, with ``n_rows`` = 1.
The fitted state is plain JSON types, stored in ``generator.pt`` (loaded with
``torch.load(weights_only=True)``): no pickle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from smpc_synth.data.codecs import NUMERIC_CODECS, ColumnCodec, OneHotCodec, Stats
from smpc_synth.data.defaults import DEFAULT_NUMERIC, HIST_BINS, NUMERIC_MODES, NumericMode
from smpc_synth.data.layout import Layout, Span
from smpc_synth.data.schema import Schema
from smpc_synth.errors import InputError

STATE_FORMAT = "smpc_synth.TableEncoder/1"
N_ROWS = "n_rows"
NOISE_FLOOR = 2.0  # a noisy histogram bin below this many noise deviations counts as empty


def noisy_count(value: np.ndarray, noise_std: float = 0.0) -> float:
    """A summed row count: rounded (HE noise), and at least 1 when it carries DP noise."""
    n = float(np.rint(np.asarray(value, dtype=float).sum()))
    return max(n, 1.0) if noise_std > 0 else n


class TableEncoder:
    """A table <-> float32 matrix, fitted from (summed) sufficient statistics."""

    def __init__(
        self, schema: Schema, numeric: NumericMode = DEFAULT_NUMERIC, n_bins: int = HIST_BINS
    ):
        if numeric not in NUMERIC_MODES:
            raise InputError(f"numeric encoding {numeric!r}: use one of {NUMERIC_MODES}")
        if n_bins < 2:
            raise InputError(f"n_bins must be at least 2, got {n_bins}")
        self.schema = schema
        self.numeric = numeric
        self.n_bins = n_bins
        self.fitted = False
        self._codecs: list[ColumnCodec] = [
            (NUMERIC_CODECS[numeric] if spec.is_numeric else OneHotCodec)(spec, n_bins)
            for spec in schema.columns
        ]

    def sufficient_stats(self, df: pd.DataFrame) -> Stats:
        """Additive statistics of a validated table; sum them over parties, then fit_stats."""
        stats: Stats = {N_ROWS: np.array([float(len(df))])}
        for codec in self._codecs:
            for stat, value in codec.stats(df[codec.spec.name]).items():
                stats[_key(stat, codec.spec.name)] = np.asarray(value, dtype=float)
        return stats

    def stats_sensitivity(self) -> float:
        """The largest L2 norm of one row's :meth:`sufficient_stats` (``n_rows`` included):
        the sensitivity of their sum to adding or removing a row."""
        return float(np.sqrt(1.0 + sum(codec.row_norm_sq for codec in self._codecs)))

    def normalized_stats(self, df: pd.DataFrame) -> Stats:
        """:meth:`sufficient_stats` divided by the row count: one party's distribution, whose
        L2 norm is at most :meth:`stats_sensitivity` (a mean of rows' statistics)."""
        stats = self.sufficient_stats(df)
        n = max(float(stats[N_ROWS][0]), 1.0)
        return {k: np.asarray(v, dtype=float) / n for k, v in stats.items()}

    def stats_template(self) -> Stats:
        """Zeros shaped like :meth:`sufficient_stats` (for packing before any data is read)."""
        return self.sufficient_stats(
            pd.DataFrame({name: pd.Series(dtype=float) for name in self.schema.names})
        )

    def fit_stats(self, stats: Stats, noise_std: float = 0.0) -> TableEncoder:
        """Fit from statistics summed over all parties; counts are rounded (HE noise).

        ``noise_std`` > 0: the statistics carry Gaussian noise of that scale (DP). A
        histogram bin then counts only above :data:`NOISE_FLOOR` standard deviations (a
        bin of pure noise would otherwise spread mass over the whole range), and the row
        count is at least 1.
        """
        missing = sorted(set(self.stats_template()) - set(stats))
        if missing:
            raise ValueError(f"sufficient statistics lack key(s) {missing}")
        n_rows = noisy_count(stats[N_ROWS], noise_std)
        for codec in self._codecs:
            own = {
                stat: np.asarray(stats[_key(stat, codec.spec.name)], dtype=float)
                for stat in codec.stat_names
            }
            if "hist" in own:
                own["hist"] = np.rint(own["hist"]) if noise_std == 0 else own["hist"]
                if noise_std > 0:
                    own["hist"] = np.where(own["hist"] > NOISE_FLOOR * noise_std, own["hist"], 0)
            codec.fit(own, n_rows)
        self.fitted = True
        return self

    @property
    def needs_data(self) -> bool:
        """Whether fitting reads the data (False: it follows from the public schema alone)."""
        return any(codec.stat_names for codec in self._codecs)

    def fit_public(self) -> TableEncoder:
        """Fit an encoder that needs no data (:attr:`needs_data` false) without any."""
        if self.needs_data:
            raise ValueError(f"numeric encoding {self.numeric!r} is fitted from the data")
        return self.fit_stats(self.stats_template())

    def fit(self, df: pd.DataFrame) -> TableEncoder:
        """Fit on one (pooled) table: the same as fit_stats(sufficient_stats(df))."""
        return self.fit_stats(self.sufficient_stats(df))

    @property
    def layout(self) -> Layout:
        spans: list[Span] = []
        start = 0
        for codec in self._codecs:
            spans += codec.spans(start)
            start += codec.width
        return Layout(tuple(spans))

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Encode a validated table as float32, shape (rows, layout.width)."""
        self._require_fitted()
        blocks = [
            codec.encode(df[codec.spec.name].reset_index(drop=True)) for codec in self._codecs
        ]
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def inverse_transform(self, X: np.ndarray) -> pd.DataFrame:
        """Decode a matrix (e.g. generator samples): one-hot by argmax, numbers clipped to
        the schema bounds, integers rounded, booleans and categories restored."""
        self._require_fitted()
        X = np.nan_to_num(np.asarray(X, dtype=float))
        width = self.layout.width
        if X.ndim != 2 or X.shape[1] != width:
            raise ValueError(f"expected a matrix with {width} columns, got shape {X.shape}")
        columns: dict[str, pd.Series] = {}
        start = 0
        for codec in self._codecs:
            columns[codec.spec.name] = codec.decode(X[:, start : start + codec.width])
            start += codec.width
        return pd.DataFrame(columns)

    def state_dict(self) -> dict[str, Any]:
        """The fitted encoder as plain JSON types (str, int, float, list, dict)."""
        self._require_fitted()
        return {
            "format": STATE_FORMAT,
            "schema": self.schema.to_dict(),
            "numeric": self.numeric,
            "n_bins": self.n_bins,
            "columns": [codec.state() for codec in self._codecs],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TableEncoder:
        """Rebuild a fitted encoder from :meth:`state_dict`."""
        if state.get("format") != STATE_FORMAT:
            raise InputError(f"not a table-encoder state (format {state.get('format')!r})")
        schema = Schema.from_dict(state["schema"], source="encoder state")
        encoder = cls(schema, state["numeric"], int(state["n_bins"]))
        for codec, codec_state in zip(encoder._codecs, state["columns"], strict=True):
            codec.load_state(codec_state)
        encoder.fitted = True
        return encoder

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("TableEncoder is not fitted: call fit() or fit_stats() first")


def _key(stat: str, column: str) -> str:
    return f"{stat}:{column}"
