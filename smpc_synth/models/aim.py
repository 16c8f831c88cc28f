"""AIM (McKenna, Mullins, Sheldon and Miklau, "AIM: An Adaptive and Iterative Mechanism for
Differentially Private Synthetic Data", VLDB 2022), with its budget split and annealing.

The workload is every marginal of ``degree`` columns with at most ``max_cells`` cells; the
candidates are all their subsets, weighted by how much of the workload each covers.

1. ``rho = cdp_rho(epsilon, delta)``; at most ``rounds = rounds_per_column * columns``
   rounds, each worth ``sigma`` and ``eps`` with ``1 / (2 sigma^2) = 0.9 rho / rounds`` and
   ``eps^2 / 8 = 0.1 rho / rounds``;
2. every one-way marginal is measured with ``sigma``;
3. each round selects, by the exponential mechanism with ``eps``, the candidate whose
   model estimate is furthest from the data (``w (|x - est|_1 - sqrt(2/pi) sigma cells)``)
   among those that keep the model within ``max_model_size`` times the share of the budget
   spent, measures it with ``sigma``, and refits; when the fit barely moved, ``sigma`` is
   halved and ``eps`` doubled. The last round spends exactly what is left.

Measurement noise is the discrete Gaussian, selection the fixed-point Gumbel-max of
:mod:`smpc_synth.dp.marginals`; the accountant charges both exactly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from smpc_synth.dp.marginals import MarginalQueries, plan_selection
from smpc_synth.dp.zcdp import RhoPlan, exponential_rho, gaussian_rho
from smpc_synth.models.marginal import (
    Fitted,
    MarginalGenerator,
    Measurement,
    ProgressFn,
    _mbi,
)
from smpc_synth.models.registry import register


@dataclass
class AIMParams:
    """Hyperparameters of :class:`AIMGenerator` (the reference implementation's defaults)."""

    degree: int = 2  # the workload: every marginal of this many columns
    max_cells: int = 10000  # ... with at most this many cells
    max_model_size: float = 80.0  # MB of the junction tree's tables at the end
    rounds_per_column: int = 16
    iters: int = 1000  # mirror-descent iterations after each round (warm-started)
    final_iters: int = 2500


SHIFT_ROOM = 1e-6  # of a selection's epsilon, left for its fixed-point shift (selection_rho)


def workload_candidates(shape: list[int], degree: int, max_cells: int) -> dict[tuple, int]:
    """Every subset of a workload marginal, weighted by ``sum_w |candidate ∩ w|``."""
    columns = range(len(shape))
    workload = [
        cl
        for cl in itertools.combinations(columns, min(degree, len(shape)))
        if math.prod(shape[c] for c in cl) <= max_cells
    ]
    closure = {
        sub
        for cl in workload
        for k in range(1, len(cl) + 1)
        for sub in itertools.combinations(cl, k)
    }
    return {
        cl: sum(len(set(cl) & set(w)) for w in workload)
        for cl in sorted(closure, key=lambda c: (len(c), c))
    }


def error_bound(total: float) -> float:
    """A public bound on an L1 error ``|x - est|_1 <= n + n_est`` from the model's noisy
    total; errors beyond it are clipped (which can only lower the sensitivity)."""
    return 3.0 * max(total, 1.0) + 1000.0


@register
class AIMGenerator(MarginalGenerator):
    """AIM: adaptive selection of marginals, measured with noise, fitted by Private-PGM."""

    name = "aim"
    Params = AIMParams

    def mechanism(self, queries: MarginalQueries, budget: RhoPlan, progress: ProgressFn) -> Fitted:
        p = self.hparams
        d = len(self.shape)
        candidates = workload_candidates(self.shape, p.degree, p.max_cells)
        rounds = p.rounds_per_column * d
        rho = budget.rho
        sigma2 = rounds / (2 * 0.9 * rho)
        eps = math.sqrt(8 * 0.1 * rho / rounds)
        tags = itertools.count()
        measurements = []
        for c in range(d):
            queries.charge_measure(budget, f"measure:{self.columns[c]}", sigma2, self.shape[c])
            values = queries.measure((c,), sigma2, next(tags))
            measurements.append(Measurement((c,), values, sigma2 * queries.noise_factor))
        self.measure_party_sizes(queries, budget, sigma2, tags)
        model = self.estimate(measurements, p.iters)
        selected: list[tuple[int, ...]] = []
        domain = self.domain()
        terminate = False
        t = 0
        while not terminate:
            t += 1
            if budget.remaining < 2 * (gaussian_rho(sigma2) + exponential_rho(eps)):
                remaining = budget.remaining  # one last round with everything left
                sigma2 = 1 / (2 * 0.9 * remaining)
                eps = math.sqrt(8 * 0.1 * remaining) * (1 - SHIFT_ROOM)
                terminate = True
            used = budget.spent + gaussian_rho(sigma2) + exponential_rho(eps)
            small = self._small_candidates(candidates, model, domain, p.max_model_size * used / rho)
            cliques = list(small)
            weights = np.array([small[cl] for cl in cliques], dtype=np.int64)
            cells = np.array([math.prod(self.shape[c] for c in cl) for cl in cliques], float)
            noise = math.sqrt(sigma2 * queries.noise_factor)  # what a measurement will carry
            offsets = weights * math.sqrt(2 / math.pi) * noise * cells
            estimates = self.project_many(model, cliques)
            errors = queries.errors(cliques, estimates)
            plan = plan_selection(
                len(cliques), weights, offsets, eps, error_bound(float(model.total))
            )
            everyone = range(len(cliques))
            label = f"select:round {t}"
            plan = queries.charge_select(budget, label, plan, errors, everyone, weights)
            index = queries.select(errors, everyone, weights, offsets, plan, next(tags))
            chosen = cliques[index]
            label = f"measure:{self._names(chosen)}"
            queries.charge_measure(budget, label, sigma2, int(cells[index]))
            values = queries.measure(chosen, sigma2, next(tags))
            measurements.append(Measurement(chosen, values, sigma2 * queries.noise_factor))
            selected.append(chosen)
            before = self.project(model, chosen)
            model = self.estimate(measurements, p.iters, warm_start=model)
            after = self.project(model, chosen)
            moved = float(np.abs(after - before).sum())
            if moved <= math.sqrt(2 / math.pi) * noise * cells[index] and not terminate:
                sigma2 /= 4  # the fit barely moved: measure more precisely
                eps *= 2
            progress(
                {
                    "event": "round",
                    "round": t,
                    "selected": self._names(chosen),
                    "rho_spent": budget.spent / rho,
                }
            )
        return Fitted(measurements, selected=selected)

    def _names(self, clique) -> str:
        return "+".join(self.columns[c] for c in clique)

    def _small_candidates(self, candidates, model, domain, size_limit: float) -> dict:
        """Candidates that keep the junction tree within ``size_limit`` MB, and those the
        model already covers (AIM's ``filter_candidates``)."""
        _mbi()
        from mbi.junction_tree import hypothetical_model_size

        index = {name: i for i, name in enumerate(self.columns)}
        current = [tuple(index[a] for a in cl) for cl in model.cliques]
        free = {
            sub
            for cl in current
            for k in range(1, len(cl) + 1)
            for sub in itertools.combinations(cl, k)
        }
        names = [tuple(self.columns[c] for c in cl) for cl in current]
        small = {}
        for cl, weight in candidates.items():
            if (
                cl in free
                or hypothetical_model_size(domain, [*names, tuple(self.columns[c] for c in cl)])
                <= size_limit
            ):
                small[cl] = weight
        return small
