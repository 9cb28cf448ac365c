"""`convert_to_zarr`: exact round trips, conventions, refusal, atomicity, resume after a crash."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import zarr
from helpers import edit_tensor, load_pkl

from fcs_data._chunks import ArrayReader
from fcs_data.converters import zarr_store
from fcs_data.converters.to_zarr import ConvertProgress, convert_to_zarr
from fcs_data.errors import (
    ConversionRefused,
    LockedError,
    ResumeMismatch,
    StoreError,
    UnsafePickleError,
    VerificationFailed,
)
from fcs_data.format import PROGRESS_FILE, RGB, shard_file
from fcs_data.sources.detect import DetectionError
from fcs_data.stats import array_stats
from fcs_data.store import open_store
from fcs_data.synth import synthesize


def _source_v1(root: Path):
    lengths = load_pkl(root / "metadata.pkl")["episode_lengths"]
    states = torch.load(root / "states.pth", weights_only=True).numpy()
    actions = torch.load(root / "actions.pth", weights_only=True).numpy()
    for i, n in enumerate(lengths):
        frames = torch.load(root / f"{i:06d}" / "obses.pth", weights_only=True).numpy()
        yield frames, states[i, :n], actions[i, :n]


def _zarr_arrays(store: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")
    return {name: g[name][:] for name in ("data/rgb", "data/state", "data/action", "meta/episode_ends")}


@pytest.mark.parametrize("codec", ["lz4", "none", "zstd"])
def test_v1_round_trip_is_exact(pristine_v1: Path, tmp_path: Path, codec: str) -> None:
    result = convert_to_zarr(pristine_v1, tmp_path / "s.zarr", codec=codec, workers=1, verify=True, command=["t"])
    assert result.verified and result.num_episodes == 3
    store = open_store(result.store)
    for i, (frames, state, action) in enumerate(_source_v1(pristine_v1)):
        ep = store.episode(i)
        np.testing.assert_array_equal(ep.rgb[:], frames)
        np.testing.assert_array_equal(ep.state[:], state)
        np.testing.assert_array_equal(ep.action[:], action)
        assert ep.meta.source_dir == f"{i:06d}" and len(ep.meta.content_hash) == 64
        assert ep.meta.params["cube_positions"] == load_pkl(pristine_v1 / f"{i:06d}" / "property_params.pkl")[
            "cube_positions"].tolist()
    assert store.metadata.codec.preset == codec and store.metadata.provenance.command == ["t"]


def test_store_opens_with_plain_zarr_and_every_array_reads(pristine_v1: Path, tmp_path: Path) -> None:
    store = convert_to_zarr(pristine_v1, tmp_path / "s.zarr", workers=1).store
    arrays = _zarr_arrays(store)
    src = list(_source_v1(pristine_v1))
    np.testing.assert_array_equal(arrays["data/rgb"], np.concatenate([f for f, _, _ in src]))
    np.testing.assert_array_equal(arrays["data/state"], np.concatenate([s for _, s, _ in src]))
    np.testing.assert_array_equal(arrays["meta/episode_ends"], np.cumsum([len(f) for f, _, _ in src]))
    attrs = zarr.open_group(str(store), mode="r").attrs.asdict()["fcs"]
    assert attrs["fcs_format"] == 2 and attrs["channel_order"] == "RGB" and attrs["action_alignment"] == "forward"
    assert attrs["layout"]["name"] == "franka_cube_stack_v1"
    assert not (store / "fcs-progress.jsonl").exists()


def test_statistics_are_over_valid_steps(pristine_v1: Path, tmp_path: Path) -> None:
    store = open_store(convert_to_zarr(pristine_v1, tmp_path / "s.zarr", workers=1).store)
    src = list(_source_v1(pristine_v1))
    state = np.concatenate([s for _, s, _ in src])
    assert store.stats.state == array_stats(state)
    assert store.stats.proprio == array_stats(state[:, 0:3])
    assert store.stats.state.count == sum(len(s) for _, s, _ in src)
    frames = np.concatenate([f for f, _, _ in src]).astype(np.float64)
    np.testing.assert_allclose(store.stats.rgb.mean, frames.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(store.stats.rgb.std, frames.std(axis=(0, 1, 2)), rtol=1e-9)


def test_min_logger_is_brought_to_store_conventions(pristine_min: Path, tmp_path: Path) -> None:
    result = convert_to_zarr(pristine_min, tmp_path / "m.zarr", layout="franka_cube_stack_min", workers=1,
                             verify=True)
    assert any("BGR -> RGB" in c for c in result.conversions)
    assert any("backward -> forward" in c for c in result.conversions)
    store = open_store(result.store)
    lengths = [20, 24, 28]  # the min logger writes no metadata.pkl: the fixture's episode lengths
    for i, n in enumerate(lengths):
        d = pristine_min / f"{i:06d}"
        bgr = torch.load(d / "obses.pth", weights_only=True).numpy()
        steps = []
        for t in range(n):
            with h5py.File(d / f"{t:03d}.h5") as f:
                steps.append((f["eef_states"][()].reshape(-1), f["action"][()]))
        state = np.stack([s for s, _ in steps])
        action = np.stack([a for _, a in steps])
        ep = store.episode(i)
        assert len(ep) == n - 1  # the last frame has no forward action
        np.testing.assert_array_equal(ep.rgb[:], bgr[: n - 1, :, :, ::-1].astype(np.uint8))
        np.testing.assert_array_equal(ep.state[:], state[: n - 1])
        np.testing.assert_array_equal(ep.action[:], action[1:].astype(np.float32))  # forward[t] = backward[t + 1]
        # forward now: the action's current-EE part equals the next state's EE position
        np.testing.assert_allclose(ep.action[:-1][:, 3:6], ep.state[1:][:, 0:3])


def test_non_integer_float_frames_are_refused(min_logger: Path, tmp_path: Path) -> None:
    edit_tensor(min_logger / "000001" / "obses.pth", lambda t: t + 0.25)
    with pytest.raises(ConversionRefused) as info:
        convert_to_zarr(min_logger, tmp_path / "m.zarr", layout="franka_cube_stack_min", workers=1)
    assert info.value.report.of("obs-values")[0].episode == 1
    assert not (tmp_path / "m.zarr").exists() and not (tmp_path / "m.zarr.partial").exists()


def test_errors_refuse_and_skip_bad_converts_the_rest(v1: Path, tmp_path: Path) -> None:
    def poke(t: torch.Tensor) -> torch.Tensor:
        t[1, 3, 0] = float("nan")
        return t

    edit_tensor(v1 / "actions.pth", poke)
    with pytest.raises(ConversionRefused, match="skip-bad") as info:
        convert_to_zarr(v1, tmp_path / "s.zarr", workers=1)
    assert info.value.report.of("nonfinite")[0].episode == 1
    assert not (tmp_path / "s.zarr").exists()
    result = convert_to_zarr(v1, tmp_path / "s.zarr", workers=1, skip_bad=True)
    assert set(result.skipped) == {1} and "nonfinite" in result.skipped[1][0]
    store = open_store(result.store)
    assert [m.source_index for m in store.episode_meta] == [0, 2]
    assert store.metadata.provenance.skipped_episodes == result.skipped
    np.testing.assert_array_equal(store.episode(1).rgb[:], list(_source_v1(v1))[2][0])


def test_dataset_wide_errors_refuse_even_with_skip_bad(v1: Path, tmp_path: Path) -> None:
    (v1 / "states.pth").unlink()
    with pytest.raises(ConversionRefused, match="dataset-wide"):
        convert_to_zarr(v1, tmp_path / "s.zarr", layout="franka_cube_stack_v1", workers=1, skip_bad=True)
    with pytest.raises(DetectionError, match=r"franka_cube_stack_v1: needs states\.pth at the root"):
        convert_to_zarr(v1, tmp_path / "s.zarr", workers=1, skip_bad=True)  # no layout given: nothing matches


def test_existing_output_needs_overwrite(pristine_v1: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    convert_to_zarr(pristine_v1, out, workers=1, codec="none")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_to_zarr(pristine_v1, out, workers=1)
    convert_to_zarr(pristine_v1, out, workers=1, codec="zstd", overwrite=True)
    assert open_store(out).metadata.codec.preset == "zstd"
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_two_workers_write_the_same_store_as_one(pristine_v1: Path, tmp_path: Path) -> None:
    a = convert_to_zarr(pristine_v1, tmp_path / "a.zarr", workers=1, shard_frames=16).store
    b = convert_to_zarr(pristine_v1, tmp_path / "b.zarr", workers=2, shard_frames=16).store
    for name, arr in _zarr_arrays(a).items():
        np.testing.assert_array_equal(arr, _zarr_arrays(b)[name], err_msg=name)
    assert open_store(a).stats == open_store(b).stats


def test_verify_catches_a_store_that_differs_and_publishes_nothing(
    pristine_v1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = zarr_store.FrameWriter.write_shard

    def corrupt(self, shard: int, frames: np.ndarray) -> None:
        frames = frames.copy()
        frames[0, 0, 0, 0] ^= 1
        original(self, shard, frames)

    monkeypatch.setattr(zarr_store.FrameWriter, "write_shard", corrupt)
    with pytest.raises(VerificationFailed, match="differ from the source"):
        convert_to_zarr(pristine_v1, tmp_path / "s.zarr", workers=1, verify=True)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_leaves_no_output_and_resume_finishes(pristine_v1: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"

    def stop_after_two(done: int, total: int, nbytes: int) -> None:
        if done >= 2 * 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_to_zarr(pristine_v1, out, workers=1, shard_frames=8, progress=ConvertProgress(frames=stop_after_two))
    assert not out.exists() and (tmp_path / "s.zarr.partial").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        convert_to_zarr(pristine_v1, out, workers=1, shard_frames=8)
    with pytest.raises(ResumeMismatch, match="different source, layout or options"):
        convert_to_zarr(pristine_v1, out, workers=1, shard_frames=16, resume=True)
    result = convert_to_zarr(pristine_v1, out, workers=1, shard_frames=8, resume=True)
    assert result.resumed_shards == 2
    clean = convert_to_zarr(pristine_v1, tmp_path / "clean.zarr", workers=1, shard_frames=8).store
    for name, arr in _zarr_arrays(clean).items():
        np.testing.assert_array_equal(arr, _zarr_arrays(out)[name], err_msg=name)
    assert open_store(out).stats == open_store(clean).stats


def test_sigkill_mid_conversion_then_resume_equals_a_clean_conversion(tmp_path: Path) -> None:
    src = synthesize(tmp_path / "src", episodes=10, min_len=60, max_len=60, seed=11)
    out = tmp_path / "s.zarr"
    partial = tmp_path / "s.zarr.partial"
    cmd = [sys.executable, "-m", "fcs", "convert", str(src), "-o", str(out), "--workers", "1", "--codec", "zstd",
           "--shard-frames", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress_file = partial / PROGRESS_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if progress_file.exists() and progress_file.read_text().count('"shard"') >= 5:
            break
        assert proc.poll() is None, "the conversion ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = progress_file.read_text().count('"shard"')
    assert 5 <= done < 150, "killed part-way"
    assert not out.exists() and partial.exists()
    with pytest.raises(StoreError, match="fcs convert"):
        open_store(partial)  # an unfinished store says how to finish it
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "already done" in res.stdout
    clean = convert_to_zarr(src, tmp_path / "clean.zarr", workers=1, codec="zstd", shard_frames=4).store
    for name, arr in _zarr_arrays(clean).items():
        np.testing.assert_array_equal(arr, _zarr_arrays(out)[name], err_msg=name)
    a, b = open_store(clean), open_store(out)
    assert a.stats == b.stats
    assert [m.content_hash for m in a.episode_meta] == [m.content_hash for m in b.episode_meta]
    assert not partial.exists()
    assert sorted(os.listdir(tmp_path)) == ["clean.zarr", "s.zarr", "src"]


# ---- issue 9: codecs, black shards, locks, full disks, errors across the pool -------------------------


def test_auto_codec_stores_noisy_frames_uncompressed_and_says_why(pristine_v1: Path, tmp_path: Path) -> None:
    result = convert_to_zarr(pristine_v1, tmp_path / "s.zarr", workers=1)
    assert result.codec == "none" and "less than 15 %" in result.codec_note
    assert open_store(result.store).metadata.codec.preset == "none"
    assert ArrayReader(result.store, RGB).meta.codec is None


def test_auto_codec_compresses_frames_that_compress(v1: Path, tmp_path: Path) -> None:
    for i in range(3):
        edit_tensor(v1 / f"{i:06d}" / "obses.pth", lambda t: (t // 64) * 64)  # flat, noise-free renders
    result = convert_to_zarr(v1, tmp_path / "s.zarr", workers=1, verify=True)
    assert result.codec == "lz4" and "lz4: it saves" in result.codec_note
    assert open_store(result.store).metadata.codec.preset == "lz4"


def test_a_shard_aligned_run_of_black_frames_is_written_and_validates(v1: Path, tmp_path: Path) -> None:
    from fcs_data.validation import validate

    edit_tensor(v1 / "000000" / "obses.pth", lambda t: torch.cat([torch.zeros_like(t[:16]), t[16:]]))
    store = convert_to_zarr(v1, tmp_path / "s.zarr", workers=1, shard_frames=16, codec="lz4").store
    assert shard_file(store, 0).exists(), "an all-black shard is written like any other"
    report = validate(store)
    assert not report.has_errors, [f.message for f in report.findings if f.severity == "error"]
    assert not open_store(store).read_frames(np.arange(16)).any()


def _slow_conversion(src: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fcs", "convert", str(src), "-o", str(out), "--workers", "1", "--codec", "zstd",
           "--shard-frames", "4"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_conversion_to_the_same_output_is_refused_at_once(tmp_path: Path) -> None:
    src = synthesize(tmp_path / "src", episodes=6, min_len=60, max_len=60, seed=12)
    out = tmp_path / "s.zarr"
    first = _slow_conversion(src, out)
    deadline = time.monotonic() + 120
    while not (out.with_name("s.zarr.partial") / PROGRESS_FILE).exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    with pytest.raises(LockedError, match=rf"pid {first.pid}\b"):
        convert_to_zarr(src, out, workers=1, codec="none", overwrite=True)
    second = subprocess.run([sys.executable, "-m", "fcs", "convert", str(src), "-o", str(out), "--workers", "1",
                             "--codec", "none", "--overwrite"], capture_output=True, text=True)
    assert second.returncode == 1 and f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    store = open_store(out)
    assert store.metadata.codec.preset == "zstd" and ArrayReader(out, RGB).meta.codec.codec_id == "blosc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr", "src"], "no lock file left behind"


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with an OSError instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
from fcs.cli import main
sys.argv = ["fcs", *sys.argv[1:]]
main()
"""


