"""The dealer-assisted comparison (smpc_synth.mpc.primitives.compare), run by threads in lockstep.

These tests check the protocol's arithmetic: the parties are threads that exchange their
shares through a barrier, the dealer is the real :func:`compare.deal` on the parties' PRG
streams. The same protocol over gRPC and the dealer process is covered by
``test_mpc_session.py`` (every comparison, ReLU and max there runs through it).
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch.distributed import ReduceOp

from smpc_synth.mpc.primitives import compare, prg

RING = 2**64


class _Exchange:
    """What every thread put in the current round, once all have."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.slots: list = [None] * parties
        self.barrier = threading.Barrier(parties)
        self.rounds = 0
        self.words_sent = 0

    def swap(self, rank: int, tensor: torch.Tensor) -> list[torch.Tensor]:
        self.slots[rank] = tensor.clone()
        self.barrier.wait()
        out = list(self.slots)
        if rank == 0:
            self.rounds += 1
            self.words_sent += tensor.numel()
        self.barrier.wait()
        return out


class _ThreadComm:
    def __init__(self, exchange: _Exchange, rank: int) -> None:
        self.exchange, self.rank = exchange, rank

    def get_rank(self) -> int:
        return self.rank

    def all_reduce(self, tensor, op=ReduceOp.SUM):
        parts = self.exchange.swap(self.rank, tensor)
        out = parts[0].clone()
        for part in parts[1:]:
            out = out ^ part if op == ReduceOp.BXOR else out + part
        return out

    def all_gather(self, tensor):
        return self.exchange.swap(self.rank, tensor)


class _Provider:
    """A party's view of the dealer: its PRG stream, and party 0's correlated share."""

    def __init__(self, rank: int, seeds: list[int]) -> None:
        self.rank, self.seeds = rank, seeds
        self.stream = prg.Stream(prg.debug_key(seeds[rank]))
        self.dealer = [prg.Stream(prg.debug_key(s)) for s in seeds] if rank == 0 else None

    def comparison_material(self, layout: compare.Layout):
        free = compare.draw_free(layout, self.stream)
        if self.rank == 0:
            flat = compare.deal(self.dealer, layout)
        else:
            flat = compare.draw_correlated(layout, self.stream)
        return free, layout.split(flat)


def _share(values: torch.Tensor, parties: int, generator: torch.Generator) -> list:
    shares = [
        torch.randint(-(2**63), 2**63 - 1, values.shape, dtype=torch.long, generator=generator)
        for _ in range(parties - 1)
    ]
    return [values - sum(shares, torch.zeros_like(values)), *shares]


def _run(
    parties: int,
    x: torch.Tensor,
    times_x: bool,
    later_ys: list,
    width: int = 64,
    together: bool = False,
):
    """Every party's (sign bit shares, x * b shares or None, later product shares); the
    later products one at a time, or ``together`` (``SignBits.times_each``)."""
    generator = torch.Generator().manual_seed(7)
    x_shares = _share(x, parties, generator)
    later_shares = [_share(y, parties, generator) for y in later_ys]
    exchange = _Exchange(parties)
    seeds = [101 + 17 * r for r in range(parties)]
    results: list = [None] * parties
    errors: list = []

    def party(rank: int) -> None:
        try:
            comm = compare._Comm(_ThreadComm(exchange, rank))
            bits, negative = compare.sign_bits(
                x_shares[rank],
                _Provider(rank, seeds),
                times_x=times_x,
                later=len(later_ys),
                width=width,
                comm=comm,
            )
            if together:
                later = bits.times_each([y[rank] for y in later_shares])
            else:
                later = [bits.times(y[rank]) for y in later_shares]
            results[rank] = (bits.arithmetic(), negative, later)
        except BaseException as err:  # surfaced below, with the party's rank
            errors.append((rank, err))
            exchange.barrier.abort()

    threads = [threading.Thread(target=party, args=(r,)) for r in range(parties)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0][1]
    return results, exchange


def _open(shares: list[torch.Tensor]) -> torch.Tensor:
    return sum(shares[1:], shares[0].clone())


EDGES = [0, 1, -1, 2, -2, 2**62, -(2**62), 2**63 - 1, -(2**63), 65536, -65536, 12345, -777]


