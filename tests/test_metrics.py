"""Metrics: the z-error slices are never empty; SSIM/PSNR/LPIPS behave; LPIPS loads user weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from fcs_data.errors import UnreadableFileError
from fcs_train.metrics import LPIPS, image_metrics, z_error_slices


@pytest.mark.parametrize("num_hist,num_pred", [(3, 1), (1, 1), (4, 2), (2, 3)])
def test_z_error_slices_are_never_empty(num_hist: int, num_pred: int) -> None:
    frames = list(range(num_hist))
    s = z_error_slices(num_hist, num_pred)
    assert frames[s["full"]] == frames
    assert len(frames[s["next1"]]) == 1 and frames[s["pred"]][0] == frames[s["next1"]][0]
    assert len(frames[s["pred"]]) == min(num_pred, num_hist)
    if num_pred == 1:
        assert frames[s["pred"]] == frames[s["next1"]] == [num_hist - 1]


def test_ssim_and_psnr() -> None:
    x = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    same = image_metrics(x, x, "p")
    assert same["p_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert torch.isinf(same["p_psnr"]) or same["p_psnr"] > 80
    noisy = image_metrics((x + 0.2 * torch.randn_like(x)).clamp(-1, 1), x, "p")
    assert noisy["p_ssim"] < 0.99 and 10 < noisy["p_psnr"] < 40


@pytest.fixture(scope="module")
def vgg16(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision VGG16 weights file (random values, torchvision's key format) and its state dict."""
    torch.manual_seed(0)
    state = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return path, state


def test_lpips_loads_a_user_vgg16_file_and_measures(vgg16) -> None:
    path, state = vgg16
    lpips = LPIPS(path)
    torch.testing.assert_close(lpips.net.net.slice3.state_dict()["10.weight"], state["features.10.weight"])
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert lpips(x, x) < 1e-6
    assert lpips(x, -x) > lpips(x, (x + 0.05 * torch.randn_like(x)).clamp(-1, 1)) > 0


def test_lpips_refuses_other_files_naming_them(vgg16, tmp_path: Path) -> None:
    vgg = vgg16[1]
    wrong_shape = {**vgg, "features.0.weight": torch.zeros(1)}
    partial = {k: v for k, v in vgg.items() if not k.startswith("features.28.")}
    for name, content in {"wrong_shape": wrong_shape, "partial": partial, "tensor": torch.zeros(3)}.items():
        torch.save(content, tmp_path / f"{name}.pth")
        with pytest.raises(UnreadableFileError, match=rf"{name}\.pth: cannot be read: .*(vgg16|state dict)"):
            LPIPS(tmp_path / f"{name}.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(UnreadableFileError, match=r"garbage\.pth"):
        LPIPS(tmp_path / "garbage.pth")
