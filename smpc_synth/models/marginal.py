"""Marginal-based generators with differential privacy: the shared part of AIM and MST.

The encoder bins every numeric column by its public schema bounds (``numeric="bins"``), so a
row becomes one discrete code per column and nothing about the data is spent on encoding.
A mechanism (:mod:`smpc_synth.models.aim`, :mod:`smpc_synth.models.mst`) measures noisy
marginals of the codes through :class:`~smpc_synth.dp.marginals.MarginalQueries` (on one
table, inside MPC or over federated aggregation), and Private-PGM (``mbi``) fits a graphical
model to the noisy marginals and samples from it. Everything the released model holds is a
function of the noisy marginals and the public schema: post-processing.

The position of a value within its bin is not modelled: it is drawn uniformly when
sampling, from the sampling seed.
"""

from __future__ import annotations

import os
import sys
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from smpc_synth.data.defaults import MARGINAL_BINS
from smpc_synth.dp.marginals import LocalQueries, MarginalQueries
from smpc_synth.dp.sampling import noise_key
from smpc_synth.dp.zcdp import RhoPlan
from smpc_synth.errors import InputError
from smpc_synth.models.base import EpochCallback, Generator

ProgressFn = Callable[[dict[str, Any]], None]
XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _mbi():
    """mbi, with JAX in float64 (its estimates stall in float32) and no persistent cache.
    XLA's CPU backend optimises little: mbi compiles a program for every new set of
    marginals, and compiling dominates (the programs themselves run in milliseconds)."""
    if "jax" not in sys.modules:
        os.environ.setdefault("XLA_FLAGS", XLA_FLAGS)
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mbi
    return mbi


ROWS_NOTE = (
    "the synthetic table's size defaults to the model's total, a function of the noisy "
    "marginals; no exact count is released"
)


@dataclass
class Privacy:
    """What a differentially private fit needs beyond the data: the run's ``[dp]`` settings,
    and the key the noise is drawn from (None: a fresh one from the OS CSPRNG; a debug seed
    fixes it, as it fixes the dealer's, so a plaintext run can reproduce an MPC one)."""

    dp: Any
    noise_key: bytes | None = None

    @classmethod
    def from_run(cls, dp, debug_seed: int | None = None) -> Privacy:
        """From a run's ``[dp]`` config; ``debug_seed`` (tests only: the MPC session's, else
        ``dp.insecure_debug_seed``) fixes the noise key."""
        seed = dp.insecure_debug_seed if debug_seed is None else debug_seed
        return cls(dp, None if seed is None else noise_key(seed))


@dataclass
class Measurement:
    """A released noisy marginal: cells of ``clique`` (attribute indices), its noise
    parameter, and a public weighting (MST's merged cells)."""

    clique: tuple[int, ...]
    values: np.ndarray
    sigma2: float
    weights: np.ndarray | None = None


@dataclass
class Fitted:
    """What a mechanism run returns: its measurements and, for MST, the public merging of
    each column's rare values (``supports[c][v]``: value ``v`` kept on its own)."""

    measurements: list[Measurement]
    supports: dict[int, np.ndarray] = field(default_factory=dict)
    selected: list[tuple[int, ...]] = field(default_factory=list)


