"""The one prepared script for a lent GPU: fcs's GPU measurements in one go, into one JSON file.

    python benchmarks/gpu.py [--out gpu.json] [--sections device,calibration,peaks,reference,train_time,plan_time]
                             [--budget-s 480] [--dry-run]

Sections run in order; each writes its results into the JSON file as soon as it ends (a run cut
short keeps what it measured), a failing one records its error and the next one runs, and no new
section starts after `--budget-s` seconds (about 8 minutes leaves time for the machine's start):

  device      the GPU: name, memory, compute capability, torch and CUDA versions, allocator setting
  calibration `fcs fit --calibrate`: real training steps and validation at three sizes (full model,
              bf16, default decoder schedule), the fit of measured against predicted reserved
              memory, kept as this GPU's calibration file (a dry run fits CPU measurements, keeps none)
  peaks       predicted against measured max_memory_reserved and max_memory_allocated of training and
              validation, batch {4, 16} x num_hist {3, 6} (full model, bf16, default schedule), raw and
              calibrated (goal: calibrated within +-10 % of the measured reserved memory); the
              README table as markdown, the device named
  reference   the users' configuration (batch 4, num_hist 6, frameskip 2) under the reference setup
              (fp32, math attention, joint decoder, validation with gradients): measured against predicted
  train_time  seconds per optimizer step (full model, batch 16, num_hist 3) per decoder schedule
  plan_time   a full-model, full-budget bf16 plan (and its warm-started successor) per planning solver:
              benchmarks/plan.py's `time_solvers` (issue 20), skipped with a note while it has none

A section is a function `(Context) -> dict` in `SECTIONS`; add one there. `--dry-run` runs every
section's code on this CPU with the tiny preset (measurements: the live storage of the same steps
run for real, timings on the CPU), in about a minute, so the script is known to work before a GPU
session is spent on it (tests/test_gpu_script.py).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fcs_train.config import TrainConfig, load_config  # noqa: E402
from fcs_train.fit import FCS, REFERENCE, Setup, StepShape, predict  # noqa: E402
from fcs_train.fit.calibration import (  # noqa: E402
    DEFAULT_SIZES,
    Calibration,
    DeviceInfo,
    calibrate,
    calibration_points,
    configure_allocator,
    device_info,
    fit_calibration,
    measure,
    save_calibration,
)
from fcs_train.fit.kernels import NATIVE  # noqa: E402
from fcs_train.fit.prediction import trace_run  # noqa: E402
from fcs_train.fit.steps import build, loader_batch, run_config, step_harness  # noqa: E402
from fcs_train.fit.tracker import peak  # noqa: E402

MiB = 1 << 20
PEAK_CONFIGS = [(b, h) for h in (3, 6) for b in (4, 16)]  # (batch, num_hist), frameskip 5
USERS_CONFIG = StepShape(4, 6, 2)


@dataclass
class Context:
    dry_run: bool
    device: torch.device
    cfg: TrainConfig
    out: Path
    results: dict = field(default_factory=dict)
    calibration: Calibration | None = None

    def save(self) -> None:
        self.out.write_text(json.dumps(self.results, indent=2, default=str))


def _measure(ctx: Context, shape: StepShape, setup: Setup) -> dict[str, dict[str, int]]:
    """Per phase: max_memory_allocated / max_memory_reserved on the GPU; in a dry run, the live storage
    of the same steps run for real on the CPU (allocated and reserved alike)."""
    if not ctx.dry_run:
        return measure(ctx.cfg, shape, setup, ctx.device)
    run = trace_run(ctx.cfg, shape, setup, policy=NATIVE, fake=False)
    tr = run.train
    train = peak(tr, tr.sizes, 0, run.validation_start).bytes
    val = peak(tr, tr.sizes, run.validation_start, len(tr.events)).bytes
    return {"train": {"allocated": train, "reserved": train}, "validation": {"allocated": val, "reserved": val}}


def section_device(ctx: Context) -> dict:
    if ctx.dry_run:
        return {"name": "cpu (dry run)", "torch": torch.__version__, "allocator_conf": configure_allocator()}
    info = device_info(ctx.device)
    free, _ = torch.cuda.mem_get_info(ctx.device)
    return {**info.model_dump(), "free_at_start": int(free), "allocator_conf": configure_allocator()}


def section_calibration(ctx: Context) -> dict:
    say = lambda line: print(f"  {line}", flush=True)  # noqa: E731
    if ctx.dry_run:  # the same points and fit from this CPU's measurements; nothing kept
        points, overhead = calibration_points(ctx.cfg, DEFAULT_SIZES, FCS, lambda c, sh, se: _measure(ctx, sh, se), say)
        cal = fit_calibration(points, DeviceInfo(name="cpu (dry run)", total_memory=0), overhead)
        ctx.calibration = cal
        return {"file": None, **cal.model_dump(), "errors": cal.errors()}
    cal = calibrate(ctx.cfg, device=ctx.device, progress=say)
    path = save_calibration(cal, ctx.out.with_name(f"calibration-{ctx.out.stem}.json"))
    save_calibration(cal)  # this machine's kept calibration too
    ctx.calibration = cal
    return {"file": str(path), **cal.model_dump(), "errors": cal.errors()}


def _compare(ctx: Context, shape: StepShape, setup: Setup) -> dict:
    measured = _measure(ctx, shape, setup)
    pred = predict(ctx.cfg, shape, setup)
    row: dict = {"batch_size": shape.batch_size, "num_hist": shape.num_hist, "frameskip": shape.frameskip,
                 "setup": setup.name, "trace_seconds": pred.seconds}
    for phase, est in (("train", pred.train), ("validation", pred.validation)):
        m = measured[phase]
        cal = ctx.calibration.reserved(est.reserved) if ctx.calibration else None
        row[phase] = {"measured_allocated": m["allocated"], "measured_reserved": m["reserved"],
                      "predicted_allocated": est.allocated, "predicted_reserved": est.reserved,
                      "calibrated_reserved": cal, "peak_at": est.phase, "composition": est.composition,
                      "error_raw": est.reserved / m["reserved"] - 1,
                      "error_calibrated": None if cal is None else cal / m["reserved"] - 1}
    print(f"  {setup.name} batch {shape.batch_size} num_hist {shape.num_hist}: measured reserved "
          f"{measured['train']['reserved'] / MiB:,.0f} / {measured['validation']['reserved'] / MiB:,.0f} MiB, predicted "
          f"{pred.train.reserved / MiB:,.0f} / {pred.validation.reserved / MiB:,.0f} MiB (train / validation)",
          flush=True)
    if not ctx.dry_run:
        torch.cuda.empty_cache()
    return row


def peaks_markdown(rows: list[dict], device: str) -> str:
    """README's table of predicted against measured peaks (MiB), the device named."""
    mib = lambda v: "-" if v is None else f"{v / MiB:,.0f}"  # noqa: E731
    pct = lambda v: "-" if v is None else f"{v:+.1%}"  # noqa: E731
    lines = [f"Measured on {device} (`python benchmarks/gpu.py`; full model, bf16, default decoder schedule, "
             "frameskip 5; MiB of `max_memory_reserved`):", "",
             "| batch | num_hist | phase | measured | predicted | calibrated | error (raw) | error (calibrated) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for phase in ("train", "validation"):
            p = r[phase]
            lines.append(f"| {r['batch_size']} | {r['num_hist']} | {phase} | {mib(p['measured_reserved'])} | "
                         f"{mib(p['predicted_reserved'])} | {mib(p['calibrated_reserved'])} | {pct(p['error_raw'])} | "
                         f"{pct(p['error_calibrated'])} |")
    return "\n".join(lines)


def section_peaks(ctx: Context) -> dict:
    fs = ctx.cfg.data.frameskip
    rows = [_compare(ctx, StepShape(b, h, fs), FCS) for b, h in PEAK_CONFIGS]
    errs = [r[p]["error_calibrated"] for r in rows for p in ("train", "validation") if r[p]["error_calibrated"] is not None]
    device = ctx.results["sections"].get("device", {}).get("name", str(ctx.device))
    table = peaks_markdown(rows, device)
    print(table, flush=True)
    return {"rows": rows, "max_abs_error_calibrated": max((abs(e) for e in errs), default=None),
            "max_abs_error_raw": max(abs(r[p]["error_raw"]) for r in rows for p in ("train", "validation")),
            "markdown": table}


def section_reference(ctx: Context) -> dict:
    return _compare(ctx, USERS_CONFIG, REFERENCE)


def _load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"fcs_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in it resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def section_train_time(ctx: Context) -> dict:
    step = _load_benchmark("train_step").step  # the training step exactly as the trainer runs it
    shape = StepShape(2 if ctx.dry_run else 16, 3, ctx.cfg.data.frameskip)
    steps = 2 if ctx.dry_run else 10
    out = {}
    for schedule in ("joint", "subset", "off"):
        cfg = ctx.cfg.model_copy(update={"model": ctx.cfg.model.model_copy(update={
            "decoder": ctx.cfg.model.decoder.model_copy(update={"schedule": schedule})})})
        run_cfg = run_config(cfg, shape, FCS, ctx.device.type)
        model = build(run_cfg, shape).to(ctx.device)
        trainer = step_harness(run_cfg, model, None, ctx.device)
        obs, act = trainer._inputs(loader_batch(shape, run_cfg.model.image_size, shape.batch_size))
        for _ in range(2):
            step(trainer, obs, act)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(trainer, obs, act)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        out[schedule] = (time.perf_counter() - t0) / steps
        print(f"  {schedule}: {out[schedule]:.3f} s per step at batch {shape.batch_size}", flush=True)
        del trainer, model, obs, act
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return {"batch_size": shape.batch_size, "num_hist": shape.num_hist, "seconds_per_step": out}


PLAN_DRY_RUN = {"samples": 4, "iterations": 1, "horizon": 2}  # the tiny preset on the CPU: the code path only


def section_plan_time(ctx: Context) -> dict:
    """A full-model, full-budget (CEM 300 x 30, horizon 5) bf16 plan per planning solver, and its
    warm-started successor (issue 20): benchmarks/plan.py's `time_solvers`, when it has one."""
    time_solvers = getattr(_load_benchmark("plan"), "time_solvers", None)
    if time_solvers is None:
        return {"skipped": "benchmarks/plan.py has no time_solvers(preset, device=..., amp=...) (issue 20 adds it, "
                           "branch i20): nothing timed"}
    if ctx.dry_run:
        preset, rows = "tiny", time_solvers("tiny", device="cpu", amp="off", **PLAN_DRY_RUN)
    else:
        preset, rows = "full", time_solvers("full", device=ctx.device.type, amp="bf16")
    for r in rows:
        print(f"  {r['solver']}: {r['seconds']:.3f} s per plan, warm-started {r['warm_seconds']:.3f} s, "
              f"{r['flops'] / 1e12:.2f} TFLOP", flush=True)
    return {"preset": preset, "amp": "off" if ctx.dry_run else "bf16", "budget": PLAN_DRY_RUN if ctx.dry_run else
            "time_solvers' defaults (CEM 300 x 30, horizon 5)", "rows": rows}


SECTIONS: dict[str, Callable[[Context], dict]] = {
    "device": section_device, "calibration": section_calibration, "peaks": section_peaks,
    "reference": section_reference, "train_time": section_train_time, "plan_time": section_plan_time,
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("gpu.json"))
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--budget-s", type=float, default=480.0, help="start no section after this many seconds")
    ap.add_argument("--dry-run", action="store_true", help="this CPU, the tiny preset: check the script itself")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown sections {unknown}; sections: {', '.join(SECTIONS)}")
    configure_allocator()  # before anything touches CUDA
    if not args.dry_run and not torch.cuda.is_available():
        ap.error("no CUDA GPU here (torch.cuda.is_available() is False); --dry-run checks the script on a CPU")
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", 0)
    cfg = load_config(preset="tiny" if args.dry_run else "full")
    ctx = Context(args.dry_run, device, cfg, args.out, {
        "script": "benchmarks/gpu.py", "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dry_run": args.dry_run, "preset": "tiny" if args.dry_run else "full", "sections": {}})
    t_start = time.perf_counter()
    for name in names:
        if time.perf_counter() - t_start > args.budget_s:
            ctx.results["sections"][name] = {"skipped": f"past the {args.budget_s:.0f} s budget"}
            ctx.save()
            continue
        print(f"[{time.perf_counter() - t_start:6.1f} s] {name}", flush=True)
        t0 = time.perf_counter()
        try:
            result = SECTIONS[name](ctx)
        except Exception as e:  # one section's failure must not cost the others
            result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(f"  failed: {result['error']}", flush=True)
        result["seconds"] = time.perf_counter() - t0
        ctx.results["sections"][name] = result
        ctx.save()
    ctx.results["seconds"] = time.perf_counter() - t_start
    ctx.save()
    print(f"wrote {args.out} ({ctx.results['seconds']:.0f} s)")
    return ctx.results


if __name__ == "__main__":
    main()