def test_a_write_error_ends_in_one_line_keeps_the_partial_store_and_resume_finishes(
    pristine_v1: Path, tmp_path: Path
) -> None:
    out = tmp_path / "s.zarr"
    args = ["convert", str(pristine_v1), "-o", str(out), "--workers", "1", "--codec", "none", "--shard-frames", "16"]
    res = subprocess.run([sys.executable, "-c", _FULL_DISK, *args], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "File too large" in lines[0] and "--resume" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert (tmp_path / "s.zarr.partial").exists() and not out.exists()
    res = subprocess.run([sys.executable, "-m", "fcs", *args, "--resume"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    clean = convert_to_zarr(pristine_v1, tmp_path / "clean.zarr", workers=1, codec="none", shard_frames=16).store
    for name, arr in _zarr_arrays(clean).items():
        np.testing.assert_array_equal(arr, _zarr_arrays(out)[name], err_msg=name)


def test_an_error_in_a_worker_arrives_intact_and_leaves_nothing_behind(v1: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    def swap_after_validation(done: int, total: int) -> None:
        if done == total:  # validation saw a clean file; the conversion workers get a malicious one
            (v1 / "000001" / "property_params.pkl").write_bytes(pickle.dumps({"x": Payload()}))

    with pytest.raises(UnsafePickleError, match=r"000001/property_params\.pkl.*makedirs") as info:
        convert_to_zarr(v1, tmp_path / "s.zarr", workers=2, progress=ConvertProgress(validate=swap_after_validation))
    assert info.value.path.endswith("000001/property_params.pkl")
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"], "no OUT, OUT.partial or lock left behind"
