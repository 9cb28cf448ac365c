"""Exceptions that name the file (and where possible the episode and field) they are about."""

from __future__ import annotations

from pathlib import Path


class FcsError(Exception):
    """Base of every error fcs raises on purpose; the CLI prints it and exits 1."""


class UnsafePickleError(FcsError):
    """A pickle asked for a global that is not plain data; nothing in it was executed."""

    def __init__(self, path: str | Path, what: str):
        self.path = str(path)
        self.what = what
        super().__init__(f"{path}: refused to unpickle {what} (not plain data); the file was not executed")


class UnreadableFileError(FcsError):
    """A file exists but cannot be decoded (truncated, corrupt, wrong format)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: cannot be read: {reason}")


class SourceError(FcsError):
    """A logger dataset is not what its layout declares."""


class StoreError(FcsError):
    """An fcs store is missing, incomplete or of an unsupported format."""
