"""The README's Python snippets that say they run as shown, run as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _guarded_snippets() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [b for b in blocks if 'if __name__ == "__main__":' in b]


def test_the_python_api_snippet_runs_as_a_script_exactly_as_printed(tmp_path: Path) -> None:
    (snippet,) = _guarded_snippets()
    script = tmp_path / "snippet.py"
    script.write_text(snippet)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split("\n")[-2].startswith("8 "), res.stdout  # num_episodes, then the rest
    assert (tmp_path / "d.zarr").is_dir()
