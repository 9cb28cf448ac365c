"""Exceptions that name the file (and where possible the episode and field) they are about.

Every error fcs raises on purpose is an `FcsError`, and every one the data library can raise is
defined here (`fcs_train.errors` holds the training and planning ones). They pickle intact
(attributes included), so one raised in a worker process reaches the parent as itself, not as a
`BrokenProcessPool`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fcs_data.schemas import ValidationReport


def _rebuild(cls: type[FcsError], args: tuple, state: dict[str, Any]) -> FcsError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class FcsError(Exception):
    """Base of every error fcs raises on purpose; the CLI prints it on one line and exits 1."""

    def __reduce__(self):  # subclasses take other constructor arguments than `args`
        return _rebuild, (type(self), self.args, self.__dict__)


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


class DatasetError(UnreadableFileError):
    """A dataset of a source file is missing, of the wrong kind (group, link, no data), dtype or shape.

    `path` is the file, `dataset` the dataset's name inside it, `problem` what was found and
    `expected` what the layout declares.
    """

    def __init__(self, path: str | Path, dataset: str, problem: str, expected: str = ""):
        self.dataset, self.problem, self.expected = dataset, problem, expected
        super().__init__(path, f"dataset {dataset!r} {problem}" + (f"; expected {expected}" if expected else ""))


class SourceError(FcsError):
    """A logger dataset is not what its layout declares."""


class StoreError(FcsError):
    """An fcs store is missing, incomplete, damaged or of an unsupported format."""


class StoreDataError(StoreError):
    """A chunk of a store array is missing, truncated, or fails its checksum or its decoder.

    `path` is the store, `file` the chunk or shard file (relative to the store), `array` the array
    (`data/rgb`), `rows` the `[start, stop)` rows it holds and `where` those rows as episodes and
    frames (when the store knows its episodes).
    """

    def __init__(self, path: str | Path, file: str, array: str, rows: tuple[int, int], problem: str,
                 where: str = ""):
        self.path, self.file, self.array, self.rows, self.problem, self.where = (
            str(path), file, array, (int(rows[0]), int(rows[1])), problem, where)
        span = f"rows {rows[0]}..{rows[1] - 1}" if rows[1] - rows[0] > 1 else f"row {rows[0]}"
        super().__init__(f"{path}: {file}: {problem} ({array} {span}{'; ' + where if where else ''})")


class NonFiniteDataError(StoreError):
    """A valid step of a store holds NaN or Inf where training reads it."""


class DetectionError(SourceError):
    """No built-in layout matches the dataset (`mismatches`: each built-in layout's first mismatch in words),
    or more than one does (`matches`); `path` is the dataset."""

    def __init__(self, message: str, path: str | Path = "", mismatches: dict[str, str] | None = None,
                 matches: list[str] | None = None):
        super().__init__(message)
        self.path, self.mismatches, self.matches = str(path), dict(mismatches or {}), list(matches or [])


class WorkerDied(FcsError):
    """A worker process ended without a result: killed for memory, a crash in a native library, or a
    script without a `__main__` guard that every worker re-runs. `cause` is what the pool reported."""

    def __init__(self, message: str, cause: str = ""):
        self.cause = cause
        super().__init__(message)


class LockedError(FcsError):
    """Another process holds the lock on an output (a second `fcs convert` to the same OUT)."""


class ConversionRefused(FcsError):
    """The validator found errors; `report` says which."""

    def __init__(self, message: str, report: ValidationReport):
        super().__init__(message)
        self.report = report


class VerificationFailed(FcsError):
    """`verify` found a value in the store that differs from the source."""


class ResumeMismatch(FcsError):
    """`--resume` found an `OUT.partial` made from another source, layout or options."""


class ConversionIOError(FcsError):
    """Writing the store failed (a full disk, a lost mount, permissions); `OUT.partial` was kept."""


class WrongInputError(FcsError):
    """A command was given a path of another kind than it reads (a store where a dataset belongs, ...)."""

    def __init__(self, path: str | Path, kind: str, expected: str, message: str):
        self.path, self.kind, self.expected = str(path), kind, expected
        super().__init__(message)


class WorldError(FcsError, ValueError):
    """The reference world (`fcs_data.world`) cannot be made or stepped as asked: a layout it cannot
    speak, a store `fcs synth` did not make, a malformed action, a step before `reset()`."""
