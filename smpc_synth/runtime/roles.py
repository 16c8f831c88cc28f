"""Every kind of session member in one table: the name its config gives, the command that
starts it, what its progress says it does, and what it plays once the session is agreed.

The runtime dispatches through this table only, and the command line offers its commands,
so a new kind of member is one row here and one function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smpc_synth.registry import resolve


@dataclass(frozen=True)
class Role:
    """One kind of session member."""

    name: str  # `role` in a member's config
    command: str  # the `smpc-synth` command that runs it
    stage: str  # what its progress shows once the session is agreed
    play: str  # "module:function(cfg, schema, rows, mesh, resume, progress) -> metrics"


ROLES: dict[str, Role] = {
    role.name: role
    for role in (
        Role("data", "party", "training", "smpc_synth.runtime.party:play_data_party"),
        Role("dealer", "dealer", "serving Beaver triples", "smpc_synth.runtime.party:play_dealer"),
        Role("aggregator", "aggregator", "aggregating", "smpc_synth.runtime.party:play_aggregator"),
    )
}
# Members that hold no rows and serve the data parties.
SERVICE_ROLES: tuple[str, ...] = tuple(name for name in ROLES if name != "data")


def player(role: str) -> Any:
    """The function that plays ``role`` after the handshake."""
    return resolve({name: r.play for name, r in ROLES.items()}, role, "role")
