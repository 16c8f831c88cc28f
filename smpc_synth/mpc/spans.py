"""The MPC twin of :mod:`smpc_synth.models.spans`: activate a shared output span by span.

Continuous units go through ``tanh``; all one-hot spans go through ONE softmax call: they
are gathered into a padded ``(rows, spans, widest)`` tensor (padding sits far below every
real logit, so its probability is 0), which costs the rounds of a single softmax however
many spans the table has. With the dealer the continuous units ride in that same call:
``tanh(x) = 2 softmax([2x, 0])_0 - 1``, so each one is one more span of width 2, and their
``tanh`` costs no rounds of its own (16 a step otherwise).
"""

from __future__ import annotations

import torch

from smpc_synth.data.layout import Layout
from smpc_synth.mpc import compare, functions
from smpc_synth.mpc.compat import import_crypten
from smpc_synth.mpc.session import comparison_provider

crypten = import_crypten()

PAD_OFFSET = 60.0  # padding logits sit this far below a real logit of their row


class SpanMap:
    """Index bookkeeping for one layout (all public)."""

    def __init__(self, layout: Layout):
        self.width = layout.width
        cont = [i for s in layout.spans if s.kind == "continuous" for i in range(s.start, s.stop)]
        onehot = [s for s in layout.spans if s.kind == "onehot"]
        self.continuous = torch.tensor(cont, dtype=torch.long)
        self.onehot = torch.tensor([i for s in onehot for i in range(s.start, s.stop)])
        self.n_spans = len(onehot)
        self.widest = max((s.width for s in onehot), default=1)
        # the gathered tensor: one-hot spans, then a [2x, 0] span per continuous column
        self.slots = slots = max(self.widest, 2 if cont else 1)
        gathered = self.n_spans + len(cont)
        gather = torch.zeros(gathered, slots, dtype=torch.long)
        offset = torch.full((gathered, slots), -PAD_OFFSET)
        keep = torch.ones(gathered, slots, dtype=torch.long)  # integer factor on each logit
        member = torch.zeros(len(self.onehot), self.n_spans)  # column -> span (0/1)
        valid, col = [], 0
        for k, s in enumerate(onehot):
            gather[k, :] = s.start
            gather[k, : s.width] = torch.arange(s.start, s.stop)
            offset[k, : s.width] = 0.0
            member[col : col + s.width, k] = 1.0
            valid += [k * slots + j for j in range(s.width)]
            col += s.width
        for k, column in enumerate(cont, start=self.n_spans):
            gather[k, :] = column  # padding: x - 60, at least 60 below max(2x, 0)
            offset[k, :2] = 0.0
            keep[k, 0], keep[k, 1] = 2, 0
        self.gather, self.offset, self.member = gather, offset, member
        self.keep = None if bool((keep == 1).all()) else keep
        self.valid = torch.tensor(valid, dtype=torch.long)
        self.tanh_slots = torch.arange(self.n_spans, gathered, dtype=torch.long) * slots
        # cat([continuous part, one-hot part]) -> layout order
        order = torch.cat([self.continuous, self.onehot.to(torch.long)])
        self.to_layout = torch.argsort(order)

    def softmax(self, raw):
        """Softmax within each one-hot span of ``raw`` (rows, width): (rows, one-hot cols).

        With the dealer: ``exp(l - max) / sum``, the max by a tournament of our comparisons
        and the sum's reciprocal knowing the sum lies in ``[1, widest span]`` (the max's
        own term is 1, padding's is 0). Otherwise CrypTen's softmax."""
        provider = comparison_provider()
        if provider is None:
            return self._columns(self._gathered_onehot(raw).softmax(dim=2))
        return self._activations(raw, provider)[1]

    def activate_and_log_hit(self, raw, target=None):
        """``(tanh of the continuous columns, span softmax, log-probability of target)``
        of ``raw``; each None where the layout has no such columns (or no ``target``).
        ``target`` is one-hot, as the one-hot columns; the log is per span: (rows, spans).

        With the dealer, one batched softmax gives all three (the log is
        ``(l_true - max) - log(sum)``, the log of a value in ``[1, slots]`` from the powers
        of the sum that its reciprocal computes, not the log of a probability that may be
        tiny); otherwise CrypTen's functions."""
        provider = comparison_provider()
        if provider is None:
            tanh = raw[:, self.continuous].tanh() if len(self.continuous) else None
            probs = self.softmax(raw) if self.n_spans else None
            log_hit = None
            if probs is not None and target is not None:
                log_hit = self.span_sums(probs * target).log()
            return tanh, probs, log_hit
        with_log = self.n_spans > 0 and target is not None
        tanh, probs, shifted, log_denominator = self._activations(raw, provider, with_log)
        log_hit = None
        if with_log:
            true_logit = self.span_sums(self._columns(shifted) * target)
            log_hit = true_logit - log_denominator[:, : self.n_spans].reshape(raw.size(0), -1)
        return tanh, probs, log_hit

    def _gathered_onehot(self, raw):
        """(rows, spans, widest) one-hot logits, padding far below every real logit of its
        row (CrypTen's softmax, without the dealer)."""
        return raw[:, self.gather[: self.n_spans]] + self.offset[: self.n_spans]

    def _columns(self, per_slot):
        """(rows, spans, slots) -> (rows, one-hot cols): drop the padding."""
        return per_slot.reshape(per_slot.size(0), -1)[:, self.valid]

    def _activations(self, raw, provider, with_log: bool = False):
        """One batched softmax over the one-hot spans and the continuous columns' [2x, 0]
        spans: tanh (rows, continuous cols) and probabilities (rows, one-hot cols), each
        None if there are none, the shifted logits ``l - max`` and, ``with_log``, the log of
        the denominators (rows, spans, 1), which lie in ``[1, slots]``."""
        logits = raw[:, self.gather]
        if self.keep is not None:  # integer factors on the shares: exact, no truncation
            logits = compare.shares_like(logits, logits.share * self.keep)
        logits = logits + self.offset
        shifted = logits - functions.maximum(logits, provider)
        numerator = shifted.exp()
        denominator = numerator.sum(dim=2, keepdim=True)
        log_denominator = None
        if with_log:
            reciprocal, log_denominator = functions.reciprocal_and_log_in_range(
                denominator, 1.0, self.slots
            )
        else:
            reciprocal = functions.reciprocal_in_range(denominator, 1.0, self.slots)
        flat = (numerator * reciprocal).reshape(raw.size(0), -1)
        probs = flat[:, self.valid] if self.n_spans else None
        tanh = flat[:, self.tanh_slots] * 2 - 1 if len(self.continuous) else None
        return tanh, probs, shifted, log_denominator

    def span_sums(self, values):
        """Per-span sums of one-hot columns: (rows, one-hot cols) -> (rows, spans)."""
        return values.matmul(self.member)

    def spread(self, per_span):
        """Broadcast per-span values back to their columns: (rows, spans) -> (rows, cols)."""
        return per_span.matmul(self.member.t())

    def assemble(self, continuous, onehot):
        """(rows, width) in layout order from the two parts."""
        parts = [p for p in (continuous, onehot) if p is not None]
        return crypten.cat(parts, dim=1)[:, self.to_layout] if len(parts) > 1 else parts[0]

    def split(self, full):
        """The inverse of :meth:`assemble`."""
        cont = full[:, self.continuous] if len(self.continuous) else None
        oh = full[:, self.onehot] if len(self.onehot) else None
        return cont, oh


class Activation:
    """``activate`` of :mod:`smpc_synth.models.spans` with its backward pass."""

    def __init__(self, spans: SpanMap):
        self.spans = spans

    def forward(self, raw):
        self.tanh, self.probs, _ = self.spans.activate_and_log_hit(raw)
        return self.spans.assemble(self.tanh, self.probs)

    def backward(self, grad):
        g_cont, g_oh = self.spans.split(grad)
        d_cont = d_oh = None
        if g_cont is not None:
            d_cont = g_cont * (1 - self.tanh.square())
        if g_oh is not None:
            pg = self.probs * g_oh
            d_oh = pg - self.probs * self.spans.spread(self.spans.span_sums(pg))
        return self.spans.assemble(d_cont, d_oh)
