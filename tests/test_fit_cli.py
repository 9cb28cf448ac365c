"""`fcs fit` and `fcs train`'s memory check on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.converters.to_zarr import convert_to_zarr

runner = CliRunner()


@pytest.fixture(scope="module")
def store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_zarr(pristine_v1, tmp_path_factory.mktemp("fitcli") / "s.zarr", workers=1).store


def test_fit_writes_the_config_prediction_as_json_to_stdout() -> None:
    res = runner.invoke(app, ["fit", "--preset", "tiny", "--gpu", "2GiB", "--no-table", "--no-reference", "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["device"]["total"] == 2 << 30 and doc["fits"] is True
    assert doc["config"]["batch_size"] == 16 and doc["config"]["num_hist"] == 3
    peaks = doc["device_peaks"]
    assert peaks["train"] == doc["config"]["train"]["reserved"] + doc["device"]["overhead"]
    assert doc["config"]["train"]["composition"]["parameters"] > 0 and doc["table"] is None


def test_fit_prints_the_table_for_a_store_with_the_reference_beside_and_the_plots(store: Path, tmp_path: Path) -> None:
    png, out = tmp_path / "fit.png", tmp_path / "fit.json"
    res = runner.invoke(app, ["fit", "--preset", "tiny", "--gpu", "64MiB", "--store", str(store), "--batch", "2,4",
                              "--num-hist", "2", "--frameskip", "1,2", "--margin", "0", "--workers", "1", "--png", str(png), "--json",
                              str(out)])
    assert res.exit_code == 0, res.output
    assert "reference" in res.output and "largest batch that fits" in res.output
    doc = json.loads(out.read_text())
    assert len(doc["table"]["rows"]) == 4 and doc["table"]["rows"][0]["train_windows"] > 0
    assert doc["reference"]["train"]["allocated"] > doc["config"]["train"]["allocated"]
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(("args", "hint"), [
    (["--gpu", "lots"], "--gpu"),
    (["--batch", "0,4"], "--batch"),
    (["--num-hist", "a"], "--num-hist"),
])
def test_fit_refuses_a_bad_command_line_with_exit_2(args: list[str], hint: str) -> None:
    res = runner.invoke(app, ["fit", "--preset", "tiny", "--no-table", *args])
    assert res.exit_code == 2 and hint in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_calibrating_without_a_gpu_fails_with_one_line() -> None:
    res = runner.invoke(app, ["fit", "--preset", "tiny", "--calibrate"])
    assert res.exit_code == 1
    assert "--calibrate needs a CUDA GPU" in res.output and "Traceback" not in res.output


def test_train_stops_with_one_line_when_the_run_does_not_fit(store: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "--preset", "tiny", "--set", f"data.store={store}", "--set",
                              f"train.run_dir={tmp_path / 'run'}", "--set", "data.num_workers=0", "--set",
                              "train.memory_limit=1MiB", "--no-progress"])
    assert res.exit_code == 1
    assert "does not fit even at batch 1" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ignore_memory_check_turns_the_stop_into_a_warning() -> None:
    res = runner.invoke(app, ["train", "--preset", "tiny", "--ignore-memory-check", "--print-config"])
    assert res.exit_code == 0, res.output
    assert "memory_check: warn" in res.output


def test_fit_refuses_a_calibration_file_that_is_not_there(tmp_path: Path) -> None:
    res = runner.invoke(app, ["fit", "--preset", "tiny", "--gpu", "2GiB", "--no-table", "--calibration",
                              str(tmp_path / "missing.json")])
    assert res.exit_code == 1 and "missing.json" in res.output and "Traceback" not in res.output
