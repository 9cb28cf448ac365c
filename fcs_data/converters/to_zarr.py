"""`fcs convert SRC --to zarr`: a logger dataset -> one fcs store, atomically and resumably.

1. The validator runs first; errors refuse the conversion (or, with `skip_bad`, drop the episodes
   that have them).
2. The frame codec is chosen (`auto`: lz4 only when it saves at least 15 % on a sample of frames).
3. The store is written as `OUT.partial`, under an exclusive lock (`OUT.lock`) held for the whole
   run: arrays at their final shapes, then per-episode low-dim data (and source hashes), then frames
   one whole shard per task in worker processes. Each done unit is appended to
   `OUT.partial/fcs-progress.jsonl` after its data is flushed (fsync).
4. Statistics (of the whole store and of the default train split) and metadata are written,
   optionally every value is compared with the source, and `OUT.partial` is renamed to `OUT`.

A killed process, Ctrl-C or an `OSError` (a full disk) leaves no `OUT` and keeps `OUT.partial`, which
`resume` continues if it was made from the same source and options; any other failure of a fresh run
(an error in the data) removes it, so no half store is left behind. Every failure is an `FcsError` whose message says what, where, and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import zarr

from fcs_data._chunks import ArrayReader
from fcs_data._lock import exclusive_lock
from fcs_data._pool import WorkerPool
from fcs_data.converters.zarr_store import (
    FrameWriter,
    create_arrays,
    frame_arrays,
    fsync_tree,
    row_arrays,
    writable,
)
from fcs_data.errors import FcsError
from fcs_data.format import (
    AUTO_CODEC,
    AUTO_MIN_SAVING,
    CODEC_CHOICES,
    DEFAULT_CODEC,
    DEFAULT_SHARD_FRAMES,
    EPISODES_ATTR,
    FORMAT_VERSION,
    META,
    PARTIAL_ATTR,
    PROGRESS_FILE,
    RGB,
    ROOT_ATTR,
    STATE,
    camera_array,
    codec_preset,
    step_array,
)
from fcs_data.schemas import Layout, ValidationReport, get_layout
from fcs_data.schemas.store import EpisodeMeta, Provenance, SplitStats, StoreMetadata, StoreStats
from fcs_data.sources import LoggerSource, StepArrays, open_source
from fcs_data.sources.conventions import conversion_notes, frames_to_store, steps_to_store, store_length
from fcs_data.splits import DEFAULT_SPLIT_RATIO, DEFAULT_SPLIT_SEED, split_episodes
from fcs_data.stats import array_stats, channel_histogram, image_stats, training_stats
from fcs_data.validation.source import validate_source
from fcs_data.window_index import episode_starts, total_frames

CODEC_SAMPLE_FRAMES = 32


class ConversionRefused(FcsError):
    """The validator found errors; `report` says which."""

    def __init__(self, message: str, report: ValidationReport):
        super().__init__(message)
        self.report = report


class VerificationFailed(FcsError):
    """`verify` found a value in the store that differs from the source."""


class ResumeMismatch(FcsError):
    """`--resume` found an `OUT.partial` made from another source, layout or options."""


class ConversionIOError(FcsError):
    """Writing the store failed (a full disk, a lost mount, permissions); `OUT.partial` was kept."""


@dataclass
class ConvertProgress:
    """Callbacks for long phases; each gets `(done, total)` and frames also the source bytes read."""

    validate: Callable[[int, int], None] | None = None
    episodes: Callable[[int, int], None] | None = None
    frames: Callable[[int, int, int], None] | None = None
    verify: Callable[[int, int], None] | None = None


@dataclass
class ConversionResult:
    store: Path
    report: ValidationReport
    codec: str
    codec_note: str
    num_episodes: int
    num_frames: int
    skipped: dict[int, list[str]]
    conversions: list[str]
    resumed_shards: int
    source_bytes: int
    store_bytes: int
    seconds: float
    peak_rss_main_mb: float
    peak_rss_worker_mb: float
    idle_rss_worker_mb: float
    verified: bool
    timings: dict[str, float] = field(default_factory=dict)
    detected: list[str] = field(default_factory=list)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _fcs_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fcs")
    except PackageNotFoundError:
        return "0.0.0+local"


# -- the plan: which source frames go where ------------------------------------------------------
@dataclass
class Plan:
    source: str
    layout: Layout
    codec: str
    shard_frames: int
    episodes: list[int]  # source indices, in store order
    source_lengths: list[int]
    episode_ends: np.ndarray

    @property
    def num_frames(self) -> int:
        return total_frames(self.episode_ends)

    @property
    def episode_starts(self) -> np.ndarray:
        return episode_starts(self.episode_ends)

    @property
    def num_shards(self) -> int:
        return -(-self.num_frames // self.shard_frames)

    def to_json(self) -> str:
        """What a worker process needs to rebuild the plan (`Plan.from_json`)."""
        return json.dumps({
            "source": self.source, "layout": self.layout.model_dump(mode="json"), "codec": self.codec,
            "shard_frames": self.shard_frames, "episodes": self.episodes, "source_lengths": self.source_lengths,
            "episode_ends": self.episode_ends.tolist(),
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        d = json.loads(text)
        return cls(d["source"], Layout.model_validate(d["layout"]), d["codec"], d["shard_frames"], d["episodes"],
                   d["source_lengths"], np.asarray(d["episode_ends"], np.int64))

    def fingerprint(self, source_files: dict[str, int]) -> str:
        """Changes when the source, the layout or the options change (resume refuses then)."""
        blob = json.dumps({"format": FORMAT_VERSION, "plan": self.to_json(), "files": source_files}, sort_keys=True)
        return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()

    def pieces(self, shard: int) -> Iterator[tuple[int, int, int, int]]:
        """`(store_episode, local_start, local_stop, offset_in_shard)` covering one shard."""
        a = shard * self.shard_frames
        b = min(a + self.shard_frames, self.num_frames)
        starts = self.episode_starts
        e = int(np.searchsorted(self.episode_ends, a, side="right"))
        while e < len(self.episode_ends) and starts[e] < b:
            lo, hi = max(a, int(starts[e])), min(b, int(self.episode_ends[e]))
            if hi > lo:
                yield e, lo - int(starts[e]), hi - int(starts[e]), lo - a
            e += 1


# -- work done in worker processes (or inline) ----------------------------------------------------
class _Job:
    """What a worker needs; built once per worker process by `_call`."""

    def __init__(self, plan_json: str, out: str):
        self.plan = Plan.from_json(plan_json)
        self.out = out
        self.source = open_source(self.plan.source, self.plan.layout)
        self._frames_cache: tuple[int, torch.Tensor] | None = None
        self._writers: dict[str, FrameWriter] = {}
        self._readers: dict[str, ArrayReader] = {}
        self.idle_rss_mb = _rss_mb()

    def _source_frames(self, store_episode: int) -> torch.Tensor:
        src = self.plan.episodes[store_episode]
        if self._frames_cache is None or self._frames_cache[0] != src:
            self._frames_cache = (src, self.source.open_frames(src))
        return self._frames_cache[1]

    def converted_frames(self, shard: int) -> tuple[dict[str, np.ndarray], int]:
        """Store frames of one shard for every camera (`camera array -> (n, H, W, 3)`), and the bytes read."""
        plan, layout = self.plan, self.plan.layout
        a = shard * plan.shard_frames
        n = min(plan.shard_frames, plan.num_frames - a)
        blocks = {RGB: np.empty((n, *layout.observation.shape), np.uint8)}
        blocks |= {camera_array(c.name): np.empty((n, *c.shape), np.uint8) for c in layout.cameras}
        read = 0
        for e, lo, hi, off in plan.pieces(shard):
            src = plan.episodes[e]
            raw = self._source_frames(e)[lo:hi].numpy()
            read += raw.nbytes
            blocks[RGB][off : off + hi - lo] = frames_to_store(raw, layout, src, lo)
            for cam in layout.cameras:
                raw = self.source.read_camera(src, cam, lo, hi)
                read += raw.nbytes
                blocks[camera_array(cam.name)][off : off + hi - lo] = frames_to_store(
                    raw, layout, src, lo, channel_order=cam.channel_order)
        return blocks, read

    def write_shard(self, shard: int) -> dict:
        blocks, read = self.converted_frames(shard)
        for array, block in blocks.items():
            if array not in self._writers:
                self._writers[array] = FrameWriter(self.out, array)
            self._writers[array].write_shard(shard, block)
        return {"shard": shard, "hists": {k: channel_histogram(v).tolist() for k, v in blocks.items()},
                "bytes": read, "frames": len(blocks[RGB]), "rss_mb": _peak_rss_mb(), "idle_rss_mb": self.idle_rss_mb}

    def _source_steps(self, store_episode: int) -> StepArrays:
        """State, action and per-step fields of one episode as logged (valid steps only)."""
        src = self.plan.episodes[store_episode]
        return self.source.read_steps(src, self.plan.source_lengths[store_episode])

    def episode_lowdim(self, store_episode: int) -> dict:
        """Forward-aligned rows of one episode (state, action, per-step fields), its params and the hash
        of its source."""
        src = self.plan.episodes[store_episode]
        length = self.plan.source_lengths[store_episode]
        steps = self._source_steps(store_episode)
        h = hashlib.blake2b(digest_size=32)
        h.update(np.ascontiguousarray(steps.state).tobytes())
        h.update(np.ascontiguousarray(steps.action).tobytes())
        self.source.episode_digest(src, h)
        steps = steps_to_store(steps, self.plan.layout)
        meta = EpisodeMeta(source_index=src, source_dir=self.source.episode_label(src), source_length=length,
                           params=self.source.read_params(src), content_hash=h.hexdigest())
        return {"episode": store_episode, "rows": {"state": steps.state, "action": steps.action, **steps.fields},
                "meta": meta.model_dump(mode="json"), "rss_mb": _peak_rss_mb()}

    def _reader(self, array: str) -> ArrayReader:
        if array not in self._readers:
            self._readers[array] = ArrayReader(self.out, array)
        return self._readers[array]

    def verify_shard(self, shard: int) -> list[str]:
        expected, _ = self.converted_frames(shard)
        a = shard * self.plan.shard_frames
        out = []
        for array, block in expected.items():
            got = np.empty_like(block)
            self._reader(array).read_into(np.arange(a, a + len(block)), got)
            bad = np.flatnonzero((got != block).reshape(len(got), -1).any(axis=1))
            out += [f"{array} frame {a + int(i)} differs from the source" for i in bad[:5]]
        return out

    def verify_episode(self, store_episode: int) -> list[str]:
        steps = steps_to_store(self._source_steps(store_episode), self.plan.layout)
        a = int(self.plan.episode_starts[store_episode])
        b = int(self.plan.episode_ends[store_episode])
        out = []
        for name, expected in {"state": steps.state, "action": steps.action, **steps.fields}.items():
            if not np.array_equal(self._reader(step_array(name)).read(a, b), expected, equal_nan=True):
                out.append(f"episode {store_episode} (source {self.plan.episodes[store_episode]}): {name} differs")
        return out


_JOBS: dict[tuple[str, str], _Job] = {}


def _call(plan_json: str, out: str, method: str, arg: int):
    """Run `_Job(plan_json, out).method(arg)`, building the job once per process."""
    key = (plan_json, out)
    if key not in _JOBS:
        _JOBS.clear()
        _JOBS[key] = _Job(plan_json, out)
    return getattr(_JOBS[key], method)(arg)


class _Runner:
    """Runs `_Job` methods over a `WorkerPool`, results in order."""

    def __init__(self, pool: WorkerPool, plan_json: str, out: str):
        self.pool, self.plan_json, self.out = pool, plan_json, out

    def map(self, method: str, args: Iterable[int]) -> Iterator:
        args = list(args)
        n = len(args)
        return self.pool.map(_call, [self.plan_json] * n, [self.out] * n, [method] * n, args)


# -- progress file -----------------------------------------------------------------------------
def _read_progress(path: Path) -> tuple[dict | None, dict[int, dict]]:
    """`(lowdim record or None, shard -> record)`; a torn last line (crash mid-write) is ignored."""
    lowdim, shards = None, {}
    if not path.exists():
        return lowdim, shards
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "lowdim" in rec:
            lowdim = rec
        elif "shard" in rec:
            shards[int(rec["shard"])] = rec
    return lowdim, shards


class _ProgressLog:
    def __init__(self, path: Path):
        self.f = path.open("a")

    def append(self, rec: dict) -> None:
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _plan(src: Path, layout: Layout, report: ValidationReport, codec: str, shard_frames: int,
          skip_bad: bool) -> tuple[Plan, dict[int, list[str]]]:
    global_errors = [f for f in report.findings if f.severity == "error" and f.episode is None]
    bad = report.bad_episodes()
    if global_errors or (bad and not skip_bad):
        n = report.counts["error"]
        what = "dataset-wide errors" if global_errors else f"errors in {len(bad)} episodes"
        hint = "" if global_errors else " (--skip-bad converts the other episodes)"
        raise ConversionRefused(f"{src}: validation found {n} errors ({what}); not converting{hint}", report)
    skipped = {i: reasons for i, reasons in bad.items()}
    episodes, lengths = [], []
    for i in report.episodes_checked:
        if i in skipped:
            continue
        length = report.episode_lengths[i]
        if store_length(length, layout) < 1:
            skipped[i] = [f"only {length} steps: nothing left after aligning actions forward"]
            continue
        episodes.append(i)
        lengths.append(length)
    if not episodes:
        raise ConversionRefused(f"{src}: no episode left to convert", report)
    ends = np.cumsum([store_length(t, layout) for t in lengths]).astype(np.int64)
    return Plan(str(src.resolve()), layout, codec, shard_frames, episodes, lengths, ends), skipped


def choose_codec(source: LoggerSource, plan: Plan, requested: str) -> tuple[str, str]:
    """`(preset, why)`: `auto` compresses a sample of the source's frames with lz4 and keeps it only
    when it saves at least `AUTO_MIN_SAVING` (noisy renders save a few percent and read 2x slower)."""
    if requested != AUTO_CODEC:
        return requested, f"{requested} (asked for)"
    import numcodecs

    lz4 = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)
    per_episode = max(1, CODEC_SAMPLE_FRAMES // min(len(plan.episodes), 8))
    raw = packed = 0
    for e in np.unique(np.linspace(0, len(plan.episodes) - 1, min(len(plan.episodes), 8)).astype(int)).tolist():
        n = int(plan.episode_ends[e] - plan.episode_starts[e])
        steps = np.unique(np.linspace(0, n - 1, min(n, per_episode)).astype(int))
        frames = source.open_frames(plan.episodes[e])
        block = frames_to_store(frames[torch.from_numpy(steps)].numpy(), plan.layout, plan.episodes[e], 0)
        for f in block:
            raw += f.nbytes
            packed += len(lz4.encode(np.ascontiguousarray(f)))
    saving = 1 - packed / max(raw, 1)
    sample = f"{raw // max(int(np.prod(plan.layout.observation.shape)), 1)} sampled frames"
    if saving < AUTO_MIN_SAVING:
        return "none", (f"none: lz4 saves {100 * saving:.0f} % on {sample} (less than {100 * AUTO_MIN_SAVING:.0f} %), "
                        "so frames are stored uncompressed, the fastest to read")
    return "lz4", f"lz4: it saves {100 * saving:.0f} % on {sample}"


def convert_to_zarr(
    src: str | Path,
    out: str | Path | None = None,
    *,
    layout: str | Layout | None = None,
    codec: str = DEFAULT_CODEC,
    workers: int | None = None,
    resume: bool = False,
    skip_bad: bool = False,
    overwrite: bool = False,
    verify: bool = False,
    shard_frames: int = DEFAULT_SHARD_FRAMES,
    progress: ConvertProgress | None = None,
    command: list[str] | None = None,
) -> ConversionResult:
    """Convert the logger dataset `src` into the fcs store `out` (default: `SRC.zarr` beside it).

    `layout`: a layout name (with `+variant`s), file or `Layout`; None detects it (`fcs layouts detect`).
    `codec`: `auto` (default), `none`, `lz4`, `lz4-bit` or `zstd` (docs/FORMAT.md).
    """
    t_start = time.perf_counter()
    src = Path(src)
    detected: list[str] = []
    if layout is None:
        from fcs_data.sources.detect import detect_layout

        detection = detect_layout(src)
        layout, detected = detection.layout, detection.lines
    layout = get_layout(layout)
    if codec not in CODEC_CHOICES:
        raise KeyError(f"unknown codec {codec!r}; presets: {', '.join(CODEC_CHOICES)}")
    out = Path(out) if out is not None else src.with_name(src.name + ".zarr")
    partial = out.with_name(out.name + ".partial")
    progress = progress or ConvertProgress()
    with exclusive_lock(out, "converting into it"):
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        if partial.exists() and not resume:
            if not overwrite:
                raise FileExistsError(
                    f"{partial} holds an unfinished conversion; pass --resume to continue it or --overwrite to restart"
                )
            shutil.rmtree(partial)
        if resume and not partial.exists():
            resume = False  # nothing to resume: start fresh
        with WorkerPool(workers) as pool:
            try:
                result = _convert(src, out, partial, layout, codec, pool, resume, skip_bad, verify, shard_frames,
                                  progress, command, t_start)
                result.detected = detected
                return result
            except OSError as e:
                if not partial.exists():
                    raise
                where = f" writing {e.filename}" if e.filename else ""
                raise ConversionIOError(
                    f"{out}: {e.strerror or e}{where}; the finished part is kept in {partial}: fix the cause "
                    "(free disk space) and run the same command with --resume"
                ) from e
            except Exception:  # bad data (FcsError) or a bug in a fresh run: nothing worth resuming
                if not resume:
                    shutil.rmtree(partial, ignore_errors=True)
                raise


def _convert(src: Path, out: Path, partial: Path, layout: Layout, codec: str, pool: WorkerPool, resume: bool,
             skip_bad: bool, verify: bool, shard_frames: int, progress: ConvertProgress, command: list[str] | None,
             t_start: float) -> ConversionResult:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    report = validate_source(src, layout, pool=pool, progress=progress.validate)
    timings["validate"] = time.perf_counter() - t0
    plan, skipped = _plan(src, layout, report, codec, shard_frames, skip_bad)
    source = open_source(src, layout)
    plan.codec, codec_note = choose_codec(source, plan, codec)
    files = source.root_files()
    for e in plan.episodes:
        files.update(source.episode_files(e))
    fingerprint = plan.fingerprint(files)
    plan_json = plan.to_json()

    if resume:
        attrs = zarr.open_group(str(partial), mode="r").attrs.asdict()
        if attrs.get(PARTIAL_ATTR, {}).get("fingerprint") != fingerprint:
            raise ResumeMismatch(
                f"{partial} was started from a different source, layout or options; "
                "run with the same options, or --overwrite to start over"
            )
    else:
        create_arrays(partial, layout=layout, episode_ends=plan.episode_ends, codec=codec_preset(plan.codec),
                      shard_frames=shard_frames)
        zarr.open_group(str(partial), mode="r+").attrs.update({PARTIAL_ATTR: {"fingerprint": fingerprint}})
    lowdim_rec, shard_recs = _read_progress(partial / PROGRESS_FILE)
    resumed_shards = len(shard_recs)
    log = _ProgressLog(partial / PROGRESS_FILE)
    runner = _Runner(pool, plan_json, str(partial))
    worker_rss = idle_rss = 0.0
    try:
        if lowdim_rec is None:
            t0 = time.perf_counter()
            total = plan.num_frames
            rows = {name: np.zeros((total, *shape), dtype) for name, (shape, dtype) in row_arrays(layout).items()}
            metas: list[dict] = [{}] * len(plan.episodes)
            for done, d in enumerate(runner.map("episode_lowdim", range(len(plan.episodes))), 1):
                e = d["episode"]
                a, b = int(plan.episode_starts[e]), int(plan.episode_ends[e])
                for name, values in d["rows"].items():
                    rows[name][a:b] = values
                metas[e] = d["meta"]
                worker_rss = max(worker_rss, d["rss_mb"])
                if progress.episodes:
                    progress.episodes(done, len(plan.episodes))
            for name, values in rows.items():
                writable(partial, step_array(name))[:] = values
                fsync_tree(partial / step_array(name))
            state, action = rows["state"], rows["action"]
            lowdim_rec = {"lowdim": True, "episodes": metas, "stats": _lowdim_stats(state, action, layout),
                          "norm_stats": _default_split_stats(plan, state, action, layout).model_dump()}
            log.append(lowdim_rec)
            del state, action, rows
            timings["episodes"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        todo = [k for k in range(plan.num_shards) if k not in shard_recs]
        frames_done = sum(r["frames"] for r in shard_recs.values())
        bytes_read = 0
        if progress.frames:
            progress.frames(frames_done, plan.num_frames, bytes_read)
        for rec in runner.map("write_shard", todo):
            log.append(rec)
            shard_recs[rec["shard"]] = rec
            frames_done += rec["frames"]
            bytes_read += rec["bytes"]
            worker_rss = max(worker_rss, rec["rss_mb"])
            idle_rss = max(idle_rss, rec["idle_rss_mb"])
            if progress.frames:
                progress.frames(frames_done, plan.num_frames, bytes_read)
        timings["frames"] = time.perf_counter() - t0

        verified = False
        if verify:
            t0 = time.perf_counter()
            problems: list[str] = []
            n_units = plan.num_shards + len(plan.episodes)
            done = 0
            for units in (runner.map("verify_shard", range(plan.num_shards)),
                          runner.map("verify_episode", range(len(plan.episodes)))):
                for found in units:
                    problems += found
                    done += 1
                    if progress.verify:
                        progress.verify(done, n_units)
            if problems:
                raise VerificationFailed(
                    f"{out}: {len(problems)} values differ from the source (e.g. {'; '.join(problems[:3])}); "
                    "the store was not published"
                )
            verified = True
            timings["verify"] = time.perf_counter() - t0

        hists = {array: image_stats(np.sum([np.asarray(r["hists"][array], np.int64) for r in shard_recs.values()],
                                           axis=0)).model_dump()
                 for array in frame_arrays(layout)}
        stats = StoreStats.model_validate({**lowdim_rec["stats"], "rgb": hists[RGB],
                                           "cameras": {c.name: hists[camera_array(c.name)] for c in layout.cameras}})
        conversions = conversion_notes(layout)
        metadata = StoreMetadata(
            fcs_format=FORMAT_VERSION, layout=layout, num_episodes=len(plan.episodes), num_frames=plan.num_frames,
            frame_shape=layout.observation.shape, shard_frames=shard_frames,
            lowdim_chunk=int(zarr.open_array(str(partial / STATE), mode="r").chunks[0]),
            codec=codec_preset(plan.codec), stats=stats, complete=True,
            norm_stats=SplitStats.model_validate(lowdim_rec["norm_stats"]),
            provenance=Provenance(
                source=plan.source, source_layout=layout.name, fcs_version=_fcs_version(),
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                command=command if command is not None else sys.argv, conversions=conversions,
                skipped_episodes=skipped,
            ),
        )
        zarr.open_group(str(partial / META), mode="r+").attrs.update({EPISODES_ATTR: lowdim_rec["episodes"]})
        root = zarr.open_group(str(partial), mode="r+")
        root.attrs.update({ROOT_ATTR: metadata.model_dump(mode="json")})
        del root.attrs[PARTIAL_ATTR]

    finally:
        log.close()
    (partial / PROGRESS_FILE).unlink()
    if out.exists():
        old = out.with_name(out.name + f".old-{os.getpid()}")
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old)
    else:
        partial.rename(out)
    return ConversionResult(
        store=out, report=report, codec=plan.codec, codec_note=codec_note, num_episodes=len(plan.episodes),
        num_frames=plan.num_frames, skipped=skipped, conversions=conversions, resumed_shards=resumed_shards,
        source_bytes=sum(source.episode_bytes(i) for i in plan.episodes), store_bytes=_dir_bytes(out),
        seconds=time.perf_counter() - t_start, peak_rss_main_mb=_peak_rss_mb(), peak_rss_worker_mb=worker_rss,
        idle_rss_worker_mb=idle_rss,
        verified=verified, timings=timings,
    )


def _lowdim_stats(state: np.ndarray, action: np.ndarray, layout: Layout) -> dict:
    stats = {"state": array_stats(state), **training_stats(state, action, layout.proprio_slice)}
    return {k: v.model_dump() for k, v in stats.items()}


def _default_split_stats(plan: Plan, state: np.ndarray, action: np.ndarray, layout: Layout) -> SplitStats:
    """Statistics of the default train split (what `WindowDataset` and `fcs train` use by default)."""
    train = split_episodes(range(len(plan.episodes)), "train", DEFAULT_SPLIT_RATIO, DEFAULT_SPLIT_SEED)
    rows = np.concatenate([np.arange(plan.episode_starts[e], plan.episode_ends[e]) for e in train])
    return SplitStats(split_ratio=DEFAULT_SPLIT_RATIO, seed=DEFAULT_SPLIT_SEED, train_episodes=train.tolist(),
                      **training_stats(state[rows], action[rows], layout.proprio_slice))
