"""Errors a person can act on: the command line prints them as one line, `error: <message>`, and exits 2.

Raise `UserError` (or a subclass) where the cause is something the user gave or can fix (a folder without
weights, a file that does not match its manifest, a checkpoint that a safe load refuses) and say what to do in
the message; `biomedgpt.cli.main` prints it without a traceback. Stdlib only: the serving side imports it.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; `str(err)` is one line that says what is wrong and what to do."""


class ModelFileError(UserError, ValueError):
    """A model file that does not match the sha256 its folder's manifest.json records, is missing, or cannot be
    checked. `path` is the file at fault."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
