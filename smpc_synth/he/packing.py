"""Flatten an update to one vector and pack it as fixed-point lanes, one integer per CKKS slot.

Packing is pure integer arithmetic (numpy int64); TenSEAL is not involved here. A vector of n
values becomes ``lanes`` contiguous parts of ``S`` values (S a multiple of the slot count), and
slot s holds ``sum_j q[j*S + s] * 2**(j * lane_bits)``, q the values in units of
``2**-frac_bits``. Unpacking splits a summed slot into balanced digits, one per lane.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from smpc_synth.errors import InputError, SmpcSynthError
from smpc_synth.he.params import FixedPointLayout


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class UpdateSpec:
    """Names, shapes and dtypes of a flattened update, in order."""

    tensors: tuple[TensorSpec, ...]

    @classmethod
    def of(cls, update: Mapping[str, torch.Tensor | np.ndarray]) -> UpdateSpec:
        """The spec of an update (or of any update with its names, shapes and dtypes)."""
        tensors = ((k, torch.as_tensor(v)) for k, v in update.items())
        return cls(tuple(TensorSpec(k, tuple(t.shape), t.dtype) for k, t in tensors))

    @property
    def size(self) -> int:
        return sum(t.size for t in self.tensors)

    def locate(self, index: int) -> tuple[str, int]:
        """Which tensor (and flat index within it) holds flat position ``index``."""
        for t in self.tensors:
            if index < t.size:
                return t.name, index
            index -= t.size
        raise IndexError(index)


def flatten(update: Mapping[str, torch.Tensor | np.ndarray]) -> tuple[np.ndarray, UpdateSpec]:
    """All tensors, in mapping order, as one float64 vector plus what is needed to undo it."""
    tensors = {k: torch.as_tensor(v).detach().cpu() for k, v in update.items()}
    spec = UpdateSpec.of(tensors)
    parts = [t.reshape(-1).to(torch.float64).numpy() for t in tensors.values()]
    return (np.concatenate(parts) if parts else np.zeros(0)), spec


def unflatten(vector: np.ndarray, spec: UpdateSpec) -> dict[str, torch.Tensor]:
    """The inverse of :func:`flatten`, with each tensor's original shape and dtype."""
    if vector.shape != (spec.size,):
        raise ValueError(f"vector has {vector.size} values, spec expects {spec.size}")
    out, start = {}, 0
    for t in spec.tensors:
        chunk = torch.from_numpy(np.ascontiguousarray(vector[start : start + t.size]))
        out[t.name] = chunk.reshape(t.shape).to(t.dtype)
        start += t.size
    return out


def slots_needed(n_values: int, layout: FixedPointLayout, slots: int) -> int:
    """Packed length: values per lane, rounded up to whole ciphertexts."""
    per_lane = -(-n_values // layout.lanes)
    return max(1, -(-per_lane // slots)) * slots


def check_range(values: np.ndarray, layout: FixedPointLayout, spec: UpdateSpec) -> None:
    """Raise InputError naming the tensor if a value is not finite or exceeds the bound."""
    bad = ~np.isfinite(values) | (np.abs(values) > layout.max_abs)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        name, pos = spec.locate(index)
        raise InputError(
            f"update tensor '{name}' [{pos}] = {values[index]!r} is outside the fixed-point "
            f"range +-{layout.max_abs} (clip the update, or raise the bound)"
        )


def centered_mod(x: np.ndarray, bits: int) -> np.ndarray:
    """x mod 2**bits as the representative in [-2**(bits-1), 2**(bits-1))."""
    half = np.int64(1) << np.int64(bits - 1)
    return ((x + half) & ((half << np.int64(1)) - 1)) - half


def pack(values: np.ndarray, layout: FixedPointLayout, slots: int) -> np.ndarray:
    """Quantise and pack values (already range-checked) into int64 slot integers."""
    length = slots_needed(values.size, layout, slots)
    q = np.zeros(layout.lanes * length, dtype=np.int64)
    q[: values.size] = np.rint(values * 2.0**layout.frac_bits)
    lanes = q.reshape(layout.lanes, length)
    shifts = (np.arange(layout.lanes, dtype=np.int64) * layout.lane_bits)[:, None]
    return (lanes << shifts).sum(axis=0)


def split_lanes(packed: np.ndarray, layout: FixedPointLayout) -> tuple[np.ndarray, np.ndarray]:
    """Slot integers as balanced digits, one row per lane, and what is left above the top
    lane (zero for a well-formed sum)."""
    rest = packed.astype(np.int64)
    digits = []
    for _ in range(layout.lanes):
        digit = centered_mod(rest, layout.lane_bits)
        digits.append(digit)
        rest = (rest - digit) >> np.int64(layout.lane_bits)
    return np.stack(digits), rest


def unpack(packed: np.ndarray, layout: FixedPointLayout, n_values: int) -> np.ndarray:
    """Split summed slot integers into lanes and return the first ``n_values`` as floats."""
    digits, rest = split_lanes(packed, layout)
    if rest.any():
        raise SmpcSynthError(
            "decrypted sum overflows its fixed-point lanes: a party used a different layout "
            "or values outside the agreed range"
        )
    return digits.reshape(-1)[:n_values] * 2.0**-layout.frac_bits
