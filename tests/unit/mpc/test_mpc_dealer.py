"""The dealer serves only what CrypTen's protocols ask for, and its tuples are correct."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from memory_channel import MemoryChannel

from smpc_synth.crypten_backend.compat import import_crypten
from smpc_synth.crypten_backend.link import Link
from smpc_synth.mpc.dealer import protocol, server
from smpc_synth.mpc.dealer.provider import DealerProvider
from smpc_synth.mpc.primitives import prg
from smpc_synth.mpc.primitives.compare import MAX_PRODUCTS
from smpc_synth.net import objects
from smpc_synth.net.traffic import TrafficRecorder

crypten = import_crypten()
from crypten.common.util import count_wraps  # noqa: E402

pytestmark = pytest.mark.usefixtures("crypten_patches")

KEYS = tuple(prg.debug_key(seed) for seed in (11, -22, 33))


def _party_generators(n: int) -> list[prg.Stream]:
    """Each party's own stream, as its DealerProvider holds it."""
    return [prg.Stream(key) for key in KEYS[:n]]


def _ring(stream: prg.Stream, size) -> torch.Tensor:
    return stream.ring(torch.Size(size))


@pytest.mark.parametrize("n_parties", [2, 3])
@pytest.mark.parametrize(
    ("op", "size0", "size1", "kwargs"),
    [
        ("mul", (3, 4), (3, 4), {}),
        ("matmul", (3, 4), (4, 2), {}),
        ("conv2d", (1, 1, 5, 5), (2, 1, 3, 3), {"padding": 1, "stride": 2}),
    ],
)
def test_additive_triple_reconstructs(n_parties, op, size0, size1, kwargs):
    maker = server._TupleMaker(KEYS[:n_parties])
    request = {"f": "additive", "args": [torch.Size(size0), torch.Size(size1), op]}
    c0 = server._serve_one(maker, {**request, "kwargs": kwargs})
    gens = _party_generators(n_parties)
    a = sum(_ring(g, size0) for g in gens)
    b = sum(_ring(g, size1) for g in gens)
    c = c0 + sum(_ring(g, c0.shape) for g in gens[1:])
    assert torch.equal(c, getattr(torch, op)(a, b, **kwargs))  # int64: exact mod 2^64


def test_wraps_reconstruct():
    maker = server._TupleMaker(KEYS[:2])
    theta0 = server._serve_one(maker, {"f": "wraps", "args": [torch.Size([50])]})
    gens = _party_generators(2)
    shares = [_ring(g, (50,)) for g in gens]
    assert torch.equal(theta0 + _ring(gens[1], (50,)), count_wraps(shares))


@pytest.mark.parametrize(
    "request_",
    [
        {"f": "additive", "args": [torch.Size([2]), torch.Size([2]), "__import__"]},
        {"f": "additive", "args": [torch.Size([2]), torch.Size([2]), "mul"], "kwargs": {"out": 1}},
        {"f": "additive", "args": [torch.Size([1 << 14, 1 << 13]), torch.Size([1]), "mul"]},
        {"f": "additive", "args": [[2], torch.Size([2]), "mul"]},
        {"f": "square", "args": [torch.Size([-1])]},
        {"f": "generators", "args": []},
        {"f": "binary", "args": [torch.Size([2]), torch.Size([2])], "kwargs": {"stride": 1}},
        {"f": "compare", "args": [64, 1, 40, 1]},  # a width the tree cannot take
        {"f": "compare", "args": [64, MAX_PRODUCTS, 64, 1]},  # one product too many
        {"f": "compare", "args": [64, 0, 64, 2]},
        {"f": "compare", "args": [0, 0, 64, 0]},
        {"f": "compare", "args": [64, 0, 64]},
        {"f": "compare", "args": [64.0, 0, 64, 0]},
        {"f": "kept", "args": [torch.Size([2, 3, 4]), torch.Size([4, 2])]},  # not matrices
        {"f": "kept", "args": [torch.Size([2, 3]), torch.Size([4, 2])]},
        {"f": "backward", "args": [1, 1, 1]},  # no kept triple one request back
        {"f": "backward", "args": [0, 1, 1]},
        {"f": "backward", "args": [1, 0, 0]},
        {"f": "backward", "args": [1, 2, 1]},
        ["not", "a", "request"],
    ],
)
def test_bad_requests_are_refused(request_):
    maker = server._TupleMaker(KEYS[:2])
    with pytest.raises((ValueError, TypeError, RuntimeError)):
        server._serve_one(maker, request_)


