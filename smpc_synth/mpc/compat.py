"""Every fix CrypTen 0.4.1 needs to run (and run fast) on torch 2.13, in one place.

CrypTen is unmaintained since 2022. Import this module (``import smpc_synth.mpc.compat``)
before ``crypten``; :func:`import_crypten` does both. Each fix says why it exists, and
``tests/test_compat.py`` fails if a fix stops working or stops being needed.
"""

from __future__ import annotations

import functools
import importlib
import sys
from types import ModuleType

import torch

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


def _load_trusted(f, **kwargs):
    # torch >= 2.6 defaults `torch.load(weights_only=True)`, which refuses the lists and
    # dicts of tensors CrypTen writes in `crypten.save` and in the provider caches. These
    # are local files this party wrote itself, never bytes from the network.
    kwargs.setdefault("weights_only", False)
    return torch.load(f, **kwargs)


def _patch_loads(crypten: ModuleType) -> None:
    original_load = crypten.load

    @functools.wraps(original_load)
    def load(f, load_closure=None, **kwargs):
        if load_closure is None or load_closure is torch.load:
            return _load_trusted(f, **kwargs)
        return load_closure(f, **kwargs)

    crypten.load = load
    provider_module = importlib.import_module("crypten.mpc.provider.provider")
    provider_module.torch = _TorchWithTrustedLoad(torch)


class _TorchWithTrustedLoad:
    """A view of ``torch`` whose ``load`` reads CrypTen's own cache files (see above)."""

    def __init__(self, wrapped: ModuleType):
        self._wrapped = wrapped

    def __getattr__(self, name: str):
        if name == "load":
            return _load_trusted
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


def _skip_debug_validation(crypten: ModuleType) -> None:
    # Every attribute access on an encrypted tensor goes through crypten.debug's
    # `validate_attribute`, which reads `cfg.debug.validation_mode` through omegaconf
    # (~75 us): a tenth of an MPC training step. smpc-synth never turns CrypTen's debug
    # validation on, so the undecorated `__getattribute__` is put back.
    tensor_class = crypten.CrypTensor
    current = tensor_class.__dict__["__getattribute__"]
    if current.__code__.co_name == "validate_attribute":
        tensor_class.__getattribute__ = current.__wrapped__


def apply() -> None:
    """Apply every fix once; safe to call many times."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_onnx_registration()
    crypten = importlib.import_module("crypten")
    _patch_loads(crypten)
    _patch_onnx_export(crypten)
    _skip_debug_validation(crypten)
    _APPLIED = True


def import_crypten() -> ModuleType:
    """Return the ``crypten`` module with every fix applied."""
    apply()
    return importlib.import_module("crypten")
