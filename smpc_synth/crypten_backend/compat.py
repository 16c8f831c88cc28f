"""Every change smpc-synth makes to CrypTen 0.4.1, in one table, installed only on request.

CrypTen is unmaintained since 2022. :data:`PATCHES` lists each attribute of CrypTen we
replace, with why:

- ``needed``: CrypTen cannot run on torch 2.13, or gives wrong results, without it;
- ``speed``: the same results, faster;
- ``protocol``: a session's wiring (our communicator, the dealer as tuple provider) and
  the protocols that use the dealer.

Importing this module (or any of smpc-synth's) changes nothing in CrypTen: only
:func:`import_crypten`'s alias of a moved torch module, without which ``import crypten`` fails.
:func:`patched_crypten` installs the entries for a block and puts CrypTen's own objects back after
it (a session holds one open while it runs); blocks nest, and the entries leave with the outermost.
:func:`shipped_crypten` puts CrypTen's code back inside a patched block (the speed entries and our
protocols), for stock baselines. ``tests/unit/crypten_backend/test_compat.py`` checks each entry
works and is still needed, and that outside a block every patched attribute is CrypTen's own object
again.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, Protocol

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

Why = Literal["needed", "speed", "protocol"]


def _alias_onnx_registration() -> None:
    # crypten/nn/onnx_converter.py does `from torch.onnx._internal.registration import
    # registry`; torch 2.13 moved that module under `torchscript_exporter`. Alias the old
    # path so the import (and CrypTen's symbolic-registry update) keeps working. This
    # touches torch's module table only, none of CrypTen's objects.
    old = "torch.onnx._internal.registration"
    if old in sys.modules:
        return
    try:
        importlib.import_module(old)
    except ModuleNotFoundError:
        new = importlib.import_module("torch.onnx._internal.torchscript_exporter.registration")
        sys.modules[old] = new


def import_crypten() -> ModuleType:
    """Return the ``crypten`` module, importable on this torch, as CrypTen ships it (enter
    :func:`patched_crypten` to use it)."""
    _alias_onnx_registration()
    return importlib.import_module("crypten")


# --- needed: CrypTen on torch 2.13 ---------------------------------------------------------


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


def _crypten_load(original: Callable) -> Callable:
    """``crypten.load`` reading CrypTen's own files (see :func:`_load_crypten_file`)."""

    @functools.wraps(original)
    def load(f, load_closure=None, **kwargs):
        if load_closure is None or load_closure is torch.load:
            return _load_crypten_file(f, **kwargs)
        return load_closure(f, **kwargs)

    return load


class _TorchWithCryptenLoad:
    """A view of ``torch`` whose ``load`` reads CrypTen's own cache files (see above): what
    the tuple provider's module sees as ``torch``."""

    def __init__(self, wrapped: ModuleType):
        self._wrapped = wrapped

    def __getattr__(self, name: str):
        if name == "load":
            return _load_crypten_file
        return getattr(self._wrapped, name)


def _torchscript_export(original: Callable) -> Callable:
    # torch 2.13's `torch.onnx.export` uses the dynamo exporter by default, which ignores
    # CrypTen's custom symbolic registry; CrypTen's `from_pytorch` needs the TorchScript one.
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

    return _export_pytorch_model


@functools.cache
def _onnx_identity(_absent: Any = None) -> type:
    # torch 2.13's TorchScript exporter stores equal initializers once and emits an ONNX
    # `Identity` node for each copy (a fresh BatchNorm's running_var equals its weight, its
    # running_mean its bias), which CrypTen's converter does not know: from_pytorch fails
    # with "CrypTen does not support ONNX op Identity". The node becomes a module that
    # passes its input on.
    crypten = import_crypten()

    class Identity(crypten.nn.Module):
        """ONNX's Identity: the output is the input."""

        def forward(self, x):
            return x

        @staticmethod
        def from_onnx(attributes=None):
            return Identity()

    return Identity


