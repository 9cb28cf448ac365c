"""What a run leaves behind and shows: metrics.jsonl, a live progress line, per-epoch tables,
PNGs, and TensorBoard / W&B when installed and asked for. Only rank 0 writes."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fcs_data.atomic import write_text_atomic
from fcs_train.config import TrainConfig
from fcs_train.plots import plot_losses
from fcs_train.run_dir import RunDir
from fcs_train.trackers import Trackers

EPOCH_COLUMNS = (  # key in the epoch row, column title
    ("loss", "train"), ("val_loss", "val"), ("val_z_visual_loss", "z vis"), ("val_z_visual_loss_copy", "copy"),
    ("val_z_visual_skill", "skill"), ("val_z_proprio_skill", "p skill"), ("val_pred_ssim", "SSIM"),
    ("val_pred_psnr", "PSNR"), ("val_z_visual_err_rollout", "rollout"), ("plan_success_rate", "plan success"),
    ("data_wait", "wait"), ("seconds", "s"),
)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


class RunLog:
    def __init__(self, cfg: TrainConfig, enabled: bool, show_progress: bool = True, console: Console | None = None,
                 resume: bool = False):
        self.cfg = cfg
        self.enabled = enabled
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.show_progress = show_progress and enabled and self.console.is_terminal
        self.run = RunDir.of_config(cfg)
        self.train_history: list[dict] = []
        self.val_history: list[dict] = []
        self.epochs: list[dict] = []
        self._progress: Progress | None = None
        self._task = None
        self.trackers: Trackers | None = None
        self._metrics_path = self.run.metrics
        if enabled:
            self.run.root.mkdir(parents=True, exist_ok=True)
            self._metrics = os.open(self._metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.trackers = Trackers(cfg, self.run, resume)

    def load_history(self, upto_step: int) -> None:
        """After a resume: keep the records up to the checkpoint's step (later ones are redone)."""
        if not self.enabled:
            return
        path = self._metrics_path
        kept = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("step", 0) <= upto_step:
                kept.append(line)
                if rec.get("kind") == "train":
                    self.train_history.append(rec)
                elif rec.get("kind") == "val":
                    self.val_history.append(rec)
        write_text_atomic(path, "".join(k + "\n" for k in kept))
        os.close(self._metrics)
        self._metrics = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    # -- records --------------------------------------------------------------------------------
    def record(self, kind: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        rec = {"kind": kind, "time": time.time(), **values}
        append_line(self._metrics, self._metrics_path, json.dumps(rec))
        (self.train_history if kind == "train" else self.val_history if kind == "val" else []).append(values)
        step = values.get("step", 0)
        scalars = {f"{kind}/{k}": v for k, v in values.items() if isinstance(v, int | float) and k != "step"}
        if self.trackers is not None:
            self.trackers.scalars(scalars, step)

    def image(self, key: str, path: Path, step: int, caption: str = "") -> None:
        """A picture the run wrote, to TensorBoard / W&B when they are on."""
        if self.trackers is not None:
            self.trackers.image(key, path, step, caption)

    def info(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)

    # -- progress -------------------------------------------------------------------------------
    def start_epoch(self, epoch: int, total_steps: int, done: int) -> None:
        if not self.show_progress:
            return
        self._progress = Progress(
            TextColumn(f"[bold]epoch {epoch}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
            console=self.console, transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total_steps, completed=done, stats="")

    def advance(self, done: int) -> None:
        """The step count, every step (no loss: reading it would wait for the device)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=done)

    def update(self, done: int, stats: dict[str, float]) -> None:
        """Losses and rates, each time they are read from the device (`log.every_steps`)."""
        if self._progress is not None:
            text = (f"loss {stats['loss']:.4f}  {stats['steps_per_s']:.2f} steps/s  "
                    f"{stats['samples_per_s']:.1f} samples/s  data wait {100 * stats['data_wait']:.0f}%")
            self._progress.update(self._task, completed=done, stats=text)

    def profile(self, seconds: dict[str, float], step: int) -> None:
        """Where a training step's time went (shares of the step), on the console and in metrics.jsonl."""
        if not self.enabled:
            return
        total = sum(seconds.values())
        shares = ", ".join(f"{name} {100 * v / total:.0f}%" for name, v in seconds.items())
        self.console.print(f"where a training step's time went ({total:.3g} s per step): {shares}")
        self.record("profile", {"step": step, **{f"{k.replace(' ', '_')}_s": v for k, v in seconds.items()},
                                "step_s": total})

    def end_epoch(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- epoch summary --------------------------------------------------------------------------
    @staticmethod
    def _cells(r: dict[str, Any]) -> list[str]:
        cells = []
        for key, _ in EPOCH_COLUMNS:
            v = r.get(key)
            if v is not None and key == "data_wait":
                cells.append(f"{100 * v:.0f}%")
            elif v is not None and key == "seconds":
                cells.append(f"{v:.0f}")
            elif v is not None and key.endswith("_skill"):
                cells.append(f"{v:+.2f}")
            else:
                cells.append(_fmt(v))
        return cells

    def epoch_summary(self, row: dict[str, Any]) -> None:
        """One line per epoch on the console and in epochs.log; the loss plot is redrawn."""
        if not self.enabled:
            return
        self.epochs.append(row)
        labels = {"data_wait": "data wait {}", "seconds": "{} s"}
        parts = [labels.get(key, title + " {}").format(cell)
                 for (key, title), cell in zip(EPOCH_COLUMNS, self._cells(row), strict=True) if cell != "-"]
        self.console.print(f"[bold]epoch {row['epoch']}[/] (step {row['step']}): " + ", ".join(parts))
        with self.run.epochs_log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.train_history or self.val_history:
            plot_losses(self.run.loss_plot,
                        [r for r in self.train_history if math.isfinite(r.get("loss", math.nan))], self.val_history)

    def final_table(self) -> None:
        """All epochs of this session: train/val loss; the validation z_visual_loss, the same loss of the
        copy-last-frame predictor and the skill 1 - loss / copy (visual and proprio); SSIM and PSNR of
        decoded predictions; open-loop rollout z error; data-wait share; seconds."""
        if not self.enabled or not self.epochs:
            return
        rows = [(str(r["epoch"]), str(r["step"]), *self._cells(r)) for r in self.epochs]
        titles = ("epoch", "step", *(t for _, t in EPOCH_COLUMNS))
        keep = [i for i in range(len(titles)) if i < 2 or any(row[i] != "-" for row in rows)]  # no empty columns
        table = Table(title=f"{self.run.root}: losses, validation z loss against copying the last frame, image "
                            "metrics of predictions", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for i in keep:  # never squeezed into ellipses: a narrow terminal gets a wide table
            table.add_column(titles[i], justify="right", no_wrap=True,
                             min_width=max(len(titles[i]), *(len(row[i]) for row in rows)))
        for row in rows:
            table.add_row(*(row[i] for i in keep))
        self.console.print(table, crop=False)

    def close(self) -> None:
        self.end_epoch()
        if self.enabled and self._metrics >= 0:
            os.close(self._metrics)
            self._metrics = -1
            if self.trackers is not None:
                self.trackers.close()


def append_line(fd: int, path: Path, line: str) -> None:
    """Append `line` + newline with one write; on a failure (a full disk) the file is cut back to where it
    was, so no torn line is left, and the OSError names `path`."""
    data = (line + "\n").encode()
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as e:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise OSError(e.errno, e.strerror, str(path)) from None
