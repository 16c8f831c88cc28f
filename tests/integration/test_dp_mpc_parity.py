"""DP-SGD on shares against Opacus DP-SGD in plaintext: same budget, seed, clip, sampling
and steps give the same epsilon and, within 0.02, the same quality."""

from __future__ import annotations

import pytest

from smpc_synth.config import RunConfig
from smpc_synth.runtime.simulate import simulate

EPSILON = 10.0
EPOCHS = 8


def _run(tmp_path, mode: str) -> dict:
    cfg = RunConfig.from_dict(
        {
            "mode": mode,
            "generator": "vae",
            "epochs": EPOCHS,
            "seed": 0,
            "dp": {"epsilon": EPSILON},
        }
    )
    result = simulate(
        2,
        dataset="fair",
        out=tmp_path / mode,
        config=cfg,
        show_progress=False,
        override_gate=True,
    )
    assert result.exit_code == 0, result.exit_codes
    return result.metrics


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_dp_sgd_on_shares_matches_opacus_in_plaintext(tmp_path):
    plain, shared = _run(tmp_path, "plaintext"), _run(tmp_path, "mpc")
    parts = [{p["label"]: p for p in m["privacy"]["parts"]} for m in (plain, shared)]
    a, b = parts[0]["training"], parts[1]["training"]
    assert a["steps"] == b["steps"]
    assert a["sample_rate"] == pytest.approx(b["sample_rate"], rel=0.01)  # noisy row counts
    assert a["noise_multiplier"] == pytest.approx(b["noise_multiplier"], rel=0.01)
    # the clip; on shares it also covers the certificate's tolerance and the noise grid
    assert a["sensitivity"] <= b["sensitivity"] <= a["sensitivity"] * 1.01
    assert plain["privacy"]["epsilon"] == pytest.approx(shared["privacy"]["epsilon"], abs=5e-3)
    assert shared["privacy"]["epsilon"] <= EPSILON
    quality = [m["evaluation"]["fidelity"]["quality_score"] for m in (plain, shared)]
    assert abs(quality[0] - quality[1]) <= 0.02, quality
