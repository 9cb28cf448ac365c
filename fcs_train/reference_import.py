"""`fcs import-checkpoint`: a reference DINO-WM checkpoint -> an fcs checkpoint, without running it.

The reference `train.py` saves `{"epoch": e, "predictor": module, "predictor_optimizer": opt, ...}`
with `torch.save`: whole pickled modules, and the optimizers wrapped by accelerate after they have
stepped (their state is a `collections.defaultdict` keyed by the parameters). Loading that normally
needs the reference code and `weights_only=False`. Here:

1. every global the file's pickle names is listed before anything is unpickled (zip and legacy
   `torch.save` formats, and plain pickles); one outside the reference's modules, torch.nn,
   torch.optim, accelerate and DINOv2 refuses the import (`UnsafePickleError`);
2. torch's weights-only unpickler reads the file with each allowed class mapped to an inert
   container that only records the state it is given, `collections.defaultdict` to a plain dict,
   so nothing in the file runs;
3. the parameters and buffers are collected from the inert module trees, the model's shape
   (image size, `num_hist`, `concat_dim`, dims, depth, heads, ...) is inferred from the tensors
   (the reference's causal mask `Attention.bias` gives the patches per frame exactly), checked
   against `hydra.yaml` of the run when it is there and against the flags, and the weights are
   loaded strictly into fcs's model;
4. the optimizers' moments are mapped onto fcs's optimizers parameter by parameter (by the
   identity of the pickled parameter objects) and kept when every parameter maps, dropped with a
   note otherwise.

Reading lives in `reference_pickle`, shape inference in `reference_model`, optimizer states in
`reference_optim`. Every refusal is an `FcsError` (one line in the CLI).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from fcs_data.window_spec import WindowSpec
from fcs_train.checkpoint import RunCheckpoint, RunState, save_checkpoint
from fcs_train.errors import ReferenceImportError
from fcs_train.models import ModelSpec
from fcs_train.reference_model import Hints, hydra_config, infer_model
from fcs_train.reference_optim import map_optimizers
from fcs_train.reference_pickle import read_reference_checkpoint

__all__ = ["Hints", "ReferenceImportError", "import_reference_checkpoint"]


def import_reference_checkpoint(src: str | Path, dst: str | Path, hints: Hints | None = None) -> dict[str, Any]:
    """Convert `src` (reference pickle) to the fcs checkpoint `dst`; returns a summary."""
    src = Path(src)
    ckpt = read_reference_checkpoint(src)
    hydra = hydra_config(src)
    given = hints or Hints()
    merged = Hints(
        image_size=given.image_size or hydra.get("img_size"), num_hist=given.num_hist or hydra.get("num_hist"),
        frameskip=given.frameskip or hydra.get("frameskip"), action_dim=given.action_dim)
    cfg, dims, notes = infer_model(ckpt, merged)
    if hydra:
        notes.insert(0, f"read {src.parent.parent / 'hydra.yaml'} for what the tensors do not say")
        if hydra.get("concat_dim") not in (None, cfg.concat_dim):
            raise ReferenceImportError(f"hydra.yaml says concat_dim {hydra['concat_dim']}, the predictor's width "
                                       f"says {cfg.concat_dim}")
    spec = ModelSpec(model=cfg, window=WindowSpec(num_hist=dims["num_hist"], num_pred=dims["num_pred"],
                                                  frameskip=dims["frameskip"], action_dim=dims["action_dim"]),
                     proprio_dim=dims["proprio_dim"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-encoder warning: only the parts' shapes matter here
        model = spec.build()
    for name, sd in ckpt.parts.items():
        try:
            getattr(model, name).load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ReferenceImportError(f"{src}: {name} does not load into fcs's model inferred from it: "
                                       f"{str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else e}") from None
    optimizers, opt_notes = map_optimizers(ckpt, model)
    notes += opt_notes
    epoch = int(ckpt.values.get("epoch", 0))
    imported = RunCheckpoint(
        spec=spec, weights=dict(ckpt.parts), state=RunState(epoch=epoch, decoder_trained="decoder" in ckpt.parts),
        optimizers=optimizers, imported_from={"path": str(src.resolve()), "format": "dino_wm reference pickle",
                                              "dropped": ckpt.dropped, "notes": notes})
    save_checkpoint(imported, dst)
    return {"parts": {k: sum(v.numel() for v in sd.values()) for k, sd in ckpt.parts.items()}, "epoch": epoch,
            "dropped": ckpt.dropped, "model_config": cfg,
            "dims": {"proprio_dim": spec.proprio_dim, **spec.window.model_dump()}, "optimizers": sorted(optimizers),
            "notes": notes}