def _exact_decode(original: Callable) -> Callable:
    # FixedPointEncoder.decode splits a negative value into quotient and remainder with the
    # divisor `scale - 1` (a typo for `scale`), so values in (-n, -n + n/scale) decode as
    # x - 1: -1.99999 reveals as -2.99999, and 75 of CrypTen's own 10,368 conv test values
    # land there. The fix is the intended floor division.
    @functools.wraps(original)
    def decode(self, tensor):
        if tensor is None or self._scale <= 1 or tensor.is_floating_point():
            return original(self, tensor)
        quotient = tensor.div(self._scale, rounding_mode="floor")
        remainder = tensor - quotient * self._scale  # in [0, scale): exact in float32
        return quotient.float() + remainder.float() / self._scale

    return decode


# --- speed: the same results, faster --------------------------------------------------------


def _remembered_dispatch(original: Callable) -> Callable:
    # Every attribute access on an encrypted tensor goes through crypten.debug's
    # `validate_attribute`, which reads `cfg.debug.validation_mode` through omegaconf
    # (~75 us): a tenth of an MPC training step. smpc-synth never turns CrypTen's debug
    # validation on, so the undecorated `__getattribute__` is the one called.
    # That one decides on every read whether the name is an autograd function: a list
    # scan, two dict lookups and several class-attribute reads, each through
    # CrypTensorMetaclass.__getattribute__ (~8 us in all; ~3,400 reads in a VAE step). For
    # a name it hands straight to the object (every non-function attribute: share,
    # encoder, _tensor, size...) that answer depends on the name alone, since CrypTen's
    # lists and function registry are fixed at import, so it is remembered per name;
    # every other name takes CrypTen's path.
    dispatch = original
    if original.__code__.co_name == "validate_attribute":
        dispatch = original.__wrapped__
    tensor_class = importlib.import_module("crypten").CrypTensor
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
        return read(self, name) if known else dispatch(self, name)

    return __getattribute__


# CrypTen reads its omegaconf config on every operation (`cfg.encoder.precision_bits` in
# each encoder, `cfg.mpc.provider` for each tuple, `cfg.communicator.verbose` for each
# message): about 30 us a read through omegaconf's resolver, 300 reads in an MLP training
# step. And `temp_override`, which the reciprocal, log and exp approximations enter on
# every call, merges a copy of the whole config (about 6 ms). With the two entries for
# CrypTenConfig, sections are cached as plain views (invalidated when the config object is
# replaced), and overrides shadow the cached values.

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


def _forget_config_cache() -> None:
    """Drop the cached sections: writes made while CrypTen's own reads were in went
    straight to omegaconf (and a config outside a patched block holds none of ours)."""
    crypten = sys.modules.get("crypten")
    if crypten is not None and hasattr(crypten, "cfg"):
        vars(crypten.cfg).pop("_sections", None)


def _cheap_empty_mpc_tensors(original: Callable) -> Callable:
    # `MPCTensor([])` is CrypTen's idiom for "an empty shell whose `_tensor` I set next"
    # (from_shares, clone, shallow_copy, and a dummy for every crypten.cat/stack call), and
    # `MPCTensor.__init__` means to skip the sharing for it, but tests `tensor is []`, which
    # is never true of a list passed in. So every shell runs a full ArithmeticSharedTensor
    # construction: encoder, zero-sharing draws, a clone (about 50 us, 500 times a step).
    # The fix skips the sharing but still gives the shell shares of nothing: a user's
    # `crypten.cryptensor([])` takes the same path and gets what CrypTen gives it, an empty
    # encrypted tensor.
    crypten = import_crypten()
    ptype = crypten.mpc.ptype.arithmetic

    @functools.wraps(original)
    def __init__(self, tensor, ptype=ptype, device=None, *args, **kwargs):
        if type(tensor) is list and not tensor and not args and not kwargs:
            crypten.CrypTensor.__init__(self, requires_grad=False)
            self._tensor = _empty_shares(crypten, ptype.to_tensor(), device)
            self.ptype = ptype
            return
        original(self, tensor, ptype, device, *args, **kwargs)

    return __init__


def _empty_shares(crypten: ModuleType, shares_class: type, device: Any) -> Any:
    """What ``shares_class.from_shares(<empty long tensor>)`` returns, in a fifth of the
    time (``tests/unit/crypten_backend/test_compat.py`` checks that they agree, attribute
    for attribute)."""
    bits = crypten.cfg.encoder.precision_bits
    encoder = object.__new__(crypten.encoder.FixedPointEncoder)
    vars(encoder).update(_precision_bits=bits, _scale=int(2**bits))
    shares = object.__new__(shares_class)
    vars(shares).update(_tensor=torch.empty(0, dtype=torch.long, device=device), encoder=encoder)
    return shares


