"""The run configuration: every default in one place, loaded from TOML or the command line.

A run config is what all parties of a session must agree on (its hash enters the handshake).
Per-party settings (name, addresses, certificate paths, data file) live in
:mod:`smpc_synth.runtime.party_config`, not here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from smpc_synth.errors import InputError

Mode = Literal["plaintext", "federated", "mpc"]
MODES: tuple[str, ...] = ("plaintext", "federated", "mpc")


@dataclass
class FederatedConfig:
    """Federated averaging, CKKS encryption and differential privacy."""

    local_epochs: int = 1
    he: Literal["ckks", "none"] = "ckks"
    masking: bool = True  # pairwise zero-sum masks close the aggregator+one-party gap
    update_bound: float = 0.0625  # |value| bound of one party's update for fixed-point packing
    max_error: float = 1e-6  # max abs error of the decrypted sum (no DP)
    dp: bool = False
    target_epsilon: float | None = None
    delta: float = 1e-5
    clip_norm: float = 1.0
    noise_multiplier: float | None = None  # derived from target_epsilon when None


@dataclass
class MpcConfig:
    """CrypTen transport and the source of Beaver triples."""

    transport: Literal["grpc", "gloo"] = "grpc"
    provider: Literal["dealer", "tfp"] = "dealer"  # tfp lets party 0 see everything
    insecure_dev: bool = False
    # fixes the dealer's and CrypTen's PRG keys, so a run can be repeated bit for bit (tests,
    # debugging); anyone who knows it can rebuild every triple, hence insecure_dev only
    debug_seed: int | None = None
    rendezvous: str | None = None  # gloo only: tcp://HOST:PORT of party 0 (simulate picks one)


@dataclass
class NetworkConfig:
    """Deadlines and limits; nothing on the network is unbounded."""

    heartbeat_interval_s: float = 2.0
    peer_timeout_s: float = 30.0  # a silent peer is declared dead after this long
    connect_timeout_s: float = 60.0  # how long to retry a peer that is not up yet
    call_deadline_s: float = 30.0
    max_message_bytes: int = 64 * 1024 * 1024
    allow_insecure: bool = False  # plain TCP off loopback; the log repeats it


@dataclass
class GateConfig:
    """Release gate: synthetic data failing any threshold is not written (exit code 3)."""

    enabled: bool = True
    min_quality_score: float = 0.6
    min_category_coverage: float = 0.8
    min_variance_ratio: float = 0.2
    max_exact_copy_rate: float = 0.05
    min_dcr_ratio: float = 0.5  # median DCR(synthetic->train) / DCR(holdout->train)


@dataclass
class RunConfig:
    """What a run does. Every field has a sensible default; see docs/configuration.md."""

    mode: Mode = "plaintext"
    generator: str = "gaussian"
    epochs: int | None = None  # None: the generator's own default
    seed: int = 0
    holdout_fraction: float = 0.2
    split: str = "iid"  # or "noniid:COLUMN"
    target: str | None = None  # column for utility (TSTR); None: the data set's default
    sample_rows: int | None = None  # rows of synthetic.csv; None: as many as training rows
    output_parties: list[str] = field(default_factory=list)  # who gets the generator; []: all
    generator_params: dict[str, Any] = field(default_factory=dict)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    mpc: MpcConfig = field(default_factory=MpcConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    gate: GateConfig = field(default_factory=GateConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without None values (TOML has no null; None means 'default')."""
        return drop_none(self.to_dict())

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON form; equal configs give equal fingerprints."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        """Build from a (TOML) mapping; unknown keys and wrong types are named."""
        cfg = _build(cls, raw, source, prefix="")
        cfg.validate(source)
        return cfg

    def validate(self, source: str = "config") -> None:
        if self.mode not in MODES:
            raise InputError(f"{source}: key 'mode': {self.mode!r} is not one of {MODES}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise InputError(f"{source}: key 'holdout_fraction' must be in [0, 1)")
        if self.epochs is not None and self.epochs < 1:
            raise InputError(f"{source}: key 'epochs' must be at least 1")
        if not (self.split == "iid" or self.split.startswith("noniid:")):
            raise InputError(f"{source}: key 'split': use 'iid' or 'noniid:COLUMN'")
        if self.mpc.debug_seed is not None and not self.mpc.insecure_dev:
            raise InputError(
                f"{source}: key 'mpc.debug_seed' needs 'mpc.insecure_dev' = true "
                "(a known seed gives away every triple)"
            )


def drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def _build(cls: type, raw: dict[str, Any], source: str, prefix: str):
    if not isinstance(raw, dict):
        raise InputError(f"{source}: key '{prefix.rstrip('.')}' must be a table")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(sorted(known))})"
        )
    hints = get_type_hints(cls)
    defaults = cls()
    kwargs = {}
    for name, value in raw.items():
        current = getattr(defaults, name)
        if is_dataclass(current):
            kwargs[name] = _build(type(current), value, source, f"{prefix}{name}.")
            continue
        if not _fits(value, hints[name]):
            raise InputError(
                f"{source}: key '{prefix}{name}' should be {_describe(hints[name])}, got {value!r}"
            )
        kwargs[name] = value
    return cls(**kwargs)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a TOML value matches a field's annotation (scalars, Literal, Optional, list)."""
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return any(_fits(value, arg) for arg in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return " or ".join(_describe(a) for a in get_args(hint) if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is list:
        return f"a list of {_describe(get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))
