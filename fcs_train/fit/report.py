"""The answer to "what fits on my GPU": a table over batch size x num_hist x frameskip.

Each row gives the predicted device memory of training, validation and planning (calibrated when a
calibration of the device exists), whether the run fits with the stated margin, and, from a store's
episode lengths, the windows per epoch and optimizer steps per epoch it would train on. Then the
largest batch that fits for each num_hist, with the gradient accumulation that reaches the paper's
effective batch of 32, and the feasibility map: episode length x frameskip -> the largest num_hist
that both fits and has windows.

"Fits" means: predicted `max_memory_reserved` + the memory outside the allocator (CUDA context and
libraries) <= the device's memory x (1 - margin). Near the limit the allocator frees its cache and
can squeeze a little further, so a "no" close to the line may still run; a "yes" has the margin left.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fcs_data.splits import split_episodes
from fcs_data.window_index import windows_per_episode
from fcs_train.config import TrainConfig
from fcs_train.fit.calibration import DEFAULT_OVERHEAD, Calibration
from fcs_train.fit.prediction import Estimate, Prediction, Sweep
from fcs_train.fit.steps import FCS, Setup, StepShape
from fcs_train.planning.config import PlanConfig

GIB = 1 << 30
EFFECTIVE_BATCH = 32  # the paper's batch (Table 12)
_UNITS = {"": GIB, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 10**3, "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
          "g": GIB, "gib": GIB, "gb": 10**9, "t": 1 << 40, "tib": 1 << 40, "tb": 10**12}


def parse_bytes(text: str) -> int:
    """`"24GiB"`, `"24 GB"`, `"16000MiB"`, `"24"` (GiB) -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a memory size (e.g. 24GiB, 16GB, 24000MiB)")
    return int(float(m.group(1)) * _UNITS[unit])


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


@dataclass(frozen=True)
class Budget:
    """A GPU's memory and what of it a run may use.

    total: device memory (bytes); overhead: in use outside the caching allocator (CUDA context,
    libraries; measured by the calibration, else `DEFAULT_OVERHEAD`); margin: fraction of `total`
    kept free; calibration: the device's, applied to every prediction.
    """

    name: str
    total: int
    overhead: int = DEFAULT_OVERHEAD
    margin: float = 0.05
    calibration: Calibration | None = None

    @property
    def usable(self) -> int:
        """Bytes the caching allocator may reserve."""
        return int(self.total * (1 - self.margin)) - self.overhead

    def reserved(self, est: Estimate) -> int:
        """`max_memory_reserved` the device would read (calibrated when possible)."""
        return self.calibration.reserved(est.reserved) if self.calibration else est.reserved

    def device_peak(self, est: Estimate) -> int:
        """All the device memory the phase needs: reserved + outside the allocator."""
        return self.reserved(est) + self.overhead

    def fits(self, est: Estimate) -> bool:
        return self.reserved(est) <= self.usable

    def fits_run(self, pred: Prediction) -> bool:
        """Training and validation both fit (they share one process)."""
        return self.fits(pred.train) and self.fits(pred.validation)

    def to_json(self) -> dict:
        return {"name": self.name, "total": self.total, "overhead": self.overhead, "margin": self.margin,
                "usable": self.usable, "calibrated": self.calibration is not None}


def grad_accum_for(batch_size: int, effective: int = EFFECTIVE_BATCH) -> int:
    return max(1, math.ceil(effective / batch_size))


@dataclass(frozen=True)
class Episodes:
    """A store's train and validation episode lengths (the config's split)."""

    store: str
    train: np.ndarray
    val: np.ndarray
    frame_shape: tuple[int, int]
    proprio_dim: int
    action_dim: int

    @classmethod
    def of(cls, store_path: str | Path, cfg: TrainConfig) -> Episodes:
        from fcs_data.store import Store

        store = Store(store_path)
        lengths = store.episode_lengths
        ids = range(store.num_episodes)
        d = cfg.data
        tr = split_episodes(ids, "train", d.split_ratio, d.split_seed)
        va = split_episodes(ids, "val", d.split_ratio, d.split_seed)
        h, w = store.row_shape("rgb")[:2]
        return cls(str(store.path), lengths[tr], lengths[va], (int(h), int(w)), store.layout.proprio_dim,
                   store.layout.action_dim)

    def windows(self, num_hist: int, num_pred: int, frameskip: int) -> tuple[int, int]:
        f = num_hist + num_pred
        return (int(windows_per_episode(self.train, f, frameskip).sum()),
                int(windows_per_episode(self.val, f, frameskip).sum()))


