"""Global-norm clipping of one party's update: it bounds each party's influence (sensitivity)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def global_norm(update: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of all tensors of the update taken together."""
    tensors = [t.detach().to(torch.float64) for t in update.values()]
    return float(torch.nn.utils.get_total_norm(tensors)) if tensors else 0.0


def clip_update(
    update: Mapping[str, torch.Tensor], max_norm: float
) -> tuple[dict[str, torch.Tensor], float]:
    """The update scaled down to global norm ``max_norm`` (unchanged if within), and its norm.

    Computed in float64 so the clipped norm does not exceed ``max_norm`` by more than the
    final cast's rounding.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    norm = global_norm(update)
    factor = max_norm / max(norm, max_norm)
    clipped = {k: (t.detach().to(torch.float64) * factor).to(t.dtype) for k, t in update.items()}
    return clipped, norm
