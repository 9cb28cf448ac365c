"""Files written whole or not at all; a full disk said as such, with the path (fcs_data.atomic)."""

from __future__ import annotations

import errno
import io
import os
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from fcs_data import atomic
from fcs_data.atomic import remove_stale_temporaries, stale_temporaries, write_atomic, write_text_atomic

Usage = namedtuple("Usage", "total used free")
_REAL_FDOPEN = os.fdopen


class _FillingFile(io.RawIOBase):
    """A real file that stops accepting bytes after `limit` of them, as a full disk does."""

    def __init__(self, fd: int, limit: int):
        self._f, self._left = _REAL_FDOPEN(fd, "wb", buffering=0), limit

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self._left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(b)
        return self._f.write(b)

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        self._f.close()
        super().close()


def _disk(monkeypatch, *, limit: int, free: int) -> None:
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _FillingFile(fd, limit))
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: Usage(10**12, 10**12 - free, free))


def test_a_full_disk_during_torch_save_is_enospc_naming_the_file_and_the_old_file_stays(
        tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoints" / "latest.pt"
    write_atomic(path, lambda f: torch.save({"step": 1}, f))
    before = path.read_bytes()
    _disk(monkeypatch, limit=4096, free=0)
    with pytest.raises(OSError) as caught:
        write_atomic(path, lambda f: torch.save({"w": torch.zeros(100_000)}, f))
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(path)
    assert path.read_bytes() == before
    assert stale_temporaries(path.parent) == []


def test_a_torch_write_failure_with_space_left_is_an_io_error_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "latest.pt"
    _disk(monkeypatch, limit=4096, free=10**11)
    with pytest.raises(OSError) as caught:
        write_atomic(path, lambda f: torch.save({"w": torch.zeros(100_000)}, f))
    assert caught.value.errno in (errno.EIO, errno.ENOSPC)  # torch may pass the OSError on or say "unexpected pos"
    assert caught.value.filename == str(path)
    assert not path.exists() and stale_temporaries(tmp_path) == []


def test_a_failure_that_is_not_a_write_error_is_raised_as_it_is(tmp_path: Path) -> None:
    def broken(f) -> None:
        raise ValueError("not a write error")

    with pytest.raises(ValueError, match="not a write error"):
        write_atomic(tmp_path / "x.json", broken)
    assert list(tmp_path.iterdir()) == []


def test_temporaries_left_by_a_killed_writer_are_found_and_removed(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "status.json", "{}\n")
    left = [tmp_path / ".latest.pt.k3j2.tmp", tmp_path / ".status.json.x9.tmp"]
    for p in left:
        p.write_bytes(b"half a file")
    assert stale_temporaries(tmp_path) == sorted(left)
    assert remove_stale_temporaries(tmp_path, tmp_path / "missing") == sorted(left)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]