@dataclass(frozen=True)
class Row:
    """One configuration of the table (memory in bytes, as the device would read it)."""

    batch_size: int
    num_hist: int
    frameskip: int
    grad_accum: int
    train: int
    validation: int
    planning: int | None
    fits: bool
    plan_fits: bool | None
    train_windows: int | None = None
    val_windows: int | None = None
    steps_per_epoch: int | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FitReport:
    """`fcs fit`'s table (see the module docstring)."""

    budget: Budget
    setup: str
    rows: list[Row]
    largest: dict[int, int]  # num_hist -> largest batch that fits (0: none)
    heatmap_batch: int
    heatmap_lengths: list[int]
    heatmap_frameskips: list[int]
    heatmap: list[list[int]]  # [frameskip][length] -> largest num_hist (0: none)
    store: str | None = None
    seconds: float = 0.0
    predictions: dict[tuple[int, int, int], Prediction] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "device": self.budget.to_json(), "setup": self.setup, "store": self.store,
            "effective_batch": EFFECTIVE_BATCH, "rows": [r.to_json() for r in self.rows],
            "largest_batch": {str(h): {"batch_size": b, "grad_accum": grad_accum_for(b) if b else None}
                              for h, b in self.largest.items()},
            "feasibility": {"batch_size": self.heatmap_batch, "episode_lengths": self.heatmap_lengths,
                            "frameskips": self.heatmap_frameskips, "largest_num_hist": self.heatmap},
            "predictions": [p.to_json() for p in self.predictions.values()], "seconds": self.seconds,
        }


def largest_batch(fits: Callable[[int], bool], upper: int = 4096, start: int = 1) -> int:
    """The largest batch size `b <= upper` with `fits(b)` (memory grows with the batch), 0 when none.

    The search starts at `start` and only looks below it when `start` does not fit (a sweep traces
    batch sizes below its bases directly)."""
    if not fits(start):
        return next((b for b in range(start - 1, 0, -1) if fits(b)), 0)
    lo, hi = start, 2 * start
    while hi <= upper and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, upper + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _lengths_axis(episodes: Episodes | None) -> list[int]:
    if episodes is None or not len(episodes.train):
        return list(range(10, 201, 10))
    lo, hi = int(episodes.train.min()), int(episodes.train.max())
    return sorted({int(x) for x in np.linspace(lo, hi, min(12, hi - lo + 1)).round()})


def _sweep(cfg: TrainConfig, shape: StepShape, setup: Setup, plan: PlanConfig | None) -> Sweep:
    return Sweep(cfg, shape, setup, plan=plan)


def sweeps(cfg: TrainConfig, shapes: dict[int, StepShape], setup: Setup, plan: PlanConfig | None, workers: int = 1,
           progress: Callable[[int, int], None] | None = None) -> dict[int, Sweep]:
    """A `Sweep` per num_hist, traced in `workers` processes (each CPU core traces one at a time)."""
    out: dict[int, Sweep] = {}
    if progress:
        progress(0, len(shapes))
    if workers <= 1 or len(shapes) <= 1:
        for h, shape in shapes.items():
            out[h] = _sweep(cfg, shape, setup, plan)
            if progress:
                progress(len(out), len(shapes))
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(min(workers, len(shapes)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_sweep, cfg, shape, setup, plan): h for h, shape in shapes.items()}
        for fut in as_completed(futures):
            out[futures[fut]] = fut.result()
            if progress:
                progress(len(out), len(shapes))
    return {h: out[h] for h in shapes}


