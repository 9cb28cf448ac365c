"""`import-checkpoint`: reference checkpoints, written the way the reference `train.py` writes them,
become fcs checkpoints safely, with the model's shape inferred and stepped optimizers kept."""

from __future__ import annotations

import enum
import itertools
import os
import pickle
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch import nn
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.errors import UnsafePickleError
from fcs_train.checkpoint import load_checkpoint, load_world_model
from fcs_train.config import ModelConfig
from fcs_train.models import RandomEncoderWarning, build_model, decoder, encoder, predictor, proprio
from fcs_train.reference_import import Hints, ReferenceImportError, import_reference_checkpoint

# the reference modules and the fcs classes whose structure they share
REFERENCE = {
    "models.vit": [predictor.ViTPredictor, predictor.Transformer, predictor.Attention, predictor.FeedForward],
    "models.vqvae": [decoder.VQVAE, decoder.Quantize, decoder.Decoder, decoder.ResBlock],
    "models.proprio": [proprio.ProprioceptiveEmbedding],
    "models.dino": [encoder.DinoV2Encoder],
}


@pytest.fixture
def reference_classes(monkeypatch: pytest.MonkeyPatch) -> dict[type, type]:
    """Stand-ins living at the reference's module paths, so pickles name `models.vit.ViTPredictor`."""
    standins: dict[type, type] = {}
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    for modname, classes in REFERENCE.items():
        mod = types.ModuleType(modname)
        monkeypatch.setitem(sys.modules, modname, mod)
        for cls in classes:
            standin = type(cls.__name__, (cls,), {"__module__": modname, "__qualname__": cls.__name__})
            setattr(mod, cls.__name__, standin)
            standins[cls] = standin
    # the reference's DINOv2 comes from torch.hub's `dinov2` package
    hub = types.ModuleType("dinov2.models.vision_transformer")
    monkeypatch.setitem(sys.modules, "dinov2", types.ModuleType("dinov2"))
    monkeypatch.setitem(sys.modules, "dinov2.models", types.ModuleType("dinov2.models"))
    monkeypatch.setitem(sys.modules, "dinov2.models.vision_transformer", hub)
    return standins


def _mask(patches: int, frames: int) -> torch.Tensor:
    """The reference's `generate_mask_matrix(npatch, nwindow)`: (1, 1, P*F, P*F), frame-causal."""
    block = torch.ones(patches, patches)
    rows = [torch.cat([block] * (i + 1) + [torch.zeros_like(block)] * (frames - i - 1), dim=1) for i in range(frames)]
    return torch.cat(rows, dim=0)[None, None]


def _as_reference(module: nn.Module, standins: dict[type, type], mask: torch.Tensor | None = None) -> nn.Module:
    """Re-home fcs modules at the reference's classes, with the reference's extra attributes."""
    hub = sys.modules["dinov2.models.vision_transformer"]
    for m in module.modules():
        for key, value in list(vars(m).items()):  # timm keeps enums on modules; the hub model does not
            if isinstance(value, enum.Enum):
                setattr(m, key, value.value)
        if isinstance(m, predictor.Attention):  # reference: a mask attribute built at init, softmax, dropout
            m.scale, m.attend, m.dropout = 64**-0.5, nn.Softmax(dim=-1), nn.Dropout(m.dropout_p)
            if mask is not None:
                m.bias = mask
        if isinstance(m, predictor.ViTPredictor):
            m.pool = "mean"
        if isinstance(m, proprio.ProprioceptiveEmbedding):
            m.num_frames, m.tubelet_size = 4, 1
        if type(m) in standins:
            m.__class__ = standins[type(m)]
        elif not type(m).__module__.startswith("torch.nn"):
            name = type(m).__name__
            if not hasattr(hub, name):
                setattr(hub, name, type(name, (type(m),), {"__module__": hub.__name__, "__qualname__": name}))
            m.__class__ = getattr(hub, name)
    return module


def _small_cfg(concat_dim: int, image_size: int) -> ModelConfig:
    return ModelConfig.model_validate({
        "image_size": image_size, "concat_dim": concat_dim,
        "predictor": {"depth": 2, "heads": 2, "dim_head": 64, "mlp_dim": 64},
        "decoder": {"channel": 16, "n_res_block": 1, "n_res_channel": 8, "n_embed": 32}})


def _model(cfg: ModelConfig, num_hist: int, seed: int = 1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomEncoderWarning)
        torch.manual_seed(seed)
        return build_model(cfg, proprio_dim=3, action_dim=9, num_hist=num_hist, num_pred=1, frameskip=5)


