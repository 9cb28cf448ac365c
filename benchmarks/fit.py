"""`fcs fit`'s predictor: time per configuration, agreement with real CPU runs, fcs against the reference.

    python benchmarks/fit.py [--repeats 3] [--real-full]

1. Prediction time: the full DINO-WM model (ViT-S/14 encoder, 6-layer predictor, decoder) traced
   under fake tensors, per configuration (training + validation, then with a planning batch, then a
   sweep of every batch size and frameskip for one num_hist), the first one in the process (imports
   and the fake-tensor cache warming) apart. Goal: <= 10 s per full-model configuration on this CPU.
2. Agreement: the same steps run for real on this CPU, measured as live tensor storage (weakref
   tracking of real tensors) and as the CPU allocator's peak (torch.profiler memory events, which
   also count CPU kernels' scratch), against the prediction with this CPU's kernels. The tiny
   preset always; the full model at batch 1 with --real-full (about a minute).
3. The users' configuration (batch 4, num_hist 6, frameskip 2, 224 px) under the reference setup
   (fp32, math attention, joint decoder, validation without no_grad, default allocator) and under
   fcs's defaults (bf16, fused attention, subset decoder, no_grad validation, expandable segments),
   with what each peak holds: the table in README.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from fcs_train.config import load_config
from fcs_train.fit import FCS, REFERENCE, StepShape, Sweep, predict
from fcs_train.fit.kernels import NATIVE
from fcs_train.fit.prediction import trace_run
from fcs_train.fit.steps import NullRecorder, build, run_config, run_training, run_validation, step_harness
from fcs_train.fit.tracker import CATEGORIES, peak
from fcs_train.planning.config import PlanConfig

MiB = 1 << 20


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def prediction_times(repeats: int) -> None:
    cfg = load_config(preset="full")
    print(f"1. prediction time, full model (CPU, torch threads {torch.get_num_threads()})")
    first = timed(lambda: predict(cfg, StepShape(4, 3, 5), FCS))
    print(f"   first prediction in this process (warm-up included): {first:.2f} s")
    cases = {
        "train + validation, batch 8, num_hist 3, fs 5": lambda i: predict(cfg, StepShape(8 + i, 3, 5), FCS),
        "train + validation + planning (300 candidates), batch 8, num_hist 6, fs 2":
            lambda i: predict(cfg, StepShape(8 + i, 6, 2), FCS, plan=PlanConfig()),
        "reference setup, batch 4, num_hist 6, fs 2": lambda i: predict(cfg, StepShape(4 + i, 6, 2), REFERENCE),
    }
    for name, fn in cases.items():
        times = [timed(lambda i=i, fn=fn: fn(i)) for i in range(repeats)]  # new batch sizes: nothing remembered
        print(f"   {name}: {statistics.median(times):.2f} s (median of {repeats}: "
              f"{', '.join(f'{t:.2f}' for t in times)})")
    t = timed(lambda: Sweep(cfg, StepShape(2, 4, 5), FCS, plan=PlanConfig()))
    print(f"   sweep of one num_hist (4 training traces + 2 planning traces; then any batch size and frameskip): "
          f"{t:.2f} s")
    sweep = Sweep(cfg, StepShape(2, 4, 5), FCS, plan=PlanConfig())
    n = 40
    t = timed(lambda: [sweep.predict(b, f) for b in range(2, 2 + n // 4) for f in (1, 2, 3, 5)])
    print(f"   each further configuration from the sweep (replays only): {t / n * 1000:.0f} ms")


def real_peaks(cfg, shape: StepShape) -> dict[str, int]:
    """Live storage (tracker on real tensors) and the CPU allocator's peak of the same steps, run for real."""
    real = trace_run(cfg, shape, FCS, policy=NATIVE, fake=False)
    tr = real.train
    out = {"storage_train": peak(tr, tr.sizes, 0, real.validation_start).bytes,
           "storage_val": peak(tr, tr.sizes, real.validation_start, len(tr.events)).bytes}
    run_cfg = run_config(cfg, shape, FCS, "cuda")
    model = build(run_cfg, shape)
    base = sum(t.untyped_storage().nbytes() for t in [*model.parameters(), *model.buffers()])
    trainer = step_harness(run_cfg, model, None)
    for phase, fn in (("train", lambda: run_training(trainer, shape, NullRecorder())),
                      ("val", lambda: run_validation(trainer, shape, NullRecorder()))):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            kept = fn()
        events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns())
        now = top = 0
        for e in events:
            now += e.nbytes()
            top = max(top, now)
        out[f"allocator_{phase}"] = base + top
        base += now
        del kept
    return out


