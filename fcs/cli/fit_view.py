"""How `fcs fit` shows its answer (rich). No logic lives here."""

from __future__ import annotations

from rich.table import Table

from fcs.cli.views import console
from fcs_train.fit.calibration import Calibration
from fcs_train.fit.prediction import Estimate, Prediction
from fcs_train.fit.report import GIB, Budget, FitReport, gib, grad_accum_for
from fcs_train.fit.tracker import CATEGORIES


def _composition(est: Estimate) -> str:
    parts = [(k, est.composition.get(k, 0)) for k in CATEGORIES]
    return ", ".join(f"{k} {v / GIB:.2f}" for k, v in parts if v >= 0.005 * GIB) or "-"


def print_budget(budget: Budget) -> None:
    cal = ("calibrated " + (budget.calibration.created or "")) if budget.calibration else \
        "uncalibrated: run fcs fit --calibrate on the GPU"
    console.print(f"[bold]{budget.name}[/]: {gib(budget.total)} GiB; the allocator may reserve {gib(budget.usable)} GiB "
                  f"({budget.margin:.0%} kept free, {gib(budget.overhead)} GiB for the CUDA context and libraries; {cal})")


def print_config(pred: Prediction, budget: Budget, reference: Prediction | None = None) -> None:
    """The config's own prediction: each phase's device peak, where it occurs and what it is made of."""
    s = pred.shape
    table = Table(title=f"this config: batch {s.batch_size} x accum {s.grad_accum}, num_hist {s.num_hist}, frameskip "
                        f"{s.frameskip} (GiB on the device, CUDA context included)", title_justify="left")
    table.add_column("phase")
    table.add_column(f"{pred.setup}", justify="right")
    table.add_column("fits")
    table.add_column("peak at")
    if reference is not None:
        table.add_column("reference", justify="right")
        table.add_column("fits")
    for name in ("train", "validation", "planning"):
        est: Estimate | None = getattr(pred, name)
        if est is None:
            continue
        row = [name, gib(budget.device_peak(est)), "yes" if budget.fits(est) else "[red]no[/]", est.phase]
        if reference is not None:
            ref = getattr(reference, name)
            row += [gib(budget.device_peak(ref)), "yes" if budget.fits(ref) else "[red]no[/]"] if ref else ["-", ""]
        table.add_row(*row)
    console.print(table)
    for name in ("train", "validation", "planning"):
        est = getattr(pred, name)
        if est is not None:
            console.print(f"  {name} peak holds (GiB): {_composition(est)}")
    if reference is not None:
        console.print("reference: fp32, attention without a fused kernel, every frame decoded every step, validation "
                      "without torch.no_grad(), the default allocator (what the users ran before fcs)")
    kernels = ", ".join(f"{k} x{v}" for k, v in sorted(pred.attention_kernels.items()))
    console.print(f"attention kernels a GPU runs here: {kernels or '-'}; traced in {pred.seconds:.1f} s on this CPU")


def print_report(report: FitReport) -> None:
    b = report.budget
    table = Table(title=f"{report.setup}: batch x num_hist (hist) x frameskip (fs), effective batch 32 by gradient "
                        f"accumulation; GiB on the device, CUDA context included; windows and steps per epoch of "
                        f"the store's training split", title_justify="left")
    for col, justify in (("batch", "right"), ("hist", "right"), ("fs", "right"), ("accum", "right"),
                         ("train", "right"), ("val", "right"), ("plan", "right"), ("fits", "left"),
                         ("windows", "right"), ("val win", "right"), ("steps/ep", "right")):
        table.add_column(col, justify=justify)
    for r in report.rows:
        no_windows = r.train_windows == 0
        fits = "[red]no[/]" if not r.fits else ("[yellow]no windows[/]" if no_windows else "yes")
        table.add_row(str(r.batch_size), str(r.num_hist), str(r.frameskip), str(r.grad_accum),
                      gib(r.train + b.overhead), gib(r.validation + b.overhead),
                      gib(r.planning + b.overhead) if r.planning is not None else "-", fits,
                      "-" if r.train_windows is None else f"{r.train_windows:,}",
                      "-" if r.val_windows is None else f"{r.val_windows:,}",
                      "-" if r.steps_per_epoch is None else f"{r.steps_per_epoch:,}")
    console.print(table)
    parts = []
    for h, batch in report.largest.items():
        parts.append(f"num_hist {h}: " + (f"batch {batch} x accum {grad_accum_for(batch)}" if batch else "none"))
    console.print("largest batch that fits (training and validation): " + "; ".join(parts))
    console.print(f"traced and replayed in {report.seconds:.1f} s")


def print_calibration(cal: Calibration, path: object) -> None:
    console.print(f"[bold]{cal.device.name}[/] ({gib(cal.device.total_memory)} GiB, sm {cal.device.capability}, "
                  f"torch {cal.device.torch}, CUDA {cal.device.cuda}): {gib(cal.overhead_bytes)} GiB outside the "
                  f"allocator; max_memory_reserved = {cal.reserved_offset / 2**20:.0f} MiB + "
                  f"{cal.reserved_scale:.3f} x predicted; allocated offset {cal.allocated_offset / 2**20:.0f} MiB")
    table = Table(title="calibration points", title_justify="left")
    for col in ("batch", "num_hist", "phase", "measured reserved", "predicted", "calibrated", "error"):
        table.add_column(col, justify="right")
    for p, err in zip(cal.points, cal.errors(), strict=True):
        table.add_row(str(p.batch_size), str(p.num_hist), p.phase, gib(p.measured_reserved), gib(p.predicted_reserved),
                      gib(cal.reserved(p.predicted_reserved)), f"{err:+.1%}")
    console.print(table)
    console.print(f"wrote {path}")
