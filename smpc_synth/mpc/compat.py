"""Every fix CrypTen 0.4.1 needs to run (and run fast) on torch 2.13, in one place.

CrypTen is unmaintained since 2022. Import this module (``import smpc_synth.mpc.compat``)
before ``crypten``; :func:`import_crypten` does both. Each fix says why it exists, and
``tests/test_compat.py`` fails if a fix stops working or stops being needed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

_APPLIED = False


def _alias_onnx_registration() -> None:
    # crypten/nn/onnx_converter.py does `from torch.onnx._internal.registration import
    # registry`; torch 2.13 moved that module under `torchscript_exporter`. Alias the old
    # path so the import (and CrypTen's symbolic-registry update) keeps working.
    old = "torch.onnx._internal.registration"
    if old in sys.modules:
        return
    try:
        importlib.import_module(old)
    except ModuleNotFoundError:
        new = importlib.import_module("torch.onnx._internal.torchscript_exporter.registration")
        sys.modules[old] = new


def _crypten_classes() -> list[Any]:
    """The classes CrypTen pickles into its own files: shares, encoders, ptype."""
    from crypten.encoder import FixedPointEncoder
    from crypten.gradients import AutogradContext
    from crypten.mpc.mpc import MPCTensor
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor
    from crypten.mpc.primitives.binary import BinarySharedTensor
    from crypten.mpc.ptype import ptype

    return [
        FixedPointEncoder,
        AutogradContext,
        MPCTensor,
        ArithmeticSharedTensor,
        BinarySharedTensor,
        ptype,
        frozenset,
    ]


def _load_crypten_file(f, **kwargs):
    # torch >= 2.6 defaults `torch.load(weights_only=True)`, which refuses the share classes
    # CrypTen pickles in `crypten.save` and in the provider caches. Rather than unpickling
    # anything (weights_only=False), these loads stay weights_only and admit exactly those
    # classes, for the duration of the call: a file holding any other object is refused.
    kwargs.setdefault("weights_only", True)
    with torch.serialization.safe_globals(_crypten_classes()):
        return torch.load(f, **kwargs)


def _patch_loads(crypten: ModuleType) -> None:
    original_load = crypten.load

    @functools.wraps(original_load)
    def load(f, load_closure=None, **kwargs):
        if load_closure is None or load_closure is torch.load:
            return _load_crypten_file(f, **kwargs)
        return load_closure(f, **kwargs)

    crypten.load = load
    provider_module = importlib.import_module("crypten.mpc.provider.provider")
    provider_module.torch = _TorchWithCryptenLoad(torch)


class _TorchWithCryptenLoad:
    """A view of ``torch`` whose ``load`` reads CrypTen's own cache files (see above)."""

    def __init__(self, wrapped: ModuleType):
        self._wrapped = wrapped

    def __getattr__(self, name: str):
        if name == "load":
            return _load_crypten_file
        return getattr(self._wrapped, name)


def _patch_onnx_export(crypten: ModuleType) -> None:
    # torch 2.13's `torch.onnx.export` uses the dynamo exporter by default, which ignores
    # CrypTen's custom symbolic registry; CrypTen's `from_pytorch` needs the TorchScript one.
    converter = importlib.import_module("crypten.nn.onnx_converter")
    original = converter._export_pytorch_model

    def _export_pytorch_model(f, pytorch_model, dummy_input):
        real_export = torch.onnx.export

        def export(*args, **kwargs):
            kwargs.setdefault("dynamo", False)
            return real_export(*args, **kwargs)

        torch.onnx.export = export
        try:
            return original(f, pytorch_model, dummy_input)
        finally:
            torch.onnx.export = real_export

    converter._export_pytorch_model = _export_pytorch_model


def _onnx_identity(crypten: ModuleType) -> None:
    # torch 2.13's TorchScript exporter stores equal initializers once and emits an ONNX
    # `Identity` node for each copy (a fresh BatchNorm's running_var equals its weight, its
    # running_mean its bias), which CrypTen's converter does not know: from_pytorch fails
    # with "CrypTen does not support ONNX op Identity". The node becomes a module that
    # passes its input on.
    converter = importlib.import_module("crypten.nn.onnx_converter")

    class Identity(crypten.nn.Module):
        """ONNX's Identity: the output is the input."""

        def forward(self, x):
            return x

        @staticmethod
        def from_onnx(attributes=None):
            return Identity()

    converter.ONNX_TO_CRYPTEN.setdefault("Identity", Identity)