def write_reference_checkpoint(path: Path, model, standins, *, steps: int = 3, epoch: int = 7,
                               train_encoder: bool = False, with_mask: bool = True, legacy: bool = False) -> dict:
    """What the reference `train.py` saves: whole modules, accelerate-prepared optimizers that stepped.

    Returns the reference optimizers' moments by fcs parameter name, to compare with the import.
    """
    acc = Accelerator(cpu=True)
    parts = {"predictor": model.predictor, "decoder": model.decoder, "action_encoder": model.action_encoder,
             "proprio_encoder": model.proprio_encoder}
    opts = {
        "predictor_optimizer": acc.prepare(torch.optim.AdamW(model.predictor.parameters(), lr=5e-4)),
        "decoder_optimizer": acc.prepare(torch.optim.Adam(model.decoder.parameters(), lr=3e-4)),
        "action_encoder_optimizer": acc.prepare(torch.optim.AdamW(
            itertools.chain(model.action_encoder.parameters(), model.proprio_encoder.parameters()), lr=5e-4)),
    }
    if train_encoder:
        model.encoder.requires_grad_(True)
        parts["encoder"] = model.encoder
        opts["encoder_optimizer"] = acc.prepare(torch.optim.Adam(model.encoder.parameters(), lr=1e-6))
    s, f = model.image_size, model.num_hist + 1
    action_in = model.action_encoder.in_chans
    for _ in range(steps):  # real steps, so the optimizer states hold moments (a defaultdict keyed by parameters)
        obs = {"visual": torch.rand(2, f, 3, s, s) * 2 - 1, "proprio": torch.randn(2, f, 3)}
        out = model(obs, torch.randn(2, f, action_in))
        out.loss.backward()
        for opt in opts.values():
            opt.step()
            opt.zero_grad()
    names = {id(p): f"{part}.{n}" for part, module in parts.items() for n, p in module.named_parameters()}
    moments = {names[id(p)]: {k: v.clone() for k, v in st.items()} for opt in opts.values()
               for p, st in opt.optimizer.state.items()}
    grid = model.predictor.num_patches, model.predictor.num_frames
    mask = _mask(*grid) if with_mask else None
    ckpt = {"epoch": epoch, **{k: _as_reference(v, standins, mask) for k, v in parts.items()}, **opts}
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return moments


CASES = [(1, 224, 3), (0, 224, 1), (1, 256, 6), (0, 256, 4), (1, 224, 2), (1, 256, 5)]


@pytest.mark.parametrize("concat_dim,image_size,num_hist", CASES)
def test_a_reference_checkpoint_with_stepped_optimizers_imports_exactly(
    reference_classes, tmp_path: Path, concat_dim: int, image_size: int, num_hist: int
) -> None:
    model = _model(_small_cfg(concat_dim, image_size), num_hist)
    moments = write_reference_checkpoint(tmp_path / "model_latest.pth", model, reference_classes)
    expected = {name: {k: v.clone() for k, v in getattr(model, name).state_dict().items()}
                for name in ("predictor", "decoder", "proprio_encoder", "action_encoder")}
    with pytest.raises(pickle.UnpicklingError, match=r"GLOBAL|global"):
        torch.load(tmp_path / "model_latest.pth", weights_only=True)  # what users hit without fcs

    summary = import_reference_checkpoint(tmp_path / "model_latest.pth", tmp_path / "fcs.pt", Hints(frameskip=5))
    assert summary["epoch"] == 7 and summary["dropped"] == []
    assert summary["dims"] == {"proprio_dim": 3, "action_dim": 9, "num_hist": num_hist, "num_pred": 1, "frameskip": 5}
    cfg = summary["model_config"]
    assert (cfg.image_size, cfg.concat_dim, cfg.predictor.depth, cfg.predictor.heads) == (image_size, concat_dim, 2, 2)
    assert summary["optimizers"] == ["action_encoder", "decoder", "predictor"]

    loaded, ckpt = load_world_model(tmp_path / "fcs.pt")
    for name, sd in expected.items():
        for k, v in sd.items():
            assert torch.equal(getattr(loaded, name).state_dict()[k], v), f"{name}.{k}"
    for fcs_name, parts in (("predictor", ("predictor",)), ("decoder", ("decoder",)),
                            ("action_encoder", ("action_encoder", "proprio_encoder"))):
        order = [f"{part}.{n}" for part in parts for n, _ in getattr(loaded, part).named_parameters()]
        state = ckpt.optimizers[fcs_name]["state"]
        assert len(state) == len(order)
        for i, name in enumerate(order):
            for k in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(state[i][k], moments[name][k]), f"{fcs_name} {name} {k}"
        assert int(state[0]["step"]) == 3


