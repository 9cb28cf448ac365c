"""Config files and `key=value` overrides as the users write them (Hydra/OmegaConf style).

A run's settings are a preset, then a YAML file, then overrides, validated as a pydantic model.
Overrides are OmegaConf dotlists (`train.batch_size=8`, `data.cameras=[cam_0,cam_1]`,
`model.encoder.weights=null`, `+key=value` and `++key=value` as Hydra writes them), so values parse
as Hydra parses them and `${...}` interpolations resolve. The reference DINO-WM's own names
(`frameskip`, `num_hist`, `img_size`, `training.batch_size`, `training.*_lr`, ...) are accepted and
mapped to fcs's keys, and each mapping is reported. A key that names nothing is refused with the
nearest valid key, before anything else runs; a YAML syntax error names `file:line:col`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# The reference's `conf/train.yaml` names -> fcs keys (None: accepted, nothing to set in fcs).
REFERENCE_KEYS: dict[str, str | None] = {
    "frameskip": "data.frameskip",
    "num_hist": "data.num_hist",
    "num_pred": "data.num_pred",
    "img_size": "model.image_size",
    "concat_dim": "model.concat_dim",
    "action_emb_dim": "model.action_emb_dim",
    "proprio_emb_dim": "model.proprio_emb_dim",
    "num_action_repeat": "model.num_action_repeat",
    "num_proprio_repeat": "model.num_proprio_repeat",
    "has_decoder": "model.decoder.enabled",
    "model.train_encoder": "model.encoder.train",
    "training.seed": "train.seed",
    "training.epochs": "train.epochs",
    "training.batch_size": "train.batch_size",
    "training.save_every_x_epoch": "train.checkpoint_every_epochs",
    "training.num_reconstruct_samples": "log.num_reconstruct_samples",
    "training.encoder_lr": "optim.encoder_lr",
    "training.predictor_lr": "optim.predictor_lr",
    "training.decoder_lr": "optim.decoder_lr",
    "training.action_encoder_lr": "optim.action_encoder_lr",
    "env": None,  # fcs reads the layout from the store
}


class ConfigInputError(ValueError):
    """A config file or override the user wrote is malformed or names no setting (exit 2)."""


@dataclass(frozen=True)
class Override:
    """One `key=value` override: the fcs key it sets, as written, and the name it was given."""

    key: str
    text: str
    given_as: str

    @property
    def renamed(self) -> bool:
        return self.key != self.given_as


def setting_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a settings model, leaves only (`train.batch_size`, `model.encoder.weights`, ...)."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out.extend(setting_keys(sub, f"{key}."))
        else:
            out.append(key)
    return out


def _sections(keys: list[str]) -> set[str]:
    return {".".join(k.split(".")[:i]) for k in keys for i in range(1, k.count(".") + 1)}


def unknown_key_message(key: str, keys: list[str], where: str) -> str:
    """`where: unknown key K; did you mean ...?` with the nearest valid keys (last parts weigh most)."""
    tail = {k.rsplit(".", 1)[-1]: k for k in keys}
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    near += [tail[t] for t in difflib.get_close_matches(key.rsplit(".", 1)[-1], list(tail), n=1, cutoff=0.8)
             if tail[t] not in near]
    hint = f"; did you mean {' or '.join(near[:2])}?" if near else "; `fcs train --print-config` lists every key"
    return f"{where}: unknown key {key!r}{hint}"


def check_keys(data: dict[str, Any], model: type[BaseModel], where: str, prefix: str = "") -> None:
    """`ConfigInputError` for the first key of nested `data` that names no setting of `model`."""
    keys = setting_keys(model)
    sections = _sections(keys)
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key in sections:
            check_keys(value, model, where, f"{key}.")
        elif key not in keys:
            raise ConfigInputError(unknown_key_message(key, keys, where))


def parse_overrides(args: list[str] | tuple[str, ...], model: type[BaseModel],
                    aliases: dict[str, str | None] | None = None) -> list[Override]:
    """Overrides `key=value` checked against `model`'s keys, reference names mapped through `aliases`."""
    keys = setting_keys(model)
    sections = _sections(keys)
    out: list[Override] = []
    for arg in args:
        if "=" not in arg:
            raise ConfigInputError(f"override {arg!r}: expected key=value, e.g. train.batch_size=8 "
                                   "(section.key=value)")
        raw_key, value = arg.split("=", 1)
        given = raw_key.strip().lstrip("+")
        if given.startswith("~"):
            raise ConfigInputError(f"override {arg!r}: deleting a key (~key) is not supported; set it to null")
        key = given
        if aliases and given in aliases and given not in keys:
            mapped = aliases[given]
            if mapped is None:
                out.append(Override("", value, given))
                continue
            key = mapped
        if key not in keys:
            if key in sections:
                raise ConfigInputError(f"override {arg!r}: {key} is a section; set one of its keys, e.g. "
                                       f"{next(k for k in keys if k.startswith(key + '.'))}=...")
            raise ConfigInputError(unknown_key_message(given, keys, f"override {arg!r}"))
        out.append(Override(key, value, given))
    return out


def apply_overrides(data: dict[str, Any], overrides: list[Override], model: type[BaseModel]) -> dict[str, Any]:
    """`data` over `model`'s defaults with the overrides merged in, values parsed and interpolations
    (`${train.epochs}`) resolved as OmegaConf does."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    settable = [o for o in overrides if o.key]
    try:
        merged = OmegaConf.merge(OmegaConf.create(model().model_dump(mode="json")), OmegaConf.create(data),
                                 OmegaConf.from_dotlist([f"{o.key}={o.text}" for o in settable]))
        out = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigInputError(f"overrides {' '.join(o.given_as + '=' + o.text for o in settable)}: "
                               f"{str(e).splitlines()[0]}") from None
    assert isinstance(out, dict)
    return out


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file holding one mapping; syntax errors as `file:line:col: problem` (ConfigInputError)."""
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigInputError(f"{where}: {e.problem or e.context or 'not valid YAML'}") from None
    except yaml.YAMLError as e:
        raise ConfigInputError(f"{path}: not valid YAML ({e})") from None
    except UnicodeDecodeError:
        raise ConfigInputError(f"{path}: not a text file") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigInputError(f"{path}: a config file holds one mapping (section: {{key: value}}), "
                               f"not a {type(loaded).__name__}")
    return loaded
