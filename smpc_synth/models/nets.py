"""The network shape all neural generators use: an MPC-friendly ``nn.Sequential`` MLP.

Only Linear, ReLU, LeakyReLU, Tanh and Sigmoid appear, so the MPC protocol can rebuild the
same network layer by layer in ``crypten.nn``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ALLOWED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
)
LEAKY_SLOPE = 0.2


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu"
) -> nn.Sequential:
    """Linear layers of sizes ``hidden`` with ``activation`` between them, linear output."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), _activation(activation)]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    raise ValueError(f"unknown activation {name!r}")
