"""Fixtures of the benchmark tests: the real command line, as a user runs it."""

from __future__ import annotations

import pytest
from cli_runner import run_cli  # tests/support, on pytest's pythonpath


@pytest.fixture
def cli():
    return run_cli