def agreement(real_full: bool) -> None:
    print("\n2. prediction (this CPU's kernels) against the same steps run for real on this CPU")
    cases = [("tiny", StepShape(4, 3, 2), ["model.predictor.dropout=0.1"]),
             ("tiny", StepShape(16, 3, 5), [])]
    if real_full:
        cases.append(("full", StepShape(1, 3, 5), []))
    print(f"   {'preset':6} {'batch':>5} {'hist':>4} {'fs':>3} {'phase':>6} {'predicted':>11} {'live storage':>13} "
          f"{'ratio':>7} {'CPU allocator':>14} {'ratio':>7}")
    for preset, shape, sets in cases:
        cfg = load_config(preset=preset, overrides=sets)
        run = trace_run(cfg, shape, FCS, policy=NATIVE)
        tr = run.train
        pred = {"train": peak(tr, tr.sizes, 0, run.validation_start).bytes,
                "val": peak(tr, tr.sizes, run.validation_start, len(tr.events)).bytes}
        real = real_peaks(cfg, shape)
        for phase in ("train", "val"):
            p, s, a = pred[phase], real[f"storage_{phase}"], real[f"allocator_{phase}"]
            print(f"   {preset:6} {shape.batch_size:5} {shape.num_hist:4} {shape.frameskip:3} {phase:>6} "
                  f"{p / MiB:9.2f}MiB {s / MiB:11.2f}MiB {p / s:7.4f} {a / MiB:12.2f}MiB {p / a:7.4f}")
    print("   (the allocator also holds CPU kernels' scratch, e.g. oneDNN convolution buffers in SSIM; a CUDA GPU "
          "has its own, which the calibration measures)")


def reference_table() -> None:
    cfg = load_config(preset="full")
    shape = StepShape(4, 6, 2)
    print("\n3. the users' configuration: batch 4, num_hist 6, frameskip 2, 224 px, full model (MiB, predicted "
          "max_memory_reserved; allocated in brackets; add the CUDA context for nvidia-smi)")
    preds = {s.name: predict(cfg, shape, s, plan=PlanConfig() if s is FCS else None) for s in (REFERENCE, FCS)}
    print(f"   {'phase':11} {'reference':>20} {'fcs':>20} {'ratio':>6}")
    for phase in ("train", "validation"):
        r, f = getattr(preds["reference"], phase), getattr(preds["fcs"], phase)
        print(f"   {phase:11} {r.reserved / MiB:9,.0f} ({r.allocated / MiB:7,.0f}) {f.reserved / MiB:9,.0f} "
              f"({f.allocated / MiB:7,.0f}) {r.reserved / f.reserved:6.1f}x")
    ref_val, ref_train = preds["reference"].validation, preds["reference"].train
    print(f"   reference validation / training: reserved {ref_val.reserved / ref_train.reserved - 1:+.0%}, allocated "
          f"{ref_val.allocated / ref_train.allocated - 1:+.0%} (users: about +17 %, 16,467 MiB measured)")
    plan = preds["fcs"].planning
    print(f"   fcs planning batch (300 candidates, horizon 5): {plan.reserved / MiB:,.0f} MiB reserved")
    for name, p in preds.items():
        for phase in ("train", "validation"):
            e = getattr(p, phase)
            parts = ", ".join(f"{k} {e.composition[k] / MiB:,.0f}" for k in CATEGORIES if e.composition.get(k, 0) >= MiB)
            print(f"   {name} {phase} peak ({e.phase}): {parts}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real-full", action="store_true", help="also run the full model for real at batch 1")
    args = ap.parse_args()
    prediction_times(args.repeats)
    agreement(args.real_full)
    reference_table()


if __name__ == "__main__":
    main()