LAZY: list[tuple[str, str]] = []  # every (module, name) an entry imports when installed


def _lazy(module: str, name: str) -> Callable[[], Any]:
    """A loader of our object ``module.name``: the protocols live above this module (out
    of sight of the import contract), so each is named here and imported only when a
    session installs it; ``tests/unit/crypten_backend/test_compat_scope.py`` imports every name in
    :data:`LAZY`."""
    LAZY.append((module, name))
    return lambda: getattr(importlib.import_module(module), name)


_ARITHMETIC = "smpc_synth.crypten_backend.arithmetic"
_BEAVER = "smpc_synth.mpc.primitives.beaver"
_make_ltz = _lazy("smpc_synth.mpc.primitives.compare", "make_ltz")
_make_relu = _lazy("smpc_synth.mpc.primitives.compare", "make_relu")
_make_autograd_relu = _lazy("smpc_synth.mpc.primitives.compare", "make_autograd_relu")
_channel_communicator = _lazy("smpc_synth.crypten_backend.communicator", "ChannelCommunicator")
_gloo_communicator = _lazy("smpc_synth.crypten_backend.communicator", "GlooCommunicator")


# --- protocol: a session's communicator, provider and the dealer's protocols -----------------


class Wiring(Protocol):
    """What the ``protocol`` entries (and those of one transport or provider) are made
    from: the running session."""

    provider: str  # "dealer" or "tfp"
    transport: str  # "grpc" or "gloo"
    dealer_provider: Any  # the DealerProvider, with the dealer


def _dealer_provider(_absent: Any, wiring: Wiring) -> Any:
    return wiring.dealer_provider


def _dealer_ltz(original: Callable, wiring: Wiring) -> Callable:
    return _make_ltz()(wiring.dealer_provider, original)


def _dealer_relu(original: Callable, wiring: Wiring) -> Callable:
    return _make_relu()(wiring.dealer_provider, original)


def _relu_forward(original: staticmethod, wiring: Wiring) -> staticmethod:
    return _make_autograd_relu()(wiring.dealer_provider, original)[0]


def _relu_backward(_original: staticmethod, wiring: Wiring) -> staticmethod:
    # the backward reads what the forward saved; CrypTen's forward is its fallback only
    forward = original(import_crypten().gradients.AutogradReLU, "forward")
    return _make_autograd_relu()(wiring.dealer_provider, forward)[1]


def _with(module: str, name: str) -> Callable[[Any, Wiring], Any]:
    """An entry's factory that is ``<module>.<name>(original)``."""
    make = _lazy(module, name)
    return lambda original, _wiring: make()(original)


def _channel(name: str) -> Callable[[Any, Wiring], Any]:
    """``crypten.communicator.<function>`` answered by our ChannelCommunicator's ``name``."""
    return lambda _original, _wiring: getattr(_channel_communicator(), name)


def _gloo_class(_original: type, _wiring: Wiring) -> type:
    # `crypten.communicator._init` builds `DistributedCommunicator(...)` by this module-level
    # name: in a gloo session it builds ours, which sends objects by our codec, not pickle
    return _gloo_communicator()


# --- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """One entry: ``owner.attribute`` (``owner[attribute]`` for a dict) becomes ``make(
    original)``, or ``make(original, wiring)`` for an entry of one session's ``when``.
    ``original`` is CrypTen's object (the inherited one, or None for a key a dict lacks)."""

    owner: str  # "module" or "module:name" (a class or a dict in that module)
    attribute: str
    make: Callable[..., Any]
    why: Why
    when: Literal["dealer", "grpc", "gloo"] | None = None  # None: every patched block
    wiring: bool = False  # the session cannot run without it: shipped_crypten keeps it
    item: bool = False  # owner is a dict, attribute one of its keys

    @property
    def as_shipped(self) -> bool:
        """Whether :func:`shipped_crypten` puts CrypTen's own object back."""
        return self.why != "needed" and not self.wiring

    def resolve(self) -> Any:
        """The object that holds the attribute."""
        module, _, name = self.owner.partition(":")
        owner = importlib.import_module(module)
        for part in filter(None, name.split(".")):
            owner = getattr(owner, part)
        return owner


