"""The DINO-WM model: shapes, causality, gradient flow, rollout, DINOv2 weights, reference names."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fcs_data.errors import UnreadableFileError
from fcs_train.config import load_config
from fcs_train.models import (
    DinoV2Encoder,
    RandomEncoderWarning,
    build_model,
    frame_causal_mask,
    interpolate_pos_encoding,
    load_encoder_weights,
    to_model_input,
)

TINY = load_config(preset="tiny").model


def tiny_model(concat_dim: int = 1, num_hist: int = 3, num_pred: int = 1, **kw):
    cfg = TINY.model_copy(update={"concat_dim": concat_dim, **kw})
    torch.manual_seed(0)
    return build_model(cfg, proprio_dim=3, action_dim=9, num_hist=num_hist, num_pred=num_pred, frameskip=5)


def batch(model, b: int = 2, t: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    s = model.image_size
    return ({"visual": torch.rand(b, t, 3, s, s, generator=g) * 2 - 1, "proprio": torch.randn(b, t, 3, generator=g)},
            torch.randn(b, t, 45, generator=g))


@pytest.mark.parametrize("concat_dim", [0, 1])
def test_output_shapes(concat_dim: int) -> None:
    model = tiny_model(concat_dim)
    obs, act = batch(model)
    out = model(obs, act)
    z_pred, visual_pred, visual_rec, loss, comps = out.z_pred, out.visual_pred, out.visual_rec, out.loss, out.components
    n = 16 + (2 if concat_dim == 0 else 0)
    dim = 48 + (20 if concat_dim == 1 else 0)
    assert z_pred.shape == (2, 3, n, dim)
    assert visual_pred.shape == (2, 3, 3, 64, 64) and visual_rec.shape == (2, 4, 3, 64, 64)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"z_loss", "z_visual_loss", "z_proprio_loss", "decoder_recon_loss_pred", "decoder_loss_reconstructed",
            "loss"} <= set(comps)
    torch.testing.assert_close(loss, comps["z_loss"] + comps["decoder_loss_reconstructed"])


def test_token_layout_and_separation_round_trip() -> None:
    model = tiny_model(1)
    obs, act = batch(model)
    z = model.encode(obs, act)
    z_obs, z_act = model.separate_emb(z)
    torch.testing.assert_close(z_obs["proprio"], model.proprio_encoder(obs["proprio"]))
    torch.testing.assert_close(z_act, model.action_encoder(act))
    assert torch.equal(z[:, :, 0, 48:58], z[:, :, 7, 48:58]), "proprio tiled onto every patch"


def test_changing_frame_k_does_not_change_earlier_predictions() -> None:
    model = tiny_model(1).eval()
    obs, act = batch(model)
    z = model.encode(obs, act)[:, :3]
    base = model.predict(z)
    for k in range(3):
        z2 = z.clone()
        z2[:, k] += torch.randn_like(z2[:, k])
        out = model.predict(z2)
        torch.testing.assert_close(out[:, :k], base[:, :k], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, k], base[:, k]), "frame k itself does change"
    # end to end: a different image at frame 2 leaves the predictions from frames 0 and 1 alone
    obs2 = {k: v.clone() for k, v in obs.items()}
    obs2["visual"][:, 2] = -obs2["visual"][:, 2]
    z_a, z_b = model(obs, act).z_pred, model(obs2, act).z_pred
    torch.testing.assert_close(z_a[:, :2], z_b[:, :2], rtol=0, atol=1e-5)


def test_mask_is_frame_causal() -> None:
    m = frame_causal_mask(6, 2, torch.device("cpu"))
    expected = torch.tensor([[1, 1, 0, 0, 0, 0]] * 2 + [[1, 1, 1, 1, 0, 0]] * 2 + [[1] * 6] * 2, dtype=torch.bool)
    assert torch.equal(m, expected)


def test_decoder_gradients_never_reach_predictor_or_encoders() -> None:
    model = tiny_model(1).train()
    obs, act = batch(model)
    comps = model(obs, act).components
    (comps["decoder_loss_reconstructed"] + comps["decoder_loss_pred"]).backward()
    for name in ("predictor", "proprio_encoder", "action_encoder", "encoder"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.grad is not None]
        assert all(torch.count_nonzero(g) == 0 for g in grads), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    model.zero_grad()
    model(obs, act).components["z_loss"].backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.predictor.parameters())


def test_frozen_encoder_stays_in_eval_mode_without_gradients() -> None:
    model = tiny_model(1).train()
    assert not model.encoder.training and model.predictor.training
    assert all(not p.requires_grad for p in model.encoder.parameters())


@pytest.mark.parametrize("n_ctx", [1, 3])
def test_rollout_lengths(n_ctx: int) -> None:
    model = tiny_model(1).eval()
    obs, act = batch(model, t=7)
    obs_0 = {k: v[:, :n_ctx] for k, v in obs.items()}
    with torch.no_grad():
        z_obses, z = model.rollout(obs_0, act)
    assert z.shape[1] == z_obses["visual"].shape[1] == 7 + 1
    assert z_obses["proprio"].shape == (2, 8, 10)
    decoded, _ = model.decode_obs(z_obses)
    assert decoded["visual"].shape == (2, 8, 3, 64, 64)


def test_quantised_decoder_runs() -> None:
    model = tiny_model(1, decoder=TINY.decoder.model_copy(update={"quantize": True})).train()
    obs, act = batch(model)
    comps = model(obs, act).components
    assert comps["decoder_vq_loss_reconstructed"] > 0


def test_to_model_input_maps_uint8_to_minus_one_one() -> None:
    v = torch.tensor([0, 255], dtype=torch.uint8).repeat(2, 3, 3, 32, 16)[..., :32, :32]
    x = to_model_input(v, 64)
    assert x.shape == (2, 3, 3, 64, 64) and x.min() == -1 and x.max() == 1


# ---- DINOv2 weights ---------------------------------------------------------------------------


def _official_state_dict(dim: int = 384, depth: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the key format of facebookresearch's dinov2_vits14_pretrain.pth."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.02  # noqa: E731
    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + 37 * 37, dim), "mask_token": r(1, dim),
          "patch_embed.proj.weight": r(dim, 3, 14, 14), "patch_embed.proj.bias": r(dim),
          "norm.weight": 1 + r(dim), "norm.bias": r(dim)}
    for i in range(depth):
        p = f"blocks.{i}."
        sd |= {p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim), p + "attn.qkv.weight": r(3 * dim, dim),
               p + "attn.qkv.bias": r(3 * dim), p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
               p + "ls1.gamma": 1 + r(dim), p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim),
               p + "mlp.fc1.weight": r(4 * dim, dim), p + "mlp.fc1.bias": r(4 * dim),
               p + "mlp.fc2.weight": r(dim, 4 * dim), p + "mlp.fc2.bias": r(dim), p + "ls2.gamma": 1 + r(dim)}
    return sd


def _official_interpolation(pos_embed: torch.Tensor, w0: int, h0: int) -> torch.Tensor:
    """DINOv2's interpolate_pos_encoding, written out (interpolate_offset 0.1, antialias off)."""
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    cls, patch = pos_embed[:, 0], pos_embed[:, 1:]
    patch = F.interpolate(patch.reshape(1, m, m, -1).permute(0, 3, 1, 2),
                          scale_factor=((w0 + 0.1) / m, (h0 + 0.1) / m), mode="bicubic", antialias=False)
    assert patch.shape[-2:] == (w0, h0)
    return torch.cat([cls.unsqueeze(0), patch.permute(0, 2, 3, 1).reshape(1, -1, pos_embed.shape[-1])], dim=1)


