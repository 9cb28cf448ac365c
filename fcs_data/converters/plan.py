"""The conversion plan: which source episodes become which store rows, and the frame codec.

A `Plan` is all a worker process needs to rebuild the conversion (`Plan.to_json` / `from_json`),
and its fingerprint (with the source files' sizes and times) decides whether `--resume` may
continue an `OUT.partial`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fcs_data.errors import ConversionRefused
from fcs_data.format import AUTO_CODEC, AUTO_MIN_SAVING, FORMAT_VERSION
from fcs_data.schemas import Layout, ValidationReport
from fcs_data.sources import LoggerSource
from fcs_data.sources.conventions import frames_to_store, store_length
from fcs_data.window_index import episode_starts, total_frames

CODEC_SAMPLE_FRAMES = 32


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


def plan_conversion(src: Path, layout: Layout, report: ValidationReport, codec: str, shard_frames: int,
          skip_bad: bool) -> tuple[Plan, dict[int, list[str]]]:
    """The plan for the episodes `report` found usable, and the skipped ones with their reasons; refuses
    (`ConversionRefused`) on dataset-wide errors, or on bad episodes without `skip_bad`."""
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


def source_files(source: LoggerSource, episodes: list[int]) -> dict[str, int]:
    """`relative path -> mtime_ns ^ size` of the root files and of the planned episodes' files (what
    `Plan.fingerprint` compares on `--resume`), as the source names them (printable names)."""
    files = source.root_files()
    for e in episodes:
        files.update(source.episode_files(e))
    return files
