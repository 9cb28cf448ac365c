"""`WindowDataset` and `WindowIndex`: DINO-WM windows equal a direct computation from the source."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from helpers import load_pkl

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.errors import NonFiniteDataError
from fcs_data.loader import collate_windows
from fcs_data.splits import split_episodes
from fcs_data.store import Store, open_store
from fcs_data.synth import synthesize
from fcs_data.window_index import WindowIndex, windows_per_episode
from fcs_data.windows import ReferenceAdapter, WindowDataset


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 episodes of 14..40 steps: some too short for the longer windows below."""
    return synthesize(tmp_path_factory.mktemp("win") / "src", episodes=10, min_len=14, max_len=40, seed=21)


@pytest.fixture(scope="module")
def store(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_zarr(source, tmp_path_factory.mktemp("win") / "s.zarr", workers=1, shard_frames=8).store


@pytest.fixture(scope="module")
def arrays(source: Path) -> dict:
    lengths = load_pkl(source / "metadata.pkl")["episode_lengths"]
    states = torch.load(source / "states.pth", weights_only=True).numpy()
    actions = torch.load(source / "actions.pth", weights_only=True).numpy()
    frames = [torch.load(source / f"{i:06d}" / "obses.pth", weights_only=True).numpy() for i in range(len(lengths))]
    return {"lengths": lengths, "states": states, "actions": actions, "frames": frames}


def _expected(arrays: dict, train: np.ndarray, episode: int, s: int, num_frames: int, fs: int) -> dict:
    """The DINO-WM window straight from the logger arrays, normalised with train-episode stats."""
    n = arrays["lengths"]
    valid_a = np.concatenate([arrays["actions"][e, : n[e]] for e in train]).astype(np.float64)
    valid_p = np.concatenate([arrays["states"][e, : n[e], 0:3] for e in train]).astype(np.float64)
    steps = np.arange(s, s + num_frames * fs, fs)
    state = arrays["states"][episode, steps]
    action = arrays["actions"][episode, s : s + num_frames * fs]
    a_norm = (action - valid_a.mean(0)) / (valid_a.std(0) + 1e-6)
    p_norm = (state[:, 0:3] - valid_p.mean(0)) / (valid_p.std(0) + 1e-6)
    return {
        "visual": arrays["frames"][episode][steps].transpose(0, 3, 1, 2),
        "state": state,
        "proprio": p_norm,
        "action": a_norm.reshape(num_frames, -1),
    }


@pytest.mark.parametrize("num_hist,num_pred,frameskip", [(3, 1, 5), (1, 1, 1), (2, 3, 2), (4, 1, 1), (1, 2, 7)])
def test_every_field_equals_the_source(store: Path, arrays: dict, num_hist: int, num_pred: int,
                                       frameskip: int) -> None:
    ds = WindowDataset(store, num_hist=num_hist, num_pred=num_pred, frameskip=frameskip, split="train", seed=3)
    train = split_episodes(range(10), "train", 0.9, 3)
    num_frames = num_hist + num_pred
    rng = np.random.default_rng(num_hist * 100 + frameskip)
    for i in [*rng.integers(0, len(ds), 25).tolist(), 0, len(ds) - 1]:
        item = ds[i]
        want = _expected(arrays, train, item["episode"], item["start"], num_frames, frameskip)
        assert item["visual"].shape == (num_frames, 3, 256, 256) and item["visual"].dtype == torch.uint8
        np.testing.assert_array_equal(item["visual"].numpy(), want["visual"])
        np.testing.assert_array_equal(item["state"].numpy(), want["state"])
        np.testing.assert_allclose(item["proprio"].numpy(), want["proprio"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(item["action"].numpy(), want["action"], rtol=1e-4, atol=1e-4)
        assert item["action"].shape == (num_frames, frameskip * 9) and item["action"].dtype == torch.float32
        assert 0 <= item["start"] <= arrays["lengths"][item["episode"]] - num_frames * frameskip


def test_all_windows_are_served_exactly_once(store: Path, arrays: dict) -> None:
    ds = WindowDataset(store, num_hist=2, num_pred=1, frameskip=3, split="all")
    seen = {(ds[i]["episode"], ds[i]["start"]) for i in range(len(ds))}
    lengths = np.asarray(arrays["lengths"])
    expected = {(e, s) for e in range(10) for s in range(max(0, lengths[e] - 9 + 1))}
    assert seen == expected and len(ds) == len(expected)


def test_too_short_episodes_are_excluded_and_reported_once(store: Path, arrays: dict,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    lengths = np.asarray(arrays["lengths"])
    num_frames, fs = 4, 8  # needs 32 frames
    short = {int(e) for e in np.flatnonzero(lengths < num_frames * fs)}
    assert short and len(short) < 10, "the fixture has both kinds"
    with caplog.at_level(logging.WARNING, logger="fcs_data"):
        ds = WindowDataset(store, num_hist=3, num_pred=1, frameskip=fs, split="all")
        for i in range(min(len(ds), 50)):
            ds[i]
    assert set(ds.excluded_episodes) == short
    assert {ds[i]["episode"] for i in range(len(ds))}.isdisjoint(short)
    records = [r for r in caplog.records if "shorter than" in r.getMessage()]
    assert len(records) == 1 and "32 frames" in records[0].getMessage()


def test_split_is_seeded_stable_and_disjoint(store: Path) -> None:
    train = WindowDataset(store, num_hist=1, split="train", seed=5)
    val = WindowDataset(store, num_hist=1, split="val", seed=5)
    assert set(train.episodes).isdisjoint(val.episodes)
    assert sorted({*train.episodes, *val.episodes}) == list(range(10))
    assert len(val.episodes) == 1
    again = WindowDataset(store, num_hist=1, split="train", seed=5)
    np.testing.assert_array_equal(train.episodes, again.episodes)
    other = [tuple(split_episodes(range(10), "val", 0.7, s)) for s in range(6)]
    assert len(set(other)) > 1, "the seed changes the split"
    assert len(split_episodes([4, 9], "val", 0.9, 0)) == 1, "two episodes: one each side"


def test_validation_uses_training_statistics(store: Path, arrays: dict) -> None:
    train = WindowDataset(store, num_hist=1, split="train", seed=1)
    val = WindowDataset(store, num_hist=1, split="val", seed=1)
    every = WindowDataset(store, num_hist=1, split="all")
    assert val.stats == train.stats
    assert every.stats["action"].mean != train.stats["action"].mean
    lengths = arrays["lengths"]
    acts = np.concatenate([arrays["actions"][e, : lengths[e]] for e in train.episodes])
    np.testing.assert_allclose(train.stats["action"].mean, acts.mean(0), rtol=1e-6, atol=1e-9)
    assert train.stats["action"].count == len(acts)


def _snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def test_the_default_split_takes_the_statistics_the_converter_stored(store: Path, arrays: dict,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import fcs_data.windows as windows

    monkeypatch.setattr(windows, "training_stats", lambda *a: pytest.fail("statistics were recomputed"))
    ds = WindowDataset(store, num_hist=1)
    stored = open_store(store).metadata.norm_stats
    assert stored is not None and ds.stats["action"] == stored.action
    train = split_episodes(range(10), "train", 0.9, 42)
    assert stored.train_episodes == train.tolist()
    acts = np.concatenate([arrays["actions"][e, : arrays["lengths"][e]] for e in train])
    np.testing.assert_allclose(ds.stats["action"].mean, acts.mean(0), rtol=1e-6, atol=1e-9)


def test_other_splits_are_remembered_outside_the_store_which_is_never_written(
    store: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcs_data.windows as windows

    before = _snapshot(store)
    first = WindowDataset(store, num_hist=1, split="train", seed=77)
    monkeypatch.setattr(windows, "training_stats", lambda *a: pytest.fail("statistics were recomputed"))
    second = WindowDataset(store, num_hist=2, split="val", seed=77)
    for i in range(len(second)):
        second[i]
    assert second.stats == first.stats
    assert list((private_cache / "norm_stats").glob("*.json")), "cached in the user cache"
    assert _snapshot(store) == before, "the read path wrote into the store"


def test_split_statistics_never_come_from_another_store_with_the_same_fingerprint(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_source = synthesize(tmp_path / "other", episodes=10, min_len=14, max_len=40, seed=22)
    other = convert_to_zarr(other_source, tmp_path / "other.zarr", workers=1, shard_frames=8).store
    # two stores converted in the same second with equal episode lengths share a fingerprint
    monkeypatch.setattr(Store, "legacy_fingerprint", property(lambda self: "same"))
    first = WindowDataset(store, num_hist=1, split="train", seed=78)
    second = WindowDataset(other, num_hist=1, split="train", seed=78)
    s = open_store(other)
    train = split_episodes(range(s.num_episodes), "train", 0.9, 78)
    acts = np.concatenate([s.read_rows("action", int(s.episode_starts[e]), int(s.episode_ends[e])) for e in train])
    np.testing.assert_allclose(second.stats["action"].mean, acts.mean(0), rtol=1e-6, atol=1e-9)
    assert first.stats != second.stats


def test_a_nan_in_a_valid_step_is_refused_naming_episode_and_step(store: Path, tmp_path: Path) -> None:
    bad = Path(shutil.copytree(store, tmp_path / "nan.zarr"))
    s = open_store(bad)
    row = int(s.episode_starts[4]) + 9
    arr = zarr.open_array(str(bad / "data" / "action"), mode="r+")
    values = arr[row]
    values[2] = np.nan
    arr[row] = values
    ds = WindowDataset(bad, num_hist=1, frameskip=1, split="all")
    assert np.isfinite(ds.stats["action"].mean).all(), "statistics are taken over finite rows only"
    touching = [i for i in range(len(ds)) if ds.index.locate(i)[0] == 4 and 8 <= ds.index.locate(i)[1] <= 9]
    others = [i for i in range(len(ds)) if i not in touching]
    for i in others[:40]:
        assert torch.isfinite(ds[i]["action"]).all()
    for i in touching:
        with pytest.raises(NonFiniteDataError, match=r"episode 4 step 9: nan in action\.joint_target \(dim 2\)"):
            ds[i]


def test_unnormalize_inverts_normalisation(store: Path, arrays: dict) -> None:
    ds = WindowDataset(store, num_hist=2, frameskip=3, split="all")
    item = ds[5]
    raw = arrays["actions"][item["episode"], item["start"] : item["start"] + 9]
    np.testing.assert_allclose(ds.unnormalize_action(item["action"]), raw.reshape(3, -1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.normalize_action(raw.reshape(3, -1)), item["action"].numpy(), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(ds.unnormalize_proprio(item["proprio"]), item["state"][:, 0:3], atol=1e-5)
    plain = WindowDataset(store, num_hist=2, frameskip=3, split="all", normalize=False)
    np.testing.assert_array_equal(plain[5]["action"].numpy(), raw.reshape(3, -1))


def test_memory_cache_serves_the_same_items(store: Path) -> None:
    ds = WindowDataset(store, num_hist=2, frameskip=2, split="val", seed=2)
    cached = WindowDataset(store, num_hist=2, frameskip=2, split="val", seed=2, cache=True)
    total = int(open_store(store).episode_lengths[ds.episodes].sum())
    assert cached.cache_bytes == total * 256 * 256 * 3
    for i in range(len(ds)):
        a, b = ds[i], cached[i]
        assert all(torch.equal(a[k], b[k]) for k in ("visual", "proprio", "action", "state"))


def test_reference_adapter_gives_obs_act_state(store: Path) -> None:
    ds = WindowDataset(store, num_hist=3, frameskip=1, split="all")
    obs, act, state = ReferenceAdapter(ds)[4]
    item = ds[4]
    assert set(obs) == {"visual", "proprio"}
    assert torch.equal(obs["visual"], item["visual"]) and torch.equal(act, item["action"])
    assert torch.equal(state, item["state"])
    obs, _, _ = ReferenceAdapter(ds, transform=lambda v: v.float() / 255)[4]
    assert obs["visual"].dtype == torch.float32


def test_read_path_never_calls_torch_load(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = WindowDataset(store, num_hist=3, frameskip=2, split="all")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load on the read path"))
    for i in range(0, len(ds), 7):
        ds[i]


def test_dataset_pickles_to_a_path_and_small_arrays(store: Path) -> None:
    ds = WindowDataset(store, num_hist=3, frameskip=2, split="all")
    ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000
    back = pickle.loads(blob)
    assert torch.equal(back[3]["visual"], ds[3]["visual"])


def test_window_index_matches_brute_force() -> None:
    lengths = np.array([3, 10, 0, 7, 25, 9])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    idx = WindowIndex(np.arange(6), starts, lengths, num_frames=2, frameskip=4)
    brute = [(e, s, int(starts[e]) + s) for e in range(6) for s in range(max(0, lengths[e] - 8 + 1))]
    assert [idx.locate(i) for i in range(len(idx))] == brute
    eps, ss, gs = idx.locate_many(np.arange(len(idx)))
    assert list(zip(eps.tolist(), ss.tolist(), gs.tolist(), strict=True)) == brute
    with pytest.raises(IndexError):
        idx.locate(len(idx))


def test_ten_million_windows_take_almost_no_memory() -> None:
    lengths = np.full(10_000, 1_000 + 20 - 1)  # 1,000 windows each of 4 frames at frameskip 5
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    idx = WindowIndex(np.arange(10_000), starts, lengths, num_frames=4, frameskip=5)
    assert len(idx) == 10_000_000
    assert idx.nbytes < 1_000_000
    assert idx.locate(9_999_999) == (9_999, 999, int(starts[-1]) + 999)


def test_windows_per_episode_uses_frames_times_frameskip() -> None:
    np.testing.assert_array_equal(windows_per_episode([19, 20, 21, 5], 4, 5), [0, 1, 2, 0])


# ---- several cameras and keyframes (issue 11) ---------------------------------------------------------


@pytest.fixture(scope="module")
def two_cameras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cams")
    src = synthesize(tmp / "raw", episodes=3, min_len=14, max_len=16, seed=5, layout="franka_cube_stack_primitive+cams2")
    return convert_to_zarr(src, tmp / "s.zarr", workers=1).store


def test_cameras_come_stacked_or_fused_as_the_logger_fused_them(two_cameras: Path) -> None:
    store = open_store(two_cameras)
    assert store.cameras == ["cam_0", "cam_1"]
    one = WindowDataset(two_cameras, num_hist=2, frameskip=2, split="all")
    both = WindowDataset(two_cameras, num_hist=2, frameskip=2, split="all", cameras=["cam_0", "cam_1"])
    sbs = WindowDataset(two_cameras, num_hist=2, frameskip=2, split="all", cameras=["cam_0", "cam_1"],
                        fuse="side_by_side")
    chs = WindowDataset(two_cameras, num_hist=2, frameskip=2, split="all", cameras=["cam_0", "cam_1"],
                        fuse="channel_stack")
    item, stacked = one[3], both[3]
    assert item["visual"].shape == (3, 3, 224, 224) and stacked["visual"].shape == (3, 2, 3, 224, 224)
    assert torch.equal(stacked["visual"][:, 0], item["visual"])
    g = int(store.episode_starts[item["episode"]]) + item["start"]
    cam1 = torch.from_numpy(store.read_frames(np.array([g]), camera="cam_1"))[0].permute(2, 0, 1)
    assert torch.equal(stacked["visual"][0, 1], cam1)
    assert sbs[3]["visual"].shape == (3, 3, 224, 448)
    assert torch.equal(sbs[3]["visual"][:, :, :, 224:], stacked["visual"][:, 1])
    fused = chs[3]["visual"]
    assert torch.equal(fused[:, :2], item["visual"][:, :2])
    gray = (stacked["visual"][:, 1].double() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1).round()
    assert torch.equal(fused[:, 2], gray.to(torch.uint8))
    batch = collate_windows([both[0], both[1]])
    assert batch["visual"].shape == (2, 3, 2, 3, 224, 224) and torch.equal(batch["visual"][1], both[1]["visual"])
    cached = WindowDataset(two_cameras, num_hist=2, frameskip=2, split="all", cameras=["cam_0", "cam_1"], cache=True)
    assert torch.equal(cached[3]["visual"], stacked["visual"])
    with pytest.raises(ValueError, match="channel_stack fuses exactly two cameras"):
        WindowDataset(two_cameras, num_hist=2, cameras=["cam_0"], fuse="channel_stack")
    with pytest.raises(ValueError, match="not \\['cam_9'\\]"):
        WindowDataset(two_cameras, num_hist=2, cameras=["cam_0", "cam_9"])


@pytest.fixture(scope="module")
def keyframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("kf")
    src = synthesize(tmp / "raw", episodes=3, min_len=12, max_len=14, seed=6, layout="franka_cube_stack_keyframe")
    return convert_to_zarr(src, tmp / "s.zarr", workers=1).store


def test_keyframe_windows_carry_their_original_frame_numbers_and_can_respect_real_time(keyframes: Path) -> None:
    store = open_store(keyframes)
    every = WindowDataset(keyframes, num_hist=2, frameskip=1, split="all")
    index = {e: store.read_rows("frame_index", int(store.episode_starts[e]), int(store.episode_ends[e]))
             for e in range(store.num_episodes)}
    gaps = [int(np.diff(every[i]["frame_index"].numpy()).max()) for i in range(len(every))]
    limit = int(np.median(gaps))
    near = WindowDataset(keyframes, num_hist=2, frameskip=1, split="all", max_frame_gap=limit)
    assert 0 < len(near) < len(every)
    assert len(near) == sum(g <= limit for g in gaps)
    for i in range(len(near)):
        item = near[i]
        steps = item["start"] + np.arange(3)
        np.testing.assert_array_equal(item["frame_index"].numpy(), index[item["episode"]][steps])
        assert np.diff(item["frame_index"].numpy()).max() <= limit
    with pytest.raises(ValueError, match="max_frame_gap needs a keyframe store"):
        WindowDataset(two_cameras_free_v1(keyframes.parent), num_hist=1, max_frame_gap=3)


def two_cameras_free_v1(folder: Path) -> Path:
    """A v1 store (no frame indices) in `folder`."""
    src = synthesize(folder / "v1raw", episodes=2, min_len=20, max_len=20, seed=1)
    return convert_to_zarr(src, folder / "v1.zarr", workers=1, overwrite=True).store


def test_items_are_packed_by_the_window_spec_and_normalised_by_the_normalizer(store: Path, arrays: dict) -> None:
    ds = WindowDataset(store, num_hist=2, frameskip=3, split="train")
    assert (ds.spec.num_frames, ds.spec.frameskip, ds.spec.action_dim) == (3, 3, 9)
    item = ds[4]
    e, s = item["episode"], item["start"]
    raw_actions = arrays["actions"][e, s : s + ds.spec.raw_steps]
    raw_proprio = arrays["states"][e, s : s + ds.spec.raw_steps : 3, 0:3]
    # bit for bit: the one normalisation, in the precision the windows feed the model
    np.testing.assert_array_equal(item["action"].numpy(), ds.spec.pack(ds.normalizer.normalize("action", raw_actions)))
    np.testing.assert_array_equal(item["proprio"].numpy(), ds.normalizer.normalize("proprio", raw_proprio))
    assert ds.stats == {"action": ds.normalizer.action, "proprio": ds.normalizer.proprio}
