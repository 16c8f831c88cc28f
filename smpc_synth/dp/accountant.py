"""Privacy accounting with Opacus's RDP accountant.

In federated mode one step is one aggregation round, and ``sample_rate`` is the fraction of
parties taking part in a round (1.0 when all do: no amplification by sampling). The
guarantee is then per party (its whole update is the unit protected); with per-example
DP-SGD inside a party, a step is a local batch and the rate is batch size / rows.
"""

from __future__ import annotations

from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from smpc_synth.errors import InputError


def _check(sample_rate: float, steps: int, delta: float) -> None:
    if not 0 < sample_rate <= 1:
        raise InputError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    if not 0 < delta < 1:
        raise InputError(f"key 'federated.delta' must be in (0, 1), got {delta}")


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon spent after ``steps`` Gaussian-mechanism steps at (delta)."""
    _check(sample_rate, steps, delta)
    if not noise_multiplier > 0:
        raise InputError(
            f"key 'federated.noise_multiplier' must be positive, got {noise_multiplier}"
        )
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta))


def noise_multiplier_for(
    target_epsilon: float, sample_rate: float, steps: int, delta: float
) -> float:
    """The smallest noise multiplier (to Opacus's tolerance) that keeps epsilon <= target."""
    _check(sample_rate, steps, delta)
    if not target_epsilon > 0:
        raise InputError(f"key 'federated.target_epsilon' must be positive, got {target_epsilon}")
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
        )
    )
