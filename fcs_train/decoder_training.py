"""`fcs train-decoder RUN`: train the decoder after the world model, on the frozen encoder's embeddings.

The decoder sees only the encoder's patch tokens (its inputs are detached in every schedule), so it
can be trained on its own once the predictor is done (`model.decoder.schedule: off`), in a fraction
of the time: frames are drawn at random from the store's training episodes, encoded without
gradients, decoded, and the reconstruction loss trains the decoder alone. The decoder's weights
(and its optimizer state) are then written into every checkpoint of the run, which are marked
`decoder_trained`, so validation images and image metrics work from then on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fcs_data.splits import EpisodeSplit
from fcs_data.store import Store
from fcs_train.checkpoint import load_checkpoint, load_world_model, save_checkpoint
from fcs_train.config import load_config
from fcs_train.errors import DecoderTrainingError
from fcs_train.metrics import image_metrics
from fcs_train.models import DECODER_LATENT_LOSS_WEIGHT, VWorldModel, to_model_input
from fcs_train.plots import save_prediction_grid
from fcs_train.run_dir import RunDir


@dataclass
class DecoderRun:
    steps: int
    train_loss: float
    val_recon_loss: float
    val_ssim: float
    val_psnr: float
    seconds: float
    checkpoints: list[Path]


def _frames(store: Store, episodes: np.ndarray) -> np.ndarray:
    """Global frame indices of `episodes`."""
    return np.concatenate([np.arange(store.episode_starts[e], store.episode_ends[e]) for e in episodes])


def _batch(model: VWorldModel, store: Store, ids: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`(tokens (B, 1, N, D), images (B, 1, 3, S, S))` of frames `ids`, encoded without gradients."""
    frames = torch.from_numpy(store.read_frames(np.sort(ids))).permute(0, 3, 1, 2).to(device)
    visual = to_model_input(frames, model.image_size).unsqueeze(1)
    with torch.no_grad():
        tokens = model.encode_obs({"visual": visual, "proprio": torch.zeros(len(ids), 1, model.proprio_dim,
                                                                            device=device)})["visual"]
    return tokens, visual


def train_decoder(run_dir: str | Path, *, steps: int = 1000, batch_size: int | None = None,
                  lr: float | None = None, seed: int = 0, device: str = "auto",
                  progress: Callable[[int, int, float], None] | None = None) -> DecoderRun:
    """Train the decoder of the run in `run_dir` for `steps` steps and write it into its checkpoints."""
    run = RunDir(Path(run_dir))
    if not run.latest.exists():
        raise DecoderTrainingError(f"{run.root}: no {run.latest.relative_to(run.root)}; train the world model first "
                                   "(fcs train)")
    cfg = load_config(run.config)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model, ckpt = load_world_model(run.latest, dev)
    if model.decoder is None:
        raise DecoderTrainingError(f"{run.root}: the model has no decoder (model.decoder.enabled is false)")
    if ckpt.store is None:
        raise DecoderTrainingError(f"{run.latest} records no store (imported from the reference?)")
    store = Store(ckpt.store.path)
    if not ckpt.store.matches(store):
        raise DecoderTrainingError(f"{store.path} is not the store {run.root} was trained on")
    d, split = cfg.data, ckpt.split or EpisodeSplit()
    train_frames = _frames(store, split.episodes(store.num_episodes, "train"))
    val_frames = _frames(store, split.episodes(store.num_episodes, "val"))
    batch_size = batch_size or cfg.train.batch_size * (d.num_hist + d.num_pred)
    decoder = model.decoder.train()
    decoder.requires_grad_(True)
    # the run's decoder optimizer (Adam, named parameters: its state goes into the checkpoints)
    opt = model.optimizer_groups(cfg.optim)["decoder"].build(model, **({"lr": lr} if lr else {}))
    rng = np.random.default_rng(seed)
    t0, losses = time.perf_counter(), []
    for step in range(1, steps + 1):
        tokens, visual = _batch(model, store, rng.choice(train_frames, batch_size, replace=False)
                                if len(train_frames) >= batch_size else rng.choice(train_frames, batch_size), dev)
        images, diff = decoder(tokens)
        loss = F.mse_loss(images, visual.flatten(0, 1)) + DECODER_LATENT_LOSS_WEIGHT * diff
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise DecoderTrainingError(f"the decoder loss is {losses[-1]} at step {step}; lower --lr")
        if progress:
            progress(step, steps, losses[-1])
    decoder.eval()
    picks = np.random.default_rng(seed + 1).choice(val_frames if len(val_frames) else train_frames,
                                                   min(64, max(len(val_frames), 1)), replace=False)
    recon, ssim, psnr = [], [], []
    with torch.no_grad():
        for i in range(0, len(picks), batch_size):
            tokens, visual = _batch(model, store, picks[i : i + batch_size], dev)
            images, _ = decoder(tokens)
            target = visual.flatten(0, 1)
            recon.append(float(F.mse_loss(images, target)) * len(target))
            m = image_metrics(images, target, "rec")
            ssim.append(float(m["rec_ssim"]) * len(target))
            psnr.append(float(m["rec_psnr"]) * len(target))
        tokens, visual = _batch(model, store, picks[:8], dev)
        images, _ = decoder(tokens)
    n = len(picks)
    save_prediction_grid(run.decoder_image, visual.transpose(0, 1), None,
                         images.unsqueeze(0), num_pred=1, title=f"fcs train-decoder, {steps} steps: validation frames",
                         samples=["validation frames"], columns=[f"frame {j}" for j in range(visual.shape[0])])
    written = []
    weights = {k: v.detach().cpu() for k, v in decoder.state_dict().items()}
    for path in run.run_checkpoints():
        other = load_checkpoint(path)
        if "decoder" not in other.weights:
            continue
        metrics = {**other.state.val_metrics, "decoder_recon_loss_reconstructed": sum(recon) / n}
        save_checkpoint(other.model_copy(update={
            "weights": {**other.weights, "decoder": weights}, "optimizers": {**other.optimizers, "decoder": opt.state_dict()},
            "state": other.state.model_copy(update={"decoder_trained": True, "val_metrics": metrics})}), path)
        written.append(path)
    return DecoderRun(steps, float(np.mean(losses[-max(1, steps // 10):])), sum(recon) / n, sum(ssim) / n,
                      sum(psnr) / n, time.perf_counter() - t0, written)
