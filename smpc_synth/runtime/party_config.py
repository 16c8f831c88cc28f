"""One member's configuration file: who it is, where it listens, whom it talks to.

``PARTY.toml`` has a ``[party]`` table (name, role, listen, data, schema, out, session), a
``[tls]`` table (ca, cert, key), one ``[[peers]]`` entry per other member (name, address,
role) and a ``[run]`` table: the :class:`~smpc_synth.config.RunConfig` every member must share.
Relative paths are resolved against the file's folder.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from smpc_synth.config import RunConfig
from smpc_synth.errors import InputError
from smpc_synth.net.addresses import is_loopback as _is_loopback_host

Role = Literal["data", "dealer", "aggregator"]
ROLES: tuple[str, ...] = ("data", "dealer", "aggregator")


@dataclass(frozen=True)
class Member:
    """A session member as seen from this party."""

    name: str
    address: str
    role: Role = "data"


@dataclass
class PartyConfig:
    """Everything one process needs to join a session."""

    name: str
    role: Role
    listen: str
    session: str
    out: Path
    run: RunConfig
    peers: list[Member]
    data: Path | None = None
    schema: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_insecure: bool = False
    release: bool = True  # gate, publish and sign its own outputs (False: a launcher does it)
    source: str = "config"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def data_parties(self) -> tuple[str, ...]:
        """Data parties in rank order (sorted by name, so every member agrees)."""
        names = [m.name for m in self.peers if m.role == "data"]
        if self.role == "data":
            names.append(self.name)
        return tuple(sorted(names))

    def service(self, role: Role) -> str | None:
        """The name of the member with ``role`` (dealer or aggregator), if any."""
        for member in self.peers:
            if member.role == role:
                return member.name
        return self.name if self.role == role else None

    @property
    def uses_tls(self) -> bool:
        return self.tls_ca is not None

    def require_loopback_or_flag(self) -> None:
        """Plain TCP only on loopback, or with ``allow_insecure`` (docs/design.md §4)."""
        if self.uses_tls or self.allow_insecure:
            return
        for where, address in [("party.listen", self.listen)] + [
            (f"peers.{m.name}.address", m.address) for m in self.peers
        ]:
            if not is_loopback(address):
                raise InputError(
                    f"{self.source}: key '{where}' = {address!r} is not a loopback address and "
                    "no [tls] table is given; add certificates (smpc-synth certs) or set "
                    "party.allow_insecure = true to send plain TCP on purpose"
                )


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` names this machine only."""
    host, _sep, _port = address.rpartition(":")
    return _is_loopback_host(host.strip("[]"))


def load_party_config(path: str | Path, role: Role | None = None) -> PartyConfig:
    """Read and check ``PARTY.toml``; every problem names the file and the key."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise InputError(f"{source}: file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: not valid TOML ({exc})") from None
    return party_config_from_dict(raw, base=path.parent, source=source, role=role)


def party_config_from_dict(
    raw: dict[str, Any], base: Path, source: str, role: Role | None = None
) -> PartyConfig:
    known = {"party", "tls", "peers", "run"}
    for key in raw:
        if key not in known:
            raise InputError(f"{source}: unknown table '{key}' (known: {', '.join(sorted(known))})")
    party = _table(raw, "party", source)
    name = _required(party, "name", source, "party")
    my_role = party.get("role", role or "data")
    if role is not None and my_role != role:
        raise InputError(
            f"{source}: key 'party.role' is {my_role!r} but this command runs a {role!r}"
        )
    if my_role not in ROLES:
        raise InputError(f"{source}: key 'party.role' must be one of {ROLES}, got {my_role!r}")
    allowed = {
        "name",
        "role",
        "listen",
        "data",
        "schema",
        "out",
        "session",
        "allow_insecure",
        "release",
    }
    _no_unknown(party, allowed, source, "party")

    def path_of(key: str, table: dict[str, Any]) -> Path | None:
        value = table.get(key)
        return None if value is None else (base / value).resolve()

    tls = raw.get("tls")
    tls_paths: dict[str, Path | None] = {"ca": None, "cert": None, "key": None}
    if tls is not None:
        _no_unknown(tls, set(tls_paths), source, "tls")
        for key in tls_paths:
            _required(tls, key, source, "tls")
            tls_paths[key] = path_of(key, tls)
            if not tls_paths[key].is_file():
                raise InputError(f"{source}: key 'tls.{key}': file {tls_paths[key]} not found")

    peers = []
    for i, entry in enumerate(raw.get("peers", [])):
        where = f"peers[{i}]"
        _no_unknown(entry, {"name", "address", "role"}, source, where)
        peer_role = entry.get("role", "data")
        if peer_role not in ROLES:
            raise InputError(f"{source}: key '{where}.role' must be one of {ROLES}")
        peers.append(
            Member(
                _required(entry, "name", source, where),
                _required(entry, "address", source, where),
                peer_role,
            )
        )
    names = [name] + [p.name for p in peers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{source}: member name {duplicates[0]!r} appears twice")

    cfg = PartyConfig(
        name=name,
        role=my_role,
        listen=_required(party, "listen", source, "party"),
        session=party.get("session", "default"),
        out=path_of("out", party) or (base / "out" / name).resolve(),
        run=RunConfig.from_dict(raw.get("run", {}), source=f"{source} [run]"),
        peers=peers,
        data=path_of("data", party),
        schema=path_of("schema", party),
        tls_ca=tls_paths["ca"],
        tls_cert=tls_paths["cert"],
        tls_key=tls_paths["key"],
        allow_insecure=bool(party.get("allow_insecure", False)),
        release=bool(party.get("release", True)),
        source=source,
    )
    if cfg.schema is None:  # its hash is part of the handshake, on every member
        raise InputError(f"{source}: missing key 'party.schema'")
    if my_role == "data" and cfg.data is None:
        raise InputError(f"{source}: key 'party.data' is required for a data party")
    cfg.require_loopback_or_flag()
    return cfg


def _table(raw: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise InputError(f"{source}: missing table [{key}]")
    return value


def _required(table: dict[str, Any], key: str, source: str, where: str) -> Any:
    if key not in table or table[key] in ("", None):
        raise InputError(f"{source}: missing key '{where}.{key}'")
    return table[key]


def _no_unknown(table: dict[str, Any], allowed: set[str], source: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise InputError(
                f"{source}: unknown key '{where}.{key}' (known: {', '.join(sorted(allowed))})"
            )
