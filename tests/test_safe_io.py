"""Plain-data unpickling and weights-only tensor loading refuse code and name the file."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from fcs_data.errors import UnreadableFileError, UnsafePickleError
from fcs_data.safe_io import load_pickle, load_state_dict, load_tensor


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def _dump(obj, path: Path, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_and_numpy_round_trip(tmp_path: Path, protocol: int) -> None:
    obj = {
        "episode_lengths": [3, 4],
        "created": "2026-01-01",
        "ratio": 0.5,
        "flag": True,
        "none": None,
        "raw": b"\x00\x01",
        "tuple": (1, 2),
        "set": {1, 2},
        "ordered": OrderedDict(a=1),
        "cubes": np.arange(6, dtype=np.float64).reshape(2, 3),
        "seed": np.int64(7),
        "scale": np.float32(0.25),
    }
    back = load_pickle(_dump(obj, tmp_path / "m.pkl", protocol))
    assert back["episode_lengths"] == [3, 4] and back["raw"] == b"\x00\x01" and back["set"] == {1, 2}
    np.testing.assert_array_equal(back["cubes"], obj["cubes"])
    assert back["seed"] == 7 and back["scale"] == np.float32(0.25)


def test_code_in_a_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = _dump({"x": _Payload(marker)}, tmp_path / "evil.pkl")
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*os.*makedirs") as info:
        load_pickle(path)
    assert info.value.path == str(path)
    assert not marker.exists()


def test_object_arrays_cannot_smuggle_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    arr = np.empty(1, dtype=object)
    arr[0] = _Payload(marker)
    with pytest.raises(UnsafePickleError):
        load_pickle(_dump(arr, tmp_path / "obj.pkl"))
    assert not marker.exists()


def test_truncated_pickle_is_unreadable(tmp_path: Path) -> None:
    path = _dump({"a": list(range(100))}, tmp_path / "t.pkl")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(UnreadableFileError, match=r"t\.pkl"):
        load_pickle(path)


def test_tensor_loads_weights_only_and_memory_mapped(tmp_path: Path) -> None:
    t = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    torch.save(t, tmp_path / "x.pth")
    back = load_tensor(tmp_path / "x.pth", mmap=True)
    assert torch.equal(back, t)


def test_code_in_a_pth_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"x": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UnsafePickleError, match=r"evil\.pth: refused to unpickle global \w+\.makedirs"):
        load_tensor(tmp_path / "evil.pth")
    assert not marker.exists()


def test_a_file_that_is_not_a_torch_save_is_unreadable_not_unsafe(tmp_path: Path) -> None:
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(UnreadableFileError, match=r"garbage\.pth: cannot be read: not a torch\.save file"):
        load_tensor(tmp_path / "garbage.pth")
    with pytest.raises(UnreadableFileError, match=r"garbage\.pth"):
        load_state_dict(tmp_path / "garbage.pth")


def test_a_state_dict_file_must_hold_a_dict(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "sd.pth")
    assert torch.equal(load_state_dict(tmp_path / "sd.pth")["w"], torch.ones(2))
    torch.save(torch.ones(2), tmp_path / "t.pth")
    with pytest.raises(UnreadableFileError, match="expected a state dict, found Tensor"):
        load_state_dict(tmp_path / "t.pth")


def test_a_pth_holding_a_dict_is_not_a_tensor(tmp_path: Path) -> None:
    torch.save({"a": torch.zeros(1)}, tmp_path / "d.pth")
    with pytest.raises(UnreadableFileError, match="expected one tensor"):
        load_tensor(tmp_path / "d.pth")


def test_truncated_pth_is_unreadable(tmp_path: Path) -> None:
    torch.save(torch.zeros(1000), tmp_path / "z.pth")
    p = tmp_path / "z.pth"
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(UnreadableFileError, match=r"z\.pth"):
        load_tensor(p, mmap=True)


def _damaged(tmp_path: Path) -> dict[str, Path]:
    """A torch.save file cut short, one with flipped bytes, an empty one, a truncated legacy pickle, text."""
    good = tmp_path / "good.pth"
    torch.save(torch.zeros(4000), good)
    data = good.read_bytes()
    files = {"cut": data[: len(data) // 2], "cut_end": data[:-10], "flipped": data[:200] + bytes(b ^ 0xFF for b in
             data[200:400]) + data[400:], "empty": b"", "text": b"hello\n"}
    legacy = tmp_path / "legacy.pth"
    torch.save(torch.zeros(400), legacy, _use_new_zipfile_serialization=False)
    files["legacy_cut"] = legacy.read_bytes()[:300]
    out = {}
    for name, content in files.items():
        out[name] = tmp_path / f"{name}.pth"
        out[name].write_bytes(content)
    return out


@pytest.mark.parametrize("name,words", [("cut", "truncated"), ("cut_end", "truncated"), ("flipped", "corrupt"),
                                        ("empty", "the file is empty"), ("legacy_cut", "truncated"), ("text", "not a torch.save")])
def test_a_damaged_torch_file_is_called_truncated_or_corrupt_never_a_reason_to_unpickle(
        tmp_path: Path, name: str, words: str) -> None:
    path = _damaged(tmp_path)[name]
    with pytest.raises(UnreadableFileError, match=rf"{name}\.pth: cannot be read: {words}") as info:
        load_tensor(path)
    text = str(info.value)
    assert "weights_only" not in text and "miniz" not in text and "\x1b" not in text


def test_a_damaged_checkpoint_is_named_the_same_way(tmp_path: Path) -> None:
    from fcs_train.checkpoint import CheckpointError, load_checkpoint

    path = _damaged(tmp_path)["cut"]
    with pytest.raises(CheckpointError, match=r"cut\.pth: cannot be loaded as an fcs checkpoint: truncated") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)
