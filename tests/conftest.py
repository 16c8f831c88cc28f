"""Shared fixtures: run the real command line in a subprocess, as a user would."""

from __future__ import annotations

import pytest
from cli_runner import run_cli  # tests/support, on pytest's pythonpath


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="module")
def crypten_patches():
    """CrypTen with smpc-synth's fixes, for a module that uses it outside a session (as a
    session does while it runs; nothing is patched at import)."""
    from smpc_synth.crypten_backend import compat

    with compat.patched_crypten():
        yield compat.import_crypten()
