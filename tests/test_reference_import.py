"""`import-checkpoint`: reference pickles of whole modules become fcs checkpoints, safely."""

from __future__ import annotations

import enum
import os
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.errors import UnsafePickleError
from fcs_train.checkpoint import load_checkpoint
from fcs_train.config import ModelConfig
from fcs_train.models import RandomEncoderWarning, build_model, decoder, encoder, predictor, proprio
from fcs_train.reference_import import import_reference_checkpoint

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
    # timm's ViT inside the encoder: the reference's DINOv2 comes from torch.hub's `dinov2` package
    hub = types.ModuleType("dinov2.models.vision_transformer")
    monkeypatch.setitem(sys.modules, "dinov2", types.ModuleType("dinov2"))
    monkeypatch.setitem(sys.modules, "dinov2.models", types.ModuleType("dinov2.models"))
    monkeypatch.setitem(sys.modules, "dinov2.models.vision_transformer", hub)
    return standins


def _as_reference(module: torch.nn.Module, standins: dict[type, type]) -> torch.nn.Module:
    hub = sys.modules["dinov2.models.vision_transformer"]
    for m in module.modules():
        for key, value in list(vars(m).items()):  # timm keeps enums on modules; the hub model does not
            if isinstance(value, enum.Enum):
                setattr(m, key, value.value)
        if type(m) in standins:
            m.__class__ = standins[type(m)]
        elif not type(m).__module__.startswith("torch.nn"):
            name = type(m).__name__
            if not hasattr(hub, name):
                setattr(hub, name, type(name, (type(m),), {"__module__": hub.__name__, "__qualname__": name}))
            m.__class__ = getattr(hub, name)
    return module


def _model(trained_encoder: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomEncoderWarning)
        torch.manual_seed(1)
        return build_model(ModelConfig(), proprio_dim=3, action_dim=9, num_hist=3, num_pred=1, frameskip=5)


def test_reference_checkpoint_imports_and_loads_strictly(reference_classes, tmp_path: Path) -> None:
    model = _model()
    expected = {name: {k: v.clone() for k, v in getattr(model, name).state_dict().items()}
                for name in ("encoder", "predictor", "decoder", "proprio_encoder", "action_encoder")}
    ref = {
        "epoch": 7,
        "encoder": _as_reference(model.encoder, reference_classes),
        "predictor": _as_reference(model.predictor, reference_classes),
        "predictor_optimizer": torch.optim.AdamW(model.predictor.parameters(), lr=5e-4),
        "decoder": _as_reference(model.decoder, reference_classes),
        "decoder_optimizer": torch.optim.Adam(model.decoder.parameters(), lr=3e-4),
        "action_encoder": _as_reference(model.action_encoder, reference_classes),
        "proprio_encoder": _as_reference(model.proprio_encoder, reference_classes),
    }
    torch.save(ref, tmp_path / "model_latest.pth")
    with pytest.raises(Exception, match=r"GLOBAL|global"):
        torch.load(tmp_path / "model_latest.pth", weights_only=True)  # what users hit without fcs

    summary = import_reference_checkpoint(tmp_path / "model_latest.pth", tmp_path / "fcs.pt")
    assert summary["epoch"] == 7 and set(summary["dropped"]) == {"predictor_optimizer", "decoder_optimizer"}
    assert summary["dims"] == {"proprio_dim": 3, "action_in_dim": 45, "num_hist": 3}
    ckpt = load_checkpoint(tmp_path / "fcs.pt")
    assert ckpt["epoch"] == 7
    cfg = ModelConfig.model_validate(ckpt["model_config"])
    assert cfg.predictor.depth == 6 and cfg.predictor.heads == 16 and cfg.decoder.n_res_block == 4
    fresh = _model()
    for name, sd in ckpt["model"].items():
        getattr(fresh, name).load_state_dict(sd, strict=True)
        for k, v in expected[name].items():
            assert torch.equal(getattr(fresh, name).state_dict()[k], v), f"{name}.{k}"


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_anything_but_reference_classes_is_refused_and_not_run(reference_classes, tmp_path: Path) -> None:
    model = _model()
    marker = tmp_path / "ran"
    torch.save({"epoch": 1, "predictor": _as_reference(model.predictor, reference_classes), "x": _Evil(marker)},
               tmp_path / "evil.pth")
    with pytest.raises(UnsafePickleError, match=r"evil\.pth.*makedirs"):
        import_reference_checkpoint(tmp_path / "evil.pth", tmp_path / "out.pt")
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_cli_import_checkpoint(reference_classes, tmp_path: Path) -> None:
    model = _model()
    torch.save({"epoch": 3, "predictor": _as_reference(model.predictor, reference_classes)}, tmp_path / "ref.pth")
    res = CliRunner().invoke(app, ["import-checkpoint", str(tmp_path / "ref.pth"), str(tmp_path / "new.pt")])
    assert res.exit_code == 0, res.output
    assert "predictor" in res.output and "epoch 3" in res.output
    assert load_checkpoint(tmp_path / "new.pt")["epoch"] == 3