class _Sweeps:
    """The sweeps of one num_hist: one with two micro-batches traced (rows whose accumulation is > 1),
    and, only when a row or the largest-batch search reaches batch 32 (accumulation 1, no gradients
    kept between micro-batches), one with a single micro-batch, traced on first use without planning
    (which does not depend on it)."""

    def __init__(self, accum2: dict[int, Sweep], build_accum1: Callable[[list[int]], dict[int, Sweep]]):
        self.by_accum: dict[int, dict[int, Sweep]] = {2: accum2}
        self._build_accum1 = build_accum1

    def need_accum1(self, num_hists: Sequence[int]) -> None:
        missing = [h for h in num_hists if h not in self.by_accum.setdefault(1, {})]
        if missing:
            self.by_accum[1] |= self._build_accum1(missing)

    def predict(self, h: int, b: int, f: int) -> Prediction:
        accum = grad_accum_for(b)
        if accum > 1:
            return self.by_accum[2][h].predict(b, f, grad_accum=accum)
        self.need_accum1([h])
        pred = self.by_accum[1][h].predict(b, f, grad_accum=1)
        return replace(pred, planning=self.by_accum[2][h].predict(2, f).planning)


def fit_report(cfg: TrainConfig, budget: Budget, *, batches: Sequence[int], num_hists: Sequence[int],
               frameskips: Sequence[int], episodes: Episodes | None = None, setup: Setup = FCS,
               plan: PlanConfig | None = None, heatmap_batch: int | None = None, workers: int = 1,
               progress: Callable[[int, int], None] | None = None) -> FitReport:
    """The table for `cfg` on `budget`'s GPU. Rows assume the gradient accumulation that reaches an
    effective batch of 32, and are predicted with it (two micro-batches traced when it is > 1, the
    most any number needs; one when it is 1). `workers`: processes tracing the num_hist values in
    parallel."""
    import time

    t0 = time.perf_counter()
    plan = plan or PlanConfig()
    num_pred = cfg.data.num_pred
    dims = {} if episodes is None else {"frame_shape": episodes.frame_shape, "proprio_dim": episodes.proprio_dim,
                                        "action_dim": episodes.action_dim}
    heatmap_batch = heatmap_batch or cfg.train.batch_size

    def shapes(accum: int, hists: Sequence[int]) -> dict[int, StepShape]:
        return {h: StepShape(2, h, frameskips[0], num_pred=num_pred, grad_accum=accum, **dims) for h in hists}

    sw = _Sweeps(sweeps(cfg, shapes(2, num_hists), setup, plan, workers, progress),
                 lambda hists: sweeps(cfg, shapes(1, hists), setup, None, workers))
    if max(batches) >= EFFECTIVE_BATCH or heatmap_batch >= EFFECTIVE_BATCH:
        sw.need_accum1(num_hists)  # traced together (in parallel), not one num_hist at a time
    report = FitReport(budget, setup.name, [], {}, heatmap_batch, _lengths_axis(episodes),
                       list(range(1, max(frameskips) + 1)), [], episodes.store if episodes else None)
    for h in num_hists:
        for f in frameskips:
            for b in batches:
                accum = grad_accum_for(b)
                pred = sw.predict(h, b, f)
                report.predictions[(b, h, f)] = pred
                tw = vw = steps = None
                if episodes is not None:
                    tw, vw = episodes.windows(h, num_pred, f)
                    steps = tw // (b * accum)
                plan_bytes = budget.reserved(pred.planning) if pred.planning else None
                report.rows.append(Row(b, h, f, accum, budget.reserved(pred.train), budget.reserved(pred.validation),
                                       plan_bytes, budget.fits_run(pred),
                                       budget.fits(pred.planning) if pred.planning else None, tw, vw, steps))
    f_max = max(frameskips)
    start = min(s.batches[0] for s in sw.by_accum[2].values())
    below = {h: largest_batch(lambda b, h=h: budget.fits_run(sw.predict(h, b, f_max)), upper=EFFECTIVE_BATCH - 1,
                              start=start) for h in num_hists}
    reach = [h for h in num_hists if below[h] == EFFECTIVE_BATCH - 1]
    sw.need_accum1(reach)
    for h in num_hists:
        report.largest[h] = below[h] if h not in reach else max(below[h], largest_batch(
            lambda b, h=h: budget.fits_run(sw.predict(h, b, f_max)), start=EFFECTIVE_BATCH))
    fits_at = {(h, f): budget.fits_run(sw.predict(h, heatmap_batch, f))
               for h in num_hists for f in report.heatmap_frameskips}
    for f in report.heatmap_frameskips:
        report.heatmap.append([max([h for h in num_hists if fits_at[h, f] and length >= (h + num_pred) * f],
                                   default=0) for length in report.heatmap_lengths])
    report.seconds = time.perf_counter() - t0
    return report
