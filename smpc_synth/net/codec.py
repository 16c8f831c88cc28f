"""Payloads (numpy arrays, torch tensors, bytes) <-> :class:`Frame` sequences on the wire.

A payload travels as dtype + shape + raw little-endian bytes, cut into frames of at most
``chunk_bytes``; only the dtypes in :data:`DTYPES` are accepted. Nothing here can execute
code on the receiver (no pickle).

Frames are the ``Frame`` message of ``tensor.proto``, but their bulk field is written and
read here rather than by the protobuf runtime, which would copy it three times on each side
(into a ``bytes``, into its arena, out again). The sender copies each slice once, straight
into the serialized frame (the caller may reuse its buffer after ``send``); the receiver
parses the frame in place and copies each slice once, into the final array. Any protobuf
implementation reads and writes the same bytes.

The dtype table and the tensor <-> raw bytes conversion here are the only ones: the object
codec (:mod:`smpc_synth.net.objects`) lays out the tensors inside objects with them too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from google.protobuf.message import DecodeError

from smpc_synth.errors import PeerError
from smpc_synth.net.channel import Payload
from smpc_synth.net.limits import MAX_DIMS, MAX_TAG_BYTES
from smpc_synth.net.v1 import tensor_pb2 as pb

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

TORCH_DTYPES: dict[torch.dtype, str] = {
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
TORCH_BY_NAME = {name: dtype for dtype, name in TORCH_DTYPES.items()}


class CodecError(ValueError):
    """A payload or frame that cannot be (de)coded: unknown dtype, wrong size, bad order."""


def _raw_view(payload: Payload) -> tuple[pb.TensorHeader, memoryview]:
    """The header and a byte view of ``payload`` (copying only to fix layout or byte order)."""
    if isinstance(payload, bytes | bytearray | memoryview):
        view = memoryview(payload).cast("B")
        return pb.TensorHeader(kind=pb.PAYLOAD_KIND_BYTES, nbytes=view.nbytes), view
    if isinstance(payload, torch.Tensor):
        name, array = tensor_array(payload)
        kind = pb.PAYLOAD_KIND_TORCH
    elif isinstance(payload, np.ndarray):
        name = payload.dtype.name
        if name not in DTYPES or name == "bfloat16":
            raise CodecError(f"cannot send numpy dtype {payload.dtype}; supported: {_supported()}")
        array, kind = np.asarray(payload, dtype=DTYPES[name], order="C"), pb.PAYLOAD_KIND_NUMPY
    else:
        raise CodecError(
            f"cannot send {type(payload).__name__}: send a numpy array, torch tensor or bytes"
        )
    header = pb.TensorHeader(kind=kind, dtype=name, shape=array.shape, nbytes=array.nbytes)
    return header, memoryview(array.reshape(-1).view(np.uint8))


def tensor_array(tensor: torch.Tensor) -> tuple[str, np.ndarray]:
    """``tensor``'s wire dtype name and its values as a C-ordered little-endian array
    (bfloat16 as int16), copying only to fix device, layout or byte order."""
    name = TORCH_DTYPES.get(tensor.dtype)
    if name is None:
        raise CodecError(f"cannot send torch dtype {tensor.dtype}; supported: {_supported()}")
    tensor = tensor.detach().cpu()
    if name == "bfloat16":
        tensor = tensor.view(torch.int16)
    return name, np.asarray(tensor.contiguous().numpy(), dtype=DTYPES[name], order="C")


def raw_tensor(name: str, shape: tuple[int, ...], raw: np.ndarray) -> torch.Tensor:
    """The tensor of wire dtype ``name`` and ``shape`` whose little-endian bytes are the
    uint8 array ``raw`` (sizes checked by the caller); shares ``raw``'s memory where the
    byte order allows."""
    return _as_array(name, shape, raw, torch_tensor=True)


class WireFrame(NamedTuple):
    """One serialized ``Frame`` and the payload bytes it carries."""

    wire: bytes
    payload_bytes: int


class InFrame(NamedTuple):
    """One received ``Frame``; ``data`` is a view into the received bytes."""

    tag: str
    header: pb.TensorHeader | None
    data: memoryview
    last: bool


# protobuf wire format: a field's key is (number << 3) | wire type
_LENGTH_DELIMITED, _VARINT = 2, 0
_FIELDS = {  # Frame's field numbers (tensor.proto) and their wire types
    pb.Frame.TAG_FIELD_NUMBER: _LENGTH_DELIMITED,
    pb.Frame.HEADER_FIELD_NUMBER: _LENGTH_DELIMITED,
    pb.Frame.DATA_FIELD_NUMBER: _LENGTH_DELIMITED,
    pb.Frame.LAST_FIELD_NUMBER: _VARINT,
}
_DATA_KEY = bytes([pb.Frame.DATA_FIELD_NUMBER << 3 | _LENGTH_DELIMITED])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buffer: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(buffer):
            raise CodecError("frame ends inside a varint")
        if shift > 63:
            raise CodecError("frame has a varint longer than 64 bits")
        byte = buffer[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def encode(tag: str, payload: Payload, chunk_bytes: int) -> list[WireFrame]:
    """The serialized frames of one message; each copies its slice of ``payload`` once."""
    _check_tag(tag.encode())
    header, view = _raw_view(payload)
    starts = range(0, max(view.nbytes, 1), chunk_bytes)
    frames = []
    for i, start in enumerate(starts):
        chunk = view[start : start + chunk_bytes]
        meta = pb.Frame(last=i == len(starts) - 1)
        if i == 0:
            meta.tag = tag
            meta.header.CopyFrom(header)
        prefix = meta.SerializeToString() + _DATA_KEY + _varint(chunk.nbytes)
        frames.append(WireFrame(b"".join((prefix, chunk)), chunk.nbytes))
    return frames


def frame_bytes(frames: list[WireFrame]) -> int:
    """Raw payload bytes carried by ``frames``."""
    return sum(frame.payload_bytes for frame in frames)


def parse_frame(wire: bytes) -> InFrame:
    """Read one serialized ``Frame`` without copying its data; malformed input (truncated,
    unknown or repeated fields, wrong wire types) raises :class:`CodecError`, and nothing
    else."""
    try:
        return _parse_frame(wire)
    except CodecError:
        raise
    except Exception as exc:  # the checks should have caught it: still the peer's fault
        raise CodecError(f"unreadable frame ({type(exc).__name__}: {exc})") from exc


def _parse_frame(wire: bytes) -> InFrame:
    buffer = memoryview(wire)
    fields: dict[int, memoryview | int] = {}
    at = 0
    while at < len(buffer):
        key, at = _read_varint(buffer, at)
        number, wire_type = key >> 3, key & 7
        if _FIELDS.get(number) != wire_type:
            raise CodecError(f"frame has an unexpected field {number} (wire type {wire_type})")
        if number in fields:
            raise CodecError(f"frame repeats field {number}")
        if wire_type == _VARINT:
            fields[number], at = _read_varint(buffer, at)
            continue
        length, at = _read_varint(buffer, at)
        if length > len(buffer) - at:
            raise CodecError("frame ends inside a field")
        fields[number], at = buffer[at : at + length], at + length
    raw_tag = bytes(fields.get(pb.Frame.TAG_FIELD_NUMBER, b""))
    _check_tag(raw_tag)
    try:
        tag = raw_tag.decode()
        raw_header = fields.get(pb.Frame.HEADER_FIELD_NUMBER)
        header = None if raw_header is None else pb.TensorHeader.FromString(bytes(raw_header))
    except (UnicodeDecodeError, DecodeError) as err:
        raise CodecError(f"frame has an unreadable tag or header: {err}") from err
    data = fields.get(pb.Frame.DATA_FIELD_NUMBER, memoryview(b""))
    return InFrame(tag, header, data, bool(fields.get(pb.Frame.LAST_FIELD_NUMBER, 0)))


class Message(NamedTuple):
    """One received message: its tag, the payload and its raw size."""

    tag: str
    payload: Payload
    nbytes: int


class Assembler:
    """Rebuilds messages from the frames of one stream, checking every header and size."""

    def __init__(self, max_payload_bytes: int, reserve: Callable[[str, int], None] | None = None):
        """``reserve(tag, nbytes)`` runs before a message's buffer is allocated (and may
        block)."""
        self._max = max_payload_bytes
        self._reserve = reserve
        self._header: pb.TensorHeader | None = None
        self._tag = ""
        self._filled = 0
        # Arrays are copied into place as frames arrive; bytes are joined once at the end.
        self._raw: np.ndarray | None = None
        self._parts: list[memoryview] = []

    def _start(self, frame: InFrame) -> None:
        if frame.header is None:
            raise CodecError("first frame of a message has no header")
        header = frame.header
        _check_header(header, self._max)
        if self._reserve is not None:
            self._reserve(frame.tag, header.nbytes)
        self._header, self._tag, self._filled = header, frame.tag, 0
        is_bytes = header.kind == pb.PAYLOAD_KIND_BYTES
        self._raw = None if is_bytes else np.empty(header.nbytes, np.uint8)
        self._parts = []

    @property
    def pending(self) -> str | None:
        """The tag of a message begun but not finished, if any."""
        return None if self._header is None else self._tag

    def feed(self, frame: InFrame) -> Message | None:
        """Take one frame; return the message it completes, if any. Whatever is wrong with
        the frame raises :class:`CodecError` (never another exception)."""
        try:
            return self._feed(frame)
        except (CodecError, PeerError):
            raise
        except Exception as exc:  # the checks should have caught it: still the peer's fault
            raise CodecError(f"undecodable message ({type(exc).__name__}: {exc})") from exc

    def _feed(self, frame: InFrame) -> Message | None:
        if self._header is None:
            self._start(frame)
        elif frame.header is not None:
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
        if self._raw is None:
            payload = b"".join(self._parts)
        else:
            torch_tensor = header.kind == pb.PAYLOAD_KIND_TORCH
            payload = _as_array(header.dtype, tuple(header.shape), self._raw, torch_tensor)
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
    if len(header.shape) > MAX_DIMS:
        raise CodecError(f"array of {len(header.shape)} dimensions (at most {MAX_DIMS})")
    too_long = [dim for dim in header.shape if dim > max_payload_bytes]
    if too_long:  # even next to a zero dimension: numpy cannot represent it
        raise CodecError(
            f"shape {tuple(header.shape)} has a dimension of {too_long[0]} "
            f"(the limit is {max_payload_bytes})"
        )
    expected = math.prod(header.shape) * DTYPES[header.dtype].itemsize  # exact (Python ints)
    if expected != header.nbytes:
        raise CodecError(
            f"{header.dtype} of shape {tuple(header.shape)} needs {expected} bytes, "
            f"header announces {header.nbytes}"
        )


def _as_array(
    name: str, shape: tuple[int, ...], raw: np.ndarray, torch_tensor: bool
) -> np.ndarray | torch.Tensor:
    array = raw.view(DTYPES[name]).reshape(shape)
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    if not torch_tensor:
        return array
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if name == "bfloat16" else tensor


def _check_tag(raw: bytes) -> None:
    if len(raw) > MAX_TAG_BYTES:
        raise CodecError(f"tag of {len(raw)} bytes (at most {MAX_TAG_BYTES})")


def _supported() -> str:
    return ", ".join(DTYPES)