def test_a_backward_request_reuses_its_kept_triples_masks():
    """``d^T a`` and ``d b^T`` for the masks of the kept triple named, and a fresh ``d``
    drawn as every party's own share."""
    maker = server._TupleMaker(KEYS[:2])
    kept = {"f": "kept", "args": [torch.Size([5, 3]), torch.Size([3, 2])]}
    backward = {"f": "backward", "args": [2, 1, 1]}
    server._serve_at(maker, prg.request_nonce(7, b"k"), kept, 7)
    maker.keep(7, maker.last_kept)
    a, b = (
        sum(pair)
        for pair in zip(
            *(
                (_ring(s, (5, 3)), _ring(s, (3, 2)))
                for s in _streams(KEYS[:2], prg.request_nonce(7, b"k"))
            )
        )
    )
    nonce = prg.request_nonce(9, b"b")
    share0 = server._serve_at(maker, nonce, backward, 9)
    own = [(_ring(s, (5, 2)), _ring(s, (6 + 15,))) for s in _streams(KEYS[:2], nonce)]
    d = own[0][0] + own[1][0]
    flat = share0 + own[1][1]
    assert torch.equal(flat[:6].view(2, 3), d.t() @ a)
    assert torch.equal(flat[6:].view(5, 3), d @ b.t())
    with pytest.raises(ValueError, match="no kept triple"):
        server._serve_at(maker, nonce, {"f": "backward", "args": [1, 1, 0]}, 9)


def _streams(keys, nonce) -> list[prg.Stream]:
    return [prg.Stream(key, nonce) for key in keys]


def test_fresh_keys_differ_and_debug_keys_repeat():
    assert prg.fresh_key() != prg.fresh_key()
    assert prg.debug_key(1, "dealer", "alice") == prg.debug_key(1, "dealer", "alice")
    assert prg.debug_key(1, "dealer", "alice") != prg.debug_key(1, "dealer", "bob")


def test_stream_is_a_stream_whatever_the_draw_sizes():
    """The dealer replays a party's draws in other sizes (one flat draw for several fields):
    the words must depend only on their position in the stream."""
    one, other = prg.Stream(KEYS[0]), prg.Stream(KEYS[0])
    whole = one.ring((3, 7))
    parts = torch.cat([other.ring((5,)), other.ring((1,)), other.ring((15,))])
    assert torch.equal(whole.flatten(), parts)
    assert not torch.equal(prg.Stream(KEYS[1]).ring((21,)), parts)


