"""MST (McKenna, Miklau and Sheldon, "Winning the NIST Contest: A scalable and general approach
to differentially private synthetic data", JPC 2021): one-way marginals, a maximum spanning
tree of pairs chosen by the exponential mechanism, and the tree's pairs.

The budget ``rho = cdp_rho(epsilon, delta)`` is split in thirds: the one-way marginals
(each with ``sigma^2 = 3 columns / (2 rho)``), the tree's ``columns - 1`` selections (each
the exponential mechanism with ``eps^2 / 8 = rho / (3 (columns - 1))``, sensitivity 1, on
the L1 error of a pair against the model fitted to the one-way marginals), and the tree's
pairs (each with ``sigma^2 = 3 (columns - 1) / (2 rho)``). Values whose noisy one-way count
is below three standard deviations are merged into one (a public recoding of the noisy
counts); the sampler spreads a merged value uniformly over the values it stands for.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from smpc_synth.dp.marginals import MarginalQueries, plan_selection
from smpc_synth.dp.zcdp import RhoPlan
from smpc_synth.models.aim import SHIFT_ROOM, error_bound
from smpc_synth.models.marginal import (
    Fitted,
    MarginalGenerator,
    Measurement,
    ProgressFn,
)
from smpc_synth.models.registry import register


@dataclass
class MSTParams:
    """Hyperparameters of :class:`MSTGenerator` (the reference implementation's defaults)."""

    select_iters: int = 50  # mirror descent on the one-way marginals, for the scores
    final_iters: int = 1000


@register
class MSTGenerator(MarginalGenerator):
    """MST: a tree of two-way marginals, measured with noise, fitted by Private-PGM."""

    name = "mst"
    Params = MSTParams

    def mechanism(self, queries: MarginalQueries, budget: RhoPlan, progress: ProgressFn) -> Fitted:
        from networkx.utils import UnionFind

        d = len(self.shape)
        third = budget.rho / 3
        tags = itertools.count()
        # d one-way marginals share a third (with the party sizes in federated mode)
        sigma2 = (d + queries.needs_party_sizes) / (2 * third)
        ones = []
        for c in range(d):
            queries.charge_measure(budget, f"measure:{self.columns[c]}", sigma2, self.shape[c])
            values = queries.measure((c,), sigma2, next(tags))
            ones.append(values)
        self.measure_party_sizes(queries, budget, sigma2, tags)
        progress({"event": "round", "round": 1, "selected": "one-way marginals"})
        measurements = self._compress(queries, ones, sigma2 * queries.noise_factor)
        if d < 2:
            return Fitted(measurements, supports=self.supports)
        model = self.estimate(measurements, self.hparams.select_iters)
        pairs = list(itertools.combinations(range(d), 2))
        errors = queries.errors(pairs, self.project_many(model, pairs))
        eps = math.sqrt(8 * third / (d - 1)) * (1 - SHIFT_ROOM)
        tree = UnionFind(range(d))
        chosen: list[tuple[int, int]] = []
        for step in range(d - 1):
            subset = [i for i, (a, b) in enumerate(pairs) if tree[a] != tree[b]]
            weights = np.ones(len(subset), dtype=np.int64)
            offsets = np.zeros(len(subset))
            plan = plan_selection(
                len(subset), weights, offsets, eps, error_bound(float(model.total))
            )
            label = f"select:edge {step + 1}"
            plan = queries.charge_select(budget, label, plan, errors, subset, weights)
            position = queries.select(errors, subset, weights, offsets, plan, next(tags))
            a, b = pairs[subset[position]]
            tree.union(a, b)
            chosen.append((a, b))
            progress(
                {
                    "event": "round",
                    "round": step + 2,
                    "selected": f"{self.columns[a]}+{self.columns[b]}",
                }
            )
        sigma2 = len(chosen) / (2 * third)
        for pair in chosen:
            label = f"measure:{self.columns[pair[0]]}+{self.columns[pair[1]]}"
            cells = math.prod(self.domain().shape[c] for c in pair)
            queries.charge_measure(budget, label, sigma2, cells)
            values = queries.measure(pair, sigma2, next(tags))
            measurements.append(Measurement(pair, values, sigma2 * queries.noise_factor))
        return Fitted(measurements, supports=self.supports, selected=chosen)

    def _compress(self, queries: MarginalQueries, ones: list[np.ndarray], sigma2: float):
        """Merge each column's values whose noisy count is below 3 sigma (public), recode
        the queries, and re-express the one-way measurements over the merged values."""
        threshold = 3 * math.sqrt(sigma2)
        self.supports = {}
        mappings = {}
        measurements = []
        for c, y in enumerate(ones):
            support = y >= threshold
            if support.all():
                measurements.append(Measurement((c,), y, sigma2))
                continue
            self.supports[c] = support
            kept = int(support.sum())
            mapping = np.full(len(y), kept, dtype=np.int64)
            mapping[support] = np.arange(kept)
            mappings[c] = mapping
            merged = len(y) - kept
            values = np.append(y[support], y[~support].sum()).astype(np.float64)
            weights = np.ones(kept + 1)
            weights[-1] = 1.0 / math.sqrt(merged)
            measurements.append(Measurement((c,), values, sigma2, weights))
        if mappings:
            queries.recode(mappings, list(self.domain().shape))
        return measurements