def _official_patch_tokens(sd: dict, x: torch.Tensor, heads: int = 6) -> torch.Tensor:
    """A straightforward DINOv2 forward_features()['x_norm_patchtokens'] from a state dict."""
    b, _, w, h = x.shape
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(b, -1, -1), t], dim=1)
    t = t + _official_interpolation(sd["pos_embed"], w // 14, h // 14)
    dim = t.shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(t, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).reshape(b, -1, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1) * (dim // heads) ** -0.5).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, -1, dim)
        t = t + sd[p + "ls1.gamma"] * F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        y = F.layer_norm(t, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"],
                     sd[p + "mlp.fc2.bias"])
        t = t + sd[p + "ls2.gamma"] * y
    t = F.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return t[:, 1:]


def test_official_dinov2_weights_give_the_official_patch_tokens(tmp_path: Path) -> None:
    sd = _official_state_dict()
    torch.save(sd, tmp_path / "dinov2_vits14_pretrain.pth")
    enc = DinoV2Encoder("dinov2_vits14")
    assert load_encoder_weights(enc, tmp_path / "dinov2_vits14_pretrain.pth") == []
    enc.eval()
    x = torch.rand(2, 3, 196, 196, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        ours = enc(x)
        ref = _official_patch_tokens(sd, x)
    assert ours.shape == (2, 196, 384)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_timm_format_weights_load_too(tmp_path: Path) -> None:
    sd = _official_state_dict()
    del sd["mask_token"]
    torch.save({f"base_model.{k}": v for k, v in sd.items()}, tmp_path / "timm.pth")
    enc = DinoV2Encoder("dinov2_vits14")
    notes = load_encoder_weights(enc, tmp_path / "timm.pth")
    assert notes and "mask_token" in notes[0]
    torch.testing.assert_close(enc.base_model.pos_embed, sd["pos_embed"])


def test_weights_for_another_architecture_are_refused(tmp_path: Path) -> None:
    torch.save(_official_state_dict(dim=48, depth=2), tmp_path / "tiny.pth")
    with pytest.raises(UnreadableFileError, match=r"tiny\.pth: .*wrong shape"):
        load_encoder_weights(DinoV2Encoder("dinov2_vits14"), tmp_path / "tiny.pth")


def test_interpolation_is_the_official_one_and_identity_at_native_size() -> None:
    pos = torch.randn(1, 1 + 37 * 37, 8)
    torch.testing.assert_close(interpolate_pos_encoding(pos, 14, 14), _official_interpolation(pos, 14, 14))
    assert interpolate_pos_encoding(pos, 37, 37) is pos


def test_missing_weights_warn_loudly(full_model) -> None:
    _, caught = full_model
    assert any(issubclass(w.category, RandomEncoderWarning) and "RANDOM" in str(w.message) for w in caught)


# ---- the full-size model ----------------------------------------------------------------------


def _reference_predictor_keys(depth: int) -> set[str]:
    keys = {"pos_embedding", "transformer.norm.weight", "transformer.norm.bias"}
    for i in range(depth):
        a, f = f"transformer.layers.{i}.0.", f"transformer.layers.{i}.1.net."
        keys |= {a + "norm.weight", a + "norm.bias", a + "to_qkv.weight", a + "to_out.0.weight", a + "to_out.0.bias",
                 f + "0.weight", f + "0.bias", f + "1.weight", f + "1.bias", f + "4.weight", f + "4.bias"}
    return keys


def test_full_model_matches_the_reference_names_shapes_and_size(full_model) -> None:
    model, _ = full_model
    psd = model.predictor.state_dict()
    assert set(psd) == _reference_predictor_keys(6)
    assert psd["pos_embedding"].shape == (1, 3 * 196, 404)
    assert psd["transformer.layers.0.0.to_qkv.weight"].shape == (3 * 16 * 64, 404)
    assert psd["transformer.layers.5.1.net.1.weight"].shape == (2048, 404)
    dsd = model.decoder.state_dict()
    assert dsd["upsample_b.blocks.0.weight"].shape == (384, 384, 3, 3)
    assert dsd["quantize_b.embed"].shape == (384, 2048)
    assert dsd["dec.blocks.8.weight"].shape == (192, 3, 4, 4)
    assert sum(k.endswith("conv.1.weight") for k in dsd if k.startswith("upsample_b")) == 4
    assert model.proprio_encoder.state_dict()["patch_embed.weight"].shape == (10, 3, 1)
    assert model.action_encoder.state_dict()["patch_embed.weight"].shape == (10, 45, 1)
    counts = model.parameter_counts()
    assert 19e6 < counts["predictor"]["total"] < 21e6
    assert counts["encoder"]["trainable"] == 0
    assert "predictor" in model.describe()


def test_full_model_forward_and_backward_at_batch_1_on_cpu(full_model) -> None:
    model = full_model[0].train()
    obs, act = batch(model, b=1, t=4)
    out = model(obs, act)
    out.loss.backward()
    assert out.z_pred.shape == (1, 3, 196, 404) and out.visual_rec.shape == (1, 4, 3, 224, 224)
    assert out.visual_pred.shape == (1, 3, 3, 224, 224)
    assert model.predictor.pos_embedding.grad is not None


def test_proprio_dim_is_the_raw_proprio_and_the_embedding_widths_have_their_own_names() -> None:
    model = tiny_model(1)
    assert model.proprio_dim == 3 and model.proprio_emb_dim == 10 and model.action_emb_dim == 10
    assert model.emb_dim == 48 + 10 + 10


def test_the_decoder_can_reconstruct_a_subset_of_frames_or_none() -> None:
    model = tiny_model(1)
    obs, act = batch(model)
    picks = torch.tensor([[0, 3], [2, 1]])
    out = model(obs, act, decode_pred=False, recon_frames=picks)
    assert out.visual_pred is None and out.visual_rec.shape == (2, 2, 3, 64, 64)
    rows = torch.arange(2)[:, None]
    full = model.decode(out.z.detach()[rows, picks])[0]["visual"]
    torch.testing.assert_close(out.visual_rec, full)
    none = model(obs, act, decode_pred=False, reconstruct=False)
    assert none.visual_rec is None and "decoder_loss_reconstructed" not in none.components
    torch.testing.assert_close(none.loss, none.components["z_loss"])


def test_the_model_owns_its_optimizers_as_the_reference_trains_it() -> None:
    from fcs_train.config import OptimConfig

    model = tiny_model(1)
    optim = OptimConfig(predictor_lr=5e-5)
    groups = model.optimizer_groups(optim)
    assert list(groups) == ["predictor", "decoder", "action_encoder"], "a frozen encoder has no optimizer"
    assert [g.kind.__name__ for g in groups.values()] == ["AdamW", "Adam", "AdamW"]
    assert groups["predictor"].hyper == {"lr": 5e-5, "weight_decay": optim.weight_decay}
    assert groups["action_encoder"].parts == ("action_encoder", "proprio_encoder")
    names = groups["action_encoder"].build(model).state_dict()["param_groups"][0]["param_names"]
    assert names == [f"action_encoder.{n}" for n, _ in model.action_encoder.named_parameters()] + \
        [f"proprio_encoder.{n}" for n, _ in model.proprio_encoder.named_parameters()]
    optimised = {id(p) for g in groups.values() for _, p in g.named_parameters(model)}
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}, "every trainable parameter, once"
    assert "decoder" not in model.optimizer_groups(optim, decoder=False)
    trained = tiny_model(1, encoder=TINY.encoder.model_copy(update={"train": True}))
    assert list(trained.optimizer_groups(optim)) == ["encoder", "predictor", "decoder", "action_encoder"]


def test_repeated_action_and_proprio_embeddings_widen_every_token_and_separate_again() -> None:
    model = tiny_model(1, num_action_repeat=3, num_proprio_repeat=2)
    assert (model.proprio_emb_dim, model.action_emb_dim, model.emb_dim) == (20, 30, 48 + 20 + 30)
    obs, act = batch(model)
    z = model.encode(obs, act)
    assert z.shape[-1] == 98
    z_obs, z_act = model.separate_emb(z)
    torch.testing.assert_close(z_obs["proprio"], model.proprio_encoder(obs["proprio"]))
    torch.testing.assert_close(z_act, model.action_encoder(act))
    torch.testing.assert_close(z[..., 48:58], z[..., 58:68], msg="the proprio embedding is repeated")
    out = model(obs, act)
    assert out.z_pred.shape == (2, 3, 16, 98) and torch.isfinite(out.loss)
    with torch.no_grad():
        z_obses, _ = model.eval().rollout({k: v[:, :3] for k, v in obs.items()}, act)
    assert z_obses["proprio"].shape == (2, 5, 10)

