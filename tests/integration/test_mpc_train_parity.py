"""Slow: MPC-trained generators against the plaintext-trained ones (same seed, same rows,
same architecture and hyperparameters, few epochs), and ``--resume`` of a stopped run.

Every run is a real session (processes, gRPC + TLS, dealer). The gan figures are printed,
not asserted (they are reported).
"""

from __future__ import annotations

import pytest
import torch

from smpc_synth.models import Synthesizer
from smpc_synth.runtime.simulate import simulate

PARITY_TOLERANCE = 0.03
# breast_cancer is one batch per epoch, fair ten. The VAE's TSTR swings while it is
# under-trained, so its parity is judged where plaintext's TSTR has settled: on
# breast_cancer 0.63 at 20 epochs, 0.25 at 40, 0.93 at 80; on fair 0.54 at 2 epochs, 0.58 at
# 4, 0.53 at 6, then 0.63-0.64 from 15 to 40 (a 2-epoch MPC run once differed by 0.031).
# The gan's figures are only reported.
EPOCHS = {"breast_cancer": 20, "fair": 2}
VAE_EPOCHS = {"breast_cancer": 80, "fair": 20}

# MPC runs repeat bit for bit with a fixed debug seed (fresh dealer keys move the fixed-point
# noise, and the VAE's TSTR on breast_cancer by about 0.01 from run to run)
REPEATABLE = {"insecure_dev": True, "debug_seed": 0}

pytestmark = pytest.mark.slow


def _run(tmp_path, mode: str, generator: str, dataset: str, epochs, name: str, **options):
    result = simulate(
        2,
        dataset=dataset,
        mode=mode,
        generator=generator,
        epochs=epochs,
        seed=0,
        out=tmp_path / name,
        show_progress=False,
        **options,
    )
    assert result.exit_code == 0, result.exit_codes
    return result


def _figures(result) -> tuple[float, float]:
    evaluation = result.metrics["evaluation"]
    return evaluation["fidelity"]["quality_score"], evaluation["utility"]["tstr_auc"]


@pytest.mark.parametrize("dataset", ["breast_cancer", "fair"])
@pytest.mark.parametrize("generator", ["gaussian", "vae", "gan"])
def test_mpc_matches_plaintext(tmp_path, generator, dataset):
    epochs = {"gaussian": None, "vae": VAE_EPOCHS[dataset]}.get(generator, EPOCHS[dataset])
    mpc = _run(tmp_path, "mpc", generator, dataset, epochs, "mpc", mpc=REPEATABLE)
    plain = _run(tmp_path, "plaintext", generator, dataset, epochs, "plain")
    (q_mpc, auc_mpc), (q_plain, auc_plain) = _figures(mpc), _figures(plain)
    print(
        f"\n{generator} on {dataset}: quality {q_mpc:.4f} (mpc) vs {q_plain:.4f} (plaintext), "
        f"TSTR AUC {auc_mpc:.4f} vs {auc_plain:.4f}"
    )
    if generator == "gan":
        return  # reported, not asserted
    assert abs(q_mpc - q_plain) <= PARITY_TOLERANCE
    assert abs(auc_mpc - auc_plain) <= PARITY_TOLERANCE


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    """Stop after epoch 1 of 2 (a run of 1 epoch), resume to 2: the same weights, bit for
    bit, as 2 epochs in one go. With a debug seed every PRG restarts from keys for the epoch
    at its first step, so the only state carried over is the checkpoint's: anything it
    forgot would show here. (With fresh keys, as in real runs, the results differ by the
    fixed-point noise of different randomness.)"""
    whole = _run(tmp_path, "mpc", "vae", "breast_cancer", 2, "whole", mpc=REPEATABLE)
    _run(tmp_path, "mpc", "vae", "breast_cancer", 1, "resumed", mpc=REPEATABLE)
    resumed = simulate(
        2,
        dataset="breast_cancer",
        mode="mpc",
        generator="vae",
        epochs=2,
        seed=0,
        out=tmp_path / "resumed",
        resume=True,
        show_progress=False,
        mpc=REPEATABLE,
    )
    assert resumed.exit_code == 0, resumed.exit_codes
    history = resumed.metrics["parties"]["alice"]["training"]["epochs"]
    assert [r["epoch"] for r in history] == [1, 2]  # epoch 1 came from the checkpoint
    a = Synthesizer.load(whole.run_dir / "generator.pt").generator.state_dict()
    b = Synthesizer.load(resumed.run_dir / "generator.pt").generator.state_dict()
    for name, value in a["modules"]["decoder"].items():
        assert torch.equal(value, b["modules"]["decoder"][name]), name
    assert torch.equal(a["buffers"]["sigma"], b["buffers"]["sigma"])
    assert _figures(whole) == _figures(resumed)
