"""The object codec that replaces CrypTen's pickle: round trips, refusals, malformed input."""

from __future__ import annotations

import pickle
import struct

import pytest
import torch

from smpc_synth.net import objects


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(
    "obj",
    [
        None,
        True,
        -(2**63),
        2**63 - 1,
        3.25,
        "terminate",
        b"\x00\x01raw",
        torch.Size([256, 64]),
        torch.arange(12, dtype=torch.long).reshape(3, 4) - 2**62,
        torch.tensor(7),
        torch.zeros(0, 5, dtype=torch.float32),
        torch.tensor([True, False]),
        [1, 2.5, "x", (torch.Size([2]), None)],
        {
            "function": "additive",
            "args": (torch.Size([4, 5]), torch.Size([5, 3]), "matmul"),
            "kwargs": {"stride": (1, 1), "padding": 1},
        },
    ],
)
def test_round_trip(obj):
    decoded = objects.decode(objects.encode(obj))
    assert _same(obj, decoded), (obj, decoded)


def test_decoded_tensor_is_writable_and_independent():
    data = objects.encode(torch.arange(4))
    tensor = objects.decode(data)
    tensor += 1  # CrypTen updates received shares in place
    assert tensor.tolist() == [1, 2, 3, 4]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "obj",
    [_Evil(), {1, 2}, print, torch.nn.Linear(2, 2), torch.zeros(2, dtype=torch.float16), 2**64],
)
def test_refuses_other_objects(obj):
    with pytest.raises(objects.CodecError):
        objects.encode(obj)


def test_refuses_deep_nesting():
    obj: list = []
    for _ in range(objects.MAX_DEPTH + 2):
        obj = [obj]
    with pytest.raises(objects.CodecError, match="deeper"):
        objects.encode(obj)


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps({"a": 1}),  # what stock CrypTen would have sent
        b"",
        b"q",
        objects.encode([1, 2, 3])[:-3],  # truncated
        objects.encode("abc") + b"N",  # trailing bytes
        b"s\xff\xff\xff\xffabc",  # length beyond the message
        b"x\x00\x01"
        + (4).to_bytes(8, "little", signed=True)
        + (8).to_bytes(4, "little")
        + b"12345678",
        b"x\x09\x00" + (0).to_bytes(4, "little"),  # unknown dtype code
        b"d\x01\x00\x00\x00l\x00\x00\x00\x00N",  # unhashable key
    ],
)
def test_rejects_malformed_bytes(data):
    with pytest.raises(objects.CodecError):
        objects.decode(data)


def _tensor_bytes(shape: list[int], data: bytes = b"") -> bytes:
    dims = b"".join(dim.to_bytes(8, "little", signed=True) for dim in shape)
    return b"x\x00" + bytes([len(shape)]) + dims + len(data).to_bytes(4, "little") + data


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"S\x01\x00\x00\x00f" + struct.pack("<d", 1.5), "torch.Size"),
        (b"S\x01\x00\x00\x00i" + (-3).to_bytes(8, "little", signed=True), "torch.Size"),
        (_tensor_bytes([2**32, 2**32, 0]), "does not match"),  # product wraps in int64
        (_tensor_bytes([0, 2**62]), "does not match"),
        (_tensor_bytes([1] * 70, b"\0" * 8), "70 dimensions"),
    ],
)
def test_every_decode_failure_is_a_codec_error(data, why):
    """These escaped as TypeError or ValueError, past the malformed-message path."""
    with pytest.raises(objects.CodecError, match=why):
        objects.decode(data)
