"""Name -> "module:attribute" tables, resolved lazily so that a plaintext run never imports
CrypTen or TenSEAL (modes, benchmark suites)."""

from __future__ import annotations

import importlib
from typing import Any

from smpc_synth.errors import InputError


def resolve(table: dict[str, str], name: str, what: str) -> Any:
    """The attribute registered under ``name``; InputError naming the choices otherwise."""
    if name not in table:
        raise InputError(f"unknown {what} {name!r}; choose one of {', '.join(table)}")
    module_name, attribute = table[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise InputError(f"{what} {name!r} is not available in this version") from None
        raise
    return getattr(module, attribute)