class MarginalGenerator(Generator):
    """A graphical model of the binned table, fitted by Private-PGM to noisy marginals."""

    numeric_encoding = "bins"
    encoder_bins: ClassVar[int] = MARGINAL_BINS
    differentially_private: ClassVar[bool] = True
    dp_parts: ClassVar[tuple[str, ...]] = ("marginals",)
    # keep the last model's projections (False: compute every one afresh, the reference)
    reuse_projections: ClassVar[bool] = True

    def __init__(self, layout, **hparams: Any):
        super().__init__(layout, **hparams)
        self.columns: list[str] = []
        self.onehots: list[tuple[int, int]] = []  # (start, width) of each column's bins
        self.positions: list[int | None] = []  # unit of the position within the bin
        for span in layout.spans:
            if span.kind == "onehot":
                self.columns.append(span.column)
                self.onehots.append((span.start, span.width))
                self.positions.append(None)
            elif self.columns and self.columns[-1] == span.column and span.width == 1:
                self.positions[-1] = span.start
            else:
                raise InputError(
                    f"generator '{self.name}': column '{span.column}' is not binned; "
                    "marginal generators need the 'bins' numeric encoding"
                )
        self.shape = [width for _, width in self.onehots]
        self.model = None
        self.supports: dict[int, np.ndarray] = {}
        self.privacy_report: dict[str, Any] = {}
        self.selected: list[tuple[str, ...]] = []
        self._projected: tuple[Any, dict[tuple[int, ...], np.ndarray]] | None = None
        self._working: Callable[[], None] | None = None  # called during long fits

    # -- codes ------------------------------------------------------------------------------

    def codes(self, X: np.ndarray) -> np.ndarray:
        """Encoded rows -> (rows, columns) int64 bin codes."""
        return np.stack(
            [X[:, start : start + width].argmax(axis=1) for start, width in self.onehots], axis=1
        ).astype(np.int64)

    # -- fitting ----------------------------------------------------------------------------

    @abstractmethod
    def mechanism(self, queries: MarginalQueries, budget: RhoPlan, progress: ProgressFn) -> Fitted:
        """Measure noisy marginals within ``budget`` (the algorithm, data only via queries)."""

    def fit(
        self,
        X: np.ndarray,
        *,
        epochs: int | None = None,
        seed: int = 0,
        on_epoch: EpochCallback | None = None,
        privacy: Privacy | None = None,
        on_working: Callable[[], None] | None = None,
    ) -> MarginalGenerator:
        """Fit on one table (plaintext). ``privacy`` is required: this generator is DP.
        ``on_working`` is called every few iterations of a Private-PGM fit."""
        self._check_input(X)
        if privacy is None:
            raise InputError(
                f"--epsilon: generator '{self.name}' is differentially private and needs a "
                "privacy budget"
            )
        codes = self.codes(X)
        if privacy.dp.insecure_null_data:  # tests only: every mechanism reads no row
            codes = codes[:0]
        queries = LocalQueries(codes, self.shape, privacy.noise_key or noise_key())

        def progress(event: dict[str, Any]) -> None:
            if on_epoch is not None and event.get("event") == "round":
                on_epoch(int(event["round"]) - 1, {k: v for k, v in event.items() if k != "event"})
            elif on_working is not None and event.get("event") == "working":
                on_working()

        return self.fit_private(queries, privacy, progress)

    def fit_private(
        self, queries: MarginalQueries, privacy: Privacy, progress: ProgressFn = lambda e: None
    ) -> MarginalGenerator:
        """Run the mechanism through ``queries`` (any mode) and fit the graphical model."""
        from smpc_synth.models.private import start_ledger

        ledger, _ = start_ledger(privacy.dp, self.name, self.name)
        if privacy.noise_key is not None:
            ledger.noise_source = "INSECURE: noise key from a debug seed (tests only)"
        else:
            ledger.noise_source = queries.noise_source
        ledger.note("rows", ROWS_NOTE)
        ledger.note("mechanism", f"{self.name}: measure and select marginals, Private-PGM fit")
        budget = RhoPlan(ledger)
        # a fit can take minutes: say so every few iterations (the MPC leader tells the others)
        self._working = lambda: progress({"event": "working"})
        try:
            fitted = self.mechanism(queries, budget, progress)
            self._projected = None
            self.supports = fitted.supports
            self.selected = [tuple(self.columns[i] for i in c) for c in fitted.selected]
            self.model = self.estimate(fitted.measurements, self.hparams.final_iters)
        finally:
            self._projected = self._working = None
        ledger.check_delta(self.estimated_rows)  # a noisy estimate: looking at it is free
        self.privacy_report = {**ledger.to_dict(), **queries.privacy_notes(ledger)}
        return self

    def measure_party_sizes(
        self, queries: MarginalQueries, budget: RhoPlan, sigma2: float, tags: Iterator[int]
    ) -> None:
        """Federated mode: each party's row count with noise planned at ``sigma2``, charged
        like a marginal of a column naming the party (every party's share of an estimate).
        Other modes draw no tag, so their noise stays what a seed gave before."""
        if queries.needs_party_sizes:
            queries.measure_party_sizes(sigma2, next(tags), budget=budget)

    def domain(self):
        """The mbi domain of the (possibly compressed) codes."""
        mbi = _mbi()
        shape = [
            int(self.supports[c].sum()) + int(not self.supports[c].all())
            if c in self.supports
            else width
            for c, width in enumerate(self.shape)
        ]
        return mbi.Domain(self.columns, shape)

    def estimate(self, measurements: Sequence[Measurement], iters: int, warm_start=None):
        """Private-PGM's mirror descent on the noisy marginals (post-processing)."""
        mbi = _mbi()
        domain = self.domain()
        linear = [
            mbi.LinearMeasurement(
                np.asarray(m.values, dtype=np.float64) * (1.0 if m.weights is None else m.weights),
                tuple(self.columns[i] for i in m.clique),
                float(np.sqrt(m.sigma2)),
                query=mbi.DatavectorQuery()
                if m.weights is None
                else mbi.WeightedQuery(np.asarray(m.weights, dtype=np.float64)),
            )
            for m in measurements
        ]
        estimator = mbi.estimation.MirrorDescent()
        working = self._working

        def tick(state) -> None:
            import jax

            jax.block_until_ready(state)  # the iterations have run, not only been queued
            working()

        return estimator.estimate(
            domain,
            linear,
            iters=iters,
            warm_start=warm_start,
            callback_fn=None if working is None else tick,
        )

    def project(self, model, clique: Sequence[int]) -> np.ndarray:
        """The model's estimate of one marginal (flat, C order)."""
        return self.project_many(model, [clique])[0]

    def project_many(self, model, cliques: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """The model's estimates of many marginals (flat, C order, read-only).

        The last model's estimates are kept: AIM asks again, before refitting, for the one it
        selected. Each estimate is computed alone (see :meth:`_project_many`), so a kept one
        is the very array a fresh computation gives."""
        wanted = [tuple(int(c) for c in clique) for clique in cliques]
        kept = self._projected
        memo = kept[1] if kept is not None and kept[0] is model else {}
        todo = [clique for clique in dict.fromkeys(wanted) if clique not in memo]
        for clique, values in zip(todo, self._project_many(model, todo), strict=True):
            values.flags.writeable = False
            memo[clique] = values
        if self.reuse_projections:
            self._projected = (model, memo)
        return [memo[clique] for clique in wanted]

    def _project_many(self, model, cliques: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """The model's estimates of ``cliques``, each independent of which others are asked.

        Attributes in different connected parts of the model are independent under it, so
        such a marginal is the product of its parts' marginals (over the total). A part the
        model's marginals do not hold comes from Private-PGM's ``calculate_many_marginals``
        (one belief propagation for all, whose answer for each does not depend on the
        others). All op by op: compiling a program for every marginal and model would cost
        far more than running it."""
        if not cliques:
            return []
        import jax
        import networkx as nx

        mbi = _mbi()
        graph = nx.Graph()
        graph.add_nodes_from(self.columns)
        for cl in model.cliques:
            graph.add_edges_from((a, b) for a in cl for b in cl if a != b)
        component = {a: i for i, part in enumerate(nx.connected_components(graph)) for a in part}
        split = []
        for clique in cliques:
            names = tuple(self.columns[i] for i in clique)
            parts: dict[int, list[str]] = {}
            for a in names:
                parts.setdefault(component[a], []).append(a)
            split.append((names, [tuple(p) for p in parts.values()]))
        total = float(model.total)
        with jax.disable_jit():
            missing = sorted(
                {p for _, parts in split for p in parts if not model.marginals.supports(p)}
            )
            many = (
                mbi.marginal_oracles.calculate_many_marginals(model.potentials, missing, total)
                if missing
                else None
            )
            out = []
            for names, parts in split:
                factors = [
                    model.marginals.project(p) if model.marginals.supports(p) else many.project(p)
                    for p in parts
                ]
                joint = factors[0]
                for factor in factors[1:]:
                    joint = joint * factor
                joint = joint.transpose(names)
                scale = total ** (len(factors) - 1) if len(factors) > 1 else 1.0
                out.append(np.asarray(joint.datavector(), dtype=np.float64) / scale)
        return out

    @property
    def estimated_rows(self) -> int:
        """The model's (noisy) estimate of the number of rows: what samples default to."""
        if self.model is None:
            raise InputError(f"generator '{self.name}' has not been fitted")
        return max(1, round(float(self.model.total)))

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        if self.model is None:
            raise InputError(f"generator '{self.name}' has not been fitted")
        state = np.random.get_state()  # mbi samples from numpy's global generator
        try:
            np.random.seed(seed % 2**32)
            data = self._by_position(self.model).synthetic_data(n)
            codes = np.stack([np.asarray(data.data[c]) for c in range(len(self.columns))], 1)
            rng = np.random.default_rng(seed)
            codes = self._expand(codes, rng)
        finally:
            np.random.set_state(state)
        return self.encode_codes(codes, rng)

    def _by_position(self, model):
        """The same model with each attribute named by its column's position.

        Private-PGM 2.0's ``synthetic_data`` orders the parents of each column by iterating a
        Python ``set`` of attribute names (``relevant = used.intersection(...)`` in
        ``MarkovRandomField.synthetic_data``); strings hash differently in every process
        (``PYTHONHASHSEED``), so the same model and seed gave different tables in different
        processes. Integers hash to themselves: with them the order, and the table, depend
        on the model and the seed alone."""
        mbi = _mbi()
        index = {name: i for i, name in enumerate(self.columns)}
        domain = mbi.Domain(range(len(self.columns)), model.domain.shape)
        potentials = model.potentials
        cliques = [tuple(index[a] for a in cl) for cl in potentials.cliques]
        tables = {
            renamed: mbi.Factor(domain.project(renamed), potentials.tables[cl].values)
            for cl, renamed in zip(potentials.cliques, cliques, strict=True)
        }
        total = float(model.total)
        renamed = mbi.CliqueVector(domain, cliques, tables)
        marginals = mbi.marginal_oracles.message_passing_stable(renamed, total)
        return mbi.MarkovRandomField(potentials=renamed, marginals=marginals, total=total)

    def encode_codes(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Bin codes (rows, columns) -> encoded rows, each value's position within its bin
        drawn uniformly from ``rng`` (the encoder decodes these to the schema's values)."""
        n = len(codes)
        out = np.zeros((n, self.layout.width), dtype=np.float32)
        for c, (start, _width) in enumerate(self.onehots):
            out[np.arange(n), start + codes[:, c]] = 1.0
            if self.positions[c] is not None:
                out[:, self.positions[c]] = rng.random(n)
        return out

    def _expand(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Undo MST's merging: a merged value becomes one of the values it stands for."""
        codes = codes.astype(np.int64).copy()
        for c, support in self.supports.items():
            kept, merged = np.flatnonzero(support), np.flatnonzero(~support)
            column = codes[:, c]
            other = column == len(kept)
            out = np.empty_like(column)
            out[~other] = kept[column[~other]]
            if other.any():
                out[other] = rng.choice(merged, int(other.sum()))
            codes[:, c] = out
        return codes

    # -- saving -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            raise InputError(f"generator '{self.name}' has not been fitted")
        potentials = self.model.potentials
        return {
            "cliques": [list(cl) for cl in potentials.cliques],
            "potentials": [
                torch.from_numpy(np.array(potentials.tables[cl].values, dtype=np.float64))
                for cl in potentials.cliques
            ],
            "total": float(self.model.total),
            "supports": {
                str(c): torch.from_numpy(s.astype(np.bool_)) for c, s in self.supports.items()
            },
            "selected": [list(cl) for cl in self.selected],
            "privacy": dict(self.privacy_report),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        mbi = _mbi()
        import jax.numpy as jnp

        where = f"generator '{self.name}': saved state"
        try:
            self.supports = {
                int(c): np.asarray(s, dtype=bool) for c, s in dict(state["supports"]).items()
            }
            domain = self.domain()
            cliques = [tuple(cl) for cl in state["cliques"]]
            tables = {
                cl: mbi.Factor(domain.project(cl), jnp.asarray(np.asarray(values, np.float64)))
                for cl, values in zip(cliques, state["potentials"], strict=True)
            }
            total = float(state["total"])
            potentials = mbi.CliqueVector(domain, cliques, tables)
            marginals = mbi.marginal_oracles.message_passing_stable(potentials, total)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where} does not fit: {exc}") from None
        self.model = mbi.MarkovRandomField(potentials=potentials, marginals=marginals, total=total)
        self.selected = [tuple(cl) for cl in state.get("selected", [])]
        self.privacy_report = dict(state.get("privacy", {}))
