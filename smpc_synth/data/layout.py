"""The shape of an encoded table, as the generators see it.

The encoder turns a table into a float matrix whose columns fall into spans. Generators only
need the spans: which output units are free reals and which form a one-hot group that a
softmax (or its MPC-friendly stand-in) should produce.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

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

    def to_dict(self) -> list[dict]:
        return [asdict(s) for s in self.spans]

    @classmethod
    def from_dict(cls, rows: list[dict]) -> Layout:
        return cls(tuple(Span(**r) for r in rows))
