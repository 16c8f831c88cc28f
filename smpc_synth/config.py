"""The run configuration: one validated schema for every setting, its default and its range.

A run config is what all parties of a session must agree on (its hash enters the handshake).
Per-party settings (name, addresses, certificate paths, data file) live in
:mod:`smpc_synth.runtime.party_config`, not here.

The sections are pydantic dataclasses: a value of the wrong type, out of range, or an
unknown key is refused when the config is built (:meth:`RunConfig.from_dict`), before any
file is read or socket opened, with a message naming the source and the key. The same
schema generates the reference table of ``docs/configuration.md``
(:mod:`smpc_synth.config_reference`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, field, fields, is_dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from smpc_synth.errors import InputError

MODES: tuple[str, ...] = ("plaintext", "federated", "mpc")
Mode = Literal[MODES]
TRANSPORTS: tuple[str, ...] = ("grpc", "gloo")
PROVIDERS: tuple[str, ...] = ("dealer", "tfp")
HE_SCHEMES: tuple[str, ...] = ("ckks", "none")

# Ranges that no run needs to leave and that keep every consumer within its types.
MAX_SEED = 2**32 - 1  # scikit-learn's and NumPy's legacy random_state limit
MAX_DEBUG_SEED = 2**63 - 1
MAX_SECONDS = 86_400.0  # a day: larger waits overflow thread timeouts and mean a hang
MIN_MESSAGE_BYTES = 128 * 1024  # a frame carries up to 64 KiB of header besides its data
MAX_MESSAGE_BYTES = 2**31 - 1  # gRPC's message size options are C ints
MEMBER_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # one DNS label, as in certificates
ADDRESS = r"^(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):\d{1,5}$"  # host:port or [v6]:port
SPLIT = r"^(iid|noniid:.+)$"
RENDEZVOUS = r"^tcp://[^\s/]+:\d{1,5}$"
# What each pattern means, for messages ("must be ...") and the generated reference.
PATTERN_WORDS = {
    MEMBER_NAME: "a member name (lower-case letters, digits and inner hyphens, 1-63)",
    ADDRESS: "host:port",
    SPLIT: "'iid' or 'noniid:COLUMN'",
    RENDEZVOUS: "tcp://HOST:PORT",
}

# Strict: a TOML string "3" is not the integer 3, true is not 1; an int is accepted as float.
SECTION_RULES = ConfigDict(
    extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True
)

Seconds = Annotated[float, Gt(0), Le(MAX_SECONDS)]
Share = Annotated[float, Ge(0), Le(1)]
NonNegative = Annotated[float, Ge(0)]
Positive = Annotated[float, Gt(0)]
MemberName = Annotated[str, Field(pattern=MEMBER_NAME)]


def doc(text: str, **extra: Any) -> Any:
    """Field metadata: the meaning shown in docs/configuration.md (and JSON-schema extras)."""
    return Field(description=text, json_schema_extra=extra or None)


def _generator_choices(schema: dict[str, Any]) -> None:
    from smpc_synth.models import available_generators

    schema["enum"] = list(available_generators())


class ConfigProblem(ValueError):
    """A value that breaks a rule involving more than its type: names the key at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(config=SECTION_RULES)
class FederatedConfig:
    """Federated averaging and CKKS encryption (differential privacy: :class:`DpConfig`)."""

    local_epochs: Annotated[int, Ge(1), doc("local epochs per round")] = 1
    he: Annotated[
        Literal[HE_SCHEMES],
        doc("`ckks`: encrypted aggregation; `none`: the aggregator sees updates"),
    ] = "ckks"
    masking: Annotated[
        bool,
        doc("pairwise zero-sum masks under CKKS: aggregator + one party cannot read an update"),
    ] = True
    update_bound: Annotated[
        Positive,
        doc("bound on each value of one party's weighted update (fixed-point packing)"),
    ] = 0.0625
    max_error: Annotated[
        Positive,
        doc("max abs error of the decrypted sum (sets the fixed-point resolution)"),
    ] = 1e-6


