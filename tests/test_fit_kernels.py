"""The CUDA kernel choices a prediction stands in for on CPU tensors (fcs_train.fit.kernels)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from fcs_train.fit.kernels import CUDA, NATIVE, attention_kernel, emulate, workspace_bytes
from fcs_train.fit.tracker import StorageTracker, live_bytes


def test_cuda_autocast_lists_run_layer_norm_softmax_and_sums_in_fp32_and_are_removed_after() -> None:
    x = torch.randn(4, 16)
    w = torch.randn(16, 16)

    def dtypes() -> list[torch.dtype]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = F.linear(x, w)
            return [h.dtype, F.layer_norm(h, (16,)).dtype, h.softmax(-1).dtype, h.sum().dtype, h.exp().dtype,
                    F.gelu(h).dtype]

    native = dtypes()
    with emulate(CUDA):
        cuda = dtypes()
    assert cuda == [torch.bfloat16, torch.float32, torch.float32, torch.float32, torch.float32, torch.bfloat16]
    assert native[1:5] == [torch.bfloat16] * 4  # CPU autocast keeps them in bf16 ...
    assert dtypes() == native  # ... again once the emulation is left


def test_the_attention_kernel_is_the_one_a_cuda_gpu_picks() -> None:
    q16 = torch.empty(1, 2, 8, 64, dtype=torch.bfloat16)
    q32 = torch.empty(1, 2, 8, 64)
    mask = torch.ones(8, 8, dtype=torch.bool)
    assert attention_kernel(CUDA, q16, None) == "flash"
    assert attention_kernel(CUDA, q16, mask) == "efficient"
    assert attention_kernel(CUDA, q32, None) == "efficient"
    assert attention_kernel(dataclasses.replace(CUDA, flash=False), q16, None) == "efficient"
    assert attention_kernel(CUDA, torch.empty(1, 2, 8, 6), None) == "math"  # head dim not aligned
    assert attention_kernel(dataclasses.replace(CUDA, attention="math"), q16, None) == "math"


def _saved_bytes(policy_attention: str, length: int) -> int:
    """Bytes alive after an attention forward whose backward is pending (what backward keeps)."""
    policy = dataclasses.replace(CUDA, attention=policy_attention)
    tracker = StorageTracker()
    with FakeTensorMode(), emulate(policy), tracker:
        q, k, v = (torch.empty(2, 4, length, 64, requires_grad=True) for _ in range(3))
        for t in (q, k, v):
            tracker.track(t, "inputs")
        mask = torch.ones(length, length, dtype=torch.bool).tril()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.1)
        trace = tracker.result()
        del out
    return int(live_bytes(trace, trace.sizes)[-1])


def test_efficient_attention_keeps_no_length_squared_matrix_and_math_keeps_several() -> None:
    b, h, d = 2, 4, 64
    for n in (128, 512):
        linear = 4 * b * h * n * d * 4 + b * h * n * 4 + 16  # q, k, v, output, logsumexp, dropout seed/offset
        masks = n * n * (1 + 4)  # the bool mask and its float bias, shared by every (batch, head)
        assert _saved_bytes("auto", n) == linear + masks
        assert _saved_bytes("math", n) >= linear + b * h * n * n * (4 + 1 + 4)  # probabilities, mask, dropped


def test_dropout_saves_a_bool_mask_like_cuda_fused_dropout() -> None:
    def saved(policy) -> int:
        tracker = StorageTracker()
        with FakeTensorMode(), emulate(policy), tracker:
            x = torch.empty(1000, requires_grad=True)
            tracker.track(x, "inputs")
            y = F.dropout(x, 0.1, training=True)
            trace = tracker.result()
            del y
        return int(live_bytes(trace, trace.sizes)[-1])

    assert saved(CUDA) == 4000 + 4000 + 1000  # input, output, bool mask
    assert saved(NATIVE) == 4000 + 4000 + 4000  # CPU: a float mask


def test_the_emulated_math_and_efficient_paths_compute_attention() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 16) for _ in range(3))
    mask = torch.ones(10, 10, dtype=torch.bool).tril()
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with emulate(dataclasses.replace(CUDA, attention="math")):
        got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(got, expected)
    with FakeTensorMode(), emulate(CUDA) as mode:  # the GPU kernel only has meta shapes on a CPU
        fq = torch.empty(2, 3, 10, 16)
        out = F.scaled_dot_product_attention(fq, fq, fq, attn_mask=torch.ones(10, 10, dtype=torch.bool))
    assert out.shape == (2, 3, 10, 16) and mode.kernels == {"efficient": 1}


@pytest.mark.parametrize("length", [100, 128])
def test_efficient_attention_backward_models_its_fp32_gradient_workspace(length: int) -> None:
    q = torch.empty(2, 4, length, 64, device="meta")
    op = torch.ops.aten._scaled_dot_product_efficient_attention_backward.default
    rows = -(-length // 64) * 64
    assert workspace_bytes(op, (q, q, q, q)) == 2 * 4 * (rows * 64 + length) * 4
    assert workspace_bytes(torch.ops.aten.mm.default, (q, q)) == 0
