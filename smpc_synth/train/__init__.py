"""The training protocols, one strategy each, behind :class:`~smpc_synth.train.base.Strategy`."""

from __future__ import annotations

from smpc_synth.registry import resolve
from smpc_synth.train.base import Channel, PartyContext, Strategy, TrainingResult

# mode -> "module:Class"; imported lazily so plaintext runs never import CrypTen or TenSEAL.
STRATEGIES: dict[str, str] = {
    "plaintext": "smpc_synth.train.plaintext:PlaintextStrategy",
    "federated": "smpc_synth.train.federated:FederatedStrategy",
    "mpc": "smpc_synth.train.mpc.strategy:MpcStrategy",
}


def get_strategy(mode: str) -> Strategy:
    """The strategy that trains in ``mode``."""
    return resolve(STRATEGIES, mode, "mode")()


__all__ = ["STRATEGIES", "Channel", "PartyContext", "Strategy", "TrainingResult", "get_strategy"]
