"""Files written whole or not at all, and write failures that say what happened and where.

A file is written to a temporary beside it (`.NAME.XXXX.tmp`), flushed, fsynced and renamed over
the target, so a crash, a kill or a full disk leaves the old file or none, never half of one. A
temporary left by a process killed mid-write (SIGKILL cannot be caught) is found by
`stale_temporaries` and removed by whoever owns the folder next (`fcs train` for its run).

torch reports a full disk during `torch.save` as `RuntimeError: [enforce fail at
inline_container.cc:...] . unexpected pos ...`, which never says "disk" or the path; `write_failure`
turns that, and every `OSError`, into an `OSError` that carries the errno and the target's path.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"
_NEARLY_FULL = 64 * 2**20  # bytes free at a failed write below which the disk was full
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(f)` on a temporary beside `path`, then make it `path` in one rename.

    On any failure the temporary is removed and `path` is untouched; the exception is
    `write_failure`'s (an `OSError` naming `path` for a write error, the original otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        failure = write_failure(path, e)  # before the temporary goes: its bytes are what filled the disk
        Path(tmp).unlink(missing_ok=True)
        if failure is e:
            raise
        raise failure from e
    except BaseException:  # KeyboardInterrupt, SystemExit: the file stays as it was
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`write_atomic` of UTF-8 text."""
    return write_atomic(path, lambda f: f.write(text.encode()))


def write_failure(path: str | Path, e: BaseException) -> BaseException:
    """What a failed write of `path` means: an `OSError(errno, strerror, path)` for an OS error or a
    torch stream-writer failure (ENOSPC when the disk is then nearly full, else EIO); `e` itself for
    anything else (a bug, an unpicklable object)."""
    path = Path(path)
    if isinstance(e, OSError):
        return e if e.filename else OSError(e.errno, e.strerror or str(e), str(path))
    if isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_WRITE_FAILED):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if free is not None and free < _NEARLY_FULL:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return OSError(errno.EIO, f"the write failed ({first})", str(path))
    return e


def stale_temporaries(folder: str | Path) -> list[Path]:
    """The temporaries `write_atomic` left in `folder` when its process was killed mid-write."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file())


def remove_stale_temporaries(*folders: str | Path) -> list[Path]:
    """Remove `stale_temporaries` of each folder (only its owner may: a live writer's would go too)."""
    removed = []
    for folder in folders:
        for p in stale_temporaries(folder):
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed
