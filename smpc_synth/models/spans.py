"""Turning raw network outputs into encoded rows, span by span.

Continuous spans go through ``tanh``: the "mode" encoding puts a value within [-1, 1] when
it lies within four standard deviations of its mode. One-hot spans go through a softmax over
the span only, which CrypTen computes for small spans. At sampling time one-hot spans become
hard one-hot rows.
"""

from __future__ import annotations

import torch

from smpc_synth.data.layout import Layout


def continuous_index(layout: Layout) -> torch.Tensor:
    """Column indices of all continuous units, in order."""
    cols = [i for s in layout.spans if s.kind == "continuous" for i in range(s.start, s.stop)]
    return torch.tensor(cols, dtype=torch.long)


def activate(raw: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``tanh`` on continuous spans, softmax within each one-hot span (differentiable)."""
    parts = [
        raw[:, s.start : s.stop].tanh()
        if s.kind == "continuous"
        else raw[:, s.start : s.stop].softmax(dim=1)
        for s in layout.spans
    ]
    return torch.cat(parts, dim=1)


def sample_onehot(probs: torch.Tensor, layout: Layout, generator: torch.Generator) -> torch.Tensor:
    """Replace each one-hot span of ``probs`` by a hard one-hot draw from its probabilities."""
    out = probs.clone()
    for s in layout.spans:
        if s.kind != "onehot":
            continue
        p = probs[:, s.start : s.stop].clamp_min(0.0) + 1e-12
        pick = torch.multinomial(p, 1, generator=generator).squeeze(1)
        out[:, s.start : s.stop] = torch.nn.functional.one_hot(pick, s.width).to(out.dtype)
    return out


def argmax_onehot(values: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Replace each one-hot span of ``values`` by a one at its largest entry."""
    out = values.clone()
    for s in layout.spans:
        if s.kind != "onehot":
            continue
        pick = values[:, s.start : s.stop].argmax(dim=1)
        out[:, s.start : s.stop] = torch.nn.functional.one_hot(pick, s.width).to(out.dtype)
    return out
