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
from typing import Annotated, Any, Literal

from annotated_types import MinLen
from pydantic import AfterValidator, Field
from pydantic import dataclasses as pydantic_dataclasses

from smpc_synth.config import ADDRESS, SECTION_RULES, MemberName, RunConfig, build_section, doc
from smpc_synth.errors import InputError
from smpc_synth.net.addresses import is_loopback as _is_loopback_host
from smpc_synth.net.addresses import split_address
from smpc_synth.runtime.roles import ROLES, SERVICE_ROLES

ROLE_NAMES: tuple[str, ...] = tuple(ROLES)
Role = Literal[ROLE_NAMES]


def _host_port(address: str) -> str:
    try:
        split_address(address, "a member")
    except InputError:
        raise ValueError(f"port out of range in {address!r}") from None
    return address


Address = Annotated[str, Field(pattern=ADDRESS), AfterValidator(_host_port)]
PathText = Annotated[str, MinLen(1)]


# -- the file's tables, as validated -------------------------------------------------------


@pydantic_dataclasses.dataclass(config=SECTION_RULES)
class PartyTable:
    """``[party]``: who this member is and where its files are."""

    name: Annotated[MemberName, doc("this member's name (as in its certificate)")]
    listen: Annotated[Address, doc("`host:port` this member listens on")]
    schema: Annotated[
        PathText, doc("the public schema; every member's hash of it is checked at the handshake")
    ]
    role: Annotated[Role, doc("what this member does")] = "data"
    session: Annotated[str, Field(min_length=1), doc("session id every member shares")] = "default"
    out: Annotated[PathText | None, doc("output folder; unset = `out/NAME`")] = None
    data: Annotated[PathText | None, doc("this party's table (data parties only)")] = None
    allow_insecure: Annotated[
        bool, doc("plain TCP off loopback without a `[tls]` table; the log repeats it")
    ] = False
    release: Annotated[
        bool,
        doc(
            "gate and sign its own outputs; `simulate` sets it false because the launcher does "
            "it against the holdout"
        ),
    ] = True


@pydantic_dataclasses.dataclass(config=SECTION_RULES)
class TlsTable:
    """``[tls]``: this member's certificates (from ``smpc-synth certs``)."""

    ca: Annotated[PathText, doc("the session CA certificate (`ca.pem`)")]
    cert: Annotated[PathText, doc("this member's certificate")]
    key: Annotated[PathText, doc("this member's private key (keep it private: mode 0600)")]


@pydantic_dataclasses.dataclass(config=SECTION_RULES)
class PeerEntry:
    """``[[peers]]``: one per other member."""

    name: Annotated[MemberName, doc("the member's name (as in its certificate)")]
    address: Annotated[Address, doc("`host:port` where it listens")]
    role: Annotated[Role, doc("what that member does")] = "data"


PARTY_FILE_TABLES: dict[str, type] = {"party": PartyTable, "tls": TlsTable, "peers": PeerEntry}


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
        holders = self.members_of(role)
        return holders[0] if holders else None

    def members_of(self, role: Role) -> list[str]:
        """Every member (this one included) with ``role``, in file order."""
        names = [self.name] if self.role == role else []
        return names + [m.name for m in self.peers if m.role == role]

    @property
    def uses_tls(self) -> bool:
        return self.tls_ca is not None

    def require_loopback_or_flag(self) -> None:
        """Plain TCP only on loopback, or with ``allow_insecure`` (docs/design.md §4); gloo's
        rendezvous only on loopback, or with the run's ``network.allow_insecure``."""
        if self.run.mode == "mpc" and self.run.mpc.transport == "gloo":
            from smpc_synth.crypten_backend.transport import check_gloo

            try:
                check_gloo(self.run.mpc.rendezvous, self.run.network.allow_insecure)
            except InputError as exc:
                raise InputError(f"{self.source} [run]: {exc}") from None
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
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read the file ({exc.strerror})") from None
    return party_config_from_dict(raw, base=path.parent, source=source, role=role)


