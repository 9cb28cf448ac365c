"""Commands on world models: `fcs import-checkpoint`, `train`, `dynamics`, `train-decoder`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fcs.cli.core import command, config_error, expect_input, fail
from fcs.cli.views import console, err_console, progress_bar


@command(name="import-checkpoint", examples=["fcs import-checkpoint outputs/2025-01-20/12-00-00/checkpoints/model_latest.pth ref.pt"])
def import_checkpoint(
    old: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="reference DINO-WM checkpoint (.pth)")],
    new: Annotated[Path, typer.Argument(help="fcs checkpoint to write")],
    overwrite: Annotated[bool, typer.Option(help="replace NEW if it exists")] = False,
    image_size: Annotated[int | None, typer.Option(min=16, help="image size the model was trained at, when the "
                                                                "tensors leave it open")] = None,
    num_hist: Annotated[int | None, typer.Option(min=1, help="context frames, when the tensors leave it open")] = None,
    frameskip: Annotated[int | None, typer.Option(min=1, help="frameskip of the run (the action encoder takes "
                                                              "frameskip x action dim inputs)")] = None,
    action_dim: Annotated[int | None, typer.Option(min=1, help="raw action dimension (instead of --frameskip)")]
    = None,
) -> None:
    """Convert a reference DINO-WM checkpoint (pickled modules and optimizers) into an fcs checkpoint.

    Nothing in OLD is executed and the reference code is not needed: every class in the file is read
    as an inert container, and any global outside the reference's modules, torch.nn, torch.optim,
    accelerate and DINOv2 refuses the import. The model's shape (image size, num_hist, concat_dim,
    dims) comes from the tensors and the run's hydra.yaml when it sits beside checkpoints/; the
    options settle what neither says. Optimizer states (Adam, AdamW) are kept when every parameter maps
    onto fcs's optimizers: `fcs train --resume-from-reference NEW` continues with them.
    """
    expect_input(old, "reference_checkpoint", "torch_file", role="a reference DINO-WM checkpoint")
    from fcs_train.reference_import import Hints, import_reference_checkpoint

    if new.exists() and not overwrite:
        raise FileExistsError(f"{new} exists; pass --overwrite to replace it")
    summary = import_reference_checkpoint(old, new, Hints(image_size, num_hist, frameskip, action_dim))
    for part, n in summary["parts"].items():
        console.print(f"  {part:16} {n:>12,} values")
    cfg, dims = summary["model_config"], summary["dims"]
    console.print(f"  model: image {cfg.image_size}, num_hist {dims['num_hist']}, frameskip {dims['frameskip']}, "
                  f"proprio {dims['proprio_dim']}, action {dims['action_dim']}, concat_dim {cfg.concat_dim}, "
                  f"predictor depth {cfg.predictor.depth} x {cfg.predictor.heads} heads")
    for note in summary["notes"]:
        console.print(f"  note: {note}")
    if summary["dropped"]:
        console.print(f"  dropped (not model weights): {', '.join(summary['dropped'])}")
    console.print(f"wrote {new} (epoch {summary['epoch']}); continue training with "
                  f"fcs train ... --resume-from-reference {new}, or start from its weights with "
                  f"--set train.init_from={new}")


@command(examples=["fcs train --preset tiny data.store=demo/store.zarr", "fcs train -c my.yaml frameskip=5 num_hist=3 train.batch_size=8", "fcs train -c my.yaml --resume"])
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", exists=True, dir_okay=False,
                                                help="YAML config (sections data, model, optim, train, log)")] = None,
    preset: Annotated[str | None, typer.Option(help="start from a preset: tiny (CPU demo) or full")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set train.batch_size=8 "
                                                                 "(repeatable)")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="print the resolved config and exit")] = False,
    resume: Annotated[bool, typer.Option(help="continue the run in train.run_dir (default: runs/RUN_NAME/latest) "
                                              "from checkpoints/latest.pt")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace the run that train.run_dir holds")] = False,
    resume_from_reference: Annotated[Path | None, typer.Option(
        "--resume-from-reference", exists=True, dir_okay=False,
        help="continue a reference DINO-WM run: its weights, optimizer moments and epoch count (a checkpoint from "
             "fcs import-checkpoint, or the reference .pth itself, imported first)")] = None,
    progress: Annotated[bool, typer.Option(help="live progress line (terminals only)")] = True,
    overrides: Annotated[list[str] | None, typer.Argument(
        metavar="KEY=VALUE", help="overrides as Hydra writes them, e.g. train.batch_size=8 data.frameskip=5; "
                                      "the reference's names (frameskip, num_hist, training.batch_size, ...) are "
                                      "mapped to fcs's keys")] = None,
) -> None:
    """Train DINO-WM on an fcs store; several GPUs (or CPU processes) with torchrun.

    The resolved config is saved in the run directory with metrics.jsonl, checkpoints (latest,
    best, every k epochs), PNG grids and loss plots. Ctrl-C writes a checkpoint first; --resume
    continues exactly where it stopped. Multi-process: torchrun --nproc_per_node N -m fcs train ...
    """
    from pydantic import ValidationError

    from fcs_train.config import PRESETS, load_config

    if preset is not None and preset not in PRESETS:
        raise typer.BadParameter(f"{preset!r}; presets: {', '.join(PRESETS)}", param_hint="--preset")
    try:
        notes: list[str] = []
        cfg = load_config(config, preset=preset, overrides=[*(set_ or []), *(overrides or [])], notes=notes)
    except (ValidationError, ValueError) as e:
        raise typer.BadParameter(config_error(e), param_hint="--config/--set/KEY=VALUE") from e
    for note in notes:
        err_console.print(f"note: {escape(note)}", highlight=False)
    if resume_from_reference is not None:
        if resume:
            raise typer.BadParameter("use --resume or --resume-from-reference, not both", param_hint="--resume")
        from fcs_train.runs import resolve_run_dir

        cfg.train.run_dir = resolve_run_dir(cfg.train.run_dir, cfg.train.run_name, resume=False, overwrite=overwrite)
        overwrite = False
        cfg.train.init_from = _fcs_checkpoint(resume_from_reference, cfg)
        cfg.train.init_optimizers = True
    if print_config:
        console.print(cfg.to_yaml(), end="")
        return
    if cfg.data.store is None:
        fail("data.store is not set: give an fcs store, e.g. data.store=demo/store.zarr (fcs convert DATASET --to "
             "zarr makes one)")
    expect_input(cfg.data.store, "store", role="an fcs store (data.store)")
    from fcs_train.trackers import check_trackers

    check_trackers(cfg)
    from fcs_train.signals import Preempted
    from fcs_train.trainer import Trainer

    trainer = Trainer(cfg, resume=resume, overwrite=overwrite, show_progress=progress)
    try:
        trainer.fit()
    except Preempted as e:  # SIGTERM / SIGUSR1: a checkpoint was written; exit as the signal would
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        trainer.close()


def _fcs_checkpoint(path: Path, cfg) -> Path:
    """`path` if it is an fcs checkpoint, else the reference checkpoint imported into the run directory."""
    from fcs_train.checkpoint import load_checkpoint
    from fcs_train.errors import CheckpointError
    from fcs_train.reference_import import Hints, import_reference_checkpoint

    try:
        load_checkpoint(path)
        return path
    except CheckpointError:
        pass
    from fcs_train.run_dir import RunDir

    out = RunDir.of_config(cfg).checkpoint("imported_reference")
    summary = import_reference_checkpoint(path, out, Hints(cfg.model.image_size, cfg.data.num_hist,
                                                            cfg.data.frameskip))
    console.print(f"imported {path} -> {out} (epoch {summary['epoch']}; optimizers: "
                  f"{', '.join(summary['optimizers']) or 'none'})")
    return out


@command(examples=["fcs dynamics run1.zarr --checkpoint best.pt --max-frameskip 10"])
def dynamics(
    store: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="an fcs store")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", exists=True, dir_okay=False,
                                             help="an fcs checkpoint: its encoder embeds the frames")],
    max_frameskip: Annotated[int, typer.Option(min=1, help="frameskips 1..N")] = 10,
    pairs: Annotated[int, typer.Option(min=1, help="frame pairs per frameskip")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
) -> None:
    """How much the embeddings change between frames fs apart, on the validation episodes.

    Each row is the loss of the trivial predictor that repeats the last context frame, at that
    frameskip, in the units of z_visual_loss and z_proprio_loss: a model trained at frameskip fs
    has learned dynamics only where its validation loss is clearly below that row (skill > 0).
    """
    from rich.table import Table

    from fcs_data.store import open_store
    from fcs_train.checkpoint import load_world_model
    from fcs_train.dist import resolve_device
    from fcs_train.dynamics import checkpoint_split, embedding_change

    expect_input(store, "store", role="an fcs store")
    expect_input(checkpoint, "fcs_checkpoint", role="an fcs checkpoint")

    dev = resolve_device(device)
    model, ckpt = load_world_model(checkpoint, dev)
    s = open_store(store)
    episodes, stats = checkpoint_split(s, ckpt)
    with progress_bar("embed", "frameskips") as update:
        rows = []
        for fs in range(1, max_frameskip + 1):
            rows += embedding_change(model, s, stats, episodes=episodes, frameskips=range(fs, fs + 1), pairs=pairs,
                                     device=dev)
            update(fs, max_frameskip)
    trained = ckpt.spec.window.frameskip
    table = Table(title=f"embedding change between frames fs apart ({len(episodes)} validation episodes of {store})",
                  title_justify="left")
    for col in ("frameskip", "pairs", "visual", "x fs=1", "proprio"):
        table.add_column(col, justify="right")
    base = rows[0].visual or 1.0
    for r in rows:
        mark = " <- this checkpoint's frameskip" if r.frameskip == trained else ""
        table.add_row(f"{r.frameskip}{mark}", str(r.pairs), f"{r.visual:.4g}", f"{r.visual / base:.2f}",
                      f"{r.proprio:.4g}")
    console.print(table)
    console.print("each row is the z_visual_loss / z_proprio_loss of copying the last frame at that frameskip; "
                  "compare a run's validation losses with its row (skill = 1 - loss / copy)")


@command(name="train-decoder", examples=["fcs train-decoder runs/dino_wm/latest --steps 2000"])
def train_decoder_cmd(
    run: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="a run directory of fcs train")],
    steps: Annotated[int, typer.Option(min=1, help="decoder steps")] = 1000,
    batch_size: Annotated[int | None, typer.Option(min=1, help="frames per step (default: the run's windows x "
                                                               "frames)")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: optim.decoder_lr of the run)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
) -> None:
    """Train the decoder of a run after the world model (model.decoder.schedule off), on the frozen
    encoder's embeddings of the store's frames, and write it into every checkpoint of the run."""
    from fcs.cli.views import Phases
    from fcs_train.decoder_training import train_decoder
    from fcs_train.run_dir import RunDir

    with Phases() as phases:
        bar = phases.callback("decoder", "steps")
        result = train_decoder(run, steps=steps, batch_size=batch_size, lr=lr, device=device,
                               progress=lambda done, total, loss: bar(done, total))
    console.print(f"decoder: {result.steps} steps in {result.seconds:.0f} s, train loss {result.train_loss:.4g}; "
                  f"validation frames: reconstruction MSE {result.val_recon_loss:.4g}, SSIM {result.val_ssim:.3f}, "
                  f"PSNR {result.val_psnr:.1f}")
    console.print(f"wrote the decoder into {len(result.checkpoints)} checkpoints of {RunDir(run).checkpoints}; "
                  f"images: {RunDir(run).decoder_image}")
