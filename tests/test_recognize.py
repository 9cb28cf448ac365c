"""Inputs named by what they are: every kind of path a user hands fcs is recognised without unpickling."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.recognize import WrongInputError, expect, recognize


@pytest.fixture(scope="module")
def v1_store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_zarr(pristine_v1, tmp_path_factory.mktemp("recognize") / "s.zarr", workers=1).store


def _reference_checkpoint(path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool = False) -> Path:
    """As the reference train.py saves: whole modules from `models.*`, pickled."""
    mod = types.ModuleType("models.vit")
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    monkeypatch.setitem(sys.modules, "models.vit", mod)
    cls = type("ViTPredictor", (nn.Linear,), {"__module__": "models.vit", "__qualname__": "ViTPredictor"})
    mod.ViTPredictor = cls
    torch.save({"epoch": 3, "predictor": cls(2, 2)}, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_each_kind_of_input_is_recognised(pristine_v1: Path, pristine_min: Path, v1_store: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    ckpt = tmp_path / "run" / "checkpoints" / "latest.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"fcs_checkpoint": 2, "model": {}}, ckpt)
    (tmp_path / "run" / "config.yaml").write_text("{}\n")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    partial = tmp_path / "out.zarr.partial"
    partial.mkdir()
    (partial / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"fcs_partial": {}}}')
    kinds = {
        pristine_v1: "logger_dataset", pristine_min: "logger_dataset", v1_store: "store",
        tmp_path / "empty": "empty_dir", junk: "other_dir", junk / "notes.txt": "other_file",
        tmp_path / "nope": "missing", ckpt: "fcs_checkpoint", tmp_path / "run": "run_dir",
        tmp_path / "plain.pt": "torch_file", partial: "partial_store",
        _reference_checkpoint(tmp_path / "ref.pth", monkeypatch): "reference_checkpoint",
        _reference_checkpoint(tmp_path / "legacy.pth", monkeypatch, legacy=True): "reference_checkpoint",
    }
    assert {p: recognize(p).kind for p in kinds} == kinds


def test_recognition_never_unpickles(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with (tmp_path / "evil.pth").open("wb") as f:
        pickle.dump({"x": Evil()}, f, protocol=2)
    assert recognize(tmp_path / "evil.pth").kind == "torch_file"
    assert not marker.exists()


def test_a_store_given_for_a_dataset_says_what_it_is_and_what_to_run(v1_store: Path) -> None:
    with pytest.raises(WrongInputError, match=r"this is an fcs store, not a logger dataset; did you mean `fcs info "):
        expect(v1_store, "logger_dataset", role="a logger dataset")


def test_a_dataset_given_for_a_store_points_at_convert(pristine_v1: Path) -> None:
    with pytest.raises(WrongInputError, match=r"this is a logger dataset, not an fcs store; did you mean `fcs validate"
                                              r" .*fcs convert"):
        expect(pristine_v1, "store", role="an fcs store")


def test_an_empty_folder_and_a_missing_path_are_named(tmp_path: Path) -> None:
    with pytest.raises(WrongInputError, match=r"this is an empty folder, not an fcs store$"):
        expect(tmp_path, "store", role="an fcs store")
    with pytest.raises(WrongInputError, match="no such file or folder"):
        expect(tmp_path / "x", "store", role="an fcs store")
