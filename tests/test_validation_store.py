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
from fcs_data.format import STATE, chunk_file, shard_file
from fcs_data.validation import validate


@pytest.fixture(scope="module")
def clean_store(pristine_v1_lz4: Path) -> Path:
    return pristine_v1_lz4


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
    report = validate(store)
    assert codes(report) == ["store-shape"] and "episode_ends ends at row" in report.findings[0].message


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


def test_missing_shard_file_is_reported_per_episode_with_its_frames(store: Path) -> None:
    shard_file(store, 1).unlink()  # global frames 16..31: the end of episode 0 and maybe the start of 1
    report = validate(store)
    assert codes(report) == ["store-chunk"]
    ends = zarr.open_array(str(store / "meta" / "episode_ends"), mode="r")[:]
    found = {f.episode: f for f in report.of("store-chunk")}
    assert found[0].steps == list(range(16, min(int(ends[0]), 32)))
    assert found[0].file == "data/rgb/c/1/0/0/0" and "shard file is missing" in found[0].message
    if ends[0] < 32:
        assert found[1].steps == list(range(0, 32 - int(ends[0])))


def test_corrupt_shard_index_and_flipped_chunk_bytes_are_each_reported(store: Path) -> None:
    p = shard_file(store, 0)
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0xFF  # inside the shard index, caught by its crc32c
    p.write_bytes(bytes(raw))
    q = shard_file(store, 2)
    raw = bytearray(q.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside some frame chunk's bytes
    q.write_bytes(bytes(raw))
    report = validate(store)
    messages = [f.message for f in report.of("store-chunk")]
    assert any("c/0/0/0/0: the shard index fails its crc32c" in m for m in messages)
    assert sum("c/2/0/0/0: fails its crc32c checksum" in m for m in messages) == 1
    assert not report.of("store-stats"), "statistics are not compared on a damaged store"


def test_a_damaged_state_chunk_is_reported(store: Path) -> None:
    chunk_file(store, STATE, 0, 2).unlink()
    report = validate(store)
    assert "store-chunk" in codes(report)
    assert all(f.field == "data/state" for f in report.of("store-chunk"))
    assert {f.episode for f in report.of("store-chunk")} == {0, 1, 2}


def test_quick_skips_the_data_pass(store: Path) -> None:
    shard_file(store, 1).unlink()
    assert codes(validate(store, quick=True)) == []
    assert codes(validate(store)) == ["store-chunk"]


def test_a_format_1_store_validates_with_a_note_to_rewrite_it(format1_store: Path) -> None:
    report = validate(format1_store)
    assert not report.has_errors and report.exit_code() == 0
    note = report.of("store-format-old")[0]
    assert "fcs convert /tmp/f1/src -o NEW.zarr" in note.message


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
    assert "fcs_format 2" in res.output and "rewrite" not in res.output
    res = runner.invoke(app, ["info", str(clean_store), "--preview", "2", "--out", str(tmp_path / "sheet.png"),
                              "--max-frames", "16"])
    assert res.exit_code == 0, res.output
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.size == (8 * 128, 2 * 128)
    assert runner.invoke(app, ["info", str(clean_store), "--preview", "9", "--out", "x.png"]).exit_code == 2


def test_cli_info_says_a_format_1_store_is_old_and_how_to_rewrite_it(format1_store: Path) -> None:
    res = CliRunner().invoke(app, ["info", str(format1_store)])
    assert res.exit_code == 0, res.output
    assert "fcs_format 1" in res.output and "fcs convert /tmp/f1/src -o NEW.zarr" in res.output