def test_stream_is_the_aes_ctr_keystream_across_chunks():
    """Draws larger than the shared run of zeros are filled a chunk at a time; the words
    must still be AES-128-CTR's keystream from counter 0."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    words = prg._ZERO_CHUNK // 8 * 2 + 3  # two whole chunks and a partial one
    stream = prg.Stream(KEYS[0])
    drawn = torch.cat([stream.ring((5,)), stream.ring((words - 5,))])
    encryptor = Cipher(algorithms.AES(KEYS[0]), modes.CTR(bytes(16))).encryptor()
    keystream = encryptor.update(bytes(words * 8)) + encryptor.finalize()
    expected = torch.frombuffer(bytearray(keystream), dtype=torch.int64)
    assert torch.equal(drawn, expected)


def test_stream_words_look_uniform():
    words = prg.Stream(KEYS[0]).ring((200_000,))
    bit_means = torch.stack([((words >> k) & 1).double().mean() for k in range(64)])
    assert bit_means.sub(0.5).abs().max() < 0.01  # 0.5 +- 4.5 sigma
    bits = prg.Stream(KEYS[1]).bits((10_000,))
    assert set(bits.unique().tolist()) == {0, 1}


@pytest.mark.parametrize("key", [b"short", "a string key 16b", bytes(32)])
def test_stream_refuses_keys_that_are_not_128_bits(key):
    with pytest.raises(ValueError, match="16 bytes"):
        prg.Stream(key)


@pytest.mark.parametrize(
    ("op", "size0", "size1"),
    [
        ("mul", (3, 4), (3, 4)),
        ("mul", (3, 1), (1, 4)),
        ("mul", (4,), (2, 3, 4)),
        ("matmul", (3, 4), (4, 2)),
        ("matmul", (4,), (4, 2)),
        ("matmul", (3, 4), (4,)),
        ("matmul", (4,), (4,)),
        ("matmul", (5, 3, 4), (4, 2)),
        ("matmul", (2, 1, 3, 4), (5, 4, 2)),
    ],
)
def test_product_sizes_follow_torch(op, size0, size1):
    expected = getattr(torch, op)(torch.zeros(size0), torch.zeros(size1)).shape
    assert protocol.product_size(torch.Size(size0), torch.Size(size1), op, {}) == expected


def test_matmul_of_mismatched_sizes_is_refused():
    with pytest.raises(ValueError, match="inner sizes"):
        protocol.product_size(torch.Size((3, 4)), torch.Size((5, 2)), "matmul", {})


def test_each_request_number_and_request_draws_its_own_stream():
    """A guessed request that is not asked for must not share words with the one that is:
    the stream starts at a counter derived from (number, request)."""
    square = objects.encode(_request("square", torch.Size([4])))
    wraps = objects.encode(_request("wraps", torch.Size([4])))
    nonces = [prg.request_nonce(n, r) for n, r in ((0, square), (0, wraps), (1, square))]
    draws = [prg.Stream(KEYS[0], nonce).ring((64,)) for nonce in nonces]
    assert len({frozenset(d.tolist()) for d in draws}) == 3
    assert not set(draws[0].tolist()) & set(draws[1].tolist())
    assert prg.request_nonce(0, square) == nonces[0]  # both sides derive the same
    assert torch.equal(prg.Stream(KEYS[0]).ring((4,)), prg.Stream(KEYS[0], bytes(16)).ring((4,)))


def test_stream_counter_wraps_around_like_aes_ctr():
    last = (2**128 - 1).to_bytes(16, "big")
    key = KEYS[0]
    expected = Cipher(algorithms.AES(key), modes.CTR(last)).encryptor().update(bytes(48))
    assert prg.Stream(key, last).ring((6,)).numpy().tobytes() == expected
    first_block = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(bytes(16))
    assert expected[16:32] == first_block  # the counter after 2^128 - 1 is 0


def _request(f: str, *args) -> dict:
    return {"f": f, "args": list(args), "kwargs": {}}


def test_lookahead_guesses_every_share_as_the_plain_dealer_would():
    """A loop's requests repeat, with deviations (a guard's rollback, an Adam restart): each
    share party 0 takes, sent early on a right guess or on request after a wrong one,
    equals the one the dealer computes on request for that number."""
    size = torch.Size
    step = [
        _request("additive", size([6, 4]), size([4, 3]), "matmul"),
        _request("compare", 18, 1, 32, 1),
        _request("square", size([5])),
        _request("additive", size([6, 4]), size([4, 3]), "matmul"),
        _request("B2A", size([9])),
    ]
    deviation = [_request("wraps", size([4])), _request("square", size([5]))]
    sequence = step * 6 + step[:2] + deviation + step[2:] + step * 6
    plain = server._TupleMaker(KEYS[:2])
    lookahead = server._Lookahead(server._TupleMaker(KEYS[:2]), depth=2)
    sent_early: dict[tuple[int, int], torch.Tensor] = {}
    for number, request in enumerate(sequence):
        got_number, tag, share = lookahead.serve(request)
        nonce = prg.request_nonce(number, objects.encode(request))
        assert (got_number, tag) == (number, prg.nonce_tag(nonce))
        taken = share if share is not None else sent_early.pop((number, tag))
        assert torch.equal(taken, server._serve_at(plain, nonce, request, number))
        sent_early.update(((n, t), s) for n, t, s in lookahead.work_ahead())
    assert lookahead.hits > len(sequence) // 2  # the repeats were sent early...
    assert lookahead.misses >= 1  # ...and the deviation was computed on request
    assert sent_early  # wrong guesses, never taken


def test_lookahead_after_a_rekey_numbers_from_zero_with_the_new_keys():
    request = _request("square", torch.Size([4]))
    lookahead = server._Lookahead(server._TupleMaker(KEYS[:2]), depth=1)
    for _ in range(3):
        lookahead.serve(request)
        list(lookahead.work_ahead())
    lookahead.maker.keys = list(KEYS[1:3])
    lookahead.restart()
    number, _, share = lookahead.serve(request)
    nonce = prg.request_nonce(0, objects.encode(request))
    assert number == 0
    assert torch.equal(share, server._serve_at(server._TupleMaker(KEYS[1:3]), nonce, request, 0))


def _opened(shares) -> torch.Tensor:
    return sum(s.share for s in shares)


def test_parties_take_pushed_shares_and_drop_wrong_guesses_and_stale_ones():
    """Two providers and a dealer thread: every tuple reconstructs, whether its share came
    early, after a wrong guess, or after a re-key that voids the guesses in flight."""
    members = ("alice", "bob", "dealer")
    channels = MemoryChannel.connect(members, wait=10.0)
    served: dict = {}

    def serve() -> None:
        served.update(server.serve_dealer(channels["dealer"], members[:2], insecure_debug_seed=5))

    thread = threading.Thread(target=serve)
    thread.start()
    links = [Link(channels[m], TrafficRecorder()) for m in members[:2]]
    providers = [DealerProvider(link, rank) for rank, link in enumerate(links)]
    square, triple = ("square", (7,)), ("triple", (3, 5), (5, 2))
    loop = [square, triple, square, triple, triple]
    plan = loop * 8 + [triple, square, square] + loop * 4 + ["rekey"] + loop * 6
    for item in plan:
        time.sleep(0.01)  # let the dealer push its guesses first
        if item == "rekey":
            for provider in providers:
                provider.rekey(5, [1])
        elif item[0] == "square":
            r, r2 = zip(*(p.square(item[1]) for p in providers))
            assert torch.equal(_opened(r2), _opened(r) * _opened(r))
        else:
            a, b, c = zip(*(p.generate_additive_triple(*item[1:], "matmul") for p in providers))
            assert torch.equal(_opened(c), _opened(a) @ _opened(b))
    for provider in providers:
        provider.done()
    thread.join(10)
    assert served["requests"] == len(plan) - 1
    assert served["computed_ahead"] > len(plan) // 3
    assert served["guessed_wrong"] >= 1
