"""benchmarks/gpu.py, the prepared GPU script, runs every section on a CPU in its dry-run mode."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_script():
    spec = importlib.util.spec_from_file_location("fcs_gpu_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_the_dry_run_runs_every_section_and_writes_the_json(gpu_script, tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    results = gpu_script.main(["--dry-run", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["dry_run"] is True and list(written["sections"]) == list(gpu_script.SECTIONS)
    for name, section in written["sections"].items():
        assert "error" not in section, (name, section.get("traceback"))
    peaks = written["sections"]["peaks"]
    assert [(r["batch_size"], r["num_hist"]) for r in peaks["rows"]] == gpu_script.PEAK_CONFIGS
    assert all(r["train"]["measured_reserved"] > 0 and r["validation"]["predicted_reserved"] > 0
               for r in peaks["rows"])
    assert written["sections"]["reference"]["setup"] == "reference"
    assert set(written["sections"]["train_time"]["seconds_per_step"]) == {"joint", "subset", "off"}
    assert written["sections"]["calibration"] == results["sections"]["calibration"]


def test_a_failing_section_is_recorded_and_the_next_one_runs(gpu_script, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setitem(gpu_script.SECTIONS, "device", broken)
    out = tmp_path / "gpu.json"
    gpu_script.main(["--dry-run", "--out", str(out), "--sections", "device,plan_time"])
    sections = json.loads(out.read_text())["sections"]
    assert sections["device"]["error"] == "RuntimeError: boom"
    assert "error" not in sections["plan_time"]


def test_sections_past_the_budget_are_skipped(gpu_script, tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    gpu_script.main(["--dry-run", "--out", str(out), "--sections", "device,plan_time", "--budget-s", "-1"])
    sections = json.loads(out.read_text())["sections"]
    assert all("budget" in s["skipped"] for s in sections.values())
