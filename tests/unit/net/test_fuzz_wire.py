"""Fuzzing the data plane: generated frames (headers, shapes, dtypes, tags, truncated bodies,
object-codec payloads) through the real decode path, and through a live mesh over real gRPC
and TLS from a member with a valid certificate.

Every input must end as a delivered message or as a refusal naming the sender: no other
exception, no traceback in the log, memory within the receiver's bound. Each test prints the
inputs it tried, tracebacks, wrong outcomes and peak traced memory. The default run takes
seconds of CPU; ``-m slow`` runs 5,000 inputs through the decode path and 1,500 through the
mesh.
"""

from __future__ import annotations

import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rawpeer import RawPeer, TracebackCounter, end_of_stream, receiver_mesh

from smpc_synth.crypten_backend.link import TAG as MPC_TAG
from smpc_synth.crypten_backend.link import Link
from smpc_synth.errors import PeerError
from smpc_synth.net import codec, objects, write_certificates
from smpc_synth.net.limits import MAX_TAG_BYTES
from smpc_synth.net.traffic import TrafficRecorder
from smpc_synth.net.v1 import tensor_pb2 as pb

LIMIT = 1 << 20  # the receiver's inbox bound (and so its largest message) in these tests
CHUNK = 64  # small frames: most messages span several
HUGE = [2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1, LIMIT, LIMIT + 1]

# --- what a hostile member can send ------------------------------------------------------------

tags = st.one_of(
    st.sampled_from(["t", MPC_TAG, "fed/bound", ""]),
    st.text(max_size=12),
    st.text(alphabet="xé", min_size=MAX_TAG_BYTES // 2 - 2, max_size=MAX_TAG_BYTES // 2 + 2),
)
dims = st.one_of(st.integers(0, 6), st.sampled_from(HUGE), st.integers(0, 2**64 - 1))
shapes = st.one_of(
    st.lists(dims, max_size=5), st.lists(st.integers(0, 2), min_size=30, max_size=70)
)
numpy_dtypes = sorted(set(codec.DTYPES) - {"bfloat16"})
TORCH_NAMES = {"bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"}


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(numpy_dtypes)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    size = int(np.prod(shape)) * dtype.itemsize
    data = draw(st.binary(min_size=size, max_size=size))
    return np.frombuffer(data, dtype=dtype).reshape(shape)


plain_objects = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**65),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.binary(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=8,
)


@st.composite
def object_encodings(draw) -> bytes:
    """What a party's Link sends for an object: b'O' + the codec's bytes, often damaged."""
    obj = draw(plain_objects)
    try:
        data = bytearray(objects.encode(obj))
    except objects.CodecError:
        data = bytearray(draw(st.binary(max_size=40)))
    damage = draw(st.sampled_from(["none", "flip", "cut", "insert", "random"]))
    if damage == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    elif damage == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "insert":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=12))
    elif damage == "random":
        head = draw(st.sampled_from([b"x", b"S", b"l", b"d", b"i", b"u", b"s"]))
        data = bytearray(head + draw(st.binary(max_size=40)))
    return b"O" + bytes(data)


def _damage(draw, frames: list[bytes]) -> list[bytes]:
    """Truncated bodies, lost or repeated frames, flipped bytes, junk."""
    how = draw(st.sampled_from(["none", "none", "drop_tail", "drop_one", "repeat", "flip", "cut"]))
    frames = list(frames)
    if how == "drop_tail" and frames:
        frames = frames[: draw(st.integers(0, len(frames) - 1))]
    elif how == "drop_one" and len(frames) > 1:
        frames.pop(draw(st.integers(0, len(frames) - 1)))
    elif how == "repeat" and frames:
        i = draw(st.integers(0, len(frames) - 1))
        frames.insert(i, frames[i])
    elif how in ("flip", "cut") and frames:
        i = draw(st.integers(0, len(frames) - 1))
        wire = bytearray(frames[i])
        if how == "flip" and wire:
            j = draw(st.integers(0, len(wire) - 1))
            wire[j] ^= draw(st.integers(1, 255))
        elif wire:
            wire = wire[: draw(st.integers(0, len(wire) - 1))]
        frames[i] = bytes(wire)
    return frames


