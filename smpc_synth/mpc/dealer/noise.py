"""Differential-privacy noise inside MPC: shares of noise that no data party knows.

The dealer draws the noise from its own key (a CSPRNG no data party holds) and deals
additive shares of it (:meth:`DealerProvider.noise_share`): every party but the first draws
its share from the PRG stream it shares with the dealer, the first receives the noise minus
those. Any coalition of data parties without the dealer holds shares that are uniformly
random and independent of the noise, so the noise stays hidden until a noisy value is
opened. The dealer sees no data: only sizes, tags and the noise parameters.

The values are exact: :func:`discrete_gaussian` deals the discrete Gaussian ``N_Z`` of
Canonne, Kamath and Steinke on the grid of CrypTen's fixed point (``2^-precision``), whose
privacy loss is that of the continuous Gaussian with the same sigma (``rho = Delta^2 /
(2 sigma^2)`` for an integer sensitivity ``Delta`` in grid units), with no extra term for
floating point or rounding. Callers account for it with :mod:`smpc_synth.dp.zcdp`.

Tags name draws: every draw in a session needs a tag of its own (the dealer refuses a
repeat, which would reuse noise); a plaintext run with the same debug seed and the same
tags draws the same noise (:func:`smpc_synth.dp.sampling.draw_noise` with
:func:`smpc_synth.mpc.dealer.noise_key`).
"""

from __future__ import annotations

import torch

from smpc_synth.crypten_backend.compat import import_crypten

crypten = import_crypten()


def _provider():
    from smpc_synth.crypten_backend.compat import comparison_provider

    provider = comparison_provider()
    if provider is None:
        raise RuntimeError("dealt noise needs a running session with the dealer provider")
    return provider


def discrete_gaussian_shares(size, sigma2: float, *, tag: int) -> torch.Tensor:
    """This party's int64 share of ``N_Z(0, sigma2)`` noise of shape ``size``, in ring units
    (``sigma2`` in ring units squared)."""
    return _provider().noise_share("dgauss", torch.Size(size), tag, float(sigma2))


def discrete_gaussian(size, sigma: float, *, tag: int, precision: int = 0):
    """An MPCTensor of discrete Gaussian noise with parameter ``sigma`` (in value units) on
    the grid ``2^-precision``: ``k 2^-precision`` with ``k ~ N_Z(0, (sigma 2^precision)^2)``.
    ``precision=0`` gives integer noise (counts); CrypTen's own encoding is 16 bits."""
    ring_sigma = float(sigma) * 2.0**precision
    share = discrete_gaussian_shares(size, ring_sigma * ring_sigma, tag=tag)
    return crypten.mpc.MPCTensor.from_shares(share, precision=precision)


def gumbel_shares(size, scale: float, bits: int, *, tag: int) -> torch.Tensor:
    """This party's int64 share of ``round(scale 2^bits G)`` for standard Gumbel ``G``
    (:func:`smpc_synth.dp.sampling.gumbel_fixed`), for the exponential mechanism."""
    return _provider().noise_share("gumbel", torch.Size(size), tag, float(scale), int(bits))
