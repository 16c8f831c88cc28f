"""Secure sums through the aggregator: the wire protocol of federated mode, both sides.

A data party calls :meth:`AggregationClient.sum` with a dict of tensors; every data party
must make the same calls in the same order. With ``he="ckks"`` the tensors are quantised,
pairwise-masked, packed and encrypted (:mod:`smpc_synth.he`), and the aggregator, which
holds only a public context, adds ciphertexts it cannot read. With ``he="none"`` the
aggregator adds plain float64 vectors and sees every party's values: the no-crypto baseline.

On the wire (tags ``fed/up`` to the aggregator, ``fed/down`` back): one
``AggregationHeader`` (protos/smpc_synth/v1/aggregation.proto), then ``count`` payloads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from smpc_synth import phases
from smpc_synth.errors import PeerError
from smpc_synth.net.v1.aggregation_pb2 import AggregationHeader, AggregationKind
from smpc_synth.train.base import Channel

log = logging.getLogger(__name__)

UP, DOWN = "fed/up", "fed/down"
SECRET_CONTEXT, PUBLIC_CONTEXT, MASK_KEY = "fed/secret-context", "fed/public-context", "fed/mask"
CKKS = AggregationKind.AGGREGATION_KIND_CKKS
PLAIN = AggregationKind.AGGREGATION_KIND_PLAIN
DONE = AggregationKind.AGGREGATION_KIND_DONE


def _header(channel: Channel, peer: str, tag: str) -> AggregationHeader:
    header = AggregationHeader()
    try:
        header.ParseFromString(bytes(channel.recv(peer, tag)))
    except (TypeError, ValueError):
        raise PeerError(f"{peer} sent a malformed aggregation header", peer=peer) from None
    return header


class AggregationClient:
    """A data party's side: key set-up once per session, then one secure sum per call."""

    def __init__(
        self,
        channel: Channel,
        me: str,
        parties: tuple[str, ...],
        aggregator: str,
        *,
        he: str,
        masking: bool,
        session: str,
    ):
        self.channel, self.me, self.parties, self.aggregator = channel, me, parties, aggregator
        self.he = he
        self.masking = masking and he == "ckks" and len(parties) > 1
        self.session = session
        self.round = 0
        self.context = None
        self.pair_secrets: dict[str, bytes] = {}

    def setup(self) -> None:
        """The leader makes the CKKS context: secret to data parties, public to the aggregator.

        Both travel only over the mutually authenticated channel. Parties then exchange
        X25519 public keys for the pairwise masks.
        """
        if self.he != "ckks":
            log.warning("federated mode without encryption: the aggregator sees every update")
            return
        from smpc_synth.he.keys import (
            create_context,
            load_context,
            public_context_bytes,
            secret_context_bytes,
        )
        from smpc_synth.he.masking import MaskKey

        leader = self.parties[0]
        if self.me == leader:
            self.context = create_context()
            secret = secret_context_bytes(self.context)
            for peer in self.parties[1:]:
                self.channel.send(peer, SECRET_CONTEXT, secret)
            self.channel.send(self.aggregator, PUBLIC_CONTEXT, public_context_bytes(self.context))
        else:
            blob = self.channel.recv(leader, SECRET_CONTEXT)
            self.context = load_context(bytes(blob), secret=True, source=f"context from {leader}")
        if self.masking:
            key = MaskKey()
            for peer in self.parties:
                if peer != self.me:
                    self.channel.send(peer, MASK_KEY, key.public_bytes())
            publics = {
                p: bytes(self.channel.recv(p, MASK_KEY)) for p in self.parties if p != self.me
            }
            self.pair_secrets = key.pair_secrets(self.me, publics, self.session)

    def sum(
        self, name: str, tensors: Mapping[str, torch.Tensor], *, max_abs: float, max_error: float
    ) -> dict[str, torch.Tensor]:
        """The sum over all data parties of ``tensors`` (same keys and shapes everywhere)."""
        index = self.round
        self.round += 1
        if self.he == "ckks":
            return self._sum_ckks(name, index, tensors, max_abs, max_error)
        return self._sum_plain(name, index, tensors)

    def _exchange(self, header: AggregationHeader, payloads: list[Any]) -> list[Any]:
        self.channel.send(self.aggregator, UP, header.SerializeToString())
        for payload in payloads:
            self.channel.send(self.aggregator, UP, payload)
        phases.enter(self.me, "aggregation")
        reply = _header(self.channel, self.aggregator, DOWN)
        if reply.round != header.round:
            raise PeerError(
                f"{self.aggregator} answered round {reply.round} to round {header.round}",
                peer=self.aggregator,
            )
        return [self.channel.recv(self.aggregator, DOWN) for _ in range(reply.count)]

    def _sum_ckks(self, name, index, tensors, max_abs, max_error) -> dict[str, torch.Tensor]:
        from smpc_synth.he.aggregate import decrypt_sum, encrypt_update
        from smpc_synth.he.packing import UpdateSpec
        from smpc_synth.he.params import choose_layout

        layout = choose_layout(max_abs, len(self.parties), max_error=max_error, masked=self.masking)
        blobs = encrypt_update(
            self.context,
            tensors,
            layout,
            me=self.me,
            pair_secrets=self.pair_secrets,
            round_index=index,
        )
        header = AggregationHeader(round=index, name=name, kind=CKKS, count=len(blobs))
        summed = self._exchange(header, blobs)
        return decrypt_sum(self.context, [bytes(b) for b in summed], layout, UpdateSpec.of(tensors))

    def _sum_plain(self, name, index, tensors) -> dict[str, torch.Tensor]:
        from smpc_synth.he.packing import flatten, unflatten

        vector, spec = flatten(tensors)
        header = AggregationHeader(round=index, name=name, kind=PLAIN, count=1)
        (total,) = self._exchange(header, [np.asarray(vector, dtype=np.float64)])
        return unflatten(np.asarray(total), spec)

    def finish(self) -> None:
        """Tell the aggregator this party has no more rounds."""
        self.channel.send(self.aggregator, UP, AggregationHeader(kind=DONE).SerializeToString())