@st.composite
def header_frames(draw) -> list[bytes]:
    """Frames whose headers are drawn field by field, mostly inconsistent."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        message = pb.Frame(
            tag=draw(tags), data=draw(st.binary(max_size=96)), last=draw(st.booleans())
        )
        if draw(st.booleans()) or not out:
            shape = draw(shapes)
            dtype = draw(st.one_of(st.sampled_from(sorted(codec.DTYPES)), st.text(max_size=8)))
            itemsize = codec.DTYPES[dtype].itemsize if dtype in codec.DTYPES else 1
            consistent = int(np.prod([float(d) for d in shape])) * itemsize if shape else itemsize
            nbytes = draw(
                st.one_of(st.just(min(int(consistent), 2**64 - 1)), st.sampled_from(HUGE), dims)
            )
            message.header.CopyFrom(
                pb.TensorHeader(
                    kind=draw(st.integers(0, 5)), dtype=dtype, shape=shape, nbytes=nbytes
                )
            )
        out.append(message.SerializeToString())
    return out


@st.composite
def frame_sequences(draw) -> list[bytes]:
    """One stream's worth of frames from a hostile member."""
    mode = draw(st.sampled_from(["array", "bytes", "object", "object", "header", "raw"]))
    if mode == "header":
        return draw(header_frames())
    if mode == "raw":
        return draw(st.lists(st.binary(max_size=80), min_size=1, max_size=3))
    if mode == "array":
        payload: Any = draw(arrays())
        if payload.dtype.name in TORCH_NAMES and draw(st.booleans()):
            payload = torch.from_numpy(payload.copy())
        tag = draw(tags)
    elif mode == "bytes":
        payload, tag = draw(st.binary(max_size=300)), draw(tags)
    else:
        payload, tag = draw(object_encodings()), MPC_TAG
    try:
        frames = [f.wire for f in codec.encode(tag, payload, CHUNK)]
    except codec.CodecError:  # e.g. a tag too long to send: a hostile peer sends it anyway
        frames = [
            pb.Frame(
                tag=tag, header=pb.TensorHeader(kind=pb.PAYLOAD_KIND_BYTES, nbytes=0), last=True
            ).SerializeToString()
        ]
    return _damage(draw, frames)


# --- the oracle: the real decode path, in this process ----------------------------------------


@dataclass
class Outcome:
    refused: str | None = None  # why the stream is refused, if it is
    messages: list[codec.Message] = field(default_factory=list)


def decode_stream(frames: list[bytes]) -> Outcome:
    """What the receiving member makes of ``frames``: its messages, or the refusal."""
    reserved: list[int] = []
    assembler = codec.Assembler(LIMIT, reserve=lambda tag, nbytes: reserved.append(nbytes))
    outcome = Outcome()
    try:
        for wire in frames:
            message = assembler.feed(codec.parse_frame(wire))
            if message is not None:
                outcome.messages.append(message)
        if assembler.pending is not None:
            raise codec.CodecError(f"stream ended inside message {assembler.pending!r}")
    except codec.CodecError as exc:
        outcome.refused = str(exc)
    assert all(n <= LIMIT for n in reserved), reserved  # nothing allocated past the bound
    return outcome


class PeakMemory:
    """The most memory Python allocated (numpy arrays included) inside any one ``with``
    block: what one input made the receiver hold, not what the fuzzer itself holds."""

    def __init__(self) -> None:
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        tracemalloc.start()
        return self

    def __exit__(self, *exc) -> None:
        self.peak = max(self.peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def decode_object(payload: bytes) -> tuple[str, Any]:
    """('object', value) or ('refused', why) for an object message's payload."""
    try:
        return "object", objects.decode(payload[1:])
    except objects.CodecError as exc:
        return "refused", str(exc)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor | np.ndarray):
        return (
            type(a) is type(b)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and (a.tobytes() if isinstance(a, np.ndarray) else a.numpy().tobytes())
            == (b.tobytes() if isinstance(b, np.ndarray) else b.numpy().tobytes())
        )
    return type(a) is type(b) and a == b


def _report(capsys, what: str, stats: Counter, tracebacks: int, peak: int) -> None:
    with capsys.disabled():
        print(
            f"\nfuzz {what}: {stats['inputs']} inputs tried ({stats['refused']} refused, "
            f"{stats['delivered']} messages delivered, {stats['objects refused']} objects "
            f"refused), tracebacks {tracebacks}, wrong outcomes {stats['wrong']}, "
            f"peak traced memory of one input {peak / 1024:.0f} KiB"
        )


