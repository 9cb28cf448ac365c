"""The steps a prediction runs: `fcs train`'s training step and validation, and a planning batch.

They are run with the trainer's and the planner's own code wherever it is separable: the model is
`build_model`'s, the optimizers the model's own groups, inputs, autocast, decoder schedule and
optimizer step `TrainingStep`'s methods, which `Trainer` runs (`step_harness` sets one up without a
store), the planning cost is `Objective.cost`. The loops around them follow `Trainer._train_epoch`
and `Evaluator.validate` line for line in what they keep alive: the previous step's inputs
(`Trainer._last_inputs`) and output until the next ones exist, the last training inputs during
validation, validation's previous batch during the next one's forward. Every step runs the same on fake tensors (a prediction) and real ones (the CPU checks).

The reference setup (`REFERENCE`) is what the users ran before fcs: fp32, attention without a fused
kernel, every frame decoded in every step, validation without `torch.no_grad()`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from fcs_train.checkpoint import RunState
from fcs_train.config import DecoderSchedule, TrainConfig
from fcs_train.fit.kernels import AttentionPolicy
from fcs_train.metrics import image_metrics, z_errors
from fcs_train.models import VWorldModel, build_model, to_model_input
from fcs_train.models.predictor import Attention
from fcs_train.planning.config import PlanConfig
from fcs_train.planning.objective import Objective
from fcs_train.step_inputs import DecoderWork
from fcs_train.training_step import TrainingStep


@dataclass(frozen=True)
class Setup:
    """How a run uses the GPU, apart from the config: the setups compared side by side.

    amp: None keeps the config's (`auto` is bf16 on CUDA); attention: the SDPA policy (`kernels`);
    decoder_schedule: None keeps the config's; validation_no_grad: validation under `torch.no_grad()`;
    expandable_segments: the allocator runs with `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`
    (`fcs train` sets it).
    """

    name: str
    amp: str | None = None
    attention: AttentionPolicy = "auto"
    decoder_schedule: DecoderSchedule | None = None
    validation_no_grad: bool = True
    expandable_segments: bool = True


FCS = Setup("fcs")
REFERENCE = Setup("reference", amp="off", attention="math", decoder_schedule="joint", validation_no_grad=False,
                  expandable_segments=False)
SETUPS = {s.name: s for s in (FCS, REFERENCE)}


@dataclass(frozen=True)
class StepShape:
    """The sizes a step runs at.

    frame_shape: `(H, W)` of the stored uint8 frames (resized on the device to the model's image size);
    None: the model's image size. grad_accum: micro-batches per optimizer step (2 are traced when > 1,
    which is the most memory any number of them needs).
    """

    batch_size: int
    num_hist: int
    frameskip: int
    num_pred: int = 1
    frame_shape: tuple[int, int] | None = None
    proprio_dim: int = 3
    action_dim: int = 9
    grad_accum: int = 1

    @property
    def frames(self) -> int:
        return self.num_hist + self.num_pred


class Recorder(Protocol):
    """What a step tells the memory tracker (`StorageTracker`); `NullRecorder` when nothing records."""

    def track(self, t: torch.Tensor, category: str | None = None) -> None: ...
    def relabel(self, t: torch.Tensor, category: str) -> None: ...
    def mark(self, phase: str) -> None: ...
    def label(self, category: str) -> contextlib.AbstractContextManager: ...


class NullRecorder:
    def track(self, t: torch.Tensor, category: str | None = None) -> None:
        pass

    def relabel(self, t: torch.Tensor, category: str) -> None:
        pass

    def mark(self, phase: str) -> None:
        pass

    @contextlib.contextmanager
    def label(self, category: str) -> Iterator[None]:
        yield


def run_config(cfg: TrainConfig, shape: StepShape, setup: Setup, device: str) -> TrainConfig:
    """`cfg` at `shape`'s sizes with `setup`'s settings; `amp: auto` resolves as on `device` ("cuda"/"cpu")."""
    amp = setup.amp or cfg.train.amp
    if amp == "auto":
        amp = "bf16" if device == "cuda" else "off"
    data = cfg.data.model_copy(update={"num_hist": shape.num_hist, "frameskip": shape.frameskip,
                                       "num_pred": shape.num_pred})
    train = cfg.train.model_copy(update={"batch_size": shape.batch_size, "grad_accum": shape.grad_accum,
                                         "amp": amp, "device": "cpu"})
    decoder = cfg.model.decoder.model_copy(update={"schedule": setup.decoder_schedule or cfg.model.decoder.schedule})
    encoder = cfg.model.encoder.model_copy(update={"weights": None})  # weights do not change memory
    model = cfg.model.model_copy(update={"decoder": decoder, "encoder": encoder})
    return cfg.model_copy(update={"data": data, "train": train, "model": model})


def build(cfg: TrainConfig, shape: StepShape, fake_mode: Any | None = None) -> VWorldModel:
    """The model of `cfg` at `shape`'s window; with `fake_mode`, built on the meta device (timm cannot
    build under fake tensors) and given fake CPU storage inside `fake_mode`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random encoder: memory does not depend on weights
        with torch.device("meta") if fake_mode is not None else contextlib.nullcontext():
            model = build_model(cfg.model, proprio_dim=shape.proprio_dim, action_dim=shape.action_dim,
                                num_hist=shape.num_hist, num_pred=shape.num_pred, frameskip=shape.frameskip)
    if fake_mode is not None:
        with fake_mode:
            model._apply(lambda t: torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu"))
    return model


def step_harness(cfg: TrainConfig, model: VWorldModel, foreach: bool | None,
                 device: torch.device | None = None) -> TrainingStep:
    """The trainer's step (`TrainingStep`, whose methods `Trainer` runs: inputs, autocast, decoder
    schedule, optimizer step) without a store or a loader, set up as `Trainer.__init__` sets it up, on
    `model`'s `device` (CPU for a prediction); `foreach` overrides the optimizers' setting (CUDA's
    default is the multi-tensor implementation, this CPU's the per-parameter loop)."""
    t = TrainingStep()
    t.cfg, t.model, t.net, t.device = cfg, model, model, device or torch.device("cpu")
    schedule = cfg.model.decoder.schedule if model.decoder is not None else "off"
    t.state = RunState(decoder_trained=model.decoder is not None and schedule != "off")
    if model.decoder is not None and schedule == "off":
        model.decoder.requires_grad_(False)
    t.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
    t.scaler = torch.amp.GradScaler(t.device.type, enabled=False)  # fp16's loss scaling costs scalars only
    t.decoder_work = DecoderWork(schedule, cfg.model.decoder, torch.Generator().manual_seed(cfg.train.seed * 7919 + 17))
    groups = model.optimizer_groups(cfg.optim, decoder=schedule != "off")
    t.optimizers = {name: group.build(model) for name, group in groups.items()}
    if foreach is not None:
        for opt in t.optimizers.values():
            for group in opt.param_groups:
                group["foreach"] = foreach
    return t


def part_labels(model: VWorldModel) -> dict[torch.nn.Module, str]:
    """The modules whose activations are reported apart (the predictor's attention blocks included)."""
    out: dict[torch.nn.Module, str] = {model.encoder: "encoder", model.proprio_encoder: "embeddings",
                                       model.action_encoder: "embeddings"}
    if model.predictor is not None:
        out[model.predictor] = "predictor"
        out |= {m: "predictor attention" for m in model.predictor.modules() if isinstance(m, Attention)}
    if model.decoder is not None:
        out[model.decoder] = "decoder"
    return out


def track_model(model: VWorldModel, rec: Recorder) -> None:
    for t in [*model.parameters(), *model.buffers()]:
        rec.track(t, "parameters")


def loader_batch(shape: StepShape, image_size: int, batch_size: int) -> dict[str, torch.Tensor]:
    """A loader batch as it reaches the device: visual `(B, F, 3, H, W)` uint8, HWC in memory."""
    h, w = shape.frame_shape or (image_size, image_size)
    f = shape.frames
    return {"visual": torch.zeros(batch_size, f, h, w, 3, dtype=torch.uint8).movedim(-1, -3),
            "proprio": torch.zeros(batch_size, f, shape.proprio_dim),
            "action": torch.zeros(batch_size, f, shape.frameskip * shape.action_dim)}


def _device_inputs(trainer: TrainingStep, shape: StepShape, batch_size: int, rec: Recorder
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`Trainer._inputs` of a batch; the uint8 device copy dies once converted, as in the trainer."""
    with rec.label("inputs"):
        batch = loader_batch(shape, trainer.cfg.model.image_size, batch_size)
        obs, act = trainer._inputs(batch)
    del batch
    return obs, act


def run_training(trainer: TrainingStep, shape: StepShape, rec: Recorder, steps: int = 2
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`steps` optimizer steps as `Trainer._train_epoch` runs them; returns the last inputs (kept alive
    through validation as `Trainer._last_inputs`).

    Alive as in the trainer: the previous step's inputs (`_last_inputs`) until this step's optimizer
    step replaces them, the previous forward's output until this one's exists, the loss sums of the
    steps not yet logged (`PendingLosses`, read every `log.every_steps` steps)."""
    model, accum = trainer.model, trainer.cfg.train.grad_accum
    micro = min(accum, 2)
    grads = [p for p in model.parameters() if p.requires_grad]
    hooks = [p.register_post_accumulate_grad_hook(lambda p: rec.relabel(p.grad, "gradients")) for p in grads]
    model.train()
    sums: dict[str, torch.Tensor] = {}
    pending: list[dict[str, torch.Tensor]] = []
    last = out = None
    try:
        for step in range(1, steps + 1):
            for m in range(micro):
                tag = f"step {step}" + (f" micro-batch {m + 1}" if micro > 1 else "")
                rec.mark(f"{tag} inputs")
                obs, act = _device_inputs(trainer, shape, shape.batch_size, rec)
                rec.mark(f"{tag} forward")
                with trainer._autocast():
                    out = trainer.net(obs, act, **trainer._decoder_kwargs(act.shape[0], act.shape[1]))
                rec.mark(f"{tag} backward")
                with rec.label("backward in flight"):
                    trainer.scaler.scale(out.loss / accum).backward()
                with rec.label("other"):
                    for k, v in out.components.items():
                        sums[k] = sums[k] + v.detach() / accum if k in sums else v.detach() / accum
            rec.mark(f"step {step} optimizer")
            with rec.label("optimizer temporaries"):
                trainer._optimizer_step()
            for opt in trainer.optimizers.values():
                for state in opt.state.values():
                    for v in state.values():
                        if isinstance(v, torch.Tensor):
                            rec.relabel(v, "optimizer state")
            trainer.state.global_step += 1
            last = (obs, act)
            pending.append(sums)
            if len(pending) >= trainer.cfg.log.every_steps:
                pending = []
            sums = {}
            del obs, act
    finally:
        for h in hooks:
            h.remove()
    del out, pending
    return last


def run_validation(trainer: TrainingStep, shape: StepShape, rec: Recorder, no_grad: bool = True) -> None:
    """Validation batches as `Evaluator.validate` computes them (the second one while the first one's
    output and inputs are still referenced, as in its loop), then the prediction grid of
    `Evaluator.save_images` (`log.num_reconstruct_samples` windows, every frame decoded)."""
    model, cfg = trainer.model, trainer.cfg
    decode = trainer._decoding()
    model.eval()
    grad = torch.no_grad() if no_grad else torch.enable_grad()
    with grad:
        for i in (1, 2):  # the second batch runs while the first one's outputs are still referenced
            rec.mark(f"validation batch {i} inputs")
            obs, act = _device_inputs(trainer, shape, shape.batch_size, rec)
            rec.mark(f"validation batch {i} forward")
            with trainer._autocast():
                out = model(obs, act, decode_pred=decode, reconstruct=decode)
            rec.mark(f"validation batch {i} metrics")
            # the evaluator reads every value as a float at once: the metrics' tensors die right away
            model.copy_last_frame_losses(out.z.float())
            z_tgt = out.z[:, model.num_pred :]
            z_errors(model, out.z_pred.float(), z_tgt.float())
            target = obs["visual"][:, model.num_pred :]
            if out.visual_pred is not None:
                image_metrics(out.visual_pred, target, "pred")
                image_metrics(out.visual_rec, obs["visual"], "rec")
        del out, obs, act, z_tgt, target
        if decode:
            rec.mark("validation images")
            obs, act = _device_inputs(trainer, shape, cfg.log.num_reconstruct_samples, rec)
            with trainer._autocast():
                out = model(obs, act)
            del out, obs, act
    model.train()


def run_planning(model: VWorldModel, shape: StepShape, plan: PlanConfig, amp_dtype: torch.dtype | None,
                 rec: Recorder, device: torch.device | None = None) -> None:
    """One batch of candidate rollouts as the planner evaluates them (`Objective.cost`): the goal and
    `num_hist` context frames encoded one at a time, then `min(samples, max_batch)` candidates of
    `horizon` steps (CEM, under no_grad), or the gradient solver's restarts with their backward."""
    model.eval()
    device = device or torch.device("cpu")
    image_size = model.image_size

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    objective = Objective(model, alpha=plan.alpha, horizon_weighting=plan.horizon_weighting,
                          max_batch=plan.max_batch, autocast=autocast)
    h, w = shape.frame_shape or (image_size, image_size)
    width = shape.frameskip * shape.action_dim
    with torch.no_grad():
        rec.mark("planning context")
        frames = []
        for _ in range(shape.num_hist + 1):
            with rec.label("inputs"):
                x = to_model_input(torch.zeros(1, 1, 3, h, w, dtype=torch.uint8, device=device), image_size)
                p = torch.zeros(1, 1, shape.proprio_dim, device=device)
            with autocast():
                z = model.encode_obs({"visual": x, "proprio": p})
            frames.append({k: v.float() for k, v in z.items()})
            del x, p, z
        objective.set_goal(frames[0])
        context = {k: torch.cat([f[k] for f in frames[1:]], dim=1) for k in ("visual", "proprio")}
        objective.set_context(context, torch.zeros(1, shape.num_hist - 1, width, device=device))
        del frames
    rec.mark("planning rollouts")
    if plan.solver == "cem":
        with torch.no_grad():
            candidates = torch.zeros(min(plan.cem.samples, plan.max_batch), plan.horizon, width, device=device)
            objective.cost(candidates)
    else:
        x = torch.zeros(plan.gd.restarts, plan.horizon, width, device=device, requires_grad=True)
        with torch.enable_grad():
            cost = objective.cost(x)
            torch.autograd.grad(cost.sum(), x)
