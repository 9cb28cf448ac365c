"""Calibration (fcs_train.fit.calibration): the fit from recorded numbers, the file, the CUDA guards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fcs_train.config import load_config
from fcs_train.fit.calibration import (
    ALLOCATOR_CONF,
    CalibrationError,
    CalibrationPoint,
    DeviceInfo,
    calibrate,
    calibration_path,
    configure_allocator,
    find_calibration,
    fit_calibration,
    load_calibration,
    measure,
    save_calibration,
)
from fcs_train.fit.steps import StepShape

MiB = 1 << 20
A5000 = DeviceInfo(name="NVIDIA RTX A5000", total_memory=24 * 1024 * MiB, capability="8.6")


def _point(predicted: int, measured: int, batch: int = 4) -> CalibrationPoint:
    """A recorded point; the GPU allocated 2 MiB more than predicted (a library workspace)."""
    return CalibrationPoint(batch_size=batch, num_hist=3, frameskip=5, phase="train",
                            measured_allocated=predicted - 8 * MiB, measured_reserved=measured,
                            predicted_allocated=predicted - 10 * MiB, predicted_reserved=predicted)


def test_the_fit_recovers_offset_and_scale_from_recorded_measurements() -> None:
    preds = [2000 * MiB, 5000 * MiB, 9000 * MiB]
    cal = fit_calibration([_point(p, int(300 * MiB + 1.08 * p)) for p in preds], A5000, 450 * MiB)
    assert cal.reserved_offset == pytest.approx(300 * MiB, rel=1e-6)
    assert cal.reserved_scale == pytest.approx(1.08, rel=1e-9)
    assert max(abs(e) for e in cal.errors()) < 1e-6
    assert cal.allocated_offset == 2 * MiB
    assert cal.reserved(7000 * MiB) == pytest.approx(300 * MiB + 1.08 * 7000 * MiB, abs=1)
    assert cal.overhead_bytes == 450 * MiB


def test_one_size_gives_an_offset_only() -> None:
    cal = fit_calibration([_point(4000 * MiB, 4100 * MiB)], A5000, 0)
    assert cal.reserved_scale == 1.0 and cal.reserved_offset == pytest.approx(100 * MiB)


def test_measurements_that_do_not_grow_with_the_prediction_are_refused() -> None:
    with pytest.raises(CalibrationError, match="does not grow"):
        fit_calibration([_point(2000 * MiB, 5000 * MiB), _point(6000 * MiB, 3000 * MiB)], A5000, 0)
    with pytest.raises(CalibrationError, match="no measurements"):
        fit_calibration([], A5000, 0)


def test_the_calibration_file_round_trips_per_device_and_refuses_other_files(tmp_path: Path) -> None:
    cal = fit_calibration([_point(2000 * MiB, 2300 * MiB), _point(4000 * MiB, 4500 * MiB)], A5000, 400 * MiB)
    path = save_calibration(cal)
    assert path == calibration_path("NVIDIA RTX A5000") and path.name == "nvidia-rtx-a5000.json"
    assert find_calibration("NVIDIA RTX A5000") == cal
    assert find_calibration("NVIDIA H200") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CalibrationError, match="not an fcs calibration"):
        load_calibration(bad)
    future = json.loads(path.read_text()) | {"fcs_calibration": 99}
    bad.write_text(json.dumps(future))
    with pytest.raises(CalibrationError, match="version 99"):
        load_calibration(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only guard")
def test_measuring_without_a_gpu_fails_with_a_named_error() -> None:
    cfg = load_config(preset="tiny")
    with pytest.raises(CalibrationError, match="needs a CUDA GPU"):
        measure(cfg, StepShape(2, 1, 1))
    with pytest.raises(CalibrationError, match="needs a CUDA GPU"):
        calibrate(cfg)


def test_the_allocator_setting_is_set_unless_the_user_chose_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert configure_allocator() == ALLOCATOR_CONF
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert configure_allocator() == "max_split_size_mb:128"