@dataclass(config=SECTION_RULES)
class DpConfig:
    """Differential privacy: one (epsilon, delta) budget for everything the run releases."""

    epsilon: Annotated[
        Positive | None,
        doc(
            "the run's whole budget; set, it turns DP on for everything the run releases "
            "(`--epsilon`, or the older `--dp --target-epsilon`); see docs/privacy.md"
        ),
    ] = None
    delta: Annotated[
        float,
        Gt(0),
        Lt(1),
        doc(
            "DP delta of the run (`--delta`); keep it well below 1 / rows (a run warns and "
            "notes it otherwise)"
        ),
    ] = 1e-6
    unit: Annotated[
        Literal["record", "party"],
        doc(
            "what one guarantee protects: `record` (a row, every mode) or `party` (a party's "
            "whole table: DP-FedAvg, federated only)"
        ),
    ] = "record"
    accountant: Annotated[
        str | None,
        doc(
            "unset = the generator's own: `rdp` (Opacus's RDP accountant) for gaussian, vae "
            "and gan, `zcdp` for aim and mst; see the registry in `smpc_synth.dp.accountant`"
        ),
    ] = None
    clip_norm: Annotated[
        Positive,
        doc("L2 bound of one example's gradient (record) or one party's update (party)"),
    ] = 1.0
    encoder_share: Annotated[
        float, Gt(0), Lt(1), doc("share of the budget for the encoder's noisy statistics")
    ] = 0.1
    moments_share: Annotated[
        float,
        Gt(0),
        Lt(1),
        doc("`gan` only: share for the noisy moments its moment loss matches"),
    ] = 0.1
    insecure_debug_seed: Annotated[
        Annotated[int, Ge(0), Le(MAX_DEBUG_SEED)] | None,
        doc("tests only: reproducible noise, hence no privacy (the privacy record says so)"),
    ] = None
    insecure_null_data: Annotated[
        bool,
        doc(
            "tests only, with `insecure_debug_seed`: every mechanism ignores its data (nothing "
            "else may then depend on the rows)"
        ),
    ] = False

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None

    @model_validator(mode="after")
    def _insecure_needs_a_budget(self) -> DpConfig:
        if self.epsilon is None and (
            self.insecure_debug_seed is not None or self.insecure_null_data
        ):
            raise ConfigProblem("insecure_debug_seed", "the dp.insecure_* keys need 'dp.epsilon'")
        if self.insecure_null_data and self.insecure_debug_seed is None:
            raise ConfigProblem("insecure_null_data", "needs 'dp.insecure_debug_seed'")
        return self


@dataclass(config=SECTION_RULES)
class MpcConfig:
    """CrypTen transport and the source of Beaver triples."""

    transport: Annotated[
        Literal[TRANSPORTS],
        doc(
            "`grpc` (our mutually authenticated links) or `gloo` (CrypTen's own, trusted networks)"
        ),
    ] = "grpc"
    provider: Annotated[
        Literal[PROVIDERS],
        doc("`dealer` (Beaver triples from a separate dealer member) or `tfp` (tests only)"),
    ] = "dealer"
    insecure_dev: Annotated[
        bool, doc("required for `tfp`, whose party 0 sees every secret; the log repeats it")
    ] = False
    debug_seed: Annotated[
        Annotated[int, Ge(0), Le(MAX_DEBUG_SEED)] | None,
        doc(
            "fixes the dealer's and CrypTen's PRG keys so an MPC run repeats bit for bit (tests, "
            "debugging); every PRG restarts at each epoch's first step, so a resumed run ends "
            "as the uninterrupted one; needs `insecure_dev`, since anyone who knows the seed "
            "can rebuild every triple"
        ),
    ] = None
    rendezvous: Annotated[
        Annotated[str, Field(pattern=RENDEZVOUS)] | None,
        doc(
            "`gloo` only: `tcp://HOST:PORT` where party 0 opens CrypTen's rendezvous; a loopback "
            "address unless `network.allow_insecure` (gloo is plain TCP)"
        ),
    ] = None

    @model_validator(mode="after")
    def _insecure_needs_the_flag(self) -> MpcConfig:
        if self.provider == "tfp" and not self.insecure_dev:
            raise ConfigProblem(
                "provider",
                "'tfp' lets the first party see every secret; it is refused unless "
                "'mpc.insecure_dev' = true (tests only)",
            )
        if self.debug_seed is not None and not self.insecure_dev:
            raise ConfigProblem(
                "debug_seed",
                "needs 'mpc.insecure_dev' = true (a known seed gives away every triple)",
            )
        return self