def test_the_legacy_torch_save_format_imports_the_same(reference_classes, tmp_path: Path) -> None:
    model = _model(_small_cfg(1, 224), 3)
    write_reference_checkpoint(tmp_path / "legacy.pth", model, reference_classes, legacy=True)
    summary = import_reference_checkpoint(tmp_path / "legacy.pth", tmp_path / "fcs.pt", Hints(frameskip=5))
    assert summary["dims"]["num_hist"] == 3 and summary["optimizers"] == ["action_encoder", "decoder", "predictor"]
    loaded, _ = load_world_model(tmp_path / "fcs.pt")
    assert torch.equal(loaded.predictor.pos_embedding, model.predictor.pos_embedding)


def test_a_trained_encoder_and_its_optimizer_come_along(reference_classes, tmp_path: Path) -> None:
    model = _model(_small_cfg(1, 224), 2)
    write_reference_checkpoint(tmp_path / "enc.pth", model, reference_classes, train_encoder=True, steps=1)
    summary = import_reference_checkpoint(tmp_path / "enc.pth", tmp_path / "fcs.pt", Hints(frameskip=5))
    assert summary["model_config"].encoder.train and "encoder" in summary["optimizers"]
    loaded, _ = load_world_model(tmp_path / "fcs.pt")
    assert torch.equal(loaded.encoder.base_model.pos_embed, model.encoder.base_model.pos_embed)


def test_frameskip_comes_from_the_runs_hydra_yaml_or_a_flag_and_is_checked(reference_classes, tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "2025-01-01" / "10-00-00"
    (run / "checkpoints").mkdir(parents=True)
    write_reference_checkpoint(run / "checkpoints" / "model_latest.pth", _model(_small_cfg(1, 224), 3),
                               reference_classes)
    src = run / "checkpoints" / "model_latest.pth"
    with pytest.raises(ReferenceImportError, match=r"frameskip cannot be inferred.*45 inputs.*--frameskip"):
        import_reference_checkpoint(src, tmp_path / "a.pt")
    with pytest.raises(ReferenceImportError, match=r"frameskip 4 x action dim 9 = 36"):
        import_reference_checkpoint(src, tmp_path / "a.pt", Hints(frameskip=4, action_dim=9))
    assert import_reference_checkpoint(src, tmp_path / "a.pt", Hints(action_dim=9))["dims"]["frameskip"] == 5
    (run / "hydra.yaml").write_text("frameskip: 5\nnum_hist: 3\nimg_size: 224\nconcat_dim: 1\nnum_pred: 1\n")
    summary = import_reference_checkpoint(src, tmp_path / "b.pt")
    assert summary["dims"]["frameskip"] == 5 and any("hydra.yaml" in n for n in summary["notes"])
    (run / "hydra.yaml").write_text("frameskip: 5\nnum_hist: 2\nimg_size: 224\nconcat_dim: 1\n")
    with pytest.raises(ReferenceImportError, match="fits no num_hist"):
        import_reference_checkpoint(src, tmp_path / "c.pt")


def test_without_the_causal_mask_an_ambiguous_shape_asks_for_a_flag(reference_classes, tmp_path: Path) -> None:
    model = _model(_small_cfg(1, 128), 4)  # 4 frames x 64 patches = 256 positions = 1 frame x 256 patches
    write_reference_checkpoint(tmp_path / "m.pth", model, reference_classes, with_mask=False, steps=1)
    with pytest.raises(ReferenceImportError, match=r"fits num_hist 1 at 256 px, num_hist 4 at 128 px.*--num-hist"):
        import_reference_checkpoint(tmp_path / "m.pth", tmp_path / "a.pt", Hints(frameskip=5))
    summary = import_reference_checkpoint(tmp_path / "m.pth", tmp_path / "a.pt", Hints(frameskip=5, num_hist=4))
    assert (summary["dims"]["num_hist"], summary["model_config"].image_size) == (4, 128)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


@pytest.mark.parametrize("how", ["zip", "legacy", "pickle2", "pickle4"])
def test_anything_but_reference_classes_is_refused_and_not_run(reference_classes, tmp_path: Path, how: str) -> None:
    model = _model(_small_cfg(1, 224), 3)
    marker = tmp_path / "ran"
    payload = {"epoch": 1, "predictor": _as_reference(model.predictor, reference_classes), "x": _Evil(marker)}
    path = tmp_path / "evil.pth"
    if how in ("zip", "legacy"):
        torch.save(payload, path, _use_new_zipfile_serialization=how == "zip")
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(how[-1])))
    with pytest.raises(UnsafePickleError, match=r"evil\.pth.*makedirs"):
        import_reference_checkpoint(path, tmp_path / "out.pt")
    res = CliRunner().invoke(app, ["import-checkpoint", str(path), str(tmp_path / "out.pt")])
    assert res.exit_code == 1 and "Traceback" not in res.output and "refused" in res.output
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_unexpected_structures_are_one_line_refusals(reference_classes, tmp_path: Path) -> None:
    model = _model(_small_cfg(1, 224), 3)
    torch.save({"predictor": model.predictor.state_dict()}, tmp_path / "sd.pth")
    with pytest.raises(ReferenceImportError, match="no model parts"):
        import_reference_checkpoint(tmp_path / "sd.pth", tmp_path / "out.pt")
    broken = _as_reference(model.predictor, reference_classes, _mask(196, 3))
    del broken._parameters["pos_embedding"]
    torch.save({"epoch": 1, "predictor": broken, "action_encoder": _as_reference(model.action_encoder, reference_classes),
                "proprio_encoder": _as_reference(model.proprio_encoder, reference_classes)}, tmp_path / "odd.pth")
    with pytest.raises(ReferenceImportError, match="predictor has no pos_embedding: not a DINO-WM predictor"):
        import_reference_checkpoint(tmp_path / "odd.pth", tmp_path / "out.pt")
    res = CliRunner().invoke(app, ["import-checkpoint", str(tmp_path / "odd.pth"), str(tmp_path / "out.pt")])
    assert res.exit_code == 1 and "Traceback" not in res.output and "KeyError" not in res.output
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    res = CliRunner().invoke(app, ["import-checkpoint", str(tmp_path / "junk.pth"), str(tmp_path / "out.pt")])
    assert res.exit_code == 2 and "junk.pth" in res.output and "Traceback" not in res.output  # the wrong input


