"""Experiment trackers beside metrics.jsonl: TensorBoard and Weights & Biases, as the users' fork used them.

One W&B run per fcs run, kept across `--resume` (its id lives in the run directory, as the
reference keeps it with the run), named, grouped and tagged from `log.wandb_*`; scalars and the
run's pictures (prediction grids, plan strips) go to both trackers. A tracker that was asked for
and is not installed is an error before training starts (`check_trackers`), never a warning after.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from fcs_train.config import TrainConfig
from fcs_train.errors import TrackerError
from fcs_train.run_dir import RunDir


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def check_trackers(cfg: TrainConfig) -> None:
    """`TrackerError` naming the setting and the install command when an asked-for tracker is missing."""
    if cfg.log.wandb and not _installed("wandb"):
        raise TrackerError("log.wandb=true but wandb is not installed: pip install 'fcs[wandb]' (or set "
                           "log.wandb=false)")
    if cfg.log.tensorboard and not (_installed("tensorboard") or "torch.utils.tensorboard" in sys.modules):
        raise TrackerError("log.tensorboard=true but tensorboard is not installed: pip install tensorboard (or set "
                           "log.tensorboard=false)")


class Trackers:
    """TensorBoard and W&B for one run (rank 0 only): `scalars`, `image`, `close`."""

    def __init__(self, cfg: TrainConfig, run: RunDir, resume: bool):
        check_trackers(cfg)
        self._tb = self._wandb = None
        if cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run.tensorboard))
        if cfg.log.wandb:
            self._wandb = _wandb_run(cfg, run, resume)

    @property
    def wandb_id(self) -> str | None:
        return None if self._wandb is None else str(self._wandb.id)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def image(self, key: str, path: Path, step: int, caption: str = "") -> None:
        """A PNG the run wrote (a prediction grid, a plan strip), under `key` at `step`."""
        if self._tb is None and self._wandb is None:
            return
        if self._tb is not None:
            import numpy as np
            from PIL import Image

            with Image.open(path) as img:
                self._tb.add_image(key, np.asarray(img.convert("RGB")), step, dataformats="HWC")
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Image(str(path), caption=caption or path.name)}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _wandb_run(cfg: TrainConfig, run: RunDir, resume: bool) -> Any:
    """`wandb.init` for this run: the id stored in the run directory is resumed, a new run stores its id."""
    import wandb

    log = cfg.log
    saved = run.wandb
    kwargs: dict[str, Any] = dict(project=log.wandb_project, entity=log.wandb_entity, name=log.wandb_name,
                                  group=log.wandb_group, tags=list(log.wandb_tags) or None,
                                  config=cfg.model_dump(mode="json"), dir=str(run.root))
    if resume and saved.is_file():
        try:
            known = json.loads(saved.read_text())
            run_id = str(known["id"])
        except (ValueError, KeyError, TypeError) as e:
            raise TrackerError(f"{saved}: not the W&B run record fcs writes ({e}); delete it to start a new W&B run"
                               ) from None
        kwargs.update(id=run_id, resume="must", project=known.get("project", log.wandb_project),
                      entity=known.get("entity", log.wandb_entity))
    run = wandb.init(**kwargs)
    saved.write_text(json.dumps({"id": run.id, "project": kwargs["project"], "entity": kwargs["entity"],
                                 "url": getattr(run, "url", None)}) + "\n")
    return run
