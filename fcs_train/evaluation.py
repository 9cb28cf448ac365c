"""Evaluation of a run: validation losses and metrics, open-loop rollouts, prediction images.

Everything here runs under `torch.no_grad()` with the model in `eval()` (users saw validation take
17 % more memory than training without it), and back in `train()` afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fcs_data.loader import WatchedLoader, collate_windows
from fcs_data.windows import WindowDataset
from fcs_train import dist as fdist
from fcs_train.batches import next_batch
from fcs_train.config import TrainConfig
from fcs_train.errors import NonFiniteLoss
from fcs_train.metrics import LPIPS, image_metrics, z_errors
from fcs_train.models import VWorldModel, to_model_input
from fcs_train.plots import save_prediction_grid
from fcs_train.stall import StallWatchdog
from fcs_train.step_inputs import listed, model_inputs, window_pairs


class Evaluator:
    """Validation over every rank's share of the validation windows, rollouts and images (rank 0)."""

    def __init__(self, cfg: TrainConfig, model: VWorldModel, net: torch.nn.Module, val_ds: WindowDataset,
                 val_loader: WatchedLoader, info: fdist.DistInfo, autocast: Callable[[], contextlib.AbstractContextManager],
                 lpips: LPIPS | None, stall: StallWatchdog | None = None):
        self.cfg, self.model, self.net, self.val_ds, self.val_loader = cfg, model, net, val_ds, val_loader
        self.stall = stall
        self.info, self.device, self.autocast, self.lpips = info, info.device, autocast, lpips

    def _inputs(self, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return model_inputs(batch, self.device, self.cfg.model.image_size)

    @torch.no_grad()
    def validate(self, epoch: int, step: int, decode: bool) -> dict[str, float]:
        """Mean losses, the copy-last-frame baseline, z errors and image metrics (when `decode`) over the
        validation windows (all ranks). A non-finite loss stops the run naming the windows that produce it."""
        model = self.model
        self.net.eval()
        totals: dict[str, float] = {}
        count = 0
        bad: list[tuple[int, int]] = []
        it = iter(self.val_loader)
        while (batch := next_batch(it, self.val_loader, self.stall)) is not None:
            obs, act = self._inputs(batch)
            with self.autocast():
                out = model(obs, act, decode_pred=decode, reconstruct=decode)
            values = {k: float(v) for k, v in out.components.items()}
            if not math.isfinite(values["loss"]):
                bad += self._nonfinite_windows(batch, obs, act, decode)
                continue
            values |= {k: float(v) for k, v in model.copy_last_frame_losses(out.z.float()).items()}
            z_tgt = out.z[:, model.num_pred :]
            values |= {k: float(v) for k, v in z_errors(model, out.z_pred.float(), z_tgt.float()).items()}
            target = obs["visual"][:, model.num_pred :]
            if out.visual_pred is not None:
                values |= {k: float(v) for k, v in image_metrics(out.visual_pred, target, "pred").items()}
                values |= {k: float(v) for k, v in image_metrics(out.visual_rec, obs["visual"], "rec").items()}
                if self.lpips is not None:
                    values["pred_lpips"] = float(self.lpips(out.visual_pred, target))
                    values["rec_lpips"] = float(self.lpips(out.visual_rec, obs["visual"]))
            n = len(batch["episode"])
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v * n
            count += n
        means = {k: v / count for k, v in totals.items()} if count else {}
        means = fdist.mean_across({**means, "_bad": float(len(bad))}, self.info, weight=float(max(count, 1)))
        self.net.train()
        if means.pop("_bad", 0.0) > 0:
            raise NonFiniteLoss(
                f"the validation loss is not finite at epoch {epoch} (step {step}); the validation windows (episode, "
                f"start) that produce it{' on this rank' if self.info.distributed else ''}: {listed(bad)}")
        for part in ("visual", "proprio"):
            loss, copy = means.get(f"z_{part}_loss"), means.get(f"z_{part}_loss_copy")
            if loss is not None and copy:
                means[f"z_{part}_skill"] = 1.0 - loss / copy
        return means

    def _nonfinite_windows(self, batch: dict, obs: dict[str, torch.Tensor], act: torch.Tensor,
                           decode: bool) -> list[tuple[int, int]]:
        """The windows of a batch whose loss is not finite (each evaluated alone)."""
        out = []
        for i, pair in enumerate(window_pairs(batch)):
            one = {k: v[i : i + 1] for k, v in obs.items()}
            with self.autocast():
                loss = self.model(one, act[i : i + 1], decode_pred=False, reconstruct=decode).loss
            if not torch.isfinite(loss):
                out.append(pair)
        return out

    @torch.no_grad()
    def rollout_errors(self, epoch: int) -> dict[str, float]:
        """Open-loop rollouts on validation episodes (the reference's protocol): from num_hist and
        from 1 context frame, predict to the end of a random horizon; z error of the last frame."""
        model, ds, cfg = self.model, self.val_ds, self.cfg
        fs, num_hist = ds.frameskip, model.num_hist
        min_h = 2 + num_hist
        lengths = ds.store.episode_lengths
        eligible = [int(e) for e in ds.episodes if lengths[e] >= (min_h + 1) * fs]
        if not eligible or cfg.train.num_rollouts == 0:
            return {}
        model.eval()
        errs: dict[str, list[float]] = {}
        for i in range(cfg.train.num_rollouts):
            rng = np.random.default_rng([cfg.train.seed, epoch, i])  # never the global RNG
            ep = eligible[int(rng.integers(len(eligible)))]
            max_h = int(lengths[ep]) // fs - 1
            horizon = int(rng.integers(min_h, max_h + 1))
            start = int(rng.integers(0, int(lengths[ep]) - (horizon + 1) * fs + 1))
            w = ds.window(ep, start, horizon + 1)
            visual = to_model_input(w["visual"].unsqueeze(0).to(self.device), cfg.model.image_size)
            proprio = w["proprio"].unsqueeze(0).to(self.device)
            actions = w["action"][:horizon].unsqueeze(0).to(self.device)
            goal = model.encode_obs({"visual": visual[:, -1:], "proprio": proprio[:, -1:]})
            for n_ctx, suffix in ((num_hist, ""), (1, "_1framestart")):
                z_obses, _ = model.rollout({"visual": visual[:, :n_ctx], "proprio": proprio[:, :n_ctx]}, actions)
                for part in ("visual", "proprio"):
                    err = F.mse_loss(z_obses[part][:, -1:], goal[part]).item()
                    errs.setdefault(f"z_{part}_err_rollout{suffix}", []).append(err)
        model.train()
        return {k: float(np.mean(v)) for k, v in errs.items()}

    def save_images(self, path: Path, title: str) -> Path | None:
        """Ground truth / prediction / reconstruction of `log.num_reconstruct_samples` validation windows,
        labelled (`title`, each window's episode and start); None when there is no validation window."""
        n = min(self.cfg.log.num_reconstruct_samples, len(self.val_ds))
        if n == 0:
            return None
        batch = collate_windows([self.val_ds[i] for i in np.linspace(0, len(self.val_ds) - 1, n).astype(int)])
        obs, act = self._inputs(batch)
        self.model.eval()
        with torch.no_grad(), self.autocast():
            out = self.model(obs, act)
        self.model.train()
        return save_prediction_grid(path, obs["visual"], out.visual_pred, out.visual_rec, self.model.num_pred,
                                    num_hist=self.model.num_hist, title=title,
                                    samples=[f"episode {e}, start {s}" for e, s in window_pairs(batch)])
