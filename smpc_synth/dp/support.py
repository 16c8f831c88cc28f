"""Which runs can be made differentially private, checked before anything else happens.

A run with ``dp.epsilon`` set either has a mechanism for everything it releases, or is
refused here (exit code 2, naming the generator and the flag) while the configuration is
validated: before any file is split, any process started or any socket opened.
"""

from __future__ import annotations

from typing import Any

from smpc_synth.errors import InputError

FLAG = "--epsilon (dp.epsilon)"
PUBLIC_SCHEMA_NEEDED = (
    "a DP run needs a public schema (--schema): one inferred from the rows would release "
    "their extremes and categories outside the budget (built-in data sets are public, so "
    "theirs may be inferred)"
)

DRAFTED_SCHEMA = (
    "key 'drafted_from_data': this schema was drafted from rows (`schema infer`), so its "
    "categories and bounds come from the data, outside the budget; a DP run needs public "
    "ones: replace them with each column's public domain, then delete the key"
)


def refuse_drafted_schema(schema: Any, source: str) -> None:
    """Refuse (exit 2, naming ``source``) a schema marked as drafted from the rows: under DP
    the schema must not depend on them."""
    if getattr(schema, "drafted_from_data", False):
        raise InputError(f"{source}: {DRAFTED_SCHEMA}")


# (mode, generator) -> units of privacy with a mechanism for everything released
SUPPORTED: dict[tuple[str, str], tuple[str, ...]] = {
    ("plaintext", "gaussian"): ("record",),
    ("plaintext", "vae"): ("record",),
    ("plaintext", "gan"): ("record",),
    ("federated", "gaussian"): ("record", "party"),
    ("federated", "vae"): ("record", "party"),
    ("federated", "gan"): ("record", "party"),
    ("mpc", "gaussian"): ("record",),
    ("mpc", "vae"): ("record",),
    ("mpc", "gan"): ("record",),
    ("plaintext", "aim"): ("record",),
    ("plaintext", "mst"): ("record",),
    ("mpc", "aim"): ("record",),
    ("mpc", "mst"): ("record",),
    ("federated", "aim"): ("record",),
    ("federated", "mst"): ("record",),
}
# Federated aim/mst draw their noise in shares: the masks must hide each submission (which
# carries only that party's share) from the aggregator and any one party.
SHARED_NOISE = ("aim", "mst")
# Generators that fit only under DP; each generator's accountants, its default first: AIM
# and MST plan their budget in zCDP; DP-SGD's Poisson sampling needs RDP's amplification.
DP_ONLY = ("aim", "mst")
ACCOUNTANTS_FOR: dict[str, tuple[str, ...]] = {
    "gaussian": ("rdp", "zcdp"),
    "vae": ("rdp",),
    "gan": ("rdp",),
    "aim": ("zcdp",),
    "mst": ("zcdp",),
}

# Hyperparameters DP needs at one value: PacGAN's packs would let one row move every pack of
# a Poisson batch (they are consecutive groups), so the critic sees single rows; DP-SGD's
# batches are Poisson samples whose rate the ledger accounts, so the batch and learning rate
# are the user's own, not a schedule's (models/schedule.py).
FIXED_PARAMS: dict[str, dict[str, object]] = {
    "gan": {"pac": 1, "schedule": "default"},
    "vae": {"schedule": "default"},
}


class ConfigProblem(ValueError):
    """A refusal naming its run-config key; the config schema reports it as its own."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def check_config(cfg: Any) -> None:
    """Refuse a DP configuration of a run config ``cfg`` that cannot be honoured (a
    :class:`ConfigProblem` naming the key); fill in :data:`FIXED_PARAMS`. Types and ranges
    are the config schema's."""
    from smpc_synth.dp.accountant import ACCOUNTANTS

    dp = cfg.dp
    if not dp.enabled:
        if cfg.generator in DP_ONLY:
            raise ConfigProblem(
                "dp.epsilon",
                f"{FLAG}: generator '{cfg.generator}' is differentially private and needs a "
                "privacy budget (--epsilon, and optionally --delta)",
            )
        return
    if dp.accountant is not None and dp.accountant not in ACCOUNTANTS:
        raise ConfigProblem(
            "dp.accountant", f"unknown accountant {dp.accountant!r} (one of {sorted(ACCOUNTANTS)})"
        )
    try:
        dp.accountant = accountant_for(cfg.generator, dp.accountant)
    except InputError as exc:
        raise ConfigProblem("dp.accountant", str(exc)) from None
    if cfg.generator == "gan" and dp.encoder_share + dp.moments_share >= 1:
        raise ConfigProblem(
            "dp.moments_share", "with 'dp.encoder_share' it must leave some budget for training"
        )
    if cfg.mode == "federated" and cfg.generator in SHARED_NOISE:
        fed = cfg.federated
        if fed.he != "ckks" or not fed.masking:
            key = "federated.he" if fed.he != "ckks" else "federated.masking"
            raise ConfigProblem(
                key,
                f"{FLAG}: generator '{cfg.generator}' in federated mode needs encrypted, masked "
                "sums (federated.he = 'ckks', federated.masking = true): each submission "
                "carries only its party's share of the noise",
            )
    units = SUPPORTED.get((cfg.mode, cfg.generator), ())
    if dp.unit not in units:
        where = [f"{m}/{g}" for (m, g), u in SUPPORTED.items() if dp.unit in u]
        raise ConfigProblem(
            "dp.epsilon",
            f"{FLAG}: generator '{cfg.generator}' in mode '{cfg.mode}' cannot be trained with "
            f"differential privacy per {dp.unit}; supported: {', '.join(where)}",
        )
    if dp.unit == "party" and cfg.sample_rows is None:
        raise ConfigProblem(
            "sample_rows",
            "(--sample-rows) with dp.unit = 'party' no row count is released, so the "
            "synthetic table's size must be given",
        )
    if cfg.mode == "mpc" and cfg.mpc.provider != "dealer":
        raise ConfigProblem(
            "mpc.provider",
            f"{FLAG}: MPC needs the dealer for DP noise (with provider '{cfg.mpc.provider}', "
            "party 0 would know the noise)",
        )
    try:
        fixed = with_fixed_params(cfg.generator, cfg.generator_params)
    except InputError as exc:
        raise ConfigProblem("generator_params", str(exc)) from None
    cfg.generator_params.update(fixed)


def accountant_for(generator: str, chosen: str | None) -> str:
    """``chosen``, or ``generator``'s own accountant if None; InputError if ``generator``
    cannot be accounted by ``chosen``."""
    allowed = ACCOUNTANTS_FOR.get(generator, ("rdp",))
    if chosen is None:
        return allowed[0]
    if chosen not in allowed:
        raise InputError(
            f"generator '{generator}' cannot be accounted by {chosen!r} (use "
            f"{' or '.join(allowed)})"
        )
    return chosen


def with_fixed_params(generator: str, params: dict) -> dict:
    """``params`` with :data:`FIXED_PARAMS` filled in; InputError if they set another value."""
    out = dict(params)
    for key, value in FIXED_PARAMS.get(generator, {}).items():
        given = out.get(key, value)
        if given != value:
            raise InputError(
                f"{FLAG}: generator '{generator}' needs parameter '{key}' = "
                f"{value!r} under DP, got {given!r}"
            )
        out[key] = value
    return out
