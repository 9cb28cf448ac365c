"""How the code is laid out: data flows one way, `import fcs_data` stays light, one module knows paths."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_import_fcs_data_loads_no_heavy_or_training_library() -> None:
    loaded = _modules_after("import fcs_data")
    heavy = {"h5py", "PIL", "psutil", "timm", "torchmetrics", "matplotlib", "torch", "zarr"} & loaded
    assert not heavy, f"import fcs_data imported {sorted(heavy)}"
    assert "fcs_train" not in loaded


def test_the_read_path_and_the_validator_never_import_the_converter() -> None:
    loaded = _modules_after("import fcs_data.store, fcs_data.windows, fcs_data.loader, fcs_data.validation")
    assert not {m for m in loaded if m.startswith("fcs_data.converters")}
    assert "fcs_train" not in loaded and "timm" not in loaded


def test_the_public_names_resolve() -> None:
    import fcs_data

    for name in fcs_data.__all__:
        assert getattr(fcs_data, name) is not None, name


def test_only_the_format_module_spells_chunk_paths() -> None:
    pattern = re.compile(r"""["']c/|/c/|/ ?["']c["']""")
    offenders = [str(p.relative_to(ROOT)) for pkg in ("fcs", "fcs_data", "fcs_train") for p in (ROOT / pkg).rglob("*.py")
                 if p.name != "format.py" and pattern.search(p.read_text())]
    assert not offenders, offenders
