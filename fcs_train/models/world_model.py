"""`VWorldModel`: DINO-WM's world model (Zhou et al. 2024), part for part.

    obs["visual"]  (B, T, 3, S, S) float in [-1, 1], S = image_size (224)
    obs["proprio"] (B, T, P) normalised proprio;  act (B, T, fs * A) normalised actions
    encode      -> z (B, T, N, D'): DINOv2 patch tokens (N = (S/16)^2) with the proprio and action
                   embeddings tiled onto every token (concat_dim 1, D' = 384 + 10 + 10) or appended
                   as two extra tokens (concat_dim 0, D' = 384)
    predict     -> z of frames 1..T from frames 0..T-1 (frame-causal ViT)
    decode      -> images (B, T, 3, S, S) from the visual part of z
    forward     -> `WorldModelOutput`: z_pred, visual_pred, visual_rec, loss, loss components
    rollout     -> open-loop prediction from context frames and an action sequence
    rollout_embedded -> the same from context frames encoded once (a planner's candidates share them)

`proprio_dim` is the raw proprio input (3 for an EE position); `proprio_emb_dim` and
`action_emb_dim` are the embedding widths tiled onto the visual tokens (times their repeats).

Losses as the reference: `z_loss` = MSE of predicted vs target (frames shifted by num_pred,
detached) over visual + proprio dims; the decoder learns from detached embeddings only, so its
gradients never reach the predictor or the encoders. Only `z_loss` and the reconstruction loss
are optimised; the decoder's loss on predicted embeddings is logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

from fcs_train.config import OptimConfig
from fcs_train.models.decoder import VQVAE
from fcs_train.models.encoder import DinoV2Encoder
from fcs_train.models.predictor import ViTPredictor
from fcs_train.models.proprio import ProprioceptiveEmbedding

DECODER_SCALE = 16  # pixels per patch token after the decoder's two x4 stages
DECODER_LATENT_LOSS_WEIGHT = 0.25

PARTS = ("encoder", "predictor", "decoder", "proprio_encoder", "action_encoder")


@dataclass(frozen=True)
class WorldModelOutput:
    """What `VWorldModel.forward` returns for a window of `num_hist + num_pred` frames.

    z_pred      `(B, num_hist, N, D')` predicted embeddings of frames num_pred.. (None without predictor)
    visual_pred `(B, num_hist, 3, S, S)` decoded predictions (None when not decoded)
    visual_rec  `(B, F, 3, S, S)` decoded reconstructions of the window's frames, or of the `(B, k)`
                frames asked for (None when not decoded)
    loss        the optimised scalar: z_loss + the decoder's reconstruction loss
    components  every loss term by name (z_loss, z_visual_loss, z_proprio_loss, decoder_*)
    z           `(B, F, N, D')` the window's embeddings (targets are `z[:, num_pred:]`)
    """

    z: torch.Tensor
    z_pred: torch.Tensor | None
    visual_pred: torch.Tensor | None
    visual_rec: torch.Tensor | None
    loss: torch.Tensor
    components: dict[str, torch.Tensor]


@dataclass(frozen=True)
class OptimizerGroup:
    """One optimizer of the model: its class, the parts it updates in order, its hyperparameters."""

    kind: type[torch.optim.Optimizer]
    parts: tuple[str, ...]
    hyper: dict[str, float] = field(default_factory=dict)

    def named_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """`("part.name", parameter)` in the optimizer's order: the names its state is saved and mapped by."""
        return [(f"{part}.{n}", p) for part in self.parts for n, p in getattr(model, part).named_parameters()]

    def build(self, model: nn.Module, **overrides: float) -> torch.optim.Optimizer:
        """The optimizer over `model`'s parameters, with `overrides` of the hyperparameters (e.g. `lr`)."""
        return self.kind(self.named_parameters(model), **{**self.hyper, **overrides})


