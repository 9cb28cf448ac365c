"""An exclusive, non-blocking lock on an output path, held for a whole run (`fcntl.flock`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fcs_data.errors import LockedError


def lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


@contextmanager
def exclusive_lock(target: str | Path, doing: str) -> Iterator[Path]:
    """Hold the lock file `TARGET.lock` (it holds the holder's pid) for the block.

    A second process asking for the same target is refused at once with a `LockedError` naming the
    holder's pid. The lock is released when the process ends, however it ends (flock), so a crash
    never leaves a stale lock; the file is removed on a normal exit.
    """
    lock = lock_path(Path(target))
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockedError(f"{target}: another process (pid {holder}) is {doing}; wait for it to finish or "
                              f"stop it (lock file {lock})") from None
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:  # else the previous holder removed the file between our open and flock: retry
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # still holding it, so no other process holds this inode
        os.close(fd)
