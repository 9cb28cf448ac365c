"""Validation of an fcs store: format and shapes (what opening it checks), then a data pass that
decodes and checksums every chunk of every array, runs the layout's field checks on the stored
arrays, and recomputes the statistics. Every damaged or missing chunk is reported with its file and
the episodes and frames it holds; `quick` stops before the data pass."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fcs_data.errors import StoreDataError, StoreError
from fcs_data.format import FORMAT_VERSION, store_arrays
from fcs_data.schemas import Finding, ValidationReport
from fcs_data.schemas.store import ArrayStats
from fcs_data.stats import array_stats, channel_histogram, image_stats, training_stats
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


class _Damage:
    """Damaged chunks found by the data pass, reported per (file, problem, episode)."""

    def __init__(self, store: Store):
        self.store = store
        self.rows: dict[tuple[str, str, str], set[int]] = {}

    def add(self, err: StoreDataError) -> None:
        self.rows.setdefault((err.array, err.file, err.problem), set()).update(range(*err.rows))

    def bad_rows(self, array: str) -> np.ndarray:
        rows = [r for (a, _, _), rs in self.rows.items() if a == array for r in rs]
        return np.asarray(sorted(rows), np.int64)

    def findings(self) -> list[Finding]:
        out = []
        starts, ends = self.store.episode_starts, self.store.episode_ends
        for (array, file, problem), rows in sorted(self.rows.items()):
            g = np.asarray(sorted(rows), np.int64)
            episodes = np.searchsorted(ends, g, side="right")
            for e in np.unique(episodes).tolist():
                local = (g[episodes == e] - starts[e]).tolist()
                span = f"frame {local[0]}" if len(local) == 1 else f"frames {local[0]}..{local[-1]}"
                out.append(Finding.make("store-chunk", f"{file}: {problem} ({array}, {span})", episode=int(e),
                                        file=file, field=array, steps=local))
        return out


def _read_rows(store: Store, name: str, a: int, b: int, damage: _Damage) -> np.ndarray | None:
    try:
        return store.read_rows(name, a, b)
    except StoreDataError as e:
        damage.add(e)
        return None


def _scan_chunks(store: Store, damage: _Damage) -> None:
    """Checksum and decode every chunk of every array but the first camera's (which the frame pass reads)."""
    for name, array in store_arrays(store.layout).items():
        if array.camera == store.layout.observation.camera:
            continue
        reader = store.reader(name)
        for k in range(reader.num_chunks):
            try:
                reader.check(k)
            except StoreDataError as e:
                damage.add(e)


def _episode_frames(store: Store, a: int, b: int, scan: checks.FrameScan, hist: np.ndarray, damage: _Damage,
                    block: int) -> None:
    """Read frames `[a, b)` block by block; a block that fails is read frame by frame to find each bad chunk."""
    for s in range(a, b, block):
        ids = np.arange(s, min(s + block, b))
        try:
            frames = store.read_frames(ids)
        except StoreDataError:
            good = []
            for g in ids.tolist():
                try:
                    good.append((g, store.read_frames(np.array([g]))[0]))
                except StoreDataError as e:
                    damage.add(e)
            for g, frame in good:
                if not scan.follows(g - a):
                    scan.gap()
                hist += channel_histogram(frame[None])
                scan.update(g - a, frame[None])
            continue
        hist += channel_histogram(frames)
        scan.update(s - a, frames)


def validate_store(path: str | Path, *, quick: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Check an fcs store; never raises for problems in the store. `quick` skips the data pass."""
    t0 = time.perf_counter()
    path = Path(path)
    report = ValidationReport(path=str(path), kind="store", layout="?")
    try:
        meta = read_metadata(path)
        if not meta.complete:
            raise StoreError(f"{path}: the store is marked incomplete")
    except StoreError as e:
        report.add(Finding.make("store-format", str(e), file="zarr.json"))
        return report
    report.layout = meta.layout.name
    if meta.fcs_format < FORMAT_VERSION:
        report.add(Finding.make(
            "store-format-old", f"fcs_format {meta.fcs_format}: chunks carry no checksums and all-black shards may be "
            f"missing; rewrite it as format {FORMAT_VERSION} with `fcs convert {meta.provenance.source} -o NEW.zarr`",
            file="zarr.json"))
    try:
        store = Store(path)
        if len(store.episode_meta) != store.num_episodes:
            raise StoreError(f"{path}: meta has {len(store.episode_meta)} episode records for "
                             f"{store.num_episodes} episodes")
    except StoreError as e:
        report.add(Finding.make("store-shape", str(e)))
        return report
    report.num_episodes = store.num_episodes
    report.num_frames = store.num_frames
    report.episodes_checked = list(range(store.num_episodes))
    report.episode_lengths = {i: int(n) for i, n in enumerate(store.episode_lengths)}
    if meta.stats is None:
        report.add(Finding.make("store-stats", "the store has no normalisation statistics"))
    if quick:
        report.elapsed_s = time.perf_counter() - t0
        return report

    damage = _Damage(store)
    _scan_chunks(store, damage)
    forward = meta.layout.model_copy(update={"action_alignment": "forward"})
    hist = np.zeros((3, 256), np.int64)
    states, actions = [], []
    for i in range(store.num_episodes):
        a, b = int(store.episode_starts[i]), int(store.episode_ends[i])
        state, action = _read_rows(store, "state", a, b, damage), _read_rows(store, "action", a, b, damage)
        moving = np.zeros(b - a, bool)
        if state is not None and action is not None:
            states.append(state)
            actions.append(action)
            for f in checks.lowdim(forward, i, state, action):
                report.add(f)
            moving[1:] = (np.abs(np.diff(state, axis=0)) > 1e-7).any(axis=1)
        scan = checks.FrameScan(moving, integral=False)
        _episode_frames(store, a, b, scan, hist, damage, meta.shard_frames)
        for f in scan.findings(i, "data/rgb"):
            report.add(f)
        if progress:
            progress(i + 1, store.num_episodes)
    for f in damage.findings():
        report.add(f)
    if meta.stats is not None and store.num_frames and not damage.rows:
        state, action = np.concatenate(states), np.concatenate(actions)
        actual = {"state": array_stats(state), **training_stats(state, action, meta.layout.proprio_slice)}
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
