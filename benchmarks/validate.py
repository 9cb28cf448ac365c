"""Time `fcs validate` on a synthetic v1 dataset (default 100 episodes x 300 frames).

    python benchmarks/validate.py [--episodes 100] [--length 300] [--data DIR]

Prints wall time, frames/s and MB/s of source read for 1 and 2 worker processes, and the peak
RSS of the validating processes. The first pass warms the page cache and is not reported.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from fcs_data.schemas import get_layout
from fcs_data.synth import synthesize
from fcs_data.validation import validate_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--data", type=Path, help="reuse (or create) the dataset here")
    args = ap.parse_args()
    tmp = None
    data = args.data
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="fcs-bench-")
        data = Path(tmp.name) / "d"
    if not data.exists():
        t0 = time.perf_counter()
        synthesize(data, episodes=args.episodes, min_len=args.length, max_len=args.length, seed=1)
        print(f"synth: {args.episodes} x {args.length} frames in {time.perf_counter() - t0:.1f} s")
    layout = get_layout()
    size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    validate_source(data, layout, workers=2)  # warm the page cache
    print(f"dataset: {data} ({size / 1e9:.2f} GB)")
    for workers in (1, 2):
        t0 = time.perf_counter()
        report = validate_source(data, layout, workers=workers)
        dt = time.perf_counter() - t0
        print(
            f"validate, {workers} worker(s): {dt:6.1f} s  {report.num_frames / dt:8.0f} frames/s  "
            f"{size / dt / 1e6:7.0f} MB/s  findings {report.counts}"
        )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: main {own:.0f} MB, largest worker {kids:.0f} MB (one episode = "
          f"{args.length * 256 * 256 * 3 / 1e6:.0f} MB of frames)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