# fmt: off
PATCHES: tuple[Patch, ...] = (
    Patch("crypten", "load", _crypten_load, "needed"),
    Patch("crypten.mpc.provider.provider", "torch", _TorchWithCryptenLoad, "needed"),
    Patch("crypten.nn.onnx_converter", "_export_pytorch_model", _torchscript_export, "needed"),
    Patch("crypten.nn.onnx_converter:ONNX_TO_CRYPTEN", "Identity", _onnx_identity, "needed",
          item=True),
    Patch("crypten.encoder:FixedPointEncoder", "decode", _exact_decode, "needed"),
    Patch("crypten:CrypTensor", "__getattribute__", _remembered_dispatch, "speed"),
    Patch("crypten.config.config:CrypTenConfig", "__getattribute__",
          lambda _original: _config_getattribute, "speed"),
    Patch("crypten.config.config:CrypTenConfig", "temp_override",
          lambda _original: _config_temp_override, "speed"),
    Patch("crypten.mpc:MPCTensor", "__init__", _cheap_empty_mpc_tensors, "speed"),
    Patch("crypten.mpc.primitives.arithmetic:ArithmeticSharedTensor", "_arithmetic_function",
          _with(_ARITHMETIC, "make_arithmetic_function"), "speed", "dealer"),
    Patch("crypten.mpc.primitives.arithmetic:ArithmeticSharedTensor", "square",
          _with(_ARITHMETIC, "make_square"), "speed", "dealer"),
    Patch("crypten.mpc.primitives.arithmetic:ArithmeticSharedTensor", "mul",
          _with(_ARITHMETIC, "make_mul"), "speed", "dealer"),
    Patch("crypten.mpc:__SUPPORTED_PROVIDERS", "DEALER", _dealer_provider, "protocol", "dealer",
          wiring=True, item=True),
    Patch("crypten.mpc:MPCTensor", "_ltz", _dealer_ltz, "protocol", "dealer"),
    Patch("crypten.mpc:MPCTensor", "relu", _dealer_relu, "protocol", "dealer"),
    Patch("crypten.gradients:AutogradReLU", "forward", _relu_forward, "protocol", "dealer"),
    Patch("crypten.gradients:AutogradReLU", "backward", _relu_backward, "protocol", "dealer"),
    Patch("crypten.mpc.primitives.beaver", "__beaver_protocol",
          _with(_BEAVER, "make_beaver_protocol"), "protocol", "dealer"),
    Patch("crypten.gradients:AutogradMatMul", "backward",
          _with(_BEAVER, "make_matmul_backward"), "protocol", "dealer"),
    Patch("crypten.gradients:AutogradMul", "backward",
          _with(_BEAVER, "make_mul_backward"), "protocol", "dealer"),
    Patch("crypten.communicator", "get", _channel("get"), "protocol", "grpc", wiring=True),
    Patch("crypten.communicator", "is_initialized", _channel("is_initialized"), "protocol",
          "grpc", wiring=True),
    Patch("crypten.communicator", "uninit", _channel("shutdown"), "protocol", "grpc",
          wiring=True),
    Patch("crypten.communicator.distributed_communicator", "DistributedCommunicator",
          _gloo_class, "protocol", "gloo", wiring=True),
)
# fmt: on


# --- installing and undoing: one registry -------------------------------------------------------

ABSENT = object()  # what an owner holds for an attribute it inherits, a dict for a key it lacks


@dataclass
class _Installed:
    patch: Patch
    owner: Any
    original: Any  # CrypTen's own object, or ABSENT
    ours: Any


_LOCK = threading.RLock()
_INSTALLED: dict[Patch, _Installed] = {}  # the one undo registry, in installation order
_BLOCKS = 0  # patched_crypten blocks open
_WIRING: Wiring | None = None  # the session whose entries are in
_SHIPPED = 0  # shipped_crypten blocks open


def holding(patch: Patch) -> Any:
    """What ``patch``'s owner holds itself under its attribute now (:data:`ABSENT` when it
    inherits it or, for a dict, lacks the key)."""
    owner = patch.resolve()
    if patch.item:
        return owner.get(patch.attribute, ABSENT)
    return vars(owner).get(patch.attribute, ABSENT)


