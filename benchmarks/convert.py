"""Conversion throughput, compression and single-frame reads, per codec preset, on one dataset.

    python benchmarks/convert.py [--episodes 16] [--length 300] [--workers 2] [--data DIR]

For each `--codec` preset it converts the same synthetic v1 dataset and prints:
  - MB/s of source read (source bytes / whole conversion time, validation included),
  - conversion time / plain read time (the plain read: `torch.load` of every source file),
  - compression ratio (raw frame + array bytes / store bytes on disk),
  - single-frame read time through the store's direct reader and through zarr-python.
Everything runs from a warm page cache; the baseline is measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.format import CODEC_PRESETS
from fcs_data.store import open_store
from fcs_data.synth import synthesize


def plain_read(src: Path) -> float:
    t0 = time.perf_counter()
    for p in sorted(src.rglob("*.pth")):
        torch.load(p, weights_only=True)
    return time.perf_counter() - t0


def frame_read_ms(store_path: Path, n: int = 400) -> tuple[float, float]:
    store = open_store(store_path)
    ids = np.random.default_rng(0).integers(0, store.num_frames, n)
    store.read_frames(ids[:10])
    t0 = time.perf_counter()
    for i in ids:
        store.read_frames(i[None])
    direct = (time.perf_counter() - t0) / n * 1e3
    arr = zarr.open_array(str(store_path / "data" / "rgb"), mode="r")
    t0 = time.perf_counter()
    for i in ids[: n // 4]:
        arr[int(i)]
    via_zarr = (time.perf_counter() - t0) / (n // 4) * 1e3
    return direct, via_zarr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, help="reuse (or create) the source dataset here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fcs-bench-convert-"))
    src = args.data or tmp / "src"
    if not src.exists():
        synthesize(src, episodes=args.episodes, min_len=args.length, max_len=args.length, seed=3)
    src_bytes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    plain_read(src)  # warm the page cache
    base = min(plain_read(src) for _ in range(2))
    print(f"source: {src} ({src_bytes / 1e6:,.0f} MB); plain torch.load of every file: {base:.2f} s "
          f"({src_bytes / base / 1e6:,.0f} MB/s); workers {args.workers}")
    print(f"{'codec':6} {'MB/s':>7} {'x plain read':>13} {'ratio':>6} {'frame read (direct)':>20} "
          f"{'frame read (zarr-python)':>25} {'worker peak RSS (above idle)':>29}")
    try:
        for codec in CODEC_PRESETS:
            out = tmp / f"{codec}.zarr"
            t0 = time.perf_counter()
            r = convert_to_zarr(src, out, codec=codec, workers=args.workers, command=["bench"])
            dt = time.perf_counter() - t0
            direct, via_zarr = frame_read_ms(out)
            print(f"{codec:6} {src_bytes / dt / 1e6:7.0f} {dt / base:13.1f} {src_bytes / r.store_bytes:6.2f} "
                  f"{direct:17.3f} ms {via_zarr:22.3f} ms {r.peak_rss_worker_mb:15.0f} MB ({r.peak_rss_worker_mb - r.idle_rss_worker_mb:+.0f} MB)")
            shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
