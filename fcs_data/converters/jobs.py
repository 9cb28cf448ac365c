"""Conversion work done in worker processes (or inline): one shard of frames, one episode's rows, checks.

`Runner.map(method, args)` runs `Job.method(arg)` over a `WorkerPool`; each worker process builds
its `Job` (the plan, the source, its writers and readers) once and keeps it.
"""

from __future__ import annotations

import hashlib
import resource
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from fcs_data._chunks import ArrayReader
from fcs_data._pool import WorkerPool
from fcs_data.converters.plan import Plan
from fcs_data.converters.zarr_store import FrameWriter
from fcs_data.format import store_arrays
from fcs_data.schemas.store import EpisodeMeta
from fcs_data.sources import StepArrays, open_source
from fcs_data.sources.conventions import frames_to_store, steps_to_store
from fcs_data.stats import channel_histogram


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class Job:
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
        path = {a.camera: a.path for a in store_arrays(layout).values() if a.is_frames}
        blocks = {path[layout.observation.camera]: np.empty((n, *layout.observation.shape), np.uint8)}
        blocks |= {path[c.name]: np.empty((n, *c.shape), np.uint8) for c in layout.cameras}
        read = 0
        for e, lo, hi, off in plan.pieces(shard):
            src = plan.episodes[e]
            raw = self._source_frames(e)[lo:hi].numpy()
            read += raw.nbytes
            blocks[path[layout.observation.camera]][off : off + hi - lo] = frames_to_store(raw, layout, src, lo)
            for cam in layout.cameras:
                raw = self.source.read_camera(src, cam, lo, hi)
                read += raw.nbytes
                blocks[path[cam.name]][off : off + hi - lo] = frames_to_store(raw, layout, src, lo,
                                                                              channel_order=cam.channel_order)
        return blocks, read

    def write_shard(self, shard: int) -> dict:
        blocks, read = self.converted_frames(shard)
        for array, block in blocks.items():
            if array not in self._writers:
                self._writers[array] = FrameWriter(self.out, array)
            self._writers[array].write_shard(shard, block)
        return {"shard": shard, "hists": {k: channel_histogram(v).tolist() for k, v in blocks.items()},
                "bytes": read, "frames": len(next(iter(blocks.values()))), "rss_mb": peak_rss_mb(), "idle_rss_mb": self.idle_rss_mb}

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
                "meta": meta.model_dump(mode="json"), "rss_mb": peak_rss_mb()}

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
        paths = {name: arr.path for name, arr in store_arrays(self.plan.layout).items()}
        out = []
        for name, expected in {"state": steps.state, "action": steps.action, **steps.fields}.items():
            if not np.array_equal(self._reader(paths[name]).read(a, b), expected, equal_nan=True):
                out.append(f"episode {store_episode} (source {self.plan.episodes[store_episode]}): {name} differs")
        return out


_JOBS: dict[tuple[str, str], Job] = {}


def _call(plan_json: str, out: str, method: str, arg: int):
    """Run `Job(plan_json, out).method(arg)`, building the job once per process."""
    key = (plan_json, out)
    if key not in _JOBS:
        _JOBS.clear()
        _JOBS[key] = Job(plan_json, out)
    return getattr(_JOBS[key], method)(arg)


class Runner:
    """Runs `Job` methods over a `WorkerPool`, results in order."""

    def __init__(self, pool: WorkerPool, plan_json: str, out: str):
        self.pool, self.plan_json, self.out = pool, plan_json, out

    def map(self, method: str, args: Iterable[int]) -> Iterator:
        args = list(args)
        n = len(args)
        return self.pool.map(_call, [self.plan_json] * n, [self.out] * n, [method] * n, args)
