"""What a training step does with the model, apart from the loop around it: `TrainingStep`.

`Trainer` is a `TrainingStep` (it adds the data, the loop, validation and checkpoints); `fcs fit`
builds one without a store or a loader (`fcs_train.fit.steps.step_harness`), so that its memory
predictions run the trainer's own step code, and the trainer can check the run's predicted memory
(`fcs_train.fit.preflight`) without the two modules importing each other.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from fcs_train.checkpoint import RunState
from fcs_train.config import TrainConfig
from fcs_train.models import VWorldModel
from fcs_train.step_inputs import DecoderWork, model_inputs


class TrainingStep:
    """The step's pieces: inputs on the device, autocast, the decoder's share, the optimizer step.

    Attributes the owner sets: `cfg`, `model`, `net` (the model, or its compiled / DDP wrapper),
    `device`, `amp_dtype` (None: fp32), `scaler`, `optimizers` (by part), `decoder_work`, `state`.
    """

    cfg: TrainConfig
    model: VWorldModel
    net: torch.nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    optimizers: dict[str, torch.optim.Optimizer]
    decoder_work: DecoderWork
    state: RunState

    def _inputs(self, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return model_inputs(batch, self.device, self.cfg.model.image_size)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _decoder_kwargs(self, batch_size: int, frames: int) -> dict[str, Any]:
        return self.decoder_work(batch_size, frames, self.state.global_step, self.device)

    def _optimizer_step(self) -> None:
        clip = self.cfg.optim.grad_clip
        for opt in self.optimizers.values():
            if clip is not None:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
            self.scaler.step(opt)
        self.scaler.update()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def _decoding(self) -> bool:
        """Validation decodes images (and computes image metrics) once the decoder is trained."""
        return self.model.decoder is not None and self.state.decoder_trained
