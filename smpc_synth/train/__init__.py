"""The training protocols, one strategy each, behind :class:`~smpc_synth.train.base.Strategy`."""

from __future__ import annotations

import importlib

from smpc_synth.errors import InputError
from smpc_synth.train.base import Channel, PartyContext, Strategy, TrainingResult

# mode -> "module:Class"; imported lazily so plaintext runs never import CrypTen or TenSEAL.
STRATEGIES: dict[str, str] = {
    "plaintext": "smpc_synth.train.plaintext:PlaintextStrategy",
    "federated": "smpc_synth.train.federated:FederatedStrategy",
    "mpc": "smpc_synth.train.mpc:MpcStrategy",
}


def get_strategy(mode: str) -> Strategy:
    """The strategy that trains in ``mode``."""
    if mode not in STRATEGIES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(STRATEGIES)}")
    module_name, class_name = STRATEGIES[mode].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise InputError(f"mode {mode!r} is not available in this version yet") from None
        raise
    return getattr(module, class_name)()


__all__ = ["STRATEGIES", "Channel", "PartyContext", "Strategy", "TrainingResult", "get_strategy"]