@dataclass(config=SECTION_RULES)
class NetworkConfig:
    """Deadlines and limits; nothing on the network is unbounded."""

    heartbeat_interval_s: Annotated[
        Seconds, doc("heartbeat period between members (below `peer_timeout_s`)")
    ] = 2.0
    peer_timeout_s: Annotated[
        Seconds,
        doc(
            "a member that dies or is stopped: every other member has stopped within this "
            "long, naming it (docs/faults.md)"
        ),
    ] = 30.0
    progress_timeout_s: Annotated[
        Seconds,
        doc(
            "the longest wait for a message from a member that is alive but sends nothing "
            "(its protocol thread stuck); at least `peer_timeout_s`, and above the longest "
            "local computation between two messages (a federated round's local epochs, an "
            "output party's sampling)"
        ),
    ] = 300.0
    connect_timeout_s: Annotated[Seconds, doc("how long to retry a member that is not up yet")] = (
        60.0
    )
    call_deadline_s: Annotated[Seconds, doc("deadline of each control call")] = 30.0
    max_message_bytes: Annotated[
        int,
        Ge(MIN_MESSAGE_BYTES),
        Le(MAX_MESSAGE_BYTES),
        doc("largest message on the wire"),
    ] = 64 * 1024 * 1024
    allow_insecure: Annotated[
        bool,
        doc(
            "(run level) plain TCP off loopback, for the mesh and for gloo's rendezvous; the log "
            "repeats it; for the mesh, prefer the member's own flag"
        ),
    ] = False

    @model_validator(mode="after")
    def _deadlines_in_order(self) -> NetworkConfig:
        if self.heartbeat_interval_s >= self.peer_timeout_s:
            raise ConfigProblem(
                "heartbeat_interval_s",
                f"must be below 'peer_timeout_s' ({self.peer_timeout_s}), or every member "
                "times out",
            )
        if self.progress_timeout_s < self.peer_timeout_s:
            raise ConfigProblem(
                "progress_timeout_s",
                f"must be at least 'peer_timeout_s' ({self.peer_timeout_s}): a dead member "
                "must be named by heartbeats before any wait for its message runs out",
            )
        return self


@dataclass(config=SECTION_RULES)
class GateConfig:
    """Release gate: synthetic data failing any threshold is not written (exit code 3)."""

    enabled: Annotated[bool, doc("gate synthetic data before writing it")] = True
    min_quality_score: Annotated[Share, doc("SDMetrics quality score")] = 0.6
    min_category_coverage: Annotated[Share, doc("share of real categories present")] = 0.8
    min_variance_ratio: Annotated[
        NonNegative, doc("smallest var(synthetic)/var(real) over numeric columns")
    ] = 0.2
    max_exact_copy_rate: Annotated[
        Share,
        doc("synthetic rows equal to a training row (never below the holdout's own rate)"),
    ] = 0.05
    min_dcr_ratio: Annotated[
        NonNegative, doc("median distance to training rows, synthetic over holdout")
    ] = 0.5
    max_epsilon: Annotated[
        Positive | None,
        doc("unset = not checked; else refuse unless the run is DP with `epsilon` at most this"),
    ] = None