def _edges(width: int) -> torch.Tensor:
    """Values at and near the ends of the range a ``width``-bit comparison is exact on."""
    top = 2 ** (width - 1)
    near = [0, 1, -1, top - 1, -top, top // 2, -top // 2, top - 2, -top + 1, 65536, -65536]
    return torch.tensor(near, dtype=torch.long)


@pytest.mark.parametrize("parties", [2, 3])
def test_sign_bits_are_exact_for_every_int64(parties):
    g = torch.Generator().manual_seed(parties)
    x = torch.cat(
        [
            torch.tensor(EDGES, dtype=torch.long),
            torch.randint(-(2**63), 2**63 - 1, (200,), generator=g, dtype=torch.long),
            torch.randint(-(2**20), 2**20, (300,), generator=g, dtype=torch.long),
        ]
    )
    results, exchange = _run(parties, x, False, [])
    bits = _open([r[0] for r in results])
    assert torch.equal(bits, (x < 0).long())
    assert exchange.rounds == 4  # open c, two Beaver levels, open e


@pytest.mark.parametrize("parties", [2, 3])
@pytest.mark.parametrize("width", [32, 48])
def test_narrow_comparisons_are_exact_within_their_range(parties, width):
    g = torch.Generator().manual_seed(width + parties)
    top = 2 ** (width - 1)
    x = torch.cat([_edges(width), torch.randint(-top, top, (500,), generator=g)])
    results, exchange = _run(parties, x, True, [], width=width)
    negative = (x < 0).long()
    assert torch.equal(_open([r[0] for r in results]), negative)
    assert torch.equal(_open([r[1] for r in results]), x * negative)
    assert exchange.rounds == 4


def test_narrow_comparisons_send_and_deal_less():
    """Narrower: fewer opened bit rows, and less dealer material, per element."""
    x = torch.arange(-500, 500, dtype=torch.long)
    sent = {}
    for width in (32, 64):
        _, exchange = _run(2, x, True, [], width=width)
        sent[width] = exchange.words_sent
        top = compare.top_level(width)
        rows = (width // 16) * len(compare.MIDDLE.opened) + len(top.opened) + 1  # + e
        assert exchange.words_sent == 1000 + rows * compare.words(1000)  # c, then bit rows
    assert sent[32] < sent[64]
    material = {w: compare.Layout(64_000, 1, w, True).correlated_size for w in (32, 64)}
    assert material[32] * 8 / 64_000 == pytest.approx(44.75)  # bytes an element
    assert material[64] * 8 / 64_000 == pytest.approx(67.0)


def test_x_times_its_sign_is_free_and_later_products_cost_one_round():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-(2**40), 2**40, (1000,), generator=g, dtype=torch.long)
    z = torch.randint(-(2**40), 2**40, (1000,), generator=g, dtype=torch.long)
    results, exchange = _run(2, x, True, [z])
    negative = (x < 0).long()
    assert torch.equal(_open([r[1] for r in results]), x * negative)
    assert torch.equal(_open([r[2][0] for r in results]), z * negative)
    assert exchange.rounds == 5
    # c and z - a (a word per element each); 4 x 7 and 6 bit rows, and e (packed)
    assert exchange.words_sent == 2 * 1000 + (4 * 7 + 6 + 1) * compare.words(1000)


@pytest.mark.parametrize("parties", [2, 3])
def test_later_products_opened_together_take_one_round(parties):
    g = torch.Generator().manual_seed(11 + parties)
    x = torch.randint(-(2**30), 2**30, (500,), generator=g, dtype=torch.long)
    ys = [torch.randint(-(2**40), 2**40, (500,), generator=g, dtype=torch.long) for _ in "yz"]
    later = compare.MAX_PRODUCTS - 1  # with x * b
    results, exchange = _run(parties, x, True, ys[:later], width=32, together=True)
    negative = (x < 0).long()
    assert torch.equal(_open([r[1] for r in results]), x * negative)
    for i, y in enumerate(ys[:later]):
        assert torch.equal(_open([r[2][i] for r in results]), y * negative)
    assert exchange.rounds == 5  # the comparison's 4, and one for every later product


def test_shapes_and_padding_keep_elements_apart():
    x = torch.tensor([[-5, 3, 0], [7, -1, -(2**63)]], dtype=torch.long)
    results, _ = _run(2, x.reshape(-1), False, [])
    assert torch.equal(_open([r[0] for r in results]).view(2, 3), (x < 0).long())


def test_bitslice_round_trips():
    values = torch.tensor([1, -1, 2**62 + 5, -(2**63), 0, 77], dtype=torch.long)
    sliced = compare.bitslice(values)
    assert sliced.shape == (64, 1)
    for bit in (0, 1, 2, 62, 63):
        expected = ((values >> bit) & 1).long()
        assert torch.equal(compare.unslice(sliced[bit], len(values)), expected)


def test_bitslice_of_the_low_half_matches_the_full_one():
    g = torch.Generator().manual_seed(5)
    values = torch.randint(-(2**63), 2**63 - 1, (200,), generator=g, dtype=torch.long)
    low = compare.bitslice(values, rows=32)
    assert low.shape == (32, compare.words(200))
    assert torch.equal(low, compare.bitslice(values)[:32])


def test_too_many_products_and_odd_widths_are_refused():
    with pytest.raises(ValueError, match="at most"):
        compare.sign_bits(
            torch.zeros(3, dtype=torch.long), None, times_x=True, later=compare.MAX_PRODUCTS
        )
    with pytest.raises(ValueError, match="width"):
        compare.sign_bits(torch.zeros(3, dtype=torch.long), None, width=40)


def test_level_plans_match_the_documented_sizes():
    # what the dealer must supply per group: the documented byte budget rests on these
    assert compare.MIDDLE.opened == (0, 1, 2, 4, 5, 6, 7)
    assert compare.TOP.opened == (0, 1, 2, 5, 6, 7)
    assert len(compare.MIDDLE.subsets) == 22
    assert len(compare.TOP.subsets) == 15
    assert compare.top_level(64) == compare.TOP
    assert compare.top_level(32).opened == (0, 3)  # G1 ^ P1 G0: one AND
    assert len(compare.top_level(32).subsets) == 1
