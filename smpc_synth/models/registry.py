"""Generators by name, so configs and the command line can choose one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

from smpc_synth.errors import InputError
from smpc_synth.models import schedule
from smpc_synth.models.base import Generator, parse_hparams

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


def trains_in_epochs(name: str) -> bool:
    """Whether ``epochs`` applies to generator ``name`` (closed-form fits take one pass)."""
    return any(f.name == "epochs" for f in fields(get_generator(name).Params))


def epochs_problem(name: str, epochs: int | None) -> str | None:
    """Why ``epochs`` cannot be honoured by generator ``name``, or None if it can."""
    if epochs is None or trains_in_epochs(name):
        return None
    neural = [g for g in available_generators() if trains_in_epochs(g)]
    return (
        f"{epochs} does not apply to generator {name!r}: it is not trained in epochs (a "
        f"closed-form fit, or rounds of noisy marginals); drop it or choose one of "
        f"{', '.join(neural)}"
    )


def check_epochs_apply(name: str, epochs: int | None, where: str) -> None:
    """Refuse an epoch count for a generator that cannot honour it (InputError, exit 2).

    ``where`` names the setting as the user gave it, e.g. ``"--epochs"``.
    """
    problem = epochs_problem(name, epochs)
    if problem:
        raise InputError(f"{where} = {problem}")


def planned_epochs(name: str, epochs: int | None, params: Mapping[str, Any] | None = None) -> int:
    """How many epochs a fit of ``name`` runs: ``epochs``, else its parameters' default."""
    if not trains_in_epochs(name):
        return 1
    if epochs is not None:
        return epochs
    cls = get_generator(name)
    return parse_hparams(cls.Params, dict(params or {}), f"generator '{name}'").epochs


def hyperparameters(
    name: str, params: Mapping[str, Any] | None = None, epochs: int | None = None
) -> dict[str, Any]:
    """Every hyperparameter a fit of ``name`` with ``params`` for ``epochs`` uses (defaults
    and the schedule's values filled in): what a run records."""
    cls = get_generator(name)
    values = asdict(parse_hparams(cls.Params, dict(params or {}), f"generator '{name}'"))
    if "epochs" in values:
        values["epochs"] = planned_epochs(name, epochs, params)
    return values


def check_batch_rows(
    name: str, params: Mapping[str, Any] | None, rows: int, source: str, what: str
) -> None:
    """Refuse (InputError) a schedule of ``name`` whose batch exceeds the ``rows`` a batch is
    drawn from (:func:`smpc_synth.models.schedule.check_batch_rows`)."""
    cls = get_generator(name)
    hparams = parse_hparams(cls.Params, dict(params or {}), f"generator '{name}'")
    schedule.check_batch_rows(hparams, rows, source, what)