def _settings(examples: int):
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "examples", [400, pytest.param(5000, marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]
)
def test_fuzzed_frames_through_the_decode_path(capsys, examples):
    stats: Counter = Counter()

    memory = PeakMemory()

    largest = pb.TensorHeader(
        kind=pb.PAYLOAD_KIND_NUMPY, dtype="uint8", shape=[LIMIT], nbytes=LIMIT
    )

    @_settings(examples)
    @given(frame_sequences())
    @example([pb.Frame(tag="t", header=largest, data=b"\0" * LIMIT, last=True).SerializeToString()])
    @example([pb.Frame(tag="t", header=largest, data=b"", last=False).SerializeToString()])
    def run(frames):
        stats["inputs"] += 1
        with memory:
            outcome = decode_stream(frames)  # raises anything but CodecError: a failure
            objects_seen = [
                decode_object(m.payload)
                for m in outcome.messages
                if isinstance(m.payload, bytes) and m.payload.startswith(b"O")
            ]
        stats["refused"] += outcome.refused is not None
        stats["delivered"] += len(outcome.messages)
        stats["objects refused"] += sum(kind == "refused" for kind, _ in objects_seen)
        assert all(message.nbytes <= LIMIT for message in outcome.messages)

    with TracebackCounter() as tracebacks:
        run()
    _report(capsys, "frames, decode path", stats, len(tracebacks.records), memory.peak)
    assert not tracebacks.records and stats["wrong"] == 0
    assert LIMIT <= memory.peak < 4 * LIMIT  # the largest message allowed was allocated
    assert stats["refused"] > examples // 10 and stats["delivered"] > examples // 10


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return write_certificates(["alice", "bob"], tmp_path_factory.mktemp("certs"))


def _check_live(certs, frames: list[bytes], stats: Counter, memory: PeakMemory) -> None:
    """Send ``frames`` from bob to a fresh alice; alice must do what the oracle says."""
    expected = decode_stream(frames)
    alice = receiver_mesh(certs, inbox_limit=LIMIT)
    bob = RawPeer("bob", "alice", alice.address, certs["bob"])
    try:
        with memory:  # what alice's stream handler holds (and bob's frames, in this process)
            ending = end_of_stream() if expected.refused is None else []
            status = bob.send(frames + ending)
        if expected.refused is not None:
            stats["refused"] += 1
            with pytest.raises(PeerError) as info:
                alice.recv("bob", "anything", timeout=20)
            ok = (
                status == grpc.StatusCode.INVALID_ARGUMENT
                and info.value.peer == "bob"
                and str(info.value).startswith("bob sent a malformed message")
            )
            stats["wrong"] += not ok
            assert ok, (status, info.value, expected.refused)
            return
        assert status == grpc.StatusCode.OK, status
        link = Link(alice, TrafficRecorder(), timeout=20)
        for message in expected.messages:
            stats["delivered"] += 1
            is_object = (
                message.tag == MPC_TAG
                and isinstance(message.payload, bytes)
                and message.payload.startswith(b"O")
            )
            if not is_object:
                got = alice.recv("bob", message.tag, timeout=20)
                stats["wrong"] += not _same(got, message.payload)
                assert _same(got, message.payload), (got, message.payload)
                continue
            kind, value = decode_object(message.payload)
            if kind == "object":
                got = link.recv_obj("bob")
                same = objects.encode(got) == objects.encode(value)
                stats["wrong"] += not same
                assert same, (got, value)
                continue
            stats["objects refused"] += 1
            with pytest.raises(PeerError) as info:
                link.recv_obj("bob")
            ok = info.value.peer == "bob" and "bob sent a malformed MPC message" in str(info.value)
            stats["wrong"] += not ok
            assert ok, info.value
            return  # the malformed object aborted alice's session
    finally:
        bob.close()
        alice.abort("fuzz case over")
        alice.close()


@pytest.mark.parametrize(
    "examples", [60, pytest.param(1500, marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]
)
def test_fuzzed_frames_through_a_live_mesh(certs, capsys, examples):
    stats: Counter = Counter()
    memory = PeakMemory()

    @_settings(examples)
    @given(frame_sequences())
    def run(frames):
        stats["inputs"] += 1
        _check_live(certs, frames, stats, memory)

    started = time.monotonic()
    with TracebackCounter() as tracebacks:
        run()
    seconds = time.monotonic() - started
    _report(
        capsys,
        f"frames, live mesh ({seconds:.0f} s)",
        stats,
        len(tracebacks.records),
        memory.peak,
    )
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records]
    assert stats["wrong"] == 0
    assert memory.peak < 8 * LIMIT
