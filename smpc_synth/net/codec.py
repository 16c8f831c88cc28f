"""Payloads (numpy arrays, torch tensors, bytes) <-> :class:`Frame` sequences on the wire.

A payload travels as dtype + shape + raw little-endian bytes, cut into frames of at most
``chunk_bytes``; only the dtypes in :data:`DTYPES` are accepted. Nothing here can execute
code on the receiver (no pickle). The sender copies each slice once (the caller may reuse its
buffer after ``send``); the receiver copies each slice once into the final array.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from smpc_synth.net.v1 import tensor_pb2 as pb
from smpc_synth.train.base import Payload

_NUMPY_NAMES = (
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)
# wire name -> little-endian numpy dtype of the raw bytes
DTYPES: dict[str, np.dtype] = {name: np.dtype(name).newbyteorder("<") for name in _NUMPY_NAMES}
# numpy has no bfloat16: its bytes travel as int16 and are viewed back as bfloat16 by torch
DTYPES["bfloat16"] = np.dtype("<i2")

_TORCH_DTYPES: dict[torch.dtype, str] = {
    torch.bool: "bool",
    torch.uint8: "uint8",
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
    torch.complex64: "complex64",
    torch.complex128: "complex128",
}
_TORCH_BY_NAME = {name: dtype for dtype, name in _TORCH_DTYPES.items()}


class CodecError(ValueError):
    """A payload or frame that cannot be (de)coded: unknown dtype, wrong size, bad order."""


def _raw_view(payload: Payload) -> tuple[pb.TensorHeader, memoryview]:
    """The header and a byte view of ``payload`` (copying only to fix layout or byte order)."""
    if isinstance(payload, bytes | bytearray | memoryview):
        view = memoryview(payload).cast("B")
        return pb.TensorHeader(kind=pb.PAYLOAD_KIND_BYTES, nbytes=view.nbytes), view
    if isinstance(payload, torch.Tensor):
        name = _TORCH_DTYPES.get(payload.dtype)
        if name is None:
            raise CodecError(f"cannot send torch dtype {payload.dtype}; supported: {_supported()}")
        tensor = payload.detach().cpu()
        if name == "bfloat16":
            tensor = tensor.view(torch.int16)
        array, kind = tensor.contiguous().numpy(), pb.PAYLOAD_KIND_TORCH
    elif isinstance(payload, np.ndarray):
        name = payload.dtype.name
        if name not in DTYPES or name == "bfloat16":
            raise CodecError(f"cannot send numpy dtype {payload.dtype}; supported: {_supported()}")
        array, kind = payload, pb.PAYLOAD_KIND_NUMPY
    else:
        raise CodecError(
            f"cannot send {type(payload).__name__}: send a numpy array, torch tensor or bytes"
        )
    array = np.asarray(array, dtype=DTYPES[name], order="C")
    header = pb.TensorHeader(kind=kind, dtype=name, shape=array.shape, nbytes=array.nbytes)
    return header, memoryview(array.reshape(-1).view(np.uint8))


def encode(tag: str, payload: Payload, chunk_bytes: int) -> list[pb.Frame]:
    """The frames of one message; each holds its own copy of at most ``chunk_bytes``."""
    header, view = _raw_view(payload)
    starts = range(0, max(view.nbytes, 1), chunk_bytes)
    frames = [pb.Frame(data=bytes(view[start : start + chunk_bytes])) for start in starts]
    frames[0].tag = tag
    frames[0].header.CopyFrom(header)
    frames[-1].last = True
    return frames


def frame_bytes(frames: list[pb.Frame]) -> int:
    """Raw payload bytes carried by ``frames``."""
    return sum(len(frame.data) for frame in frames)


class Message(NamedTuple):
    """One received message: its tag, the payload and its raw size."""

    tag: str
    payload: Payload
    nbytes: int


class Assembler:
    """Rebuilds messages from the frames of one stream, checking every header and size."""

    def __init__(self, max_payload_bytes: int, reserve: Callable[[int], None] | None = None):
        """``reserve(nbytes)`` runs before a message's buffer is allocated (and may block)."""
        self._max = max_payload_bytes
        self._reserve = reserve
        self._header: pb.TensorHeader | None = None
        self._tag = ""
        self._filled = 0
        # Arrays are copied into place as frames arrive; bytes are joined once at the end.
        self._raw: np.ndarray | None = None
        self._parts: list[bytes] = []

    def _start(self, frame: pb.Frame) -> None:
        if not frame.HasField("header"):
            raise CodecError("first frame of a message has no header")
        header = frame.header
        _check_header(header, self._max)
        if self._reserve is not None:
            self._reserve(header.nbytes)
        self._header, self._tag, self._filled = header, frame.tag, 0
        is_bytes = header.kind == pb.PAYLOAD_KIND_BYTES
        self._raw = None if is_bytes else np.empty(header.nbytes, np.uint8)
        self._parts = []

    def feed(self, frame: pb.Frame) -> Message | None:
        """Take one frame; return the message it completes, if any."""
        if self._header is None:
            self._start(frame)
        elif frame.HasField("header"):
            raise CodecError(f"frame with a new header inside message {self._tag!r}")
        header, data = self._header, frame.data
        end = self._filled + len(data)
        if end > header.nbytes:
            raise CodecError(
                f"message {self._tag!r} carries more than the {header.nbytes} bytes announced"
            )
        if self._raw is None:
            self._parts.append(data)
        else:
            self._raw[self._filled : end] = np.frombuffer(data, np.uint8)
        self._filled = end
        if not frame.last:
            return None
        if self._filled != header.nbytes:
            raise CodecError(
                f"message {self._tag!r} ended after {self._filled} of {header.nbytes} "
                "announced bytes"
            )
        payload = b"".join(self._parts) if self._raw is None else _as_array(header, self._raw)
        self._header, self._raw, self._parts = None, None, []
        return Message(self._tag, payload, header.nbytes)


def _check_header(header: pb.TensorHeader, max_payload_bytes: int) -> None:
    if header.nbytes > max_payload_bytes:
        raise CodecError(
            f"message of {header.nbytes} bytes exceeds the limit of {max_payload_bytes} bytes"
        )
    if header.kind == pb.PAYLOAD_KIND_BYTES:
        if header.dtype or header.shape:
            raise CodecError("a bytes message has no dtype or shape")
        return
    if header.kind not in (pb.PAYLOAD_KIND_NUMPY, pb.PAYLOAD_KIND_TORCH):
        raise CodecError(f"unknown payload kind {header.kind}")
    if header.dtype not in DTYPES:
        raise CodecError(f"unknown dtype {header.dtype!r}; supported: {_supported()}")
    if header.dtype == "bfloat16" and header.kind != pb.PAYLOAD_KIND_TORCH:
        raise CodecError("bfloat16 travels only as a torch tensor")
    expected = math.prod(header.shape) * DTYPES[header.dtype].itemsize
    if expected != header.nbytes:
        raise CodecError(
            f"{header.dtype} of shape {tuple(header.shape)} needs {expected} bytes, "
            f"header announces {header.nbytes}"
        )


def _as_array(header: pb.TensorHeader, raw: np.ndarray) -> np.ndarray | torch.Tensor:
    array = raw.view(DTYPES[header.dtype]).reshape(tuple(header.shape))
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    if header.kind == pb.PAYLOAD_KIND_NUMPY:
        return array
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if header.dtype == "bfloat16" else tensor


def _supported() -> str:
    return ", ".join(DTYPES)