def _exact_decode(crypten: ModuleType) -> None:
    # FixedPointEncoder.decode splits a negative value into quotient and remainder with the
    # divisor `scale - 1` (a typo for `scale`), so values in (-n, -n + n/scale) decode as
    # x - 1: -1.99999 reveals as -2.99999, and 75 of CrypTen's own 10,368 conv test values
    # land there. The fix is the intended floor division.
    encoder_class = crypten.encoder.FixedPointEncoder
    original = encoder_class.decode

    @functools.wraps(original)
    def decode(self, tensor):
        if tensor is None or self._scale <= 1 or tensor.is_floating_point():
            return original(self, tensor)
        quotient = tensor.div(self._scale, rounding_mode="floor")
        remainder = tensor - quotient * self._scale  # in [0, scale): exact in float32
        return quotient.float() + remainder.float() / self._scale

    encoder_class.decode = decode


# (owner, attribute, ours, CrypTen's) for the fixes below that only make CrypTen faster;
# shipped_crypten() undoes them, so stock baselines measure CrypTen's own code.
_SPEED_PATCHES: list[tuple[Any, str, Any, Any]] = []


def _speed_patch(owner: Any, name: str, ours: Any) -> None:
    original = owner.__dict__[name]
    setattr(owner, name, ours)
    _SPEED_PATCHES.append((owner, name, ours, original))


@contextlib.contextmanager
def shipped_crypten() -> Iterator[None]:
    """Run CrypTen's own code inside the block: the fixes that only make it faster are
    undone (for stock baselines); those it needs to run on this torch stay."""
    for owner, name, _, original in reversed(_SPEED_PATCHES):  # a later patch may wrap
        setattr(owner, name, original)
    try:
        yield
    finally:
        for owner, name, ours, _ in _SPEED_PATCHES:
            setattr(owner, name, ours)
        # writes made meanwhile went straight to omegaconf: drop the cached sections
        vars(importlib.import_module("crypten").cfg).pop("_sections", None)


def _skip_debug_validation(crypten: ModuleType) -> None:
    # Every attribute access on an encrypted tensor goes through crypten.debug's
    # `validate_attribute`, which reads `cfg.debug.validation_mode` through omegaconf
    # (~75 us): a tenth of an MPC training step. smpc-synth never turns CrypTen's debug
    # validation on, so the undecorated `__getattribute__` is put back.
    tensor_class = crypten.CrypTensor
    current = tensor_class.__dict__["__getattribute__"]
    if current.__code__.co_name == "validate_attribute":
        _speed_patch(tensor_class, "__getattribute__", current.__wrapped__)


def _remembered_dispatch(crypten: ModuleType) -> None:
    # CrypTensor.__getattribute__ decides on every attribute read of an encrypted tensor
    # whether the name is an autograd function: a list scan, two dict lookups and several
    # class-attribute reads, each through CrypTensorMetaclass.__getattribute__ (~8 us in
    # all; ~3,400 reads in a VAE step). For a name it hands straight to the object (every
    # non-function attribute: share, encoder, _tensor, size...) that answer depends on the
    # name alone, since CrypTen's lists and function registry are fixed at import, so it
    # is remembered per name; every other name takes CrypTen's path.
    tensor_class = crypten.CrypTensor
    original = tensor_class.__dict__["__getattribute__"]
    gradients = importlib.import_module("crypten.gradients")
    read = object.__getattribute__
    direct: dict[str, bool] = {}

    def is_direct(name: str) -> bool:
        if name in tensor_class.PROTECTED_ATTRIBUTES or name == "copy_":
            return True
        plain = tensor_class.PYTHON_BUILTIN.get(name, name) == name
        inplace = name.endswith("_") and not name.endswith("__")
        return plain and not inplace and gradients.get_grad_fn(name) is None

    def __getattribute__(self, name):
        known = direct.get(name)
        if known is None:
            known = direct[name] = is_direct(name)
        return read(self, name) if known else original(self, name)

    _speed_patch(tensor_class, "__getattribute__", __getattribute__)


_UNSET = object()
# undo actions of the temp_override blocks now open, innermost last: a write made inside a
# block is undone when the block ends, as CrypTen's writes to its merged copy are
_OPEN_OVERRIDES: list[list[Callable[[], None]]] = []


