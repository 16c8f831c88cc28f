"""The package's version, read from its installed metadata (``pyproject.toml`` holds it)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smpc-synth")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
