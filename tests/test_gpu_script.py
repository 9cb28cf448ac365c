"""benchmarks/gpu.py, the prepared GPU script, runs every section on a CPU in its dry-run mode."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch

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
    cal = written["sections"]["calibration"]
    assert cal["file"] is None and len(cal["points"]) == 6 and cal["reserved_scale"] > 0
    assert all(r["train"]["calibrated_reserved"] is not None for r in peaks["rows"])
    assert "| 16 | 6 | validation |" in peaks["markdown"] and "cpu (dry run)" in peaks["markdown"]


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


def test_the_solver_timing_waits_for_time_solvers_and_names_what_is_missing(gpu_script, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_script, "_load_benchmark", lambda name: types.SimpleNamespace())
    ctx = gpu_script.Context(True, torch.device("cpu"), None, tmp_path / "gpu.json")
    assert "time_solvers" in gpu_script.section_plan_time(ctx)["skipped"]


@pytest.mark.parametrize(("dry_run", "expected"), [
    (True, ("tiny", {"device": "cpu", "amp": "off", "samples": 4, "iterations": 1, "horizon": 2})),
    (False, ("full", {"device": "cuda", "amp": "bf16"})),  # time_solvers' defaults: the full budget
])
def test_the_solver_timing_runs_the_full_model_at_the_full_budget_in_bf16_on_the_gpu(
        gpu_script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool, expected: tuple) -> None:
    calls = []

    def time_solvers(preset, **kwargs):
        calls.append((preset, kwargs))
        return [{"solver": "cem", "seconds": 1.0, "warm_seconds": 0.5, "flops": 1.4e15}]

    monkeypatch.setattr(gpu_script, "_load_benchmark", lambda name: types.SimpleNamespace(time_solvers=time_solvers))
    ctx = gpu_script.Context(dry_run, torch.device("cpu" if dry_run else "cuda"), None, tmp_path / "gpu.json")
    out = gpu_script.section_plan_time(ctx)
    assert calls == [expected] and out["rows"][0]["solver"] == "cem" and out["preset"] == expected[0]
