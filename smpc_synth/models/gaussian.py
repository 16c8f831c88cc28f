"""A multivariate Gaussian on the quantile-encoded table: a Gaussian copula.

It is fitted from sufficient statistics only (row count, column sums and the sum of outer
products), which the MPC and federated protocols obtain by secure sums. Under DP they are
released with Gaussian noise (:func:`noisy_moments`) and the row count is the encoder's noisy
one; the sampler already tolerates a covariance that noise has made indefinite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from smpc_synth.errors import InputError
from smpc_synth.models.base import EpochCallback, Generator
from smpc_synth.models.registry import register
from smpc_synth.models.spans import argmax_onehot


@dataclass
class GaussianParams:
    """Hyperparameters of :class:`GaussianGenerator`."""

    ridge: float = 1e-3  # added to the covariance diagonal: one-hot spans make it singular


def sufficient_stats(X: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """``(n, sum of rows, sum of row outer products)`` of ``X``, in float64."""
    X64 = np.asarray(X, dtype=np.float64)
    return X64.shape[0], X64.sum(axis=0), X64.T @ X64


# Under DP each encoded row is scaled down to squared norm at most this per continuous unit
# (plus one per one-hot span) before its moments are summed: a continuous unit's square is
# about 1 on average (normal scores), while its bound MAX_ABS_ENCODED^2 = 25 would make the
# noise on the moments 6-12x larger for the few rows that need it.
CONTINUOUS_NORM_SQ = 4.0


def moments_clip_sq(layout) -> float:
    """The squared L2 norm rows are clipped to before their moments are released (DP)."""
    continuous = sum(s.width for s in layout.spans if s.kind == "continuous")
    onehot = sum(1 for s in layout.spans if s.kind == "onehot")
    return min(CONTINUOUS_NORM_SQ * continuous + onehot, layout.max_row_norm_sq())


def clip_rows(X: np.ndarray, layout) -> np.ndarray:
    """Rows scaled down (as DP-SGD clips gradients) to norm ``sqrt(moments_clip_sq)``."""
    X64 = np.asarray(X, dtype=np.float64)
    norms = np.sqrt((X64**2).sum(axis=1, keepdims=True))
    limit = np.sqrt(moments_clip_sq(layout))
    return X64 * np.minimum(1.0, limit / np.maximum(norms, 1e-300))


def moments_sensitivity(layout) -> float:
    """L2 bound of what one clipped row (:func:`clip_rows`) adds to ``(sum, upper triangle
    of sum x x^T)``: ``sqrt(R^2 + R^4)`` with ``R^2`` = :func:`moments_clip_sq`."""
    r2 = moments_clip_sq(layout)
    return float(np.sqrt(r2 + r2**2))


def upper(outer: np.ndarray) -> np.ndarray:
    """The upper triangle (with the diagonal) of a symmetric matrix, as a vector."""
    return np.asarray(outer, dtype=np.float64)[np.triu_indices(outer.shape[0])]


def from_upper(values: np.ndarray, d: int) -> np.ndarray:
    """The symmetric ``d x d`` matrix whose :func:`upper` triangle is ``values``."""
    out = np.zeros((d, d))
    out[np.triu_indices(d)] = values
    return out + np.triu(out, 1).T


def noisy_moments(total: np.ndarray, outer: np.ndarray, std: float, source):
    """The Gaussian mechanism on ``(total, outer)``: noise on the sum and on the upper
    triangle of the (symmetric) outer-product sum, mirrored below the diagonal."""
    return source.privatize(total, std), from_upper(source.privatize(upper(outer), std), len(total))


@register
class GaussianGenerator(Generator):
    """Mean and ridge-regularised covariance of the encoded rows; samples are Gaussian."""

    name = "gaussian"
    numeric_encoding = "quantile"
    Params = GaussianParams
    released_modules = ()
    dp_parts = ("encoder", "moments")

    def __init__(self, layout, **hparams: Any):
        super().__init__(layout, **hparams)
        self.mean: torch.Tensor | None = None
        self.cov: torch.Tensor | None = None

    def fit_stats(self, n: int, total: np.ndarray, outer: np.ndarray) -> GaussianGenerator:
        """Fit from sufficient statistics (see :func:`sufficient_stats`), e.g. secure sums."""
        d = self.layout.width
        total = np.asarray(total, dtype=np.float64)
        outer = np.asarray(outer, dtype=np.float64)
        if total.shape != (d,) or outer.shape != (d, d):
            raise InputError(
                f"generator 'gaussian': statistics have shapes {total.shape} and "
                f"{outer.shape}, expected ({d},) and ({d}, {d})"
            )
        if n < 2:
            raise InputError(f"generator 'gaussian': need at least 2 rows, got {n}")
        return self.fit_moments(total / n, outer / n)

    def fit_moments(self, mean: np.ndarray, second: np.ndarray) -> GaussianGenerator:
        """Fit from the column means and ``E[x x^T]`` (under DP: noisy ones)."""
        mean = np.asarray(mean, dtype=np.float64)
        cov = np.asarray(second, dtype=np.float64) - np.outer(mean, mean)
        cov = (cov + cov.T) / 2 + self.hparams.ridge * np.eye(self.layout.width)
        self.mean = torch.from_numpy(mean)
        self.cov = torch.from_numpy(cov)
        return self

    def fit(
        self,
        X: np.ndarray,
        *,
        epochs: int | None = None,
        seed: int = 0,
        on_epoch: EpochCallback | None = None,
    ) -> GaussianGenerator:
        """Fit on local rows; ``epochs`` and ``seed`` do not apply (the fit is closed-form)."""
        self._check_input(X)
        self.fit_stats(*sufficient_stats(X))
        if on_epoch is not None:
            on_epoch(0, {"rows": float(X.shape[0])})
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        if self.mean is None or self.cov is None:
            raise InputError("generator 'gaussian' has not been fitted")
        # eigh rather than Cholesky: tolerant of a covariance that is only semi-definite
        vals, vecs = torch.linalg.eigh(self.cov)
        factor = vecs * vals.clamp_min(0.0).sqrt()
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.layout.width, generator=g, dtype=torch.float64)
        x = self.mean + z @ factor.T
        return argmax_onehot(x, self.layout).to(torch.float32).numpy()

    def state_dict(self) -> dict[str, Any]:
        if self.mean is None:
            raise InputError("generator 'gaussian' has not been fitted")
        return {"mean": self.mean.clone(), "cov": self.cov.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        d = self.layout.width
        try:
            mean = torch.as_tensor(state["mean"], dtype=torch.float64)
            cov = torch.as_tensor(state["cov"], dtype=torch.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"generator 'gaussian': saved state is incomplete: {exc}") from None
        if mean.shape != (d,) or cov.shape != (d, d):
            raise InputError(
                f"generator 'gaussian': saved state has shapes {tuple(mean.shape)} and "
                f"{tuple(cov.shape)}, expected ({d},) and ({d}, {d})"
            )
        self.mean, self.cov = mean, cov