def original(owner: Any, attribute: str) -> Any:
    """CrypTen's own ``owner.attribute`` (the inherited one if it has none), patched or not."""
    for record in _INSTALLED.values():
        if record.owner is owner and record.patch.attribute == attribute:
            if record.original is not ABSENT:
                return record.original
            break
    return inspect.getattr_static(owner, attribute)


def _put(record: _Installed, value: Any) -> None:
    owner, name = record.owner, record.patch.attribute
    if record.patch.item:
        if value is ABSENT:
            owner.pop(name, None)
        else:
            owner[name] = value
    elif value is ABSENT:
        if name in vars(owner):
            delattr(owner, name)
    else:
        setattr(owner, name, value)


def _install(patch: Patch, wiring: Wiring | None) -> None:
    if patch in _INSTALLED:
        raise RuntimeError(f"{patch.owner}.{patch.attribute} is patched already")
    owner = patch.resolve()
    own = holding(patch)
    if own is not ABSENT:
        base = own
    else:
        base = None if patch.item else inspect.getattr_static(owner, patch.attribute)
    ours = patch.make(base) if patch.when is None else patch.make(base, wiring)
    record = _INSTALLED[patch] = _Installed(patch, owner, own, ours)
    _put(record, own if _SHIPPED and patch.as_shipped else ours)


def _uninstall(patch: Patch) -> None:
    record = _INSTALLED.pop(patch)
    _put(record, record.original)


def _applies(patch: Patch, wiring: Wiring) -> bool:
    return patch.when in (wiring.provider, wiring.transport)


@contextlib.contextmanager
def patched_crypten(wiring: Wiring | None = None) -> Iterator[None]:
    """CrypTen with the table's entries inside the block: those for every block and, with
    a ``wiring`` (a running session), that session's. Blocks nest (one session's at a
    time); the entries leave with the block that brought them, and after the outermost
    every patched attribute is CrypTen's own object again."""
    global _BLOCKS, _WIRING
    import_crypten()
    with _LOCK:
        if wiring is not None and _WIRING is not None:
            raise RuntimeError("CrypTen is wired to a session already")
        _BLOCKS += 1
        if wiring is not None:
            _WIRING = wiring
        try:
            for patch in PATCHES:
                if patch.when is None and _BLOCKS == 1:
                    _install(patch, None)
                elif patch.when is not None and wiring is not None and _applies(patch, wiring):
                    _install(patch, wiring)
        except BaseException:
            _leave(wiring)
            raise
        finally:
            _forget_config_cache()
    try:
        yield
    finally:
        with _LOCK:
            _leave(wiring)
            _forget_config_cache()


def _leave(wiring: Wiring | None) -> None:
    """Undo what the block with ``wiring`` brought (all of it, if it is the last open)."""
    global _BLOCKS, _WIRING
    if wiring is not None and _WIRING is wiring:
        for patch in reversed(list(_INSTALLED)):
            if patch.when is not None:
                _uninstall(patch)
        _WIRING = None
    _BLOCKS -= 1
    if _BLOCKS == 0:
        for patch in reversed(list(_INSTALLED)):
            _uninstall(patch)


@contextlib.contextmanager
def shipped_crypten() -> Iterator[None]:
    """Run CrypTen as shipped inside the block, for stock baselines: CrypTen's own objects
    for the ``speed`` entries and our protocols; what CrypTen needs on this torch, and a
    session's communicator and tuple provider, stay. Blocks nest."""
    global _SHIPPED
    with _LOCK:
        _SHIPPED += 1
        if _SHIPPED == 1:
            for record in reversed(list(_INSTALLED.values())):
                if record.patch.as_shipped:
                    _put(record, record.original)
            _forget_config_cache()
    try:
        yield
    finally:
        with _LOCK:
            _SHIPPED -= 1
            if _SHIPPED == 0:
                for record in _INSTALLED.values():
                    if record.patch.as_shipped:
                        _put(record, record.ours)
                _forget_config_cache()


def shipped() -> bool:
    """Whether a :func:`shipped_crypten` block is open."""
    return _SHIPPED > 0


def comparison_provider() -> Any:
    """The running session's dealer provider, whose comparison protocol the MPC layers call
    directly; None without a session, with CrypTen's own provider, or inside
    :func:`shipped_crypten`."""
    if _WIRING is None or shipped():
        return None
    return _WIRING.dealer_provider
