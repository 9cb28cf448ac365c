"""`fcs fit`: the GPU memory a training config needs, predicted on any machine, and what fits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fcs.cli.core import command, config_error, fail, write_json
from fcs.cli.views import console, progress_bar


def _int_list(text: str, name: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected integers like 2,4,8", param_hint=name) from None
    if not values or values[0] < 1:
        raise typer.BadParameter(f"{text!r}: expected positive integers like 2,4,8", param_hint=name)
    return values


@command(examples=[
    "fcs fit --preset full --gpu 24GiB --store run1.zarr --png fit.png",
    "fcs fit --config train.yaml --gpu 16GB --batch 4,8,16 --num-hist 3,6 --json -",
    "fcs fit --preset full --calibrate",
])
def fit(
    config: Annotated[Path | None, typer.Option("--config", "-c", exists=True, dir_okay=False,
                                                help="YAML config (as fcs train)")] = None,
    preset: Annotated[str | None, typer.Option(help="start from a preset: tiny or full")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set model.decoder.schedule=joint")]
    = None,
    gpu: Annotated[str, typer.Option(help="the GPU's memory, e.g. 24GiB or 16GB; auto: this machine's GPU")] = "auto",
    store: Annotated[Path | None, typer.Option(exists=True, file_okay=False, help="an fcs store: windows and steps "
                                               "per epoch, frame size and dims (default: data.store)")] = None,
    batch: Annotated[str, typer.Option(help="batch sizes of the table")] = "2,4,8,16,32,64",
    num_hist: Annotated[str, typer.Option(help="num_hist values of the table")] = "1,2,3,4,6",
    frameskip: Annotated[str | None, typer.Option(help="frameskips of the table (default: 1,2,5 and data.frameskip)")]
    = None,
    margin: Annotated[float, typer.Option(min=0.0, max=0.5, help="fraction of the GPU's memory kept free")] = 0.05,
    reference: Annotated[bool, typer.Option(help="also predict the config under the reference setup (fp32, math "
                                                 "attention, joint decoder, validation without no_grad)")] = True,
    table: Annotated[bool, typer.Option(help="the batch x num_hist x frameskip table (off: the config only)")] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="write everything as JSON here ('-': stdout, and "
                                                                  "no tables)")] = None,
    png: Annotated[Path | None, typer.Option(help="write the plots here: memory vs batch size, feasibility map")]
    = None,
    calibrate: Annotated[bool, typer.Option(help="on a CUDA machine: measure real steps at three sizes, fit and keep "
                                                 "this GPU's calibration, then predict with it")] = False,
    calibration: Annotated[Path | None, typer.Option(help="calibration file to use (or, with --calibrate, to write); "
                                                          "default: the one kept for this GPU")] = None,
    workers: Annotated[int, typer.Option(min=1, help="processes tracing the table's num_hist values in parallel "
                                                     "(default: up to 4 CPU cores)")] = min(4, os.cpu_count() or 1),
) -> None:
    """Predict the GPU memory of training, validation and planning, on any machine, and what fits.

    Builds the real model on fake tensors and traces one training step (forward, backward, optimizer
    step, a second step with the optimizer state alive), validation and a planning batch with the
    kernels a CUDA GPU runs (bf16 autocast, fused attention, bool dropout masks, foreach
    optimizers), replayed through a model of PyTorch's caching allocator. Prints the config's own
    peaks and what they hold, then a table over batch x num_hist x frameskip: memory, whether it
    fits (with --margin kept free), windows and steps per epoch from the store, and the largest
    batch per num_hist with the accumulation that reaches an effective batch of 32.
    """
    import json

    from pydantic import ValidationError

    from fcs.cli.fit_view import print_budget, print_calibration, print_config, print_report
    from fcs_train.config import PRESETS, load_config
    from fcs_train.fit import Budget, Episodes, fit_report, parse_bytes, predict, save_fit_png
    from fcs_train.fit.calibration import (
        DEFAULT_OVERHEAD,
        find_calibration,
        load_calibration,
        save_calibration,
    )
    from fcs_train.fit.calibration import calibrate as run_calibration
    from fcs_train.fit.steps import FCS, REFERENCE, StepShape
    from fcs_train.planning.config import PlanConfig

    if preset is not None and preset not in PRESETS:
        raise typer.BadParameter(f"{preset!r}; presets: {', '.join(PRESETS)}", param_hint="--preset")
    try:
        cfg = load_config(config, preset=preset, overrides=set_ or [])
    except (ValidationError, ValueError) as e:
        raise typer.BadParameter(config_error(e), param_hint="--config/--set") from e
    batches, num_hists = _int_list(batch, "--batch"), _int_list(num_hist, "--num-hist")
    frameskips = _int_list(frameskip, "--frameskip") if frameskip else sorted({1, 2, 5, cfg.data.frameskip})
    quiet = json_path is not None and str(json_path) == "-"
    say = (lambda *_: None) if quiet else console.print
    cal = load_calibration(calibration) if calibration is not None and not calibrate else None
    if calibrate:
        import torch

        if not torch.cuda.is_available():
            fail("--calibrate needs a CUDA GPU, and torch.cuda.is_available() is False on this machine")
        cal = run_calibration(cfg, progress=say)
        written = save_calibration(cal, calibration)
        if not quiet:
            print_calibration(cal, written)
    if gpu == "auto":
        import torch

        if cal is None and torch.cuda.is_available():
            cal = find_calibration(torch.cuda.get_device_properties(0).name)
        if cal is not None:
            name, total = cal.device.name, cal.device.total_memory
        elif torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            name, total = props.name, int(props.total_memory)
        else:
            raise typer.BadParameter("no CUDA GPU on this machine: say which memory to plan for, e.g. --gpu 24GiB",
                                     param_hint="--gpu")
    else:
        try:
            total = parse_bytes(gpu)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--gpu") from None
        name = f"a {gpu} GPU" if cal is None else cal.device.name
    budget = Budget(name, total, overhead=cal.overhead_bytes if cal else DEFAULT_OVERHEAD, margin=margin,
                    calibration=cal)
    store = store or cfg.data.store
    episodes = Episodes.of(store, cfg) if store is not None else None
    dims = {} if episodes is None else {"frame_shape": episodes.frame_shape, "proprio_dim": episodes.proprio_dim,
                                        "action_dim": episodes.action_dim}
    d = cfg.data
    shape = StepShape(cfg.train.batch_size, d.num_hist, d.frameskip, num_pred=d.num_pred,
                      grad_accum=cfg.train.grad_accum, **dims)
    if not quiet:
        print_budget(budget)
    with progress_bar("tracing", "configs") as update:
        update(0, 2 if reference else 1)
        own = predict(cfg, shape, FCS, plan=PlanConfig())
        update(1, 2 if reference else 1)
        ref = predict(cfg, shape, REFERENCE) if reference else None
        update(2 if reference else 1, 2 if reference else 1)
    if not quiet:
        print_config(own, budget, ref)
    report = None
    if table:
        with progress_bar("sweep", "num_hist") as update:
            report = fit_report(cfg, budget, batches=batches, num_hists=num_hists, frameskips=frameskips,
                                episodes=episodes, plan=PlanConfig(), workers=workers, progress=update)
        if not quiet:
            print_report(report)
        if png is not None:
            say(f"wrote {save_fit_png(report, png)}")
    elif png is not None:
        raise typer.BadParameter("the plots need the table (drop --no-table)", param_hint="--png")
    if json_path is not None:
        doc = {"device": budget.to_json(), "config": own.to_json(), "reference": ref.to_json() if ref else None,
               "table": report.to_json() if report else None,
               "device_peaks": {k: budget.device_peak(getattr(own, k)) for k in ("train", "validation", "planning")},
               "fits": budget.fits_run(own)}
        write_json(json_path, json.dumps(doc, indent=2, default=str))
        say(f"wrote {json_path}")
