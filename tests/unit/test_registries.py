"""Every lazily resolved name -> "module:attribute" entry points at something that exists.

The tables are strings so that a plaintext run never imports CrypTen or TenSEAL; a module
moved without its entry would otherwise surface only when a run picks that name.
"""

from __future__ import annotations

import pytest

from smpc_synth.registry import resolve
from smpc_synth.runtime.roles import ROLES
from smpc_synth.train import STRATEGIES

TABLES = {
    "mode": STRATEGIES,
    "role": {name: role.play for name, role in ROLES.items()},
}


@pytest.mark.parametrize(
    ("what", "name"), [(what, name) for what, table in TABLES.items() for name in table]
)
def test_entry_resolves_to_a_callable(what: str, name: str) -> None:
    assert callable(resolve(TABLES[what], name, what))
