"""Generators by name, so configs and the command line can choose one."""

from __future__ import annotations

from typing import TypeVar

from smpc_synth.errors import InputError
from smpc_synth.models.base import Generator

G = TypeVar("G", bound=type[Generator])

_REGISTRY: dict[str, type[Generator]] = {}


def register(cls: G) -> G:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"generator name {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def get_generator(name: str) -> type[Generator]:
    """The generator class called ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(
            f"unknown generator {name!r} (available: {', '.join(available_generators())})"
        ) from None


def available_generators() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))