@dataclass(config=SECTION_RULES)
class RunConfig:
    """What a run does. Every field has a sensible default; see docs/configuration.md."""

    mode: Annotated[
        Mode, doc("how the parties train: pooled in the clear, federated, or under MPC")
    ] = "plaintext"
    generator: Annotated[
        str, Field(description="the model to train", json_schema_extra=_generator_choices)
    ] = "gaussian"
    epochs: Annotated[
        Annotated[int, Ge(1)] | None,
        doc("training epochs (federated: rounds); unset = the generator's default"),
    ] = None
    seed: Annotated[
        int,
        Ge(0),
        Le(MAX_SEED),
        doc("seeds splits, initial weights, batches and sampling: same seed, same run"),
    ] = 0
    holdout_fraction: Annotated[
        float,
        Ge(0),
        Lt(1),
        doc("share of rows no party trains on (simulate), for evaluation"),
    ] = 0.2
    split: Annotated[
        str,
        Field(pattern=SPLIT),
        doc("how `simulate` deals rows to parties: at random, or skewed by COLUMN"),
    ] = "iid"
    target: Annotated[
        Annotated[str, Field(min_length=1)] | None,
        doc("column used for utility (TSTR); unset = the data set's default"),
    ] = None
    sample_rows: Annotated[
        Annotated[int, Ge(1)] | None,
        doc(
            "rows of `synthetic.csv`; unset = as many as the pooled training rows (with "
            "`dp`: the model's noisy estimate of them)"
        ),
    ] = None
    output_parties: Annotated[
        list[MemberName], doc("data parties that receive the generator; empty = all")
    ] = field(default_factory=list)
    generator_params: Annotated[
        dict[str, Any],
        doc(
            "generator hyperparameters (table), e.g. `{ batch_size = 256 }`; vae and gan take "
            '`schedule = "latency"`: 5x the default batch, learning rate x 5, for fewer '
            "MPC rounds over a long round trip (`--schedule`; docs/scale.md)"
        ),
    ] = field(default_factory=dict)
    dp: DpConfig = field(default_factory=DpConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    mpc: MpcConfig = field(default_factory=MpcConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    gate: GateConfig = field(default_factory=GateConfig)

    @field_validator("generator")
    @classmethod
    def _known_generator(cls, name: str) -> str:
        from smpc_synth.models import available_generators

        if name not in available_generators():
            raise ValueError(
                f"unknown generator {name!r} (available: {', '.join(available_generators())})"
            )
        return name

    @field_validator("output_parties")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"{repeated[0]!r} is listed twice")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        from smpc_synth.dp import support

        try:
            support.check_config(self)  # refuses what DP cannot honour; settles fixed params
        except support.ConfigProblem as exc:
            raise ConfigProblem(exc.key, str(exc)) from None
        if self.generator_params:
            from smpc_synth.models import get_generator
            from smpc_synth.models.base import parse_hparams

            try:
                parse_hparams(
                    get_generator(self.generator).Params,
                    self.generator_params,
                    f"generator '{self.generator}'",
                )
            except InputError as exc:
                raise ConfigProblem("generator_params", str(exc)) from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without None values (TOML has no null; None means 'default')."""
        return drop_none(self.to_dict())

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON form; equal configs give equal fingerprints.

        Validation stores every float field as a float, so ``clip_norm = 2`` in one member's
        file and ``2.0`` in another's give the same hash.
        """
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config", prefix: str = "") -> RunConfig:
        """Build from a (TOML) mapping; any unknown key, wrong type or bad value is an
        :class:`InputError` naming ``source`` and the key (``prefix`` + its dotted path)."""
        _refuse_moved_keys(raw, source, prefix)
        return build_section(cls, raw, source, prefix)


MOVED_DP_KEYS = ("dp", "target_epsilon", "delta", "clip_norm", "noise_multiplier")


def _refuse_moved_keys(raw: Any, source: str, prefix: str) -> None:
    """Differential privacy moved from ``[federated]`` to ``[dp]``, which covers every mode."""
    federated = raw.get("federated") if isinstance(raw, dict) else None
    moved = [k for k in MOVED_DP_KEYS if isinstance(federated, dict) and k in federated]
    if moved:
        raise InputError(
            f"{source}: key '{prefix}federated.{moved[0]}' has moved: set 'dp.epsilon' (the "
            "run's whole budget), 'dp.delta' and 'dp.clip_norm' instead (docs/privacy.md)"
        )


def drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def sections(cls: type) -> dict[str, type]:
    """Fields of ``cls`` that are themselves config sections (tables), by name."""
    return {f.name: f.default_factory for f in fields(cls) if is_dataclass(f.default_factory)}


def build_section(cls: type, raw: Any, source: str, prefix: str = "") -> Any:
    """Validate ``raw`` into the config dataclass ``cls``, nested tables first.

    Sections are built from their own tables so the strict (no coercion) rules hold at every
    level; every problem becomes an :class:`InputError` naming ``source`` and the full key.
    """
    where = prefix.rstrip(".")
    if not isinstance(raw, dict):
        raise InputError(
            f"{source}: key '{where}' must be a table, got {_show(raw)}"
            if where
            else f"{source}: must be a table of settings, got {_show(raw)}"
        )
    kwargs = dict(raw)
    for name, section in sections(cls).items():
        if name in kwargs:
            kwargs[name] = build_section(section, kwargs[name], source, f"{prefix}{name}.")
    try:
        return cls(**kwargs)
    except ValidationError as exc:
        raise InputError(describe_errors(exc, source, prefix, cls)) from None


_TYPE_WORDS = {
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be a table",
    "finite_number": "must be a finite number",
    "int_from_float": "must be a whole number",
}


def describe_errors(
    exc: ValidationError, source: str, prefix: str = "", cls: type | None = None
) -> str:
    """One line per problem: ``SOURCE: key 'a.b': must be > 0, got 0``."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        problem = (error.get("ctx") or {}).get("error")
        if isinstance(problem, ConfigProblem):
            key = ".".join([*loc, problem.key])
            lines.append(f"{source}: key '{prefix}{key}': {problem.message}")
            continue
        key = _dotted(loc)
        text = _plain(error, cls)
        if error["type"] in ("missing_argument", "missing"):
            lines.append(f"{source}: missing key '{prefix}{key}'")
        elif error["type"] == "unexpected_keyword_argument":
            lines.append(f"{source}: unknown key '{prefix}{key}'{text}")
        elif error["type"] == "value_error":  # our validators' messages name the value
            lines.append(f"{source}: key '{prefix}{key}': {text}")
        else:
            lines.append(f"{source}: key '{prefix}{key}': {text}, got {_show(error['input'])}")
    return "\n".join(dict.fromkeys(lines))


def _dotted(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _plain(error: dict[str, Any], cls: type | None) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "unexpected_keyword_argument":
        if cls is None:
            return ""
        known = ", ".join(f.name for f in fields(cls))
        return f" (known: {known})"
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    for bound, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if bound in ctx:
            value = ctx[bound]
            shown = int(value) if isinstance(value, float) and value.is_integer() else value
            return f"must be {word} {shown}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    if kind == "string_pattern_mismatch":
        return f"must be {PATTERN_WORDS.get(ctx['pattern'], 'like ' + ctx['pattern'])}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"]


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = [
    "MODES",
    "PROVIDERS",
    "TRANSPORTS",
    "DpConfig",
    "FederatedConfig",
    "GateConfig",
    "MpcConfig",
    "NetworkConfig",
    "RunConfig",
    "build_section",
    "drop_none",
]
