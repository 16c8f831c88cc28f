"""The interface every generator implements, and the shared training loop of the neural ones.

A generator only sees the encoded float matrix and its :class:`Layout`. Its hyperparameters
live in one dataclass per generator (the single place for their defaults). Neural generators
split training into ``train_step`` (one minibatch) and ``train_epoch`` (one shuffled pass) so
the federated and MPC protocols can reuse the same pieces and the same losses.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from smpc_synth.data.defaults import HIST_BINS
from smpc_synth.data.encoding import TableEncoder
from smpc_synth.data.layout import Layout
from smpc_synth.data.schema import Schema
from smpc_synth.errors import InputError, SmpcSynthError
from smpc_synth.models.schedule import scheduled
from smpc_synth.models.spans import activate, sample_onehot

EpochCallback = Callable[[int, dict[str, float]], None]

# Weights and buffers of one generator's networks, all together. Hyperparameters (from a
# config or a generator.pt file) that would build more are refused before any allocation.
# Tabular generators need about 10^5 (the defaults) to 10^6; 5e7 float32 weights are 200 MB,
# several times that for Adam and secret-shared training.
MAX_PARAMETERS = 50_000_000


@dataclass
class NeuralParams:
    """Hyperparameters every neural generator has; subclasses add their own and defaults."""

    epochs: int = 100
    batch_size: int = 500
    lr: float = 1e-3
    schedule: str = "default"  # or "latency": larger batches for long round trips (schedule.py)


class Generator(ABC):
    """A trainable model of the encoded table that can sample new encoded rows."""

    name: ClassVar[str]
    numeric_encoding: ClassVar[str]  # the TableEncoder numeric mode this generator wants
    Params: ClassVar[type]  # dataclass of hyperparameters, with their defaults
    released_modules: ClassVar[tuple[str, ...]] = ()  # modules in the released artifact
    # what reads real rows under DP, each with its share of the budget (dp.support)
    dp_parts: ClassVar[tuple[str, ...]] = ("encoder", "training")
    encoder_bins: ClassVar[int] = HIST_BINS  # bins of the encoder's numeric histograms
    differentially_private: ClassVar[bool] = False  # fits only within a privacy budget

    def __init__(self, layout: Layout, **hparams: Any):
        if layout.width == 0:
            raise InputError(f"generator '{self.name}': the encoded table has no columns")
        self.layout = layout
        self.hparams = parse_hparams(self.Params, hparams, f"generator '{self.name}'")

    @abstractmethod
    def fit(
        self,
        X: np.ndarray,
        *,
        epochs: int | None = None,
        seed: int = 0,
        on_epoch: EpochCallback | None = None,
    ) -> Generator:
        """Train from scratch on the encoded rows ``X`` (rows by layout.width)."""

    @abstractmethod
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` encoded rows; one-hot spans are hard one-hot. Same seed, same rows."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """What the released artifact needs to sample: tensors and plain types only."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; raises InputError if it does not fit."""

    @classmethod
    def make_encoder(cls, schema: Schema) -> TableEncoder:
        """The (unfitted) table encoder this generator's layout comes from."""
        return TableEncoder(schema, numeric=cls.numeric_encoding, n_bins=cls.encoder_bins)

    def hparams_dict(self) -> dict[str, Any]:
        return asdict(self.hparams)

    def widest(self) -> int:
        """Units of the widest layer a sampled row passes through (bounds sampling memory)."""
        return self.layout.width

    def modules(self) -> dict[str, nn.Module]:
        """The trainable networks by name (empty for non-neural generators)."""
        return {}

    def _check_input(self, X: np.ndarray) -> torch.Tensor:
        if X.ndim != 2 or X.shape[1] != self.layout.width:
            raise InputError(
                f"generator '{self.name}': encoded data has shape {X.shape}, "
                f"expected (rows, {self.layout.width})"
            )
        if X.shape[0] < 2:
            raise InputError(f"generator '{self.name}': need at least 2 rows, got {X.shape[0]}")
        if not np.isfinite(X).all():
            raise InputError(f"generator '{self.name}': encoded data contains NaN or infinity")
        return torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32)


