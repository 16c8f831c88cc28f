"""The shape of an encoded table, as the generators see it.

The encoder turns a table into a float matrix whose columns fall into spans. Generators only
need the spans: which output units are free reals and which form a one-hot group that a
softmax (or its MPC-friendly stand-in) should produce.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from smpc_synth.data.defaults import MAX_ABS_ENCODED

SpanKind = Literal["continuous", "onehot"]


@dataclass(frozen=True)
class Span:
    """A run of encoded columns: ``width`` units from ``start``, produced by ``column``."""

    column: str
    start: int
    width: int
    kind: SpanKind

    @property
    def stop(self) -> int:
        return self.start + self.width


@dataclass(frozen=True)
class Layout:
    """All spans of an encoded table, in order; ``width`` is the encoded dimension."""

    spans: tuple[Span, ...]

    @property
    def width(self) -> int:
        return self.spans[-1].stop if self.spans else 0

    def max_row_norm_sq(self) -> float:
        """The largest squared L2 norm of one encoded row: continuous units lie within
        +-MAX_ABS_ENCODED, and a one-hot span holds a single 1 (a DP sensitivity bound)."""
        continuous = sum(s.width for s in self.spans if s.kind == "continuous")
        onehot = sum(1 for s in self.spans if s.kind == "onehot")
        return MAX_ABS_ENCODED**2 * continuous + onehot

    def to_dict(self) -> list[dict]:
        return [asdict(s) for s in self.spans]

    @classmethod
    def from_dict(cls, rows: list[dict]) -> Layout:
        return cls(tuple(Span(**r) for r in rows))
