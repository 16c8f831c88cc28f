"""A schema, a fitted table encoder and a trained generator: what a run releases.

``generator.pt`` holds only tensors and plain values, so :meth:`Synthesizer.load` can use
``torch.load(weights_only=True)``, which refuses any pickled object that could run code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from smpc_synth.data.encoding import TableEncoder
from smpc_synth.data.schema import Schema
from smpc_synth.data.validate import validate
from smpc_synth.errors import InputError
from smpc_synth.models.base import EpochCallback, Generator
from smpc_synth.models.registry import get_generator
from smpc_synth.models.schedule import check_batch_rows

GENERATOR_FILE = "generator.pt"
# Memory one sample call may fill with its table (about 16 bytes a cell, with the copy that
# joins the batches); more rows are refused rather than attempted. Rows are generated in
# batches of at most SAMPLE_BATCH_BYTES of network activations.
MAX_SAMPLE_BYTES = 4 << 30
SAMPLE_BATCH_BYTES = 64 << 20
_BYTES_PER_CELL = 16
FORMAT = "smpc-synth/generator"
VERSION = 1
_KEYS = ("format", "version", "generator", "hparams", "state", "encoder", "schema", "meta")
_PLAIN = (str, int, float, bool, type(None))  # exact types: numpy's float64 subclasses float


class Synthesizer:
    """Encode, generate, decode: samples whole tables in the schema's types."""

    def __init__(
        self,
        schema: Schema,
        encoder: TableEncoder,
        generator: Generator,
        meta: Mapping[str, Any] | None = None,
    ):
        if encoder.layout != generator.layout:
            raise ValueError("the encoder's layout differs from the generator's")
        self.schema = schema
        self.encoder = encoder
        self.generator = generator
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def privacy(self) -> dict[str, Any] | None:
        """The DP ledger of the run that trained it (None: trained without DP)."""
        return self.meta.get("dp")

    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        schema: Schema,
        generator: str = "vae",
        epochs: int | None = None,
        seed: int = 0,
        params: Mapping[str, Any] | None = None,
        on_epoch: EpochCallback | None = None,
        source: str = "training data",
        dp: Any = None,
        on_working: Callable[[], None] | None = None,
    ) -> Synthesizer:
        """Validate ``df`` against ``schema``, fit the encoder, then train ``generator``.

        With ``dp`` (a :class:`~smpc_synth.config.DpConfig` with ``epsilon`` set) every part
        that reads the rows is a mechanism of one ledger (:mod:`smpc_synth.models.private`,
        or the marginal mechanisms of :mod:`smpc_synth.models.marginal`), kept in
        :attr:`privacy` and in ``meta``; the model then records no exact row count.
        ``on_working`` is called now and then during the marginal generators' long
        Private-PGM fits, between two rounds, so a caller can tell progress from a hang.
        """
        gen_cls = get_generator(generator)
        gen_params = dict(params or {})  # bad parameters fail before the data is touched
        check_privacy(gen_cls, dp)
        rows = validate(df, schema, source)
        if dp is not None and dp.enabled and not gen_cls.differentially_private:
            from smpc_synth.models.private import fit_private

            encoder, model, ledger, released_rows = fit_private(
                rows, schema, gen_cls, gen_params, dp, epochs=epochs, seed=seed, on_epoch=on_epoch
            )
            privacy = ledger.to_dict()
            meta = {"train_rows": released_rows, "seed": seed, "epochs": epochs, "dp": privacy}
            return cls(schema, encoder, model, meta=meta)
        encoder = gen_cls.make_encoder(schema)
        # a DP-only generator's encoder follows from the public schema alone
        encoder = encoder.fit_public() if gen_cls.differentially_private else encoder.fit(rows)
        model = gen_cls(encoder.layout, **gen_params)
        check_batch_rows(model.hparams, len(rows), source)
        X = encoder.transform(rows)
        if gen_cls.differentially_private:
            from smpc_synth.models.marginal import Privacy

            privacy = Privacy.from_run(dp)
            model.fit(
                X,
                epochs=epochs,
                seed=seed,
                on_epoch=on_epoch,
                privacy=privacy,
                on_working=on_working,
            )
            meta = {"train_rows": model.estimated_rows, "seed": seed, "dp": model.privacy_report}
        else:
            model.fit(X, epochs=epochs, seed=seed, on_epoch=on_epoch)
            meta = {"train_rows": len(rows), "seed": seed, "epochs": epochs}
        return cls(schema, encoder, model, meta=meta)

    @classmethod
    def from_parts(
        cls,
        schema: Schema,
        encoder: TableEncoder,
        generator: Generator,
        meta: Mapping[str, Any] | None = None,
    ) -> Synthesizer:
        """Assemble from parts trained elsewhere (the MPC and federated protocols)."""
        return cls(schema, encoder, generator, meta)

    @property
    def max_sample_rows(self) -> int:
        """The most rows one :meth:`sample` call produces (:data:`MAX_SAMPLE_BYTES`)."""
        return MAX_SAMPLE_BYTES // (_BYTES_PER_CELL * max(len(self.schema.columns), 1))

    def sample(self, n: int, seed: int = 0) -> pd.DataFrame:
        """``n`` synthetic rows (at most :attr:`max_sample_rows`); the same seed gives the
        same rows."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"number of rows to sample must be a positive integer, got {n!r}")
        if n > self.max_sample_rows:
            raise InputError(
                f"{n:,} rows of {len(self.schema.columns)} columns exceed the limit of "
                f"{self.max_sample_rows:,} rows a call ({MAX_SAMPLE_BYTES >> 30} GiB); "
                "sample in parts with different seeds"
            )
        batch = max(1, SAMPLE_BATCH_BYTES // (8 * self.generator.widest()))
        parts = [
            self.encoder.inverse_transform(
                self.generator.sample(min(batch, n - start), _batch_seed(seed, start // batch))
            )
            for start in range(0, n, batch)
        ]
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def save(self, path: str | Path) -> Path:
        """Write ``generator.pt`` (``path`` is the file, or a directory to hold it)."""
        target = _file(path)
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "generator": self.generator.name,
            "hparams": self.generator.hparams_dict(),
            "state": self.generator.state_dict(),
            "encoder": self.encoder.state_dict(),
            "schema": self.schema.to_dict(),
            "meta": {"layout": self.generator.layout.to_dict(), **self.meta},
        }
        _check_plain(payload, "generator file")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".generator-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(payload, fh)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target

    @classmethod
    def load(cls, path: str | Path) -> Synthesizer:
        """Read ``generator.pt``; a missing, corrupt, unsafe or foreign file is an InputError."""
        target = _file(path)
        if not target.is_file():
            raise InputError(f"{target}: generator file not found")
        try:
            payload = torch.load(target, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise InputError(
                f"{target}: refused: the file holds objects other than tensors and plain "
                f"values, or is damaged ({str(exc).splitlines()[0]})"
            ) from None
        except Exception as exc:  # torch raises many kinds on a damaged file
            raise InputError(f"{target}: not a readable generator file ({exc})") from None
        try:
            return cls._from_payload(payload)
        except InputError as exc:
            raise InputError(f"{target}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{target}: damaged generator file ({exc!r})") from None

    @classmethod
    def _from_payload(cls, payload: Any) -> Synthesizer:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise InputError(f"not a smpc-synth generator file (expected format {FORMAT!r})")
        if payload.get("version") != VERSION:
            raise InputError(
                f"key 'version': {payload.get('version')!r} is not supported (expected {VERSION})"
            )
        missing = [k for k in _KEYS if k not in payload]
        if missing:
            raise InputError(f"key '{missing[0]}' is missing")
        schema = Schema.from_dict(payload["schema"], source="schema")
        encoder = TableEncoder.from_state_dict(payload["encoder"])
        generator = get_generator(payload["generator"])(encoder.layout, **payload["hparams"])
        generator.load_state_dict(payload["state"])
        meta = {k: v for k, v in payload["meta"].items() if k != "layout"}
        return cls(schema, encoder, generator, meta)


def _batch_seed(seed: int, index: int) -> int:
    """The first batch draws from ``seed`` itself; each later one from its own seed."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**63, index]).generate_state(1, np.uint64)[0] >> 1)


def check_privacy(gen_cls: type[Generator], dp: Any) -> None:
    """A generator that fits only under DP (aim, mst) needs a budget (else refused)."""
    if gen_cls.differentially_private and (dp is None or not dp.enabled):
        raise InputError(
            f"--epsilon: generator '{gen_cls.name}' is differentially private and needs a "
            "privacy budget (--epsilon, and optionally --delta)"
        )


def _file(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".pt" else path / GENERATOR_FILE


def _check_plain(obj: Any, where: str) -> None:
    """Refuse to write anything ``torch.load(weights_only=True)`` would refuse to read."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where}: key {key!r} is not a string")
            _check_plain(value, f"{where}.{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif type(obj) not in _PLAIN and not isinstance(obj, torch.Tensor):
        raise TypeError(f"{where}: {type(obj).__name__} is not a tensor or plain value")
