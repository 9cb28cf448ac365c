"""Validation of an fcs store: format, shapes against `episode_ends`, every frame decodes, NaN,
the layout's field checks on the stored arrays, and statistics recomputed and compared."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from fcs_data.converters.zarr_store import ACTION, RGB, STATE, shard_file
from fcs_data.errors import StoreError
from fcs_data.schemas import Finding, ValidationReport
from fcs_data.schemas.store import ArrayStats, StoreMetadata
from fcs_data.stats import array_stats, channel_histogram, image_stats
from fcs_data.store import Store, read_metadata
from fcs_data.validation import checks

_RTOL = 1e-5


def _close(a: list[float], b: list[float]) -> bool:
    return np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=_RTOL, atol=1e-6, equal_nan=True)


def _compare_stats(name: str, stored: ArrayStats, actual: ArrayStats) -> list[Finding]:
    bad = [k for k in ("mean", "std", "min", "max", "q01", "q99") if not _close(getattr(stored, k), getattr(actual, k))]
    if stored.count != actual.count:
        bad.append("count")
    if not bad:
        return []
    return [Finding.make("store-stats", f"stats.{name} {', '.join(bad)} differ from the arrays", field=name)]


def _shapes(path: Path, meta: StoreMetadata, ends: np.ndarray) -> list[Finding]:
    out = []
    total = int(ends[-1]) if len(ends) else 0
    if len(ends) != meta.num_episodes:
        out.append(Finding.make("store-shape", f"episode_ends has {len(ends)} entries, metadata says "
                                               f"{meta.num_episodes} episodes", field="meta/episode_ends"))
    if len(ends) and (np.any(np.diff(ends) <= 0) or ends[0] <= 0):
        out.append(Finding.make("store-shape", "episode_ends is not strictly increasing", field="meta/episode_ends"))
    if total != meta.num_frames:
        out.append(Finding.make("store-shape", f"episode_ends ends at {total}, metadata says {meta.num_frames} frames",
                                field="meta/episode_ends"))
    expected = {RGB: (total, *meta.frame_shape), STATE: (total, meta.layout.state_dim),
                ACTION: (total, meta.layout.action_dim)}
    for name, shape in expected.items():
        try:
            actual = tuple(zarr.open_array(str(path / name), mode="r").shape)
        except (FileNotFoundError, KeyError, ValueError) as e:
            out.append(Finding.make("store-shape", f"{name} cannot be opened ({e})", field=name, file=name))
            continue
        if actual != shape:
            out.append(Finding.make("store-shape", f"{name} has shape {actual}, expected {shape}", field=name,
                                    file=name))
    return out


def validate_store(path: str | Path, *, progress: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Check an fcs store; never raises for problems in the store."""
    t0 = time.perf_counter()
    path = Path(path)
    report = ValidationReport(path=str(path), kind="store", layout="?")
    try:
        meta = read_metadata(path)
        if not meta.complete:
            raise StoreError(f"{path}: the store is marked incomplete")
        store = Store(path)
    except StoreError as e:
        report.add(Finding.make("store-format", str(e), file="zarr.json"))
        return report
    report.layout = meta.layout.name
    report.num_episodes = store.num_episodes
    for f in _shapes(path, meta, store.episode_ends):
        report.add(f)
    if report.has_errors:
        return report
    if meta.stats is None:
        report.add(Finding.make("store-stats", "the store has no normalisation statistics"))
    if len(store.episode_meta) != store.num_episodes:
        report.add(Finding.make("store-shape", f"meta has {len(store.episode_meta)} episode records for "
                                               f"{store.num_episodes} episodes", field="meta/episodes"))
    missing = [k for k in range(-(-store.num_frames // meta.shard_frames)) if not shard_file(path, k).exists()]
    if missing:
        report.add(Finding.make("store-shape", f"{len(missing)} frame shards are missing (first: {missing[:5]})",
                                field=RGB, file=str(shard_file(path, missing[0]).relative_to(path))))

    forward = meta.layout.model_copy(update={"action_alignment": "forward"})
    hist = np.zeros((3, 256), np.int64)
    states, actions = [], []
    for i in range(store.num_episodes):
        a, b = int(store.episode_starts[i]), int(store.episode_ends[i])
        state, action = store.read_rows("state", a, b), store.read_rows("action", a, b)
        states.append(state)
        actions.append(action)
        for f in checks.lowdim(forward, i, state, action):
            report.add(f)
        moving = np.zeros(b - a, bool)
        moving[1:] = (np.abs(np.diff(state, axis=0)) > 1e-7).any(axis=1)
        scan = checks.FrameScan(moving, integral=False)
        for s in range(a, b, meta.shard_frames):
            try:
                block = store.read_frames(np.arange(s, min(s + meta.shard_frames, b)))
            except (OSError, ValueError, RuntimeError) as e:
                report.add(Finding.make("store-shape", f"frames {s}..{min(s + meta.shard_frames, b) - 1} do not "
                                                       f"decode: {e}", episode=i, field=RGB))
                break
            hist += channel_histogram(block)
            scan.update(s - a, block)
        for f in scan.findings(i, RGB):
            report.add(f)
        if progress:
            progress(i + 1, store.num_episodes)
    report.episodes_checked = list(range(store.num_episodes))
    report.episode_lengths = {i: int(n) for i, n in enumerate(store.episode_lengths)}
    report.num_frames = store.num_frames
    if meta.stats is not None and store.num_frames:
        state, action = np.concatenate(states), np.concatenate(actions)
        actual = {"state": array_stats(state), "action": array_stats(action),
                  "proprio": array_stats(state[:, meta.layout.proprio_slice])}
        for name, stats in actual.items():
            for f in _compare_stats(name, getattr(meta.stats, name), stats):
                report.add(f)
        rgb = image_stats(hist)
        stored = meta.stats.rgb
        if stored.count != rgb.count or not (_close(stored.mean, rgb.mean) and _close(stored.std, rgb.std)):
            report.add(Finding.make("store-stats", "stats.rgb differ from the frames", field="rgb"))
    store.close()
    report.elapsed_s = time.perf_counter() - t0
    return report