class _Section:
    """A view of one omegaconf section whose reads, after the first, are a dict lookup.
    Writes go through to omegaconf (so reloads and merges see them) and drop the cached
    value; inside a ``temp_override`` block they are undone when it ends."""

    __slots__ = ("_node", "_values")

    def __init__(self, node: Any) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_values", {})

    def __getattr__(self, key: str) -> Any:
        values = self._values
        if key in values:
            return values[key]
        value = getattr(self._node, key)
        if isinstance(value, DictConfig):
            value = _Section(value)
        values[key] = value
        return value

    def __setattr__(self, key: str, value: Any) -> None:
        if _OPEN_OVERRIDES:
            node = self._node
            stored = node.get(key, _UNSET)
            shadow = self._values.get(key, _UNSET)  # an enclosing override's value
            _OPEN_OVERRIDES[-1].append(functools.partial(self._restore, key, stored, shadow))
        setattr(self._node, key, value)
        self._values.pop(key, None)

    def _restore(self, key: str, stored: Any, shadow: Any) -> None:
        if stored is _UNSET:
            del self._node[key]
        else:
            setattr(self._node, key, stored)
        self._shadow(key, shadow)

    def _shadow(self, key: str, value: Any) -> None:
        if value is _UNSET:
            self._values.pop(key, None)
        else:
            self._values[key] = value

    __getitem__ = __getattr__
    __setitem__ = __setattr__


def _sections(config: Any) -> dict[str, _Section]:
    """The cached sections of ``config``'s current omegaconf root (a load, set_config or
    merge replaces the root, and with it the cache)."""
    root = object.__getattribute__(config, "config")
    cache = config.__dict__.get("_sections")
    if cache is None or cache[0] is not root:
        cache = (root, {})
        object.__setattr__(config, "_sections", cache)
    return cache[1]


def _config_getattribute(self, name: str) -> Any:
    try:
        return object.__getattribute__(self, name)
    except AttributeError:
        pass
    sections = _sections(self)
    head, *rest = name.split(".")  # a dotted name reads through the section (and overrides)
    if head not in sections:
        value = getattr(object.__getattribute__(self, "config"), head)
        if not isinstance(value, DictConfig):
            return value
        sections[head] = _Section(value)
    return functools.reduce(getattr, rest, sections[head])


_PARSED: dict[str, Any] = {}  # "key=value" -> the value omegaconf parses from it
_MAX_PARSED = 1024


def _parsed(dotted: str, value: Any) -> Any:
    """``value`` as CrypTen's temp_override stores it: parsed by omegaconf from the dotlist
    entry ``key=value`` ("12" is 12, "True" is True). Parsing takes ~2 ms, so scalars are
    remembered (CrypTen overrides a handful of keys with a handful of values)."""
    text = f"{dotted}={value}"
    if text in _PARSED:
        return _PARSED[text]
    parsed = OmegaConf.select(OmegaConf.from_dotlist([text]), dotted)
    if not isinstance(parsed, DictConfig | ListConfig):
        if len(_PARSED) >= _MAX_PARSED:
            _PARSED.clear()
        _PARSED[text] = parsed
    return parsed


def _known_section(config: Any, path: list[str], leaf: str) -> _Section | None:
    """The section that holds the existing key ``path.leaf``, or None."""
    if not path:
        return None
    try:
        section = functools.reduce(getattr, path, config)
        if isinstance(section, _Section):
            getattr(section, leaf)  # cached from now on: the next check is a dict lookup
            return section
    except (AttributeError, KeyError):
        pass
    return None


def _add_key(config: Any, dotted: str, value: Any) -> Callable[[], None]:
    """Write a key CrypTen's config lacks into omegaconf (as CrypTen's merge adds it);
    returns what removes it again."""
    node = object.__getattribute__(config, "config")
    parts = dotted.split(".")
    depth = 0
    while depth < len(parts) - 1 and isinstance(node.get(parts[depth]), DictConfig):
        node = node[parts[depth]]
        depth += 1
    key = parts[depth]
    stored = node.get(key, _UNSET)
    nested: Any = value
    for part in reversed(parts[depth + 1 :]):
        nested = {part: nested}
    node[key] = nested

    def remove() -> None:
        if stored is _UNSET:
            del node[key]
        else:
            node[key] = stored
        cached = _cached(config, parts[:depth])  # read inside the block: drop it
        if depth == 0:
            _sections(config).pop(key, None)
        elif cached is not None:
            cached._values.pop(key, None)

    return remove


def _cached(config: Any, path: list[str]) -> _Section | None:
    """The cached view of the section at ``path`` (non-empty), if there is one."""
    if not path:
        return None
    section = _sections(config).get(path[0])
    for part in path[1:]:
        section = section._values.get(part) if isinstance(section, _Section) else None
    return section if isinstance(section, _Section) else None


