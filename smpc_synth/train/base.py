"""The one interface every training protocol implements, and what the runtime hands it.

A strategy (plaintext, federated, mpc) never opens a file or a socket: the runtime gives it
a :class:`PartyContext` with the party's validated rows, a :class:`Channel` to the other
session members, a checkpoint store and a progress callback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from smpc_synth.net.channel import Channel

if TYPE_CHECKING:
    import pandas as pd

    from smpc_synth.config import RunConfig
    from smpc_synth.data.schema import Schema


class CheckpointStore(Protocol):
    """Where a strategy keeps its per-epoch state; the runtime decides the location."""

    def save(self, key: str, state: dict[str, Any]) -> None: ...

    def load(self, key: str) -> dict[str, Any] | None: ...

    def discard(self, key: str) -> None: ...


ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class PartyContext:
    """Everything a strategy may use on one party."""

    name: str
    rank: int  # index among the data parties
    parties: tuple[str, ...]  # data parties, in rank order
    config: RunConfig
    schema: Schema
    data: pd.DataFrame  # this party's validated training rows
    channel: Channel
    checkpoints: CheckpointStore
    progress: ProgressFn
    services: dict[str, str] = field(default_factory=dict)  # role -> member name
    output_parties: tuple[str, ...] = ()  # who receives the generator (default: all)
    resume: bool = False

    @property
    def world_size(self) -> int:
        return len(self.parties)

    @property
    def is_output_party(self) -> bool:
        return not self.output_parties or self.name in self.output_parties


@dataclass
class TrainingResult:
    """What a strategy returns: the synthesizer (on output parties) and its own metrics."""

    synthesizer: Any | None  # smpc_synth.models.Synthesizer
    metrics: dict[str, Any]


class Strategy(ABC):
    """A training protocol. Subclasses register under ``name`` in :mod:`smpc_synth.train`."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, ctx: PartyContext) -> TrainingResult:
        """Train with the other parties and return the result for this party."""
