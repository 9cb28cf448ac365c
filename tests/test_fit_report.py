"""`fcs fit`'s table (fcs_train.fit.report) and its plots (fcs_train.fit.plots)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.windows import WindowDataset
from fcs_train.config import load_config
from fcs_train.fit.calibration import DeviceInfo, fit_calibration
from fcs_train.fit.plots import save_fit_png
from fcs_train.fit.prediction import Estimate
from fcs_train.fit.report import (
    GIB,
    Budget,
    Episodes,
    FitReport,
    fit_report,
    grad_accum_for,
    largest_batch,
    parse_bytes,
)

MiB = 1 << 20


def test_memory_sizes_parse_with_binary_and_decimal_units() -> None:
    assert parse_bytes("24GiB") == 24 * GIB
    assert parse_bytes("24 GB") == 24 * 10**9
    assert parse_bytes("16000MiB") == 16000 * MiB
    assert parse_bytes("24") == 24 * GIB
    assert parse_bytes("1.5g") == int(1.5 * GIB)
    for bad in ("", "GiB", "24 parsecs", "-3GiB"):
        with pytest.raises(ValueError, match="not a memory size"):
            parse_bytes(bad)


def _estimate(reserved: int) -> Estimate:
    return Estimate(reserved - MiB, reserved, "step 2 backward", {}, MiB)


def test_a_budget_keeps_the_margin_and_the_memory_outside_the_allocator() -> None:
    b = Budget("a 24GiB GPU", 24 * GIB, overhead=GIB, margin=0.05)
    assert b.usable == int(24 * GIB * 0.95) - GIB
    assert b.fits(_estimate(b.usable)) and not b.fits(_estimate(b.usable + 1))
    assert b.device_peak(_estimate(10 * GIB)) == 11 * GIB


def test_a_calibrated_budget_judges_the_calibrated_prediction() -> None:
    dev = DeviceInfo(name="gpu", total_memory=24 * GIB)
    points = [_point(p) for p in (4 * GIB, 8 * GIB)]
    cal = fit_calibration(points, dev, 512 * MiB)
    b = Budget("gpu", 24 * GIB, overhead=cal.overhead_bytes, margin=0.0, calibration=cal)
    assert b.reserved(_estimate(4 * GIB)) == pytest.approx(4.4 * GIB, abs=1)
    assert b.usable == 24 * GIB - 512 * MiB
    assert b.fits(_estimate(21 * GIB))  # 23.1 GiB calibrated
    assert not b.fits(_estimate(22 * GIB))  # 24.2 GiB calibrated, though 22 GiB would fit uncalibrated


def _point(predicted: int):
    from fcs_train.fit.calibration import CalibrationPoint

    return CalibrationPoint(batch_size=4, num_hist=3, frameskip=5, phase="train", measured_allocated=predicted,
                            measured_reserved=int(predicted * 1.1), predicted_allocated=predicted,
                            predicted_reserved=predicted)


def test_the_largest_batch_search_finds_the_last_size_that_fits() -> None:
    assert largest_batch(lambda b: b <= 37) == 37
    assert largest_batch(lambda b: b <= 1) == 1
    assert largest_batch(lambda b: False) == 0
    assert largest_batch(lambda b: True, upper=100) == 100
    asked: list[int] = []
    assert largest_batch(lambda b: asked.append(b) or b <= 1, start=2) == 1 and min(asked) == 1
    asked.clear()
    assert largest_batch(lambda b: asked.append(b) or b <= 50, start=2) == 50 and min(asked) == 2
    assert [grad_accum_for(b) for b in (1, 5, 32, 64)] == [32, 7, 1, 1]


@pytest.fixture(scope="module")
def store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_zarr(pristine_v1, tmp_path_factory.mktemp("fit") / "s.zarr", workers=1).store


@pytest.fixture(scope="module")
def report(store: Path) -> FitReport:
    cfg = load_config(preset="tiny", overrides=[f"data.store={store}", "train.batch_size=4"])
    budget = Budget("a 48MiB GPU", 48 * MiB, overhead=0, margin=0.0)
    return fit_report(cfg, budget, batches=[2, 4, 8], num_hists=[2], frameskips=[1, 3],
                      episodes=Episodes.of(store, cfg))


def test_the_table_counts_the_windows_and_steps_the_store_serves(report: FitReport, store: Path) -> None:
    assert len(report.rows) == 3 * 2
    for r in report.rows:
        ds = WindowDataset(store, num_hist=r.num_hist, frameskip=r.frameskip, split="train")
        assert r.train_windows == len(ds)
        assert r.steps_per_epoch == r.train_windows // (r.batch_size * r.grad_accum)
        assert r.grad_accum == grad_accum_for(r.batch_size)


def test_fits_and_the_largest_batch_agree_with_the_predicted_memory(report: FitReport) -> None:
    usable = report.budget.usable
    for r in report.rows:
        assert r.fits is (r.train <= usable and r.validation <= usable)
    largest = report.largest[2]
    assert 2 <= largest < 8  # this budget admits batch 2 and refuses batch 8
    for r in report.rows:
        if r.frameskip == 3 and r.batch_size <= largest:
            assert r.fits
        if r.batch_size > largest:
            assert not r.fits or r.frameskip == 1


def test_the_feasibility_map_needs_windows_and_memory(report: FitReport) -> None:
    for fs, row in zip(report.heatmap_frameskips, report.heatmap, strict=True):
        for length, h in zip(report.heatmap_lengths, row, strict=True):
            if h:
                assert (h + 1) * fs <= length
            else:
                assert (2 + 1) * fs > length  # num_hist 2 fits at batch 4: only missing windows rule it out
    assert report.heatmap[0][0] == 2  # frameskip 1, the shortest episode


def test_the_report_writes_json_and_a_png(report: FitReport, tmp_path: Path) -> None:
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["device"]["usable"] == report.budget.usable
    assert doc["largest_batch"]["2"]["batch_size"] == report.largest[2]
    assert len(doc["rows"]) == len(report.rows) and doc["feasibility"]["batch_size"] == 4
    png = save_fit_png(report, tmp_path / "fit.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 1000


def test_rows_without_accumulation_are_predicted_with_one_micro_batch(store: Path) -> None:
    from fcs_train.fit import FCS, StepShape, predict

    cfg = load_config(preset="tiny", overrides=[f"data.store={store}", "train.batch_size=4"])
    budget = Budget("a 1GiB GPU", GIB, overhead=0, margin=0.0)
    rep = fit_report(cfg, budget, batches=[2, 32], num_hists=[2], frameskips=[1])
    big = next(r for r in rep.rows if r.batch_size == 32)
    one = predict(cfg, StepShape(32, 2, 1, grad_accum=1), FCS)
    two = predict(cfg, StepShape(32, 2, 1, grad_accum=2), FCS)
    assert big.grad_accum == 1 and big.train == one.train.reserved
    assert rep.predictions[32, 2, 1].train == one.train and one.train.allocated < two.train.allocated
    assert rep.predictions[2, 2, 1].train == predict(cfg, StepShape(2, 2, 1, grad_accum=16), FCS).train
    assert rep.largest[2] > 32 and big.planning is not None
