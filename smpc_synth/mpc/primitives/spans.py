"""The MPC twin of :mod:`smpc_synth.models.spans`: activate a shared output span by span.

Continuous units go through ``tanh``; all one-hot spans go through ONE softmax call. With
the dealer they are laid out one after the other as segments of a flat ``(rows, slots)``
tensor, no padding (a 200-category span next to binary ones costs what it holds), and every
step takes all segments at once: the rounds of a single softmax of the widest span however
many spans the table has. The continuous units ride in that same call: ``tanh(x) = 2
softmax([2x, 0])_0 - 1``, so each one is one more segment of width 2, and their ``tanh``
costs no rounds of its own (16 a step otherwise).
"""

from __future__ import annotations

import torch

from smpc_synth.crypten_backend.compat import comparison_provider, import_crypten
from smpc_synth.data.layout import Layout
from smpc_synth.mpc.primitives import beaver, compare, functions

crypten = import_crypten()


class SpanMap:
    """Index bookkeeping for one layout (all public)."""

    def __init__(self, layout: Layout):
        self.width = layout.width
        cont = [i for s in layout.spans if s.kind == "continuous" for i in range(s.start, s.stop)]
        onehot = [s for s in layout.spans if s.kind == "onehot"]
        self.onehot_spans = [(s.start, s.stop) for s in onehot]
        self.continuous = torch.tensor(cont, dtype=torch.long)
        self.onehot = torch.tensor([i for s in onehot for i in range(s.start, s.stop)])
        self.n_spans = len(onehot)
        self.widest = max((s.width for s in onehot), default=1)
        # segments: the one-hot spans, then a [2x, 0] per continuous column
        self.lengths = [s.width for s in onehot] + [2] * len(cont)
        self.segments = len(self.lengths)
        source = [*self.onehot.tolist(), *(c for c in cont for _ in range(2))]
        factor = [1] * len(self.onehot) + [2, 0] * len(cont)  # integer factor on each logit
        self.source = torch.tensor(source, dtype=torch.long)
        self.factor = None if all(f == 1 for f in factor) else torch.tensor(factor)
        self.segment = torch.repeat_interleave(
            torch.arange(self.segments), torch.tensor(self.lengths, dtype=torch.long)
        )
        self.span_of = self.segment[: len(self.onehot)]  # one-hot column -> its span
        start = len(self.onehot)
        self.tanh_slots = torch.arange(start, start + 2 * len(cont), 2, dtype=torch.long)
        # cat([continuous part, one-hot part]) -> layout order
        order = torch.cat([self.continuous, self.onehot.to(torch.long)])
        self.to_layout = torch.argsort(order)

    def softmax(self, raw):
        """Softmax within each one-hot span of ``raw`` (rows, width): (rows, one-hot cols).

        With the dealer: ``exp(l - max) / sum``, the max by a tournament of our comparisons
        and the sum's reciprocal knowing that a span of ``w`` categories has its sum in
        ``[1, w]`` (the max's own term is 1). Otherwise CrypTen's softmax, span by span."""
        provider = comparison_provider()
        if provider is None:
            return self._cryptens_softmax(raw)
        return self._activations(raw, provider)[1]

    def activate_and_log_hit(self, raw, target=None):
        """``(tanh of the continuous columns, span softmax, log-probability of target)``
        of ``raw``; each None where the layout has no such columns (or no ``target``).
        ``target`` is one-hot, as the one-hot columns; the log is per span: (rows, spans).

        With the dealer, one batched softmax gives all three (the log is
        ``(l_true - max) - log(sum)``, the log of a value in ``[1, w]`` that rides on the
        powers its reciprocal computes, not the log of a probability that may be tiny);
        otherwise CrypTen's functions."""
        tanh, probs, pending = self.activate_for_log_hit(raw, target)
        if pending is None:
            return tanh, probs, None
        return tanh, probs, pending.finish(beaver.products([pending.product])[0])

    def activate_for_log_hit(self, raw, target=None):
        """:meth:`activate_and_log_hit` with the log-probability left pending where it
        takes a product (with the dealer): ``(tanh, probs, pending)``, where ``pending`` is
        None or a :class:`PendingLogHit` whose product the caller opens with its own (one
        round fewer than a product of its own)."""
        provider = comparison_provider()
        if provider is None:
            tanh = raw[:, self.continuous].tanh() if len(self.continuous) else None
            probs = self._cryptens_softmax(raw) if self.n_spans else None
            pending = None
            if probs is not None and target is not None:
                pending = PendingLogHit(self, ("mul", probs, target), log_denominator=None)
            return tanh, probs, pending
        with_log = self.n_spans > 0 and target is not None
        tanh, probs, shifted, log_denominator = self._activations(raw, provider, with_log)
        pending = None
        if with_log:
            product = ("mul", shifted[:, : len(self.onehot)], target)
            pending = PendingLogHit(self, product, log_denominator[:, : self.n_spans])
        return tanh, probs, pending

    def _cryptens_softmax(self, raw):
        """CrypTen's softmax of each one-hot span (without the dealer: tests only)."""
        if not self.n_spans:
            return None
        parts = [raw[:, a:b].softmax(dim=1) for a, b in self.onehot_spans]
        return crypten.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _activations(self, raw, provider, with_log: bool = False):
        """One batched softmax over the one-hot spans and the continuous columns' [2x, 0]
        segments: tanh (rows, continuous cols) and probabilities (rows, one-hot cols), each
        None if there are none, the shifted logits ``l - max`` (rows, slots) and,
        ``with_log``, the log of each segment's denominator (rows, segments).

        The denominator of a segment of ``w`` slots lies in ``[1, w]``: narrow layouts (the
        widest span up to 7) take its reciprocal and log as polynomials, wider ones by
        range reduction (:func:`~smpc_synth.mpc.primitives.functions.reciprocal_and_log_in_range`),
        each segment compared only with the powers of two below its own width."""
        logits = raw[:, self.source]
        if self.factor is not None:  # integer factors on the shares: exact, no truncation
            logits = compare.shares_like(logits, logits.share * self.factor)
        maxima = functions.segment_maximum(logits, self.lengths, provider)
        shifted = logits - maxima[:, self.segment]
        numerator = shifted.exp()
        denominator = functions.segment_sum(numerator, self.segment, self.segments)
        flat, log_denominator = functions.reciprocal_and_log_in_range(
            denominator,
            1.0,
            torch.tensor(self.lengths, dtype=torch.float64),
            provider,
            numerator=numerator,
            index=self.segment,
            log=with_log,
        )
        probs = flat[:, : len(self.onehot)] if self.n_spans else None
        tanh = flat[:, self.tanh_slots] * 2 - 1 if len(self.continuous) else None
        return tanh, probs, shifted, log_denominator

    def span_sums(self, values):
        """Per-span sums of one-hot columns: (rows, one-hot cols) -> (rows, spans)."""
        return functions.segment_sum(values, self.span_of, self.n_spans)

    def spread(self, per_span):
        """Broadcast per-span values back to their columns: (rows, spans) -> (rows, cols)."""
        return per_span[:, self.span_of]

    def assemble(self, continuous, onehot):
        """(rows, width) in layout order from the two parts."""
        parts = [p for p in (continuous, onehot) if p is not None]
        return crypten.cat(parts, dim=1)[:, self.to_layout] if len(parts) > 1 else parts[0]

    def split(self, full):
        """The inverse of :meth:`assemble`."""
        cont = full[:, self.continuous] if len(self.continuous) else None
        oh = full[:, self.onehot] if len(self.onehot) else None
        return cont, oh


class PendingLogHit:
    """The per-span log-probability of a target, waiting for one product: ``product`` is
    the ``(op, x, y)`` of :func:`~smpc_synth.mpc.primitives.beaver.products`, :meth:`finish` takes
    its result. With the dealer the product is the shifted logits times the target (the
    true category's ``l - max``), less the log of the span's denominator; without it,
    the probabilities times the target, whose CrypTen log is taken."""

    def __init__(self, spans: SpanMap, product: tuple, log_denominator):
        self.spans, self.product, self.log_denominator = spans, product, log_denominator

    def finish(self, product):
        per_span = self.spans.span_sums(product)
        if self.log_denominator is None:
            return per_span.log()
        return per_span - self.log_denominator


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
