"""The MPC twin of :mod:`smpc_synth.models.spans`: activate a shared output span by span.

Continuous units go through ``tanh``; all one-hot spans go through ONE softmax call: they
are gathered into a padded ``(rows, spans, widest)`` tensor (padding sits far below every
real logit, so its probability is 0), which costs the rounds of a single softmax however
many spans the table has.
"""

from __future__ import annotations

import torch

from smpc_synth.data.layout import Layout
from smpc_synth.mpc import functions
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
        self.widest = widest = max((s.width for s in onehot), default=1)
        gather = torch.zeros(self.n_spans, widest, dtype=torch.long)
        offset = torch.full((self.n_spans, widest), -PAD_OFFSET)
        member = torch.zeros(len(self.onehot), self.n_spans)  # column -> span (0/1)
        valid, col = [], 0
        for k, s in enumerate(onehot):
            gather[k, :] = s.start
            gather[k, : s.width] = torch.arange(s.start, s.stop)
            offset[k, : s.width] = 0.0
            member[col : col + s.width, k] = 1.0
            valid += [k * widest + j for j in range(s.width)]
            col += s.width
        self.gather, self.offset, self.member = gather, offset, member
        self.valid = torch.tensor(valid, dtype=torch.long)
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
            return self._columns(self._gathered(raw).softmax(dim=2))
        probs, _, _ = self._softmax_parts(raw, provider)
        return probs

    def softmax_and_log_hit(self, raw, target):
        """The span softmax of ``raw``, and per span the log of the probability it gives the
        category ``target`` (one-hot, as the one-hot columns) marks: (rows, spans).

        With the dealer the log is ``(l_true - max) - log(sum)``, the log of a value in
        ``[1, widest span]`` (4 rounds), not the log of a probability that may be tiny."""
        provider = comparison_provider()
        if provider is None:
            probs = self.softmax(raw)
            return probs, self.span_sums(probs * target).log()
        probs, shifted, denominator = self._softmax_parts(raw, provider)
        true_logit = self.span_sums(self._columns(shifted) * target)
        log_sum = functions.log_in_range(denominator.view(raw.size(0), -1), 1.0, self.widest)
        return probs, true_logit - log_sum

    def _gathered(self, raw):
        """(rows, spans, widest) logits, padding far below every real logit of its row."""
        return raw[:, self.gather] + self.offset

    def _columns(self, per_slot):
        """(rows, spans, widest) -> (rows, one-hot cols): drop the padding."""
        return per_slot.reshape(per_slot.size(0), -1)[:, self.valid]

    def _softmax_parts(self, raw, provider):
        """Probabilities (rows, one-hot cols), shifted logits ``l - max`` and the
        denominators (rows, spans, 1), which lie in ``[1, widest]``."""
        logits = self._gathered(raw)
        shifted = logits - functions.maximum(logits, provider)
        numerator = shifted.exp()
        denominator = numerator.sum(dim=2, keepdim=True)
        probs = numerator * functions.reciprocal_in_range(denominator, 1.0, self.widest)
        return self._columns(probs), shifted, denominator

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
        cont_raw, _ = self.spans.split(raw)
        self.tanh = cont_raw.tanh() if cont_raw is not None else None
        self.probs = self.spans.softmax(raw) if self.spans.n_spans else None
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