def to_model_input(visual: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 `(..., 3, H, W)` -> float in [-1, 1] at `image_size` (mean = std = 0.5), on its device."""
    lead = visual.shape[:-3]
    x = visual.reshape(-1, *visual.shape[-3:]).float().div_(127.5).sub_(1.0)
    if x.shape[-2:] != (image_size, image_size):
        x = TF.resize(x, [image_size, image_size], antialias=True)
    return x.reshape(*lead, 3, image_size, image_size)


class VWorldModel(nn.Module):
    def __init__(
        self,
        *,
        image_size: int,
        num_hist: int,
        num_pred: int,
        encoder: DinoV2Encoder,
        proprio_encoder: ProprioceptiveEmbedding,
        action_encoder: ProprioceptiveEmbedding,
        predictor: ViTPredictor | None,
        decoder: VQVAE | None,
        concat_dim: int = 1,
        num_action_repeat: int = 1,
        num_proprio_repeat: int = 1,
        train_encoder: bool = False,
    ):
        super().__init__()
        if concat_dim not in (0, 1):
            raise ValueError(f"concat_dim must be 0 or 1, got {concat_dim}")
        self.num_hist, self.num_pred = num_hist, num_pred
        self.encoder, self.proprio_encoder, self.action_encoder = encoder, proprio_encoder, action_encoder
        self.predictor, self.decoder = predictor, decoder
        self.train_encoder = train_encoder
        self.concat_dim = concat_dim
        self.num_action_repeat, self.num_proprio_repeat = num_action_repeat, num_proprio_repeat
        self.proprio_dim = proprio_encoder.in_chans
        self.proprio_emb_dim = proprio_encoder.emb_dim * num_proprio_repeat
        self.action_emb_dim = action_encoder.emb_dim * num_action_repeat
        self.image_size = image_size
        self.encoder_image_size = image_size // DECODER_SCALE * encoder.patch_size
        self.emb_dim = encoder.emb_dim + (self.action_emb_dim + self.proprio_emb_dim) * concat_dim
        for p in self.encoder.parameters():
            p.requires_grad_(train_encoder)

    # -- modes -----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> VWorldModel:
        super().train(mode)
        if not self.train_encoder:
            self.encoder.eval()  # a frozen encoder stays in eval mode
        return self

    # -- encoding --------------------------------------------------------------------------------
    def encode_obs(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`visual (B, T, 3, S, S)` -> `(B, T, N, D)` tokens; `proprio (B, T, P)` -> `(B, T, Ep)`."""
        visual = obs["visual"]
        b, t = visual.shape[:2]
        x = visual.reshape(b * t, *visual.shape[2:])
        if x.shape[-1] != self.encoder_image_size:
            x = TF.resize(x, [self.encoder_image_size, self.encoder_image_size], antialias=True)
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            tokens = self.encoder(x)
        return {"visual": tokens.reshape(b, t, *tokens.shape[1:]), "proprio": self.proprio_encoder(obs["proprio"])}

    def encode_act(self, act: torch.Tensor) -> torch.Tensor:
        return self.action_encoder(act)

    def encode(self, obs: dict[str, torch.Tensor], act: torch.Tensor) -> torch.Tensor:
        return self.combine(self.encode_obs(obs), act)

    def combine(self, z_obs: dict[str, torch.Tensor], act: torch.Tensor) -> torch.Tensor:
        """Encoded observations (`encode_obs`) and actions `(B, T, fs * A)` -> z `(B, T, N, D')`."""
        act_emb = self.encode_act(act)
        visual, proprio = z_obs["visual"], z_obs["proprio"]
        if self.concat_dim == 0:
            return torch.cat([visual, proprio.unsqueeze(2), act_emb.unsqueeze(2)], dim=2)
        n = visual.shape[2]
        proprio_tiled = proprio.unsqueeze(2).expand(-1, -1, n, -1).repeat(1, 1, 1, self.num_proprio_repeat)
        act_tiled = act_emb.unsqueeze(2).expand(-1, -1, n, -1).repeat(1, 1, 1, self.num_action_repeat)
        return torch.cat([visual, proprio_tiled, act_tiled], dim=3)

    def separate_emb(self, z: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """z -> ({"visual": (B, T, N, D), "proprio": (B, T, Ep)}, action embedding (B, T, Ea))."""
        if self.concat_dim == 0:
            return {"visual": z[:, :, :-2], "proprio": z[:, :, -2]}, z[:, :, -1]
        pa = self.proprio_emb_dim + self.action_emb_dim
        visual, proprio, act = z[..., :-pa], z[..., -pa : -self.action_emb_dim], z[..., -self.action_emb_dim :]
        proprio = proprio[:, :, 0, : self.proprio_emb_dim // self.num_proprio_repeat]
        act = act[:, :, 0, : self.action_emb_dim // self.num_action_repeat]
        return {"visual": visual, "proprio": proprio}, act

    def replace_actions_from_z(self, z: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        act_emb = self.encode_act(act)
        z = z.clone()
        if self.concat_dim == 0:
            z[:, :, -1] = act_emb
        else:
            z[..., -self.action_emb_dim :] = act_emb.unsqueeze(2).expand(-1, -1, z.shape[2], -1).repeat(
                1, 1, 1, self.num_action_repeat)
        return z

    # -- prediction and decoding -------------------------------------------------------------------
    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """`(B, T, N, D')` -> `(B, T, N, D')`, frame t predicting frame t + num_pred."""
        if self.predictor is None:
            raise RuntimeError("this model has no predictor")
        b, t, n, d = z.shape
        return self.predictor(z.reshape(b, t * n, d)).reshape(b, t, n, d)

    def decode_obs(self, z_obs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if self.decoder is None:
            raise RuntimeError("this model has no decoder")
        b, t = z_obs["visual"].shape[:2]
        visual, diff = self.decoder(z_obs["visual"])
        return {"visual": visual.reshape(b, t, *visual.shape[1:]), "proprio": z_obs["proprio"]}, diff

    def decode(self, z: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        z_obs, _ = self.separate_emb(z)
        return self.decode_obs(z_obs)

    def z_losses(self, z_pred: torch.Tensor, z_tgt: torch.Tensor) -> dict[str, torch.Tensor]:
        """`z_visual_loss`, `z_proprio_loss` and the optimised `z_loss` (visual + proprio dims, action dims
        excluded): MSE of `z_pred (B, T, N, D')` against `z_tgt` (same shape, detached here)."""
        z_tgt = z_tgt.detach()
        if self.concat_dim == 0:
            return {
                "z_visual_loss": F.mse_loss(z_pred[:, :, :-2], z_tgt[:, :, :-2]),
                "z_proprio_loss": F.mse_loss(z_pred[:, :, -2], z_tgt[:, :, -2]),
                "z_loss": F.mse_loss(z_pred[:, :, :-1], z_tgt[:, :, :-1]),
            }
        pa, a = self.proprio_emb_dim + self.action_emb_dim, self.action_emb_dim
        return {
            "z_visual_loss": F.mse_loss(z_pred[..., :-pa], z_tgt[..., :-pa]),
            "z_proprio_loss": F.mse_loss(z_pred[..., -pa:-a], z_tgt[..., -pa:-a]),
            "z_loss": F.mse_loss(z_pred[..., :-a], z_tgt[..., :-a]),
        }

    def forward(self, obs: dict[str, torch.Tensor], act: torch.Tensor, *, decode_pred: bool = True,
                reconstruct: bool = True, recon_frames: torch.Tensor | None = None) -> WorldModelOutput:
        """Losses and predictions for a window of `num_hist + num_pred` frames (`WorldModelOutput`).

        The decoder learns from detached embeddings only, so what it decodes never changes what the
        predictor learns. `decode_pred` decodes the predicted frames (their loss is logged, never
        optimised); `reconstruct` decodes the window's frames for the reconstruction loss, all of them
        or only `recon_frames (B, k)` (frame indices per window). The reference decodes everything.
        """
        components: dict[str, torch.Tensor] = {}
        loss = torch.zeros((), device=act.device)
        z = self.encode(obs, act)
        z_pred = None
        if self.predictor is not None:
            z_pred = self.predict(z[:, : self.num_hist])
            components.update(self.z_losses(z_pred, z[:, self.num_pred :]))
            loss = loss + components["z_loss"]
        decoded, visual_pred, visual_rec = self.decoder_losses(
            z, z_pred, obs["visual"], decode_pred=decode_pred, reconstruct=reconstruct, recon_frames=recon_frames)
        components.update(decoded)
        if "decoder_loss_reconstructed" in decoded:
            loss = loss + decoded["decoder_loss_reconstructed"]
        components["loss"] = loss
        return WorldModelOutput(z, z_pred, visual_pred, visual_rec, loss, components)

    def decoder_losses(self, z: torch.Tensor, z_pred: torch.Tensor | None, visual: torch.Tensor, *,
                       decode_pred: bool = True, reconstruct: bool = True, recon_frames: torch.Tensor | None = None
                       ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """The decoder's losses from detached embeddings: `(components, visual_pred, visual_rec)`.

        z `(B, F, N, D')`, z_pred `(B, num_hist, N, D')`, visual `(B, F, 3, S, S)` in [-1, 1].
        """
        components: dict[str, torch.Tensor] = {}
        visual_pred = visual_rec = None
        if self.decoder is None:
            return components, visual_pred, visual_rec
        if decode_pred and z_pred is not None:
            obs_pred, diff_pred = self.decode(z_pred.detach())  # the decoder never trains the predictor
            visual_pred = obs_pred["visual"]
            recon = F.mse_loss(visual_pred, visual[:, self.num_pred :])
            components["decoder_recon_loss_pred"] = recon
            components["decoder_vq_loss_pred"] = diff_pred
            components["decoder_loss_pred"] = recon + DECODER_LATENT_LOSS_WEIGHT * diff_pred
        if reconstruct:
            z_rec, target = z.detach(), visual
            if recon_frames is not None:
                rows = torch.arange(z.shape[0], device=z.device)[:, None]
                z_rec, target = z_rec[rows, recon_frames], target[rows, recon_frames]
            obs_rec, diff_rec = self.decode(z_rec)
            visual_rec = obs_rec["visual"]
            recon = F.mse_loss(visual_rec, target)
            components["decoder_recon_loss_reconstructed"] = recon
            components["decoder_vq_loss_reconstructed"] = diff_rec
            components["decoder_loss_reconstructed"] = recon + DECODER_LATENT_LOSS_WEIGHT * diff_rec
        return components, visual_pred, visual_rec

    def copy_last_frame_losses(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses of the trivial predictor that repeats the last context frame's embedding.

        The frame-causal predictor's output at frame t predicts frame t + num_pred from frames <= t;
        the trivial predictor answers with frame t itself. `z (B, F, N, D')` from `encode`.
        Returns `z_visual_loss_copy`, `z_proprio_loss_copy` (same units as the model's losses).
        """
        copy = self.z_losses(z[:, : self.num_hist], z[:, self.num_pred :])
        return {"z_visual_loss_copy": copy["z_visual_loss"], "z_proprio_loss_copy": copy["z_proprio_loss"]}

    def rollout(self, obs_0: dict[str, torch.Tensor], act: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Open loop: encode `n` context frames with `act[:, :n]`, then predict one frame per
        remaining action (from the last `num_hist` frames), then one more.

        obs_0: `visual (B, n, 3, S, S)`, `proprio (B, n, P)`; act `(B, n + t, fs * A)`.
        Returns `z_obses` (`visual (B, n + t + 1, N, D)`, `proprio (B, n + t + 1, Ep)`) and `z`.
        Differentiable (planners optimise actions through it); evaluate under `torch.no_grad()`.
        """
        return self.rollout_embedded(self.encode_obs(obs_0), act)

    def rollout_embedded(self, z_obs_0: dict[str, torch.Tensor], act: torch.Tensor
                         ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """`rollout` from context frames already encoded (`encode_obs`), shared by every sequence.

        z_obs_0: `visual (B or 1, n, N, D)`, `proprio (B or 1, n, Ep)`; a batch of 1 is expanded over
        the `B` action sequences `act (B, n + t, fs * A)` without encoding the frames again (a planner
        evaluates hundreds of candidates from one context).
        """
        n, b = z_obs_0["visual"].shape[1], act.shape[0]
        z_obs_0 = {k: v.expand(b, *v.shape[1:]) for k, v in z_obs_0.items()}
        z = self.combine(z_obs_0, act[:, :n])
        future = act[:, n:]
        for i in range(future.shape[1]):
            z_new = self.predict(z[:, -self.num_hist :])[:, -1:]
            z = torch.cat([z, self.replace_actions_from_z(z_new, future[:, i : i + 1])], dim=1)
        z = torch.cat([z, self.predict(z[:, -self.num_hist :])[:, -1:]], dim=1)
        z_obses, _ = self.separate_emb(z)
        return z_obses, z

    # -- optimisation ----------------------------------------------------------------------------
    def optimizer_groups(self, optim: OptimConfig, *, decoder: bool = True) -> dict[str, OptimizerGroup]:
        """The model's optimizers, as the reference trains it (like nanoGPT's `configure_optimizers`):
        Adam for the encoder (only if it trains), AdamW for the predictor, Adam for the decoder (unless
        `decoder` is False: it is trained later or not at all), AdamW for the action and proprio encoders
        together. Learning rates and weight decay come from `optim`."""
        groups = {}
        if self.train_encoder:
            groups["encoder"] = OptimizerGroup(torch.optim.Adam, ("encoder",), {"lr": optim.encoder_lr})
        if self.predictor is not None:
            groups["predictor"] = OptimizerGroup(torch.optim.AdamW, ("predictor",),
                                                 {"lr": optim.predictor_lr, "weight_decay": optim.weight_decay})
        if self.decoder is not None and decoder:
            groups["decoder"] = OptimizerGroup(torch.optim.Adam, ("decoder",), {"lr": optim.decoder_lr})
        groups["action_encoder"] = OptimizerGroup(torch.optim.AdamW, ("action_encoder", "proprio_encoder"),
                                                  {"lr": optim.action_encoder_lr, "weight_decay": optim.weight_decay})
        return groups

    # -- reporting -------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for name in PARTS:
            part = getattr(self, name)
            if part is None:
                continue
            params = list(part.parameters())
            out[name] = {"total": sum(p.numel() for p in params),
                         "trainable": sum(p.numel() for p in params if p.requires_grad)}
        return out

    def describe(self) -> str:
        """Parameter counts per part, as a small table."""
        counts = self.parameter_counts()
        lines = [f"{'part':16} {'parameters':>12} {'trainable':>12}"]
        for name, c in counts.items():
            lines.append(f"{name:16} {c['total']:12,} {c['trainable']:12,}")
        total = sum(c["total"] for c in counts.values())
        trainable = sum(c["trainable"] for c in counts.values())
        lines.append(f"{'total':16} {total:12,} {trainable:12,}")
        lines.append(f"tokens per frame {self.predictor.num_patches if self.predictor else '-'}, token dim "
                     f"{self.emb_dim}, encoder input {self.encoder_image_size}px, decoder output {self.image_size}px")
        return "\n".join(lines)
