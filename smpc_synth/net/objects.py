"""A small tagged binary encoding for the objects CrypTen sends (no pickle on the wire).

CrypTen's ``send_obj`` / ``broadcast_obj`` pickle arbitrary objects. What it actually sends
are sizes, ints, floats, strings, tensors and dicts or sequences of those; this codec encodes
exactly that and refuses anything else, so decoding bytes from a peer never runs code.
Integers span signed and unsigned 64 bits (``torch.Generator.initial_seed()`` is unsigned);
an encoding is at most :data:`~smpc_synth.net.limits.MAX_OBJECT_BYTES`. Decoding raises
:class:`CodecError` and nothing else, whatever the bytes.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import torch

from smpc_synth.net import codec
from smpc_synth.net.limits import MAX_DIMS, MAX_OBJECT_BYTES

MAX_DEPTH = 32

# the dtypes a tensor inside an object may have (a subset of codec.DTYPES), by the one-byte
# code that names each in an encoding
_CODED = ("int64", "int32", "int8", "uint8", "bool", "float32", "float64")
_CODES: dict[torch.dtype, int] = {codec.TORCH_BY_NAME[name]: i for i, name in enumerate(_CODED)}
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")


class CodecError(ValueError):
    """The object cannot be encoded, or the bytes are not a valid encoding."""


def encode(obj: Any) -> bytes:
    """Encode ``obj`` (None, bool, int, float, str, bytes, tensor, torch.Size, list, tuple,
    dict) or raise :class:`CodecError` naming the type that is not allowed."""
    out = bytearray()
    _encode(obj, out, 0)
    if len(out) > MAX_OBJECT_BYTES:
        raise CodecError(f"object of {len(out)} encoded bytes (at most {MAX_OBJECT_BYTES})")
    return bytes(out)


def decode(data: bytes) -> Any:
    """Decode bytes made by :func:`encode`; raise :class:`CodecError` on anything else."""
    if len(data) > MAX_OBJECT_BYTES:
        raise CodecError(f"object of {len(data)} encoded bytes (at most {MAX_OBJECT_BYTES})")
    view = memoryview(data)
    try:
        obj, end = _decode(view, 0, 0)
    except CodecError:
        raise
    except Exception as err:  # struct, index, unicode, torch errors: all the peer's bytes
        raise CodecError(f"malformed message: {type(err).__name__}: {err}") from err
    if end != len(view):
        raise CodecError(f"malformed message: {len(view) - end} trailing bytes")
    return obj


def _encode(obj: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CodecError(f"object nested deeper than {MAX_DEPTH}")
    if obj is None:
        out += b"N"
    elif isinstance(obj, bool):
        out += b"T" if obj else b"F"
    elif isinstance(obj, int):
        if -(2**63) <= obj < 2**63:
            out += b"i" + _I64.pack(obj)
        elif 2**63 <= obj < 2**64:
            out += b"u" + _U64.pack(obj)
        else:
            raise CodecError(f"integer {obj} fits neither signed nor unsigned 64 bits")
    elif isinstance(obj, float):
        out += b"f" + _F64.pack(obj)
    elif isinstance(obj, str):
        raw = obj.encode()
        out += b"s" + _U32.pack(len(raw)) + raw
    elif isinstance(obj, bytes | bytearray):
        out += b"b" + _U32.pack(len(obj)) + bytes(obj)
    elif isinstance(obj, torch.Tensor):
        _encode_tensor(obj, out)
    elif isinstance(obj, torch.Size | list | tuple):
        out += b"S" if isinstance(obj, torch.Size) else b"l" if isinstance(obj, list) else b"t"
        out += _U32.pack(len(obj))
        for item in obj:
            _encode(item, out, depth + 1)
    elif isinstance(obj, dict):
        out += b"d" + _U32.pack(len(obj))
        for key, value in obj.items():
            _encode(key, out, depth + 1)
            _encode(value, out, depth + 1)
    else:
        raise CodecError(f"refusing to encode {type(obj).__module__}.{type(obj).__qualname__}")


def _encode_tensor(tensor: torch.Tensor, out: bytearray) -> None:
    if tensor.dtype not in _CODES:
        raise CodecError(f"refusing to encode a tensor of dtype {tensor.dtype}")
    if tensor.dim() > MAX_DIMS:
        raise CodecError(f"refusing to encode a tensor of {tensor.dim()} dimensions")
    _, array = codec.tensor_array(tensor)
    out += b"x" + bytes([_CODES[tensor.dtype], array.ndim])
    for dim in array.shape:
        out += _I64.pack(dim)
    out += _U32.pack(array.nbytes) + memoryview(array.reshape(-1).view(np.uint8))


def _decode(view: memoryview, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise CodecError(f"object nested deeper than {MAX_DEPTH}")
    tag = bytes(view[pos : pos + 1])
    pos += 1
    if tag == b"N":
        return None, pos
    if tag in (b"T", b"F"):
        return tag == b"T", pos
    if tag == b"i":
        return _I64.unpack_from(view, pos)[0], pos + 8
    if tag == b"u":
        value = _U64.unpack_from(view, pos)[0]
        if value < 2**63:  # encode writes those as signed: one encoding per value
            raise CodecError(f"unsigned integer {value} should have been signed")
        return value, pos + 8
    if tag == b"f":
        return _F64.unpack_from(view, pos)[0], pos + 8
    if tag in (b"s", b"b"):
        (length,) = _U32.unpack_from(view, pos)
        raw = _take(view, pos + 4, length)
        return (raw.decode() if tag == b"s" else raw), pos + 4 + length
    if tag == b"x":
        return _decode_tensor(view, pos)
    if tag in (b"S", b"l", b"t"):
        (count,) = _U32.unpack_from(view, pos)
        pos += 4
        items = []
        for _ in range(count):
            item, pos = _decode(view, pos, depth + 1)
            items.append(item)
        if tag == b"S":
            if not all(type(item) is int and 0 <= item < 2**63 for item in items):
                raise CodecError("a torch.Size holds non-negative integers only")
            return torch.Size(items), pos
        return (items if tag == b"l" else tuple(items)), pos
    if tag == b"d":
        (count,) = _U32.unpack_from(view, pos)
        pos += 4
        result = {}
        for _ in range(count):
            key, pos = _decode(view, pos, depth + 1)
            value, pos = _decode(view, pos, depth + 1)
            try:
                result[key] = value
            except TypeError as err:
                raise CodecError(f"unhashable dict key {type(key).__name__}") from err
        return result, pos
    raise CodecError(f"unknown type tag {tag!r}")


def _decode_tensor(view: memoryview, pos: int) -> tuple[torch.Tensor, int]:
    if view[pos] >= len(_CODED):
        raise CodecError(f"unknown tensor dtype code {view[pos]}")
    name = _CODED[view[pos]]
    ndim = view[pos + 1]
    if ndim > MAX_DIMS:
        raise CodecError(f"tensor of {ndim} dimensions (at most {MAX_DIMS})")
    pos += 2
    shape = [_I64.unpack_from(view, pos + 8 * i)[0] for i in range(ndim)]
    pos += 8 * ndim
    (length,) = _U32.unpack_from(view, pos)
    raw = _take(view, pos + 4, length)
    # exact in Python ints; an absurd dimension fails even next to a zero
    if any(not 0 <= dim <= MAX_OBJECT_BYTES for dim in shape) or (
        math.prod(shape) * codec.DTYPES[name].itemsize != length
    ):
        raise CodecError(f"tensor of shape {shape} does not match its {length} bytes")
    array = np.frombuffer(raw, dtype=np.uint8).copy()
    return codec.raw_tensor(name, tuple(shape), array), pos + 4 + length


def _take(view: memoryview, pos: int, length: int) -> bytes:
    if pos + length > len(view):
        raise CodecError("malformed message: truncated")
    return bytes(view[pos : pos + length])
