"""Per-column encoders: one-hot for categories and booleans, three ways for numbers.

Every numeric codec works on the value scaled by the schema bounds, u = (x - min) / (max -
min) in [0, 1], and is fitted only from additive statistics of u (a histogram over fixed
bins, or sums and sums of squares), so that parties can fit one shared encoder from summed
statistics without showing their rows. Encoded values stay within +-MAX_ABS_ENCODED.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from smpc_synth.data.defaults import HIST_BINS, MAX_ABS_ENCODED, MODE_SCALE, QUANTILE_GAP_MASS
from smpc_synth.data.layout import Span
from smpc_synth.data.mixture import Mixture, fit_histogram_mixture
from smpc_synth.data.schema import ColumnSpec
from smpc_synth.data.stats import Stats
from smpc_synth.errors import InputError


class ColumnCodec(ABC):
    """Encodes one column into ``width`` float units; fitted from additive statistics."""

    name: ClassVar[str]
    stat_names: ClassVar[tuple[str, ...]] = ()  # keys of stats(), each a vector
    # the largest squared L2 norm one row can add to stats(): the DP sensitivity's share
    row_norm_sq: ClassVar[float] = 0.0

    def __init__(self, spec: ColumnSpec, n_bins: int = HIST_BINS):
        self.spec = spec
        self.n_bins = n_bins

    @property
    @abstractmethod
    def width(self) -> int: ...

    @abstractmethod
    def spans(self, start: int) -> list[Span]: ...

    def stats(self, values: pd.Series) -> Stats:
        """Additive statistics of this party's values (summed over parties before ``fit``)."""
        return {}

    def fit(self, stats: Stats, n_rows: float) -> None:  # noqa: B027 - optional hook
        """Fit from statistics summed over all parties."""

    @abstractmethod
    def encode(self, values: pd.Series) -> np.ndarray: ...

    @abstractmethod
    def decode(self, block: np.ndarray) -> pd.Series: ...

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`state` returned."""


class OneHotCodec(ColumnCodec):
    """Categorical (schema order) or boolean ([False, True]) values as a one-hot group."""

    name = "onehot"

    def __init__(self, spec: ColumnSpec, n_bins: int = HIST_BINS):
        super().__init__(spec, n_bins)
        self.levels: list[Any] = (
            [False, True] if spec.kind == "boolean" else list(spec.categories or ())
        )
        self._index = {v: i for i, v in enumerate(self.levels)}

    @property
    def width(self) -> int:
        return len(self.levels)

    def spans(self, start: int) -> list[Span]:
        return [Span(self.spec.name, start, self.width, "onehot")]

    def encode(self, values: pd.Series) -> np.ndarray:
        codes = values.map(self._index)
        if codes.isna().any():
            bad = values[codes.isna()].iloc[0]
            raise InputError(f"column '{self.spec.name}': {bad!r} is not in the schema")
        out = np.zeros((len(values), self.width))
        out[np.arange(len(values)), codes.to_numpy(dtype=int)] = 1.0
        return out

    def decode(self, block: np.ndarray) -> pd.Series:
        picked = np.asarray(self.levels, dtype=object)[block.argmax(axis=1)]
        return pd.Series(picked, dtype=bool if self.spec.kind == "boolean" else object)


class NumericCodec(ColumnCodec):
    """Shared scaling to [0, 1] by the schema bounds, and rounding/clipping on the way back."""

    def _unit(self, values: pd.Series) -> np.ndarray:
        lo, hi = self.spec.min, self.spec.max
        return np.clip((values.to_numpy(dtype=float) - lo) / (hi - lo), 0.0, 1.0)

    def _histogram(self, values: pd.Series) -> np.ndarray:
        bins = np.minimum((self._unit(values) * self.n_bins).astype(int), self.n_bins - 1)
        return np.bincount(bins, minlength=self.n_bins).astype(float)

    def decode(self, block: np.ndarray) -> pd.Series:
        lo, hi = self.spec.min, self.spec.max
        x = lo + np.clip(self._decode_unit(block), 0.0, 1.0) * (hi - lo)
        if self.spec.kind == "integer":
            return pd.Series(np.clip(np.round(x), lo, hi).astype("int64"))
        return pd.Series(x)

    @abstractmethod
    def _decode_unit(self, block: np.ndarray) -> np.ndarray: ...


class ScalarCodec(NumericCodec):
    """A numeric codec whose encoding is one continuous unit."""

    @property
    def width(self) -> int:
        return 1

    def spans(self, start: int) -> list[Span]:
        return [Span(self.spec.name, start, 1, "continuous")]


class StandardCodec(ScalarCodec):
    """(u - mean) / sd, with sd raised where needed so every value stays within MAX_ABS."""

    name = "standard"
    stat_names = ("sum", "sumsq")
    row_norm_sq = 2.0  # u and u^2, each in [0, 1]

    def __init__(self, spec: ColumnSpec, n_bins: int = HIST_BINS):
        super().__init__(spec, n_bins)
        self.mean, self.scale = 0.5, 0.5

    def stats(self, values: pd.Series) -> Stats:
        u = self._unit(values)
        return {"sum": np.array([u.sum()]), "sumsq": np.array([(u**2).sum()])}

    def fit(self, stats: Stats, n_rows: float) -> None:
        n = max(n_rows, 1.0)
        self.mean = float(np.clip(stats["sum"][0] / n, 0.0, 1.0))
        var = max(float(stats["sumsq"][0] / n - self.mean**2), 0.0)
        self.scale = max(float(np.sqrt(var)), 1.0 / MAX_ABS_ENCODED)  # |u - mean| <= 1

    def encode(self, values: pd.Series) -> np.ndarray:
        return ((self._unit(values) - self.mean) / self.scale)[:, None]

    def _decode_unit(self, block: np.ndarray) -> np.ndarray:
        return self.mean + self.scale * block[:, 0]

    def state(self) -> dict[str, Any]:
        return {"mean": float(self.mean), "scale": float(self.scale)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.mean, self.scale = float(state["mean"]), float(state["scale"])


class ModeCodec(NumericCodec):
    """CTGAN-style mode-specific normalisation: a scalar within the mode, and the mode one-hot."""

    name = "mode"
    stat_names = ("hist",)
    row_norm_sq = 1.0  # one count in one bin

    def __init__(self, spec: ColumnSpec, n_bins: int = HIST_BINS):
        super().__init__(spec, n_bins)
        self.mixture = Mixture(np.ones(1), np.full(1, 0.5), np.full(1, 0.25))

    @property
    def width(self) -> int:
        return 1 + len(self.mixture.means)

    def spans(self, start: int) -> list[Span]:
        return [
            Span(self.spec.name, start, 1, "continuous"),
            Span(self.spec.name, start + 1, self.width - 1, "onehot"),
        ]

    def stats(self, values: pd.Series) -> Stats:
        return {"hist": self._histogram(values)}

    def fit(self, stats: Stats, n_rows: float) -> None:
        self.mixture = fit_histogram_mixture(stats["hist"])

    def encode(self, values: pd.Series) -> np.ndarray:
        u = self._unit(values)
        mix = self.mixture
        mode = mix.log_responsibilities(u).argmax(axis=1)
        scalar = (u - mix.means[mode]) / (MODE_SCALE * mix.sds[mode])
        out = np.zeros((len(u), self.width))
        out[:, 0] = np.clip(scalar, -MAX_ABS_ENCODED, MAX_ABS_ENCODED)
        out[np.arange(len(u)), 1 + mode] = 1.0
        return out

    def _decode_unit(self, block: np.ndarray) -> np.ndarray:
        mode = block[:, 1:].argmax(axis=1)
        return self.mixture.means[mode] + MODE_SCALE * self.mixture.sds[mode] * block[:, 0]

    def state(self) -> dict[str, Any]:
        m = self.mixture
        return {"weights": m.weights.tolist(), "means": m.means.tolist(), "sds": m.sds.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.mixture = Mixture(*(np.asarray(state[k], float) for k in ("weights", "means", "sds")))


class QuantileCodec(ScalarCodec):
    """Normal scores of the histogram CDF (a Gaussian on these is a Gaussian copula).

    Within a bin the CDF is linear. The first and last occupied bins map onto only the inner
    half of their probability mass, so a point mass at an extreme value (say, many zeros)
    gets its mid-rank score rather than +-infinity, and the map stays exactly invertible.
    """

    name = "quantile"
    stat_names = ("hist",)
    row_norm_sq = 1.0  # one count in one bin

    def __init__(self, spec: ColumnSpec, n_bins: int = HIST_BINS):
        super().__init__(spec, n_bins)
        self.hist = np.ones(n_bins)

    def stats(self, values: pd.Series) -> Stats:
        return {"hist": self._histogram(values)}

    def fit(self, stats: Stats, n_rows: float) -> None:
        hist = np.clip(stats["hist"], 0.0, None)
        self.hist = hist if hist.sum() > 0 else np.ones(self.n_bins)

    def _bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The bins from the first to the last occupied one, and the CDF at each one's ends.

        Empty bins in between get a sliver of mass, so that the CDF is strictly increasing
        and a value at the edge of a gap survives float32 rounding of its score.
        """
        occupied = np.flatnonzero(self.hist > 0)
        span = np.arange(occupied[0], occupied[-1] + 1)
        mass = np.maximum(self.hist[span] / self.hist.sum(), QUANTILE_GAP_MASS)
        mass /= mass.sum()
        start = np.concatenate([[0.0], np.cumsum(mass)[:-1]])
        low_cut = np.zeros(len(span))
        high_cut = np.zeros(len(span))
        both = 0.25 if len(span) == 1 else 0.5
        low_cut[0], high_cut[-1] = both, both
        return span, start + low_cut * mass, start + (1.0 - high_cut) * mass

    def encode(self, values: pd.Series) -> np.ndarray:
        occupied, low, high = self._bins()
        pos = self._unit(values) * self.n_bins
        b = np.minimum(pos.astype(int), self.n_bins - 1)
        j = np.searchsorted(occupied, b)
        past_last = j == len(occupied)
        j = np.minimum(j, len(occupied) - 1)
        # a value in an empty bin (unseen data) maps to the edge of the next occupied one
        frac = np.where(occupied[j] == b, np.clip(pos - b, 0.0, 1.0), 0.0)
        cdf = np.where(past_last, high[-1], low[j] + frac * (high[j] - low[j]))
        cdf = np.clip(cdf, low[0], high[-1])
        return np.clip(ndtri(cdf), -MAX_ABS_ENCODED, MAX_ABS_ENCODED)[:, None]

    def _decode_unit(self, block: np.ndarray) -> np.ndarray:
        occupied, low, high = self._bins()
        cdf = ndtr(block[:, 0])
        j = np.minimum(np.searchsorted(high, cdf, side="right"), len(occupied) - 1)
        width = np.maximum(high[j] - low[j], 1e-300)
        frac = np.clip((cdf - low[j]) / width, 0.0, 1.0)
        return (occupied[j] + frac) / self.n_bins

    def state(self) -> dict[str, Any]:
        return {"hist": self.hist.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.hist = np.asarray(state["hist"], dtype=float)


class BinsCodec(NumericCodec):
    """Equal-width bins of the schema bounds, one-hot, and the position within the bin.

    Needs no statistics at all: the binning follows from the public schema alone, so a
    differentially private generator spends nothing on it. An integer column with at most
    ``n_bins`` values gets one bin per value (and no position). Marginal generators model the
    bins; the position is uniform within its bin (they sample it, it is never fitted).
    """

    name = "bins"

    def __init__(self, spec: ColumnSpec, n_bins: int = HIST_BINS):
        super().__init__(spec, n_bins)
        values = int(spec.max - spec.min) + 1 if spec.kind == "integer" else None
        self.exact = values is not None and values <= n_bins
        self.bins = values if self.exact else n_bins

    @property
    def width(self) -> int:
        return self.bins + (0 if self.exact else 1)

    def spans(self, start: int) -> list[Span]:
        spans = [Span(self.spec.name, start, self.bins, "onehot")]
        if not self.exact:
            spans.append(Span(self.spec.name, start + self.bins, 1, "continuous"))
        return spans

    def codes(self, values: pd.Series) -> np.ndarray:
        """The bin of each value (int64)."""
        if self.exact:
            return np.rint(values.to_numpy(dtype=float) - self.spec.min).astype(np.int64)
        scaled = self._unit(values) * self.bins
        return np.minimum(scaled.astype(np.int64), self.bins - 1)

    def encode(self, values: pd.Series) -> np.ndarray:
        codes = self.codes(values)
        out = np.zeros((len(values), self.width))
        out[np.arange(len(values)), codes] = 1.0
        if not self.exact:
            out[:, self.bins] = np.clip(self._unit(values) * self.bins - codes, 0.0, 1.0)
        return out

    def _decode_unit(self, block: np.ndarray) -> np.ndarray:
        codes = block[:, : self.bins].argmax(axis=1)
        if self.exact:
            return codes / (self.spec.max - self.spec.min)
        return (codes + np.clip(block[:, self.bins], 0.0, 1.0)) / self.bins


NUMERIC_CODECS: dict[str, type[NumericCodec]] = {
    c.name: c for c in (StandardCodec, ModeCodec, QuantileCodec, BinsCodec)
}