def party_config_from_dict(
    raw: dict[str, Any], base: Path, source: str, role: Role | None = None
) -> PartyConfig:
    """Validate every table, then the session as a whole, before any file or socket is used."""
    known = {*PARTY_FILE_TABLES, "run"}
    for key in raw:
        if key not in known:
            raise InputError(f"{source}: unknown table '{key}' (known: {', '.join(sorted(known))})")
    if not isinstance(raw.get("party"), dict):
        raise InputError(f"{source}: missing table [party]")
    party_raw = dict(raw["party"])
    if role is not None:
        party_raw.setdefault("role", role)
    party: PartyTable = build_section(PartyTable, party_raw, source, "party.")
    if role is not None and party.role != role:
        raise InputError(
            f"{source}: key 'party.role' is {party.role!r} but this command runs a {role!r}"
        )
    tls = None if raw.get("tls") is None else build_section(TlsTable, raw["tls"], source, "tls.")
    peers_raw = raw.get("peers", [])
    if not isinstance(peers_raw, list):
        raise InputError(f"{source}: key 'peers' must be a list of [[peers]] tables")
    peers = [
        build_section(PeerEntry, entry, source, f"peers[{i}].") for i, entry in enumerate(peers_raw)
    ]
    names = [party.name] + [p.name for p in peers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{source}: member name {duplicates[0]!r} appears twice")
    run = RunConfig.from_dict(raw.get("run", {}), source=source, prefix="run.")

    def path_of(value: str | None) -> Path | None:
        return None if value is None else (base / value).resolve()

    tls_paths: dict[str, Path | None] = dict.fromkeys(("ca", "cert", "key"))
    if tls is not None:
        for key in tls_paths:
            tls_paths[key] = path = path_of(getattr(tls, key))
            if not path.is_file():
                raise InputError(f"{source}: key 'tls.{key}': file {path} not found")
    cfg = PartyConfig(
        name=party.name,
        role=party.role,
        listen=party.listen,
        session=party.session,
        out=path_of(party.out) or (base / "out" / party.name).resolve(),
        run=run,
        peers=[Member(p.name, p.address, p.role) for p in peers],
        data=path_of(party.data),
        schema=path_of(party.schema),
        tls_ca=tls_paths["ca"],
        tls_cert=tls_paths["cert"],
        tls_key=tls_paths["key"],
        allow_insecure=party.allow_insecure,
        release=party.release,
        source=source,
    )
    if party.role == "data" and cfg.data is None:
        raise InputError(f"{source}: key 'party.data' is required for a data party")
    if party.role != "data" and cfg.data is not None:
        raise InputError(f"{source}: key 'party.data': a {party.role} holds no data; remove it")
    check_session(
        run, cfg.data_parties, {r: n for r in SERVICE_ROLES if (n := cfg.members_of(r))}, source
    )
    cfg.require_loopback_or_flag()
    return cfg


def check_session(
    run: RunConfig, data_parties: tuple[str, ...], services: dict[str, list[str]], source: str
) -> None:
    """What the run asks of the session's members: checked before anyone connects.

    ``services`` maps ``dealer`` / ``aggregator`` to the members with that role.
    """
    from smpc_synth.models import check_epochs_apply

    check_epochs_apply(run.generator, run.epochs, f"{source}: key 'run.epochs'")
    count = len(data_parties)
    if run.mode == "mpc" and count < 2:
        raise InputError(
            f"{source}: key 'run.mode': 'mpc' needs at least 2 data parties, the session has "
            f"{count}"
        )
    needed = []
    if run.mode == "mpc" and run.mpc.provider == "dealer":
        needed.append(("dealer", "key 'run.mpc.provider': 'dealer'"))
    if run.mode == "federated":
        needed.append(("aggregator", "key 'run.mode': 'federated'"))
    for service, why in needed:
        holders = services.get(service, [])
        if len(holders) != 1:
            raise InputError(
                f"{source}: {why} needs exactly one member with role {service!r}, the session "
                f"has {len(holders)}" + (f" ({', '.join(holders)})" if holders else "")
            )
    for i, name in enumerate(run.output_parties):
        if name not in data_parties:
            raise InputError(
                f"{source}: key 'run.output_parties[{i}]': {name!r} is not a data party of this "
                f"session ({', '.join(data_parties)})"
            )
    dp_fedavg = run.dp.enabled and run.dp.unit == "party"  # its own layout (dp.noise)
    if run.mode == "federated" and run.federated.he == "ckks" and not dp_fedavg:
        from smpc_synth.he.params import choose_layout

        try:
            choose_layout(
                run.federated.update_bound,
                count,
                max_error=run.federated.max_error,
                masked=run.federated.masking,
            )
        except InputError as exc:
            raise InputError(
                f"{source}: keys 'run.federated.update_bound' / 'run.federated.max_error': {exc}"
            ) from None
