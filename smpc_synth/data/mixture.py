"""A small 1-D Gaussian mixture fitted to a histogram (for mode-specific normalisation).

CTGAN fits a Bayesian Gaussian mixture to the raw values of a column. Parties here reveal
only the pooled histogram, so this fits by weighted EM on the bin centres, with each bin's
own spread added to every component (a bin is treated as uniform: variance width^2 / 12,
which also keeps a point mass from collapsing a component). Deterministic: initial means are
the histogram's quantiles, and there is no random restart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smpc_synth.data.defaults import EM_ITERATIONS, EM_TOLERANCE, MAX_MODES, MIN_MODE_WEIGHT


@dataclass(frozen=True)
class Mixture:
    """Weights, means and standard deviations of the components, sorted by mean."""

    weights: np.ndarray
    means: np.ndarray
    sds: np.ndarray

    def log_responsibilities(self, x: np.ndarray) -> np.ndarray:
        """log P(component | x) up to a per-row constant, shape (len(x), components)."""
        z = (x[:, None] - self.means[None, :]) / self.sds[None, :]
        return np.log(self.weights)[None, :] - np.log(self.sds)[None, :] - 0.5 * z**2


def fit_histogram_mixture(
    counts: np.ndarray, max_modes: int = MAX_MODES, min_weight: float = MIN_MODE_WEIGHT
) -> Mixture:
    """Fit on ``counts`` over equal bins of [0, 1]; light components are dropped and refit."""
    counts = np.clip(np.asarray(counts, dtype=float), 0.0, None)
    n_bins = len(counts)
    centres = (np.arange(n_bins) + 0.5) / n_bins
    bin_var = 1.0 / (12.0 * n_bins**2)
    total = counts.sum()
    mass = counts / total if total > 0 else np.full(n_bins, 1.0 / n_bins)
    cdf = np.cumsum(mass)
    wanted = min(max_modes, int((mass > 0).sum()))
    quantiles = (np.arange(wanted) + 0.5) / wanted
    means = np.unique(centres[np.searchsorted(cdf, quantiles).clip(0, n_bins - 1)])
    spread = float(mass @ (centres - mass @ centres) ** 2) / len(means) ** 2
    mixture = Mixture(
        np.full(len(means), 1.0 / len(means)), means, np.full(len(means), np.sqrt(spread + bin_var))
    )
    while True:
        mixture = _em(mixture, centres, mass, bin_var)
        keep = mixture.weights >= min_weight
        if keep.all() or not keep.any():
            break
        w = mixture.weights[keep]
        mixture = Mixture(w / w.sum(), mixture.means[keep], mixture.sds[keep])
    order = np.argsort(mixture.means)
    return Mixture(mixture.weights[order], mixture.means[order], mixture.sds[order])


def _em(mixture: Mixture, x: np.ndarray, mass: np.ndarray, bin_var: float) -> Mixture:
    previous = -np.inf
    for _ in range(EM_ITERATIONS):
        log_r = mixture.log_responsibilities(x)
        top = log_r.max(axis=1, keepdims=True)
        norm = top + np.log(np.exp(log_r - top).sum(axis=1, keepdims=True))
        likelihood = float(mass @ norm[:, 0])
        r = np.exp(log_r - norm) * mass[:, None]
        nk = np.maximum(r.sum(axis=0), 1e-300)
        means = (r * x[:, None]).sum(axis=0) / nk
        var = (r * (x[:, None] - means[None, :]) ** 2).sum(axis=0) / nk + bin_var
        mixture = Mixture(nk / nk.sum(), means, np.sqrt(var))
        if likelihood - previous < EM_TOLERANCE:
            break
        previous = likelihood
    return mixture