def serve_aggregator(channel: Channel, parties: tuple[str, ...], run_config) -> dict[str, Any]:
    """The aggregator's loop: add each round's submissions, return the sum to every party.

    It never holds a secret key: with CKKS it receives only the public context.
    """
    from smpc_synth.he.aggregate import aggregate
    from smpc_synth.he.keys import load_context

    context = None
    if run_config.federated.he == "ckks":
        blob = channel.recv(parties[0], PUBLIC_CONTEXT)
        context = load_context(bytes(blob), secret=False, source=f"context from {parties[0]}")
    rounds = 0
    while True:
        headers = {p: _header(channel, p, UP) for p in parties}
        if all(h.kind == DONE for h in headers.values()):
            return {"rounds": rounds}
        reference = headers[parties[0]]
        for party, header in headers.items():
            for key in ("kind", "round", "name", "count"):
                if getattr(header, key) != getattr(reference, key):
                    raise PeerError(
                        f"{party} is at {key} {getattr(header, key)!r} while {parties[0]} is "
                        f"at {getattr(reference, key)!r}",
                        peer=party,
                    )
        submissions = {p: [channel.recv(p, UP) for _ in range(h.count)] for p, h in headers.items()}
        phases.enter(channel.me, "aggregation")
        if reference.kind == CKKS:
            blobs = {p: [bytes(b) for b in subs] for p, subs in submissions.items()}
            result = aggregate(context, blobs, list(parties))
        elif reference.kind == PLAIN:
            result = [np.sum([np.asarray(s[0]) for s in submissions.values()], axis=0)]
        else:
            raise PeerError(f"{parties[0]} sent an unknown aggregation kind", peer=parties[0])
        reply = AggregationHeader(
            round=reference.round, name=reference.name, kind=reference.kind, count=len(result)
        )
        for party in parties:
            channel.send(party, DOWN, reply.SerializeToString())
            for payload in result:
                channel.send(party, DOWN, payload)
        rounds += 1
        if rounds == 2:  # a model round answered: the parties train on
            phases.enter(channel.me, "training")