@contextlib.contextmanager
def _config_temp_override(self, override_dict: dict[str, Any]) -> Iterator[None]:
    # CrypTen merges a copy of the whole config with the overrides (values parsed from
    # "key=value"), reads from the copy inside the block, and puts the original back after
    # it: so writes inside the block are dropped with the copy. Here an override of an
    # existing key shadows it in the section's cache; a new key is written and removed; a
    # write inside the block is undone at its end; a config replaced inside it is put back.
    root = object.__getattribute__(self, "config")
    undo: list[Callable[[], None]] = []
    _OPEN_OVERRIDES.append(undo)
    try:
        for dotted, value in override_dict.items():
            value = _parsed(dotted, value)
            *path, leaf = dotted.split(".")
            section = _known_section(self, path, leaf)
            if section is None:
                undo.append(_add_key(self, dotted, value))
                continue
            previous = section._values.get(leaf, _UNSET)  # an enclosing block's, or none
            undo.append(functools.partial(section._shadow, leaf, previous))
            section._values[leaf] = value
        yield
    finally:
        _OPEN_OVERRIDES.pop()
        for action in reversed(undo):
            action()
        if object.__getattribute__(self, "config") is not root:
            self.config = root


def _fast_config_reads(crypten: ModuleType) -> None:
    # CrypTen reads its omegaconf config on every operation (`cfg.encoder.precision_bits`
    # in each encoder, `cfg.mpc.provider` for each tuple, `cfg.communicator.verbose` for
    # each message): about 30 us a read through omegaconf's resolver, 300 reads in an MLP
    # training step. And `temp_override`, which the reciprocal, log and exp approximations
    # enter on every call, merges a copy of the whole config (about 6 ms). Sections are
    # cached as plain views (invalidated when the config object is replaced), and
    # overrides shadow the cached values.
    config_class = type(crypten.cfg)
    _speed_patch(config_class, "__getattribute__", _config_getattribute)
    _speed_patch(config_class, "temp_override", _config_temp_override)


def _cheap_empty_mpc_tensors(crypten: ModuleType) -> None:
    # `MPCTensor([])` is CrypTen's idiom for "an empty shell whose `_tensor` I set next"
    # (from_shares, clone, shallow_copy, and a dummy for every crypten.cat/stack call), and
    # `MPCTensor.__init__` means to skip the sharing for it, but tests `tensor is []`, which
    # is never true of a list passed in. So every shell runs a full ArithmeticSharedTensor
    # construction: encoder, zero-sharing draws, a clone (about 50 us, 500 times a step).
    # The fix skips the sharing but still gives the shell shares of nothing: a user's
    # `crypten.cryptensor([])` takes the same path and gets what CrypTen gives it, an empty
    # encrypted tensor.
    mpc_class = crypten.mpc.MPCTensor
    original = mpc_class.__init__
    ptype = crypten.mpc.ptype.arithmetic

    @functools.wraps(original)
    def __init__(self, tensor, ptype=ptype, device=None, *args, **kwargs):
        if type(tensor) is list and not tensor and not args and not kwargs:
            crypten.CrypTensor.__init__(self, requires_grad=False)
            self._tensor = _empty_shares(crypten, ptype.to_tensor(), device)
            self.ptype = ptype
            return
        original(self, tensor, ptype, device, *args, **kwargs)

    _speed_patch(mpc_class, "__init__", __init__)


def _empty_shares(crypten: ModuleType, shares_class: type, device: Any) -> Any:
    """What ``shares_class.from_shares(<empty long tensor>)`` returns, in a fifth of the
    time (``tests/test_compat.py`` checks that they agree, attribute for attribute)."""
    bits = crypten.cfg.encoder.precision_bits
    encoder = object.__new__(crypten.encoder.FixedPointEncoder)
    vars(encoder).update(_precision_bits=bits, _scale=int(2**bits))
    shares = object.__new__(shares_class)
    vars(shares).update(_tensor=torch.empty(0, dtype=torch.long, device=device), encoder=encoder)
    return shares


def apply() -> None:
    """Apply every fix once; safe to call many times."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_onnx_registration()
    crypten = importlib.import_module("crypten")
    _patch_loads(crypten)
    _patch_onnx_export(crypten)
    _onnx_identity(crypten)
    _exact_decode(crypten)
    _skip_debug_validation(crypten)
    _remembered_dispatch(crypten)
    _fast_config_reads(crypten)
    _cheap_empty_mpc_tensors(crypten)
    _APPLIED = True


def import_crypten() -> ModuleType:
    """Return the ``crypten`` module with every fix applied."""
    apply()
    return importlib.import_module("crypten")
