"""Framing of payloads: every whitelisted dtype round-trips; bad frames are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smpc_synth.net.codec import DTYPES, Assembler, CodecError, encode, parse_frame
from smpc_synth.net.v1 import tensor_pb2 as pb

LIMIT = 1 << 30


def _roundtrip(payload, chunk_bytes=64):
    frames = encode("tag", payload, chunk_bytes)
    assembler = Assembler(LIMIT)
    results = [assembler.feed(parse_frame(frame.wire)) for frame in frames]
    assert all(result is None for result in results[:-1])
    return frames, results[-1]


@pytest.mark.parametrize("name", sorted(set(DTYPES) - {"bfloat16"}))
def test_numpy_dtypes_round_trip(name):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 7)) * 100).astype(name)
    frames, message = _roundtrip(array)
    assert message.tag == "tag"
    assert isinstance(message.payload, np.ndarray)
    assert message.payload.dtype == array.dtype
    np.testing.assert_array_equal(message.payload, array)
    assert len(frames) == -(-array.nbytes // 64)


@pytest.mark.parametrize(
    "dtype", [torch.bool, torch.int8, torch.int64, torch.bfloat16, torch.float16, torch.float64]
)
def test_torch_dtypes_round_trip_as_torch(dtype):
    tensor = (torch.randn(5, 4, requires_grad=True) * 10).to(dtype)
    _, message = _roundtrip(tensor)
    assert isinstance(message.payload, torch.Tensor)
    assert message.payload.dtype == dtype
    assert torch.equal(message.payload, tensor.detach())


def test_non_contiguous_big_endian_and_empty_payloads():
    strided = np.arange(40, dtype=np.int32).reshape(5, 8)[:, ::3]
    big_endian = np.arange(10, dtype=">f8")
    for payload in (strided, big_endian, np.zeros((0, 3), np.float32), np.array(2.5)):
        _, message = _roundtrip(payload)
        np.testing.assert_array_equal(message.payload, payload)
        assert message.payload.shape == payload.shape
    for data in (b"", b"x" * 1000):
        _, message = _roundtrip(data)
        assert message.payload == data and isinstance(message.payload, bytes)


def test_unknown_dtype_refused_on_send():
    with pytest.raises(CodecError, match="object"):
        encode("t", np.array([{"a": 1}], dtype=object), 1024)
    with pytest.raises(CodecError, match="str"):
        encode("t", "not bytes", 1024)


def _frame(dtype="float32", shape=(2,), nbytes=8, data=b"\0" * 8, kind=pb.PAYLOAD_KIND_NUMPY):
    header = pb.TensorHeader(kind=kind, dtype=dtype, shape=shape, nbytes=nbytes)
    return pb.Frame(tag="t", header=header, data=data, last=True)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_frame(dtype="object"), "unknown dtype 'object'"),
        (_frame(dtype="float128"), "unknown dtype"),
        (_frame(nbytes=12, data=b"\0" * 12), "needs 8 bytes"),
        (_frame(data=b"\0" * 4), "ended after 4 of 8"),
        (_frame(data=b"\0" * 9), "more than the 8 bytes"),
        (_frame(kind=pb.PAYLOAD_KIND_UNSPECIFIED), "unknown payload kind"),
        (pb.Frame(tag="t", data=b"abc", last=True), "no header"),
    ],
)
def test_bad_frames_refused(frame, message):
    with pytest.raises(CodecError, match=message):
        Assembler(LIMIT).feed(parse_frame(frame.SerializeToString()))


def test_oversized_message_refused_before_allocation():
    frame = _frame(shape=(1 << 20,), nbytes=4 << 20, data=b"")
    with pytest.raises(CodecError, match="exceeds the limit"):
        Assembler(1 << 20).feed(parse_frame(frame.SerializeToString()))


def test_header_inside_message_refused():
    first, second = (pb.Frame.FromString(f.wire) for f in encode("t", np.arange(100), 200)[:2])
    second.header.CopyFrom(first.header)
    assembler = Assembler(LIMIT)
    assembler.feed(parse_frame(first.SerializeToString()))
    with pytest.raises(CodecError, match="new header"):
        assembler.feed(parse_frame(second.SerializeToString()))


def test_frames_are_protobuf_frames_both_ways():
    """The hand-written bulk field is the Frame of tensor.proto: the protobuf runtime reads
    what encode writes, and parse_frame reads what the runtime writes."""
    array = np.arange(300, dtype=np.int64)
    frames = encode("tag", array, 1000)
    decoded = [pb.Frame.FromString(f.wire) for f in frames]
    assert b"".join(f.data for f in decoded) == array.tobytes()
    assert [f.last for f in decoded] == [False, False, True]
    assert decoded[0].tag == "tag" and decoded[0].header.shape == [300]
    assert not decoded[1].HasField("header") and decoded[1].tag == ""
    assert [f.payload_bytes for f in frames] == [1000, 1000, 400]
    for proto, frame in zip(decoded, frames):
        ours = parse_frame(proto.SerializeToString())
        assert bytes(ours.data) == proto.data and ours.last == proto.last
        assert ours.tag == proto.tag
        assert ours.header == (proto.header if proto.HasField("header") else None)
        assert parse_frame(frame.wire) == ours


def _key(number: int, wire_type: int) -> bytes:
    return bytes([number << 3 | wire_type])


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (_key(3, 2) + bytes([10]) + b"short", "ends inside a field"),
        (_key(3, 2) + b"\x80", "ends inside a varint"),
        (_key(4, 0) + b"\xff" * 11, "longer than 64 bits"),
        (_key(5, 2) + b"\x00", "unexpected field 5"),
        (_key(3, 0) + b"\x01", "unexpected field 3"),
        (_key(4, 0) + b"\x01" + _key(4, 0) + b"\x01", "repeats field 4"),
        (_key(1, 2) + b"\x02\xff\xfe", "unreadable tag"),
        (_key(2, 2) + b"\x02\xff\xff", "unreadable tag or header"),
    ],
)
def test_malformed_wire_refused(wire, message):
    with pytest.raises(CodecError, match=message):
        parse_frame(wire)
