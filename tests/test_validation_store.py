"""`fcs validate STORE`: format, shapes, NaN, decodability and statistics of a store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.converters.zarr_store import shard_file
from fcs_data.validation import validate


@pytest.fixture(scope="module")
def clean_store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vstore") / "s.zarr"
    return convert_to_zarr(pristine_v1, out, workers=1, shard_frames=16).store


@pytest.fixture
def store(clean_store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clean_store, tmp_path / "s.zarr"))


def _attrs(store: Path) -> dict:
    return json.loads((store / "zarr.json").read_text())


def _write_attrs(store: Path, doc: dict) -> None:
    (store / "zarr.json").write_text(json.dumps(doc))


def codes(report) -> list[str]:
    return sorted({f.code for f in report.findings if f.severity != "info"})


def test_clean_store_validates(clean_store: Path) -> None:
    report = validate(clean_store)
    assert report.kind == "store" and codes(report) == []
    assert report.num_frames == sum(report.episode_lengths.values())


def test_unsupported_format_version(store: Path) -> None:
    doc = _attrs(store)
    doc["attributes"]["fcs"]["fcs_format"] = 99
    _write_attrs(store, doc)
    report = validate(store)
    assert codes(report) == ["store-format"] and "99" in report.findings[0].message


def test_episode_ends_that_disagree_with_the_arrays(store: Path) -> None:
    ends = zarr.open_array(str(store / "meta" / "episode_ends"), mode="r+")
    e = ends[:]
    e[-1] += 5
    ends[:] = e
    assert "store-shape" in codes(validate(store))


def test_nan_in_the_stored_actions_is_located(store: Path) -> None:
    arr = zarr.open_array(str(store / "data" / "action"), mode="r+")
    ends = zarr.open_array(str(store / "meta" / "episode_ends"), mode="r")[:]
    row = arr[int(ends[0]) + 4]
    row[2] = np.nan
    arr[int(ends[0]) + 4] = row
    report = validate(store)
    f = report.of("nonfinite")[0]
    assert (f.episode, f.steps, f.field) == (1, [4], "action.joint_target")


def test_statistics_that_do_not_match_the_arrays(store: Path) -> None:
    doc = _attrs(store)
    doc["attributes"]["fcs"]["stats"]["state"]["mean"][0] += 1.0
    _write_attrs(store, doc)
    report = validate(store)
    assert codes(report) == ["store-stats"] and report.findings[0].field == "state"


def test_missing_statistics(store: Path) -> None:
    doc = _attrs(store)
    doc["attributes"]["fcs"]["stats"] = None
    _write_attrs(store, doc)
    assert "store-stats" in codes(validate(store))


def test_missing_shard_file(store: Path) -> None:
    shard_file(store, 1).unlink()
    report = validate(store)
    assert "store-shape" in codes(report)
    assert any("missing" in f.message for f in report.of("store-shape"))


def test_corrupt_shard_does_not_decode(store: Path) -> None:
    p = shard_file(store, 0)
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0xFF  # inside the shard index, caught by its crc32c
    p.write_bytes(bytes(raw))
    report = validate(store)
    assert any("do not decode" in f.message for f in report.of("store-shape"))


def test_cli_validates_a_store(clean_store: Path, store: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["validate", str(clean_store)]).exit_code == 0
    doc = _attrs(store)
    del doc["attributes"]["fcs"]
    _write_attrs(store, doc)
    res = runner.invoke(app, ["validate", str(store)])
    assert res.exit_code == 1 and "store-format" in res.output


def test_cli_info_and_preview(clean_store: Path, tmp_path: Path) -> None:
    from PIL import Image

    runner = CliRunner()
    res = runner.invoke(app, ["info", str(clean_store)])
    assert res.exit_code == 0, res.output
    assert "episodes" in res.output and "lz4" in res.output and "state.joint_pos[3]" in res.output
    res = runner.invoke(app, ["info", str(clean_store), "--preview", "2", "--out", str(tmp_path / "sheet.png"),
                              "--max-frames", "16"])
    assert res.exit_code == 0, res.output
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.size == (8 * 128, 2 * 128)
    assert runner.invoke(app, ["info", str(clean_store), "--preview", "9", "--out", "x.png"]).exit_code == 2
