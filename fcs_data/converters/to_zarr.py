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

The plan lives in `plan`, the work of the worker processes in `jobs`, the progress file in `progress`.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zarr

from fcs_data._lock import exclusive_lock
from fcs_data._pool import WorkerPool
from fcs_data.converters.jobs import Runner, peak_rss_mb
from fcs_data.converters.plan import Plan, choose_codec, plan_conversion, source_files
from fcs_data.converters.progress import ConvertProgress, ProgressLog, read_progress
from fcs_data.converters.zarr_store import create_arrays, fsync_tree, writable
from fcs_data.errors import ConversionIOError, ResumeMismatch, VerificationFailed
from fcs_data.format import (
    CODEC_CHOICES,
    DEFAULT_CODEC,
    DEFAULT_SHARD_FRAMES,
    EPISODES_ATTR,
    FORMAT_VERSION,
    META,
    PARTIAL_ATTR,
    PROGRESS_FILE,
    ROOT_ATTR,
    STATE,
    codec_preset,
    store_arrays,
)
from fcs_data.schemas import Layout, ValidationReport, get_layout
from fcs_data.schemas.store import Provenance, SplitStats, StoreMetadata, StoreStats
from fcs_data.sources import open_source
from fcs_data.sources.conventions import conversion_notes
from fcs_data.splits import DEFAULT_SPLIT_RATIO, DEFAULT_SPLIT_SEED, split_episodes
from fcs_data.stats import array_stats, image_stats, training_stats
from fcs_data.validation.source import validate_source

__all__ = ["ConversionResult", "ConvertProgress", "convert_to_zarr"]


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


def _fcs_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fcs")
    except PackageNotFoundError:
        return "0.0.0+local"


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


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
    arrays = store_arrays(layout)
    t0 = time.perf_counter()
    report = validate_source(src, layout, pool=pool, progress=progress.validate)
    timings["validate"] = time.perf_counter() - t0
    plan, skipped = plan_conversion(src, layout, report, codec, shard_frames, skip_bad)
    source = open_source(src, layout)
    plan.codec, codec_note = choose_codec(source, plan, codec)
    fingerprint = plan.fingerprint(source_files(source, plan.episodes))
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
    lowdim_rec, shard_recs = read_progress(partial / PROGRESS_FILE)
    resumed_shards = len(shard_recs)
    log = ProgressLog(partial / PROGRESS_FILE)
    runner = Runner(pool, plan_json, str(partial))
    worker_rss = idle_rss = 0.0
    try:
        if lowdim_rec is None:
            t0 = time.perf_counter()
            total = plan.num_frames
            rows = {a.name: np.zeros((total, *a.row_shape), a.dtype) for a in arrays.values() if not a.is_frames}
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
                writable(partial, arrays[name].path)[:] = values
                fsync_tree(partial / arrays[name].path)
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

        hists = {a.camera: image_stats(np.sum([np.asarray(r["hists"][a.path], np.int64) for r in shard_recs.values()],
                                              axis=0)).model_dump()
                 for a in arrays.values() if a.is_frames}
        stats = StoreStats.model_validate({**lowdim_rec["stats"], "rgb": hists[layout.observation.camera],
                                           "cameras": {c.name: hists[c.name] for c in layout.cameras}})
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
        seconds=time.perf_counter() - t_start, peak_rss_main_mb=peak_rss_mb(), peak_rss_worker_mb=worker_rss,
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
