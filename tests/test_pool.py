"""The worker pool: a script without a `__main__` guard is named as the cause, not a memory kill."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
from fcs_data import convert_to_zarr, synthesize
synthesize({raw!r}, episodes=2, min_len=20, max_len=22, seed=0)
convert_to_zarr({raw!r}, {out!r}, workers=2)
"""


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "convert_script.py"
    script.write_text(body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)


def test_a_script_without_a_main_guard_is_told_to_add_one(tmp_path: Path) -> None:
    raw, out = str(tmp_path / "raw"), str(tmp_path / "s.zarr")
    res = _run(tmp_path, _SCRIPT.format(raw=raw, out=out))
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("fcs_data.errors.WorkerDied: worker processes could not start")
    assert 'if __name__ == "__main__":' in last and "convert_script.py" in last and "memory" not in last


def test_the_same_script_with_the_guard_converts(tmp_path: Path) -> None:
    raw, out = str(tmp_path / "raw"), str(tmp_path / "s.zarr")
    body = "if __name__ == '__main__':\n" + "".join(f"    {line}\n" for line in
                                                    _SCRIPT.format(raw=raw, out=out).strip().splitlines())
    res = _run(tmp_path, body)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "s.zarr" / "zarr.json").is_file()
