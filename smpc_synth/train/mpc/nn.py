"""The MPC twin of :func:`smpc_synth.models.nets.mlp`: secret-shared MLPs with hand-written
backward passes.

CrypTen's autograd records every op and its ``crypten.nn`` layers recompute what the backward
pass could reuse; here each layer keeps exactly what its gradient needs (a ReLU keeps the
comparison bit it computed in the forward pass, so its backward is one multiplication), and
all weights of a model live in ONE flat shared vector (:class:`ParameterVector`) so the
optimizer updates the whole model with a handful of rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from smpc_synth.crypten_backend.compat import comparison_provider, import_crypten
from smpc_synth.mpc.primitives import beaver, compare

crypten = import_crypten()
FIXED = crypten.encoder.FixedPointEncoder()  # CrypTen's default: 16 fractional bits


def fixed_mask(bits):
    """A 0/1 comparison result (CrypTen encodes it with scale 1) as a fixed-point tensor,
    so it can be scaled by a float; plain products ``x * bits`` need no conversion."""
    out = bits * int(FIXED.scale)  # exact: an integer product of the shares
    out.encoder = FIXED
    return out


@dataclass(frozen=True)
class Slot:
    """Where one named tensor lives in the flat vector."""

    name: str
    start: int
    shape: torch.Size

    @property
    def stop(self) -> int:
        return self.start + self.shape.numel()


class ParameterVector:
    """Every trainable tensor of a set of networks, secret-shared as one flat MPCTensor."""

    def __init__(self, named: dict[str, torch.Tensor]):
        self.slots: dict[str, Slot] = {}
        start = 0
        for name, value in named.items():
            self.slots[name] = Slot(name, start, value.shape)
            start += value.numel()
        self.size = start
        # The initial weights come from the public run seed: every party holds them already,
        # so party 0 sharing them reveals nothing.
        flat = torch.cat([v.detach().reshape(-1).float() for v in named.values()])
        self.flat = crypten.cryptensor(flat, src=0)
        self.grads: dict[str, object] = {}

    def __getitem__(self, name: str):
        slot = self.slots[name]
        return self.flat[slot.start : slot.stop].view(slot.shape)

    def zero_grad(self) -> None:
        self.grads = {}

    def add_grad(self, name: str, grad) -> None:
        self.grads[name] = grad if name not in self.grads else self.grads[name] + grad

    def flat_grad(self, names: list[str]):
        """The gradients of ``names`` (in slot order) as one flat MPCTensor; zeros elsewhere."""
        pieces = []
        for slot in self.slots.values():
            if slot.name in names and slot.name in self.grads:
                pieces.append(self.grads[slot.name].reshape(-1))
            else:
                pieces.append(crypten.cryptensor(torch.zeros(slot.shape.numel()), src=0))
        return crypten.cat(pieces)

    def reveal(self, names: list[str], dst: int | None) -> dict[str, torch.Tensor] | None:
        """Open the tensors ``names`` to party ``dst`` only (None: to everyone)."""
        slots = [self.slots[n] for n in names]
        picked = crypten.cat([self.flat[s.start : s.stop] for s in slots])
        plain = picked.get_plain_text(dst=dst)
        if plain is None:
            return None
        out, start = {}, 0
        for s in slots:
            n = s.shape.numel()
            out[s.name] = plain[start : start + n].reshape(s.shape).clone()
            start += n
        return out


class Linear:
    """``x W^T + b``; keeps ``x`` for the weight gradient."""

    def __init__(self, params: ParameterVector, prefix: str):
        self.params, self.w, self.b = params, f"{prefix}.weight", f"{prefix}.bias"

    def forward(self, x):
        self.x, self.kept = x, None
        w = self.params[self.w]
        if isinstance(x, torch.Tensor):  # public input (noise): a local product, no round
            return w.matmul(x.t()).t() + self.params[self.b]
        provider = comparison_provider()
        if provider is not None and x.dim() == 2:  # the dealer keeps the masks
            out, self.kept = beaver.kept_matmul(x, w.t(), provider)
            return out + self.params[self.b]
        return x.matmul(w.t()) + self.params[self.b]

    def backward(self, grad, *, accumulate: bool = True, need_input: bool = True):
        """Adds the weight gradient (``accumulate``) and returns the input gradient
        (``need_input``), both in one round; with the forward pass's masks kept, only
        ``grad`` is opened (see :func:`~smpc_synth.mpc.primitives.beaver.kept_matmul`)."""
        if not (accumulate or need_input):
            return None
        if self.kept is not None:
            d_weight, d_input = beaver.kept_matmul_backward(
                self.kept, grad, comparison_provider(), weight=accumulate, input=need_input
            )
        else:
            wanted = [("matmul", grad.t(), self.x)] if accumulate else []
            if need_input:
                wanted.append(("matmul", grad, self.params[self.w]))
            results = beaver.products(wanted)
            d_weight, d_input = results[0], results[-1] if need_input else None
        if accumulate:
            self.params.add_grad(self.w, d_weight)
            self.params.add_grad(self.b, grad.sum(0))
        return d_input


class LeakyReLU:
    """``x`` where positive, ``slope * x`` elsewhere (ReLU: slope 0).

    With the dealer, one :func:`~smpc_synth.mpc.primitives.compare.sign_bits` call (at
    :data:`~smpc_synth.mpc.primitives.compare.ACTIVATION_BITS`) gives ``x * [x<0]`` and keeps a
    product for the backward pass (one round, 8 bytes per element); otherwise CrypTen's comparison,
    whose bit the backward pass reuses.
    """

    def __init__(self, slope: float = 0.0):
        self.slope = slope

    def _scaled(self, negative_part):
        return negative_part if self.slope == 0 else negative_part * (1 - self.slope)

    def forward(self, x):
        provider = comparison_provider()
        if provider is None:
            positive = x.gt(0.0)
            if self.slope:
                positive = fixed_mask(positive) * (1 - self.slope) + self.slope
            self.factor, self.bits = positive, None
            return x * self.factor
        self.bits, negative = compare.sign_bits(
            x.share, provider, times_x=True, later=1, width=compare.ACTIVATION_BITS
        )
        return x - self._scaled(compare.shares_like(x, negative))

    def backward(self, grad, **_):
        if self.bits is None:
            return grad * self.factor
        return grad - self._scaled(compare.shares_like(grad, self.bits.times(grad.share)))


class Mlp:
    """The twin of one ``nn.Sequential`` of Linear / ReLU / LeakyReLU layers."""

    def __init__(self, net: nn.Sequential, params: ParameterVector, prefix: str):
        self._build(net, prefix, lambda _layer, name: Linear(params, name))

    def _build(self, net: nn.Sequential, prefix: str, linear) -> None:
        """One twin per layer; ``linear(layer, name)`` makes the twin of a Linear layer."""
        self.layers: list = []
        self.names: list[str] = []
        for index, layer in enumerate(net):
            if isinstance(layer, nn.Linear):
                self.layers.append(linear(layer, f"{prefix}.{index}"))
                self.names += [f"{prefix}.{index}.weight", f"{prefix}.{index}.bias"]
            elif isinstance(layer, nn.ReLU):
                self.layers.append(LeakyReLU(0.0))
            elif isinstance(layer, nn.LeakyReLU):
                self.layers.append(LeakyReLU(layer.negative_slope))
            else:
                raise NotImplementedError(f"no MPC twin for layer {type(layer).__name__}")

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad, *, accumulate: bool = True, need_input: bool = False):
        """Propagate ``grad`` (d loss / d output); adds weight gradients if ``accumulate``."""
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            grad = self.layers[i].backward(
                grad, accumulate=accumulate, need_input=need_input or i > 0
            )
        return grad


def named_parameters(nets: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """``{"net.index.weight": tensor}`` for every network, in a stable order."""
    return {
        f"{net_name}.{key}": value
        for net_name, net in nets.items()
        for key, value in net.state_dict().items()
    }


class PublicLinear:
    """``x W^T + b`` with public ``W``, ``b`` (DP-SGD in MPC releases them every step): local
    products on shares. Its backward pass keeps ``(input, output gradient)`` for the
    per-example clip (:mod:`smpc_synth.train.mpc.dp_sgd`) instead of summing a weight gradient."""

    def __init__(self, layer: nn.Linear, name: str):
        self.layer, self.name = layer, name
        self.kept: list[tuple[object, object]] = []

    def forward(self, x):
        self.x = x
        w, b = self.layer.weight.detach(), self.layer.bias.detach()
        if isinstance(x, torch.Tensor):
            return x @ w.t() + b
        return x.matmul(w.t()) + b

    def backward(self, grad, *, accumulate: bool = True, need_input: bool = True):
        if accumulate:
            self.kept.append((self.x, grad))
        return grad.matmul(self.layer.weight.detach()) if need_input else None


class PublicMlp(Mlp):
    """The twin of one ``nn.Sequential`` whose weights are public, on shared inputs."""

    def __init__(self, net: nn.Sequential, prefix: str):
        self._build(net, prefix, PublicLinear)

    @property
    def linears(self) -> list[PublicLinear]:
        return [layer for layer in self.layers if isinstance(layer, PublicLinear)]
