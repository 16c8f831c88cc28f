"""The dealer-assisted comparison (smpc_synth.mpc.compare), run by threads in lockstep.

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

from smpc_synth.mpc import compare, prg

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
            flat = compare.deal(self.dealer, layout.count, layout.products)
        else:
            flat = compare.draw_correlated(layout, self.stream)
        return free, layout.split(flat)


def _share(values: torch.Tensor, parties: int, generator: torch.Generator) -> list:
    shares = [
        torch.randint(-(2**63), 2**63 - 1, values.shape, dtype=torch.long, generator=generator)
        for _ in range(parties - 1)
    ]
    return [values - sum(shares, torch.zeros_like(values)), *shares]


def _run(parties: int, x: torch.Tensor, ys: list[torch.Tensor], later_ys: list[torch.Tensor]):
    """Every party's (sign bit shares, product shares, later product shares)."""
    generator = torch.Generator().manual_seed(7)
    x_shares = _share(x, parties, generator)
    y_shares = [_share(y, parties, generator) for y in ys]
    later_shares = [_share(y, parties, generator) for y in later_ys]
    exchange = _Exchange(parties)
    seeds = [101 + 17 * r for r in range(parties)]
    results: list = [None] * parties
    errors: list = []

    def party(rank: int) -> None:
        try:
            comm = compare._Comm(_ThreadComm(exchange, rank))
            bits, now = compare.sign_bits(
                x_shares[rank],
                _Provider(rank, seeds),
                [y[rank] for y in y_shares],
                later=len(later_ys),
                comm=comm,
            )
            later = [bits.times(y[rank]) for y in later_shares]
            results[rank] = (bits.arithmetic(), now, later)
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
    results, exchange = _run(parties, x, [], [])
    bits = _open([r[0] for r in results])
    assert torch.equal(bits, (x < 0).long())
    assert exchange.rounds == 4  # open c, two Beaver levels, open e


def test_products_ride_along_and_later_cost_one_round():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-(2**40), 2**40, (1000,), generator=g, dtype=torch.long)
    y = torch.randint(-(2**40), 2**40, (1000,), generator=g, dtype=torch.long)
    z = torch.randint(-(2**40), 2**40, (1000,), generator=g, dtype=torch.long)
    results, exchange = _run(2, x, [y], [z])
    negative = (x < 0).long()
    assert torch.equal(_open([r[1][0] for r in results]), y * negative)
    assert torch.equal(_open([r[2][0] for r in results]), z * negative)
    assert exchange.rounds == 5
    # c, y - a and z - a (a word per element each); 4 x 7 and 6 bit rows, and e (packed)
    assert exchange.words_sent == 3 * 1000 + (4 * 7 + 6 + 1) * compare.words(1000)


def test_shapes_and_padding_keep_elements_apart():
    x = torch.tensor([[-5, 3, 0], [7, -1, -(2**63)]], dtype=torch.long)
    results, _ = _run(2, x.reshape(-1), [], [])
    assert torch.equal(_open([r[0] for r in results]).view(2, 3), (x < 0).long())


def test_bitslice_round_trips():
    values = torch.tensor([1, -1, 2**62 + 5, -(2**63), 0, 77], dtype=torch.long)
    sliced = compare.bitslice(values)
    assert sliced.shape == (64, 1)
    for bit in (0, 1, 2, 62, 63):
        expected = ((values >> bit) & 1).long()
        assert torch.equal(compare.unslice(sliced[bit], len(values)), expected)


def test_too_many_products_are_refused():
    with pytest.raises(ValueError, match="at most"):
        compare.sign_bits(torch.zeros(3, dtype=torch.long), None, [torch.zeros(3)] * 3)


def test_level_plans_match_the_documented_sizes():
    # what the dealer must supply per group: the documented byte budget rests on these
    assert compare.MIDDLE.opened == (0, 1, 2, 4, 5, 6, 7)
    assert compare.TOP.opened == (0, 1, 2, 5, 6, 7)
    assert len(compare.MIDDLE.subsets) == 22
    assert len(compare.TOP.subsets) == 15
