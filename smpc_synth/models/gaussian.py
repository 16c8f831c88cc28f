"""A multivariate Gaussian on the quantile-encoded table: a Gaussian copula.

It is fitted from sufficient statistics only (row count, column sums and the sum of outer
products), which the MPC and federated protocols obtain by secure sums.
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


@register
class GaussianGenerator(Generator):
    """Mean and ridge-regularised covariance of the encoded rows; samples are Gaussian."""

    name = "gaussian"
    numeric_encoding = "quantile"
    Params = GaussianParams
    released_modules = ()

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
        mean = total / n
        cov = outer / n - np.outer(mean, mean)
        cov = (cov + cov.T) / 2 + self.hparams.ridge * np.eye(d)
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