def test_cli_import_checkpoint_reports_the_inferred_model(reference_classes, tmp_path: Path) -> None:
    write_reference_checkpoint(tmp_path / "ref.pth", _model(_small_cfg(1, 256), 2), reference_classes, epoch=3)
    res = CliRunner().invoke(app, ["import-checkpoint", str(tmp_path / "ref.pth"), str(tmp_path / "new.pt"),
                                   "--frameskip", "5"])
    assert res.exit_code == 0, res.output
    assert "image 256, num_hist 2, frameskip 5" in res.output and "epoch 3" in res.output
    assert "predictor_optimizer (AdamW) imported" in res.output
    assert load_checkpoint(tmp_path / "new.pt").state.epoch == 3


def test_resume_from_reference_continues_the_optimizers_and_the_epoch(reference_classes, tmp_path: Path) -> None:
    from fcs_data.converters.to_zarr import convert_to_zarr
    from fcs_data.synth import synthesize
    from fcs_train.config import load_config

    src = synthesize(tmp_path / "src", episodes=4, min_len=24, max_len=30, seed=3)
    store = convert_to_zarr(src, tmp_path / "s.zarr", workers=1).store
    sets = [f"data.store={store}", f"train.run_dir={tmp_path / 'run'}", "data.num_workers=0", "data.num_hist=2",
            "data.frameskip=2", "train.batch_size=4", "train.max_steps=1", "train.num_rollouts=0"]
    cfg = load_config(preset="tiny", overrides=sets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(5)
        ref_model = build_model(cfg.model, proprio_dim=3, action_dim=9, num_hist=2, num_pred=1, frameskip=2)
    ref_model.action_encoder = proprio.ProprioceptiveEmbedding(18, 10)  # 9-D actions x frameskip 2
    write_reference_checkpoint(tmp_path / "ref.pth", ref_model, reference_classes, steps=2, epoch=11)
    before = {k: v.clone() for k, v in ref_model.predictor.state_dict().items()}
    res = CliRunner().invoke(app, ["train", "--preset", "tiny", *[a for s in sets for a in ("--set", s)],
                                   "--resume-from-reference", str(tmp_path / "ref.pth"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "optimizer states of predictor, decoder, action_encoder" in res.output and "epoch 12 next" in res.output
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt.state.epoch == 12
    steps = {int(float(s["step"])) for s in ckpt.optimizers["predictor"]["state"].values()}
    assert steps == {3}, "two reference steps, then one more"
    assert any(not torch.equal(ckpt.weights["predictor"][k], v) for k, v in before.items())
    assert np.isclose(ckpt.optimizers["predictor"]["param_groups"][0]["lr"], cfg.optim.predictor_lr)
