"""Errors that reach the user, each with the exit code docs/design.md §3 promises.

Raise these with a message a user can act on: name the file, column, row or key
(:class:`InputError`), or the party or peer at fault (:class:`PeerError`). The CLI prints
the message without a traceback and exits with ``exit_code``.
"""

from __future__ import annotations


class SmpcSynthError(Exception):
    """Base class: anything else that went wrong (exit code 1)."""

    exit_code = 1


class InputError(SmpcSynthError):
    """Bad input data or configuration, found before any work is done (exit code 2)."""

    exit_code = 2


class PeerError(SmpcSynthError):
    """A party, dealer or aggregator failed, hung or disagreed (exit code 1)."""

    exit_code = 1

    def __init__(self, message: str, peer: str | None = None):
        super().__init__(message)
        self.peer = peer


class ReleaseRefused(SmpcSynthError):
    """The release gate refused to write synthetic data that failed its policy (exit code 3)."""

    exit_code = 3
