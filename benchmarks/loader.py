"""Window throughput of the legacy loader, `WindowDataset`, the DataLoader, and the memory bound.

    python benchmarks/loader.py [--episodes 8] [--length 300] [--num-hist 3] [--frameskip 5]

On one generated v1 dataset, converted with the default codec (`auto`, which picks `none` for
these noisy renders) and with `lz4`:
  (a) legacy: `torch.load` of the episode's obses.pth for every sample, then slicing (the users'
      loader before fcs);
  (b) `WindowDataset` in this process, with every chunk's crc32c verified (the default) and, in the
      same run, without (`Store(path, verify=False)`): the difference is what checksums cost;
  (c) `make_loader(..., num_workers=2)` (fork), windows/s over whole batches after warm-up;
  (d) the memory-bandwidth bound: the same windows (frames + state/action rows) from one
      uncompressed `.npy` memmap of all frames.
Prints windows/s and the ratios b/a, b/d, c/d, and the memory of a DataLoader worker: RSS, USS
(memory only that worker holds: what adding a worker costs) and RSS above an idle worker with the
same imports. The worker memory is measured again on a dataset 4x larger (same episodes repeated).
Goals: b >= 100 a; the default (auto, checksums verified) b >= 0.15 d; worker memory below 400 MB
and unchanged at 4x the data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.format import DEFAULT_CODEC
from fcs_data.loader import collate_windows, make_loader
from fcs_data.store import Store
from fcs_data.synth import synthesize
from fcs_data.windows import WindowDataset


def rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def legacy(src: Path, ds: WindowDataset, picks: np.ndarray):
    """The pre-fcs loader: torch.load the whole episode, slice the window out."""
    meta = [m.source_index for m in ds.store.episode_meta]

    def run(n: int) -> None:
        for i in picks[:n]:
            episode, start, _ = ds.index.locate(int(i))
            obs = torch.load(src / f"{meta[episode]:06d}" / "obses.pth", weights_only=True)
            obs[start : start + ds.num_frames * ds.frameskip : ds.frameskip].permute(0, 3, 1, 2).contiguous()

    return run


def memmap_bound(ds: WindowDataset, tmp: Path, picks: np.ndarray):
    store = ds.store
    path = tmp / "frames.npy"
    if not path.exists():
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(store.num_frames, *ds.frame_shape))
        for a in range(0, store.num_frames, 256):
            b = min(a + 256, store.num_frames)
            mm[a:b] = store.read_frames(np.arange(a, b))
        mm.flush()
        del mm
        np.save(tmp / "state.npy", store.read_rows("state", 0, store.num_frames))
        np.save(tmp / "action.npy", store.read_rows("action", 0, store.num_frames))
    frames = np.load(path, mmap_mode="r")
    state = np.load(tmp / "state.npy", mmap_mode="r")
    action = np.load(tmp / "action.npy", mmap_mode="r")
    offsets = np.arange(ds.num_frames, dtype=np.int64) * ds.frameskip
    n_steps = ds.num_frames * ds.frameskip

    def run(n: int) -> None:
        for i in picks[:n]:
            _, _, g = ds.index.locate(int(i))
            torch.from_numpy(frames[g + offsets]).permute(0, 3, 1, 2)
            np.array(state[g : g + n_steps : ds.frameskip])
            np.array(action[g : g + n_steps])

    return run


def in_process(ds: WindowDataset, picks: np.ndarray):
    def run(n: int) -> None:
        for i in picks[:n]:
            ds[int(i)]

    return run


def worker_memory(loader) -> dict[str, float]:
    kids = psutil.Process().children(recursive=True)
    if not kids:
        return {}
    infos = [k.memory_full_info() for k in kids]
    worst = max(infos, key=lambda m: m.rss)
    return {"rss": worst.rss / 2**20, "uss": max(m.uss for m in infos) / 2**20}


def through_loader(ds: torch.utils.data.Dataset, batch: int, batches: int) -> tuple[float, dict[str, float], float]:
    loader = make_loader(ds, batch_size=batch, num_workers=2, seed=0, multiprocessing_context="fork",
                         collate_fn=collate_windows)
    it = iter(loader)
    for _ in range(3):
        next(it)
    idle = worker_memory(loader)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            n += len(next(it)["episode"])
        except StopIteration:
            it = iter(loader)
    dt = time.perf_counter() - t0
    mem = worker_memory(loader)
    del it, loader
    return n / dt, mem, idle.get("rss", 0.0)


class _ReadsNothing(torch.utils.data.Dataset):
    """Items of a window's size that cost nothing to make: the DataLoader's own transfer ceiling."""

    def __init__(self, ds: WindowDataset):
        self.item = ds[0]
        self.n = len(ds)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.item


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--num-hist", type=int, default=3)
    ap.add_argument("--frameskip", type=int, default=5)
    ap.add_argument("--windows", type=int, default=3000)
    ap.add_argument("--legacy-windows", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="fcs-bench-loader-"))
    try:
        src = synthesize(tmp / "src", episodes=args.episodes, min_len=args.length, max_len=args.length, seed=5)
        print(f"dataset: {args.episodes} episodes x {args.length} frames, num_hist {args.num_hist}, "
              f"frameskip {args.frameskip}; pid {os.getpid()}, 1 torch thread")
        results = {}
        for codec in (DEFAULT_CODEC, "lz4"):
            res = convert_to_zarr(src, tmp / f"{codec}.zarr", codec=codec, workers=2, command=["bench"])
            results[codec] = res
        first = results[DEFAULT_CODEC].store
        ds = WindowDataset(first, num_hist=args.num_hist, frameskip=args.frameskip, split="all")
        picks = np.random.default_rng(0).integers(0, len(ds), args.windows)
        in_process(ds, picks)(200)  # warm page cache and file handles
        mm = memmap_bound(ds, tmp, picks)
        mm(200)
        a = rate(legacy(src, ds, picks), args.legacy_windows)
        d = rate(mm, args.windows)
        print(f"(a) legacy torch.load per sample: {a:,.0f} windows/s;  (d) memmap bound: {d:,.0f} windows/s")
        print(f"{'store codec':22} {'checksums':>9} {'(b) dataset':>12} {'(c) loader':>11} {'b/a':>6} {'b/d':>6} "
              f"{'c/d':>6}   worker RSS / USS / above idle")
        for codec, res in results.items():
            label = f"{codec} -> {res.codec}" if codec != res.codec else codec
            rates = {}
            for verify in (True, False):
                ds = WindowDataset(Store(res.store, verify=verify), num_hist=args.num_hist, frameskip=args.frameskip,
                                   split="all")
                in_process(ds, picks)(200)
                rates[verify] = b = rate(in_process(ds, picks), args.windows)
                if verify:
                    c, mem, idle = through_loader(ds, 32, max(1, args.windows // 32))
                    print(f"{label:22} {'on':>9} {b:12,.0f} {c:11,.0f} {b / a:6.0f} {b / d:6.2f} {c / d:6.2f}   "
                          f"{mem['rss']:.0f} / {mem['uss']:.0f} / {mem['rss'] - idle:+.0f} MB")
                else:
                    print(f"{label:22} {'off':>9} {b:12,.0f} {'':>11} {b / a:6.0f} {b / d:6.2f}")
            print(f"{'':22} checksum cost: {100 * (1 - rates[True] / rates[False]):.0f} % of the read rate "
                  f"({label}); with checksums b/d = {rates[True] / d:.2f} (goal >= 0.15 for the default)")
        c0, _, _ = through_loader(_ReadsNothing(ds), 32, max(1, args.windows // 32))
        print(f"(c0) DataLoader transfer ceiling, 2 workers, items that read nothing: {c0:,.0f} windows/s "
              f"(c/d cannot exceed {c0 / d:.2f} here)")
        # the same loader on a store 4x larger: worker memory must not grow with the data
        big = synthesize(tmp / "src4", episodes=4 * args.episodes, min_len=args.length, max_len=args.length, seed=5)
        store4 = convert_to_zarr(big, tmp / "big.zarr", workers=2, command=["bench"]).store
        ds4 = WindowDataset(store4, num_hist=args.num_hist, frameskip=args.frameskip, split="all")
        c4, mem4, idle4 = through_loader(ds4, 32, max(1, args.windows // 32))
        print(f"4x data ({4 * args.episodes} episodes, {DEFAULT_CODEC}): loader {c4:,.0f} windows/s, worker "
              f"RSS / USS {mem4['rss']:.0f} / {mem4['uss']:.0f} MB ({mem4['rss'] - idle4:+.0f} above idle)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