class NeuralGenerator(Generator):
    """A generator made of ``nn.Sequential`` networks trained by minibatch Adam.

    Sampling feeds standard normal noise of size :attr:`noise_dim` through the released
    network ``sampler`` and activates its output span by span. ``buffers`` holds released
    tensors that are not network weights (set in ``_build``, saved with the networks).
    """

    sampler: ClassVar[str]
    private_modules: ClassVar[tuple[str, ...]] = ()  # networks whose gradients read real rows

    def __init__(self, layout: Layout, **hparams: Any):
        super().__init__(layout, **hparams)
        self._check_size()
        self.initialize(seed=0)

    def _check_size(self) -> None:
        """InputError naming the hyperparameters if the networks would exceed
        :data:`MAX_PARAMETERS`; counted on torch's meta device, which allocates nothing."""
        try:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                self.buffers = {}
                nets = self._build()
            count = sum(t.numel() for net in nets.values() for t in net.state_dict().values())
            count += sum(t.numel() for t in self.buffers.values())
        except (RuntimeError, OverflowError, ValueError, TypeError):  # sizes torch cannot hold
            count = None
        if count is not None and count <= MAX_PARAMETERS:
            return
        defaults = asdict(self.Params())
        shaping = {
            k: v
            for k, v in asdict(self.hparams).items()
            if isinstance(v, int | tuple) and not isinstance(v, bool) and v != defaults[k]
        }
        named = ", ".join(f"parameter '{k}' = {v!r}" for k, v in shaping.items())
        cause = named or f"the encoded width of {self.layout.width} units"
        built = "more than 2^63" if count is None else f"{count:,}"
        raise InputError(
            f"generator '{self.name}': {cause} would build {built} network parameters, "
            f"above the limit of {MAX_PARAMETERS:,}"
        )

    def widest(self) -> int:
        widths = [self.layout.width, self.noise_dim]
        for net in self._nets.values():
            widths += [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
        return max(widths)

    def private_step(self, batch: torch.Tensor, generator: torch.Generator, private) -> dict:
        """One DP-SGD step on a Poisson sample (:mod:`smpc_synth.models.private`)."""
        raise NotImplementedError(f"generator '{self.name}' has no DP-SGD step")

    @abstractmethod
    def _build(self) -> dict[str, nn.Module]:
        """Fresh networks (called under a seeded RNG)."""

    @abstractmethod
    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam optimizers over :meth:`modules`, by name."""

    @property
    @abstractmethod
    def noise_dim(self) -> int:
        """Width of the noise the sampler network takes."""

    @abstractmethod
    def train_step(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        """One optimisation step on one minibatch; returns its losses."""

    def initialize(self, seed: int) -> None:
        """Fresh weights and optimizer state from ``seed`` (all parties of a run agree on it)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.buffers: dict[str, torch.Tensor] = {}
            self._nets = self._build()
        self.optimizers = self._optimizers()

    def modules(self) -> dict[str, nn.Module]:
        return self._nets

    def train_epoch(
        self, X: torch.Tensor | np.ndarray, generator: torch.Generator
    ) -> dict[str, float]:
        """One shuffled pass of minibatch steps over ``X``; returns the mean of each loss.

        Federated mode calls this for its local epochs; ``generator`` drives shuffling and
        all training noise, so a seeded generator makes the epoch reproducible.
        """
        X = torch.as_tensor(X, dtype=torch.float32)
        for net in self._nets.values():
            net.train()
        n = X.shape[0]
        batch = min(self.hparams.batch_size, n)
        order = torch.randperm(n, generator=generator)
        totals: dict[str, float] = {}
        steps = n // batch  # drop the ragged tail: every step sees a full batch
        for i in range(steps):
            metrics = self.train_step(X[order[i * batch : (i + 1) * batch]], generator)
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value
        return {key: value / steps for key, value in totals.items()}

    def fit(
        self,
        X: np.ndarray,
        *,
        epochs: int | None = None,
        seed: int = 0,
        on_epoch: EpochCallback | None = None,
    ) -> NeuralGenerator:
        data = self._check_input(X)
        epochs = self.hparams.epochs if epochs is None else epochs
        if epochs < 1:
            raise InputError(f"generator '{self.name}': epochs must be at least 1, got {epochs}")
        self.initialize(seed)
        rng = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            metrics = self.train_epoch(data, rng)
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise SmpcSynthError(
                    f"generator '{self.name}': loss {bad[0]} diverged at epoch {epoch + 1}"
                )
            if on_epoch is not None:
                on_epoch(epoch, metrics)
        return self

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        net = self._nets[self.sampler]
        net.eval()
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.noise_dim, generator=g)
        x = self._perturb(activate(net(z), self.layout), g)
        return sample_onehot(x, self.layout, g).numpy()

    def _perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Hook: output noise added to activated samples (none by default)."""
        return x

    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {n: dict(self._nets[n].state_dict()) for n in self.released_modules},
            "buffers": {name: t.clone() for name, t in self.buffers.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._load(self.released_modules, state)

    def training_state_dict(self) -> dict[str, Any]:
        """Every network, buffer and optimizer, for per-epoch checkpoints and ``--resume``."""
        return {
            "modules": {name: dict(net.state_dict()) for name, net in self._nets.items()},
            "buffers": {name: t.clone() for name, t in self.buffers.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
        }

    def load_training_state_dict(self, state: Mapping[str, Any]) -> None:
        self._load(tuple(self._nets), state)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])

    def _load(self, names: tuple[str, ...], state: Mapping[str, Any]) -> None:
        where = f"generator '{self.name}': saved state"
        modules, buffers = state.get("modules", {}), state.get("buffers", {})
        for name in names:
            if name not in modules:
                raise InputError(f"{where} lacks module '{name}'")
            try:
                self._nets[name].load_state_dict(modules[name])
            except (RuntimeError, TypeError, AttributeError) as exc:
                raise InputError(f"{where}: module '{name}' does not fit: {exc}") from None
        for name, current in self.buffers.items():
            value = buffers.get(name)
            if not isinstance(value, torch.Tensor) or value.shape != current.shape:
                raise InputError(f"{where}: buffer '{name}' is missing or has the wrong shape")
            self.buffers[name] = value.to(current.dtype).clone()


def parse_hparams(cls: type, raw: Mapping[str, Any], source: str) -> Any:
    """Build the hyperparameter dataclass ``cls`` from ``raw``, naming any bad key."""
    known = {f.name: f for f in fields(cls)}
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise InputError(
                f"{source}: unknown parameter '{key}' (known: {', '.join(sorted(known))})"
            )
        values[key] = _coerce(value, getattr(defaults, key), f"{source}: parameter '{key}'")
    params = cls(**values)
    for key, value in asdict(params).items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value < 1:
            raise InputError(f"{source}: parameter '{key}' must be at least 1, got {value}")
        if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
            raise InputError(f"{source}: parameter '{key}' must be finite and >= 0, got {value}")
    if isinstance(params, NeuralParams):
        params = scheduled(params, dict(raw), source)
    return params


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
        )
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise InputError(f"{where} should be like {default!r}, got {value!r}")
    return value
