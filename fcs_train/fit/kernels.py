"""The CUDA kernels a training step would run, stood in for by CPU (and fake CPU) tensors.

A step traced on CPU tensors runs CPU kernels, and three of their choices change what a GPU keeps
in memory. `emulate(policy)` makes the traced step take the GPU's choices instead:

- **autocast op lists.** CPU autocast leaves `layer_norm`, `softmax`, `sum`, `pow`, `exp`, ... in
  bf16, CUDA autocast runs them in fp32 (and so saves fp32 activations for backward). AutocastCPU
  kernels with CUDA's policy (`AT_FORALL_FP32`, `AT_FORALL_FP32_SET_OPT_DTYPE` of ATen's
  autocast_mode.cpp) are registered for the duration, at the same dispatch level as CUDA autocast.
- **scaled_dot_product_attention.** A CUDA GPU picks flash attention (fp16/bf16, no mask), else the
  memory-efficient kernel (masks, fp32), else the math path; fused kernels keep only the output and
  a `(B, H, L)` logsumexp for backward, the math path keeps `L x L` probabilities and dropout masks.
  The chosen ATen op is called explicitly (its meta kernel gives the GPU's output shapes; autograd
  records the GPU's backward op), with the bool mask converted and padded as ATen does.
- **dropout.** CUDA's fused dropout (`native_dropout`) saves a bool mask; CPU's saves a float one.

`workspace_bytes` models the scratch memory a CUDA kernel allocates inside one op (invisible at the
op level): the fp32 gradient accumulators of the fused attention backward kernels and the
intermediates of `_safe_softmax`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

AttentionPolicy = Literal["auto", "math", "native"]
AttentionKernel = Literal["flash", "efficient", "math"]

_AUTOCAST_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)

# CUDA autocast's fp32 policy: eligible floating inputs are cast to fp32 (ATen AT_FORALL_FP32)
CUDA_FP32_OPS = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
    "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus", "layer_norm",
    "native_layer_norm", "group_norm", "frobenius_norm.dim", "nuclear_norm", "nuclear_norm.dim",
    "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
    "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss", "margin_ranking_loss",
    "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss",
    "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
)
# ... and its fp32_set_opt_dtype policy: reductions and softmax produce fp32 unless a dtype is given
CUDA_FP32_OUT_OPS = (
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum", "linalg_vector_norm",
    "linalg_matrix_norm", "sum", "sum.dim_IntList",
)


@dataclass(frozen=True)
class KernelPolicy:
    """Which kernels a traced step runs: the target GPU's, or this machine's own (`NATIVE`).

    autocast_ops: "cuda" applies CUDA autocast's op lists, "native" this machine's.
    attention: "auto" the kernel a CUDA GPU selects, "math" the math path everywhere (no fused
        kernel, as the reference's hand-written attention), "native" what this machine runs.
    bool_dropout_masks: dropout saves a bool mask (CUDA's fused dropout) instead of CPU's float one.
    foreach: the optimizers' `foreach` setting (CUDA defaults to the multi-tensor implementation,
        whose temporaries span a whole parameter group); None keeps this machine's default.
    flash: the GPU has flash attention (compute capability 8.0 and later).
    cpu_kernels: the ops run on this CPU's kernels, with their storage quirks (`output_bytes`).
    """

    autocast_ops: Literal["cuda", "native"] = "cuda"
    attention: AttentionPolicy = "auto"
    bool_dropout_masks: bool = True
    foreach: bool | None = True
    flash: bool = True
    cpu_kernels: bool = False

    @property
    def emulates(self) -> bool:
        return self.autocast_ops == "cuda" or self.attention != "native" or self.bool_dropout_masks


CUDA = KernelPolicy()
NATIVE = KernelPolicy(autocast_ops="native", attention="native", bool_dropout_masks=False, foreach=None,
                      cpu_kernels=True)


def attention_kernel(policy: KernelPolicy, q: torch.Tensor, attn_mask: torch.Tensor | None) -> AttentionKernel:
    """The kernel a CUDA GPU runs for `scaled_dot_product_attention(q (B, H, L, D), ...)` (its priority
    order: flash, then memory-efficient, then math)."""
    if policy.attention == "math":
        return "math"
    d = q.shape[-1]
    half = q.dtype in (torch.float16, torch.bfloat16)
    if policy.flash and half and attn_mask is None and d % 8 == 0 and d <= 256:
        return "flash"
    if q.dtype in (torch.float16, torch.bfloat16, torch.float32) and d % (8 if half else 4) == 0:
        return "efficient"
    return "math"


def _float_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """ATen's `convert_boolean_attn_mask`: True (attend) -> 0, False -> -inf, in the query's dtype."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.where(mask.logical_not(), -math.inf, 0.0).to(dtype)


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float,
                    is_causal: bool, scale: float | None) -> torch.Tensor:
    """ATen's `_scaled_dot_product_attention_math`, op for op (with a bool-mask dropout); fp16/bf16 inputs
    are computed in fp32 unless `allow_fp16_bf16_reduction_math_sdp` (ATen's default since 2.5)."""
    origin = q.dtype
    if origin in (torch.float16, torch.bfloat16) and not torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed():
        q, k, v = q.float(), k.float(), v.float()
    if is_causal:
        n, s = q.shape[-2], k.shape[-2]
        mask = torch.ones(n, s, dtype=torch.bool, device=q.device).tril()
    mask = _float_mask(mask, q.dtype)
    factor = math.sqrt(scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    attn = torch.matmul(q * factor, k.transpose(-2, -1) * factor)
    if mask is not None:
        attn = attn.add_(mask)
    attn = torch.ops.aten._safe_softmax(attn, -1)
    if dropout_p > 0.0:
        attn = torch.native_dropout(attn, dropout_p, True)[0]
    return torch.matmul(attn, v).to(origin)


def _efficient_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                         dropout_p: float, is_causal: bool, scale: float | None) -> torch.Tensor:
    bias = _float_mask(mask, q.dtype)
    if bias is not None:
        last = bias.shape[-1]
        if last % 16:  # ATen's pad_bias: the kernel reads the bias 16-element aligned
            bias = F.pad(bias, (0, 16 - last % 16))[..., :last]
        bias = bias.expand(q.shape[0], q.shape[1], q.shape[-2], k.shape[-2])
    lse = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, lse, dropout_p, is_causal,
                                                                  scale=scale)[0]


def _flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, is_causal: bool,
                     scale: float | None) -> torch.Tensor:
    return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, scale=scale)[0]


class _GpuFunctions(TorchFunctionMode):
    """Routes `scaled_dot_product_attention` to the GPU's kernel and dropout to the fused, bool-mask one."""

    def __init__(self, policy: KernelPolicy):
        super().__init__()
        self.policy = policy
        self.kernels: dict[AttentionKernel, int] = {}

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and self.policy.attention != "native":
            return self._attention(*args, **kwargs)
        if func is F.dropout and self.policy.bool_dropout_masks:
            return self._dropout(*args, **kwargs)
        return func(*args, **kwargs)

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                   enable_gqa: bool = False) -> torch.Tensor:
        if enable_gqa:
            raise NotImplementedError("grouped-query attention is not modelled")
        if torch.is_autocast_enabled("cpu"):  # the lower_precision_fp policy of the composite op
            low = torch.get_autocast_dtype("cpu")
            q, k, v = (t.to(low) if t.dtype == torch.float32 else t for t in (q, k, v))
            if attn_mask is not None and attn_mask.dtype == torch.float32:
                attn_mask = attn_mask.to(low)
        kernel = attention_kernel(self.policy, q, attn_mask)
        self.kernels[kernel] = self.kernels.get(kernel, 0) + 1
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):  # what runs inside an autocast op is not cast
            if kernel == "flash":
                return _flash_attention(q, k, v, dropout_p, is_causal, scale)
            if kernel == "efficient":
                return _efficient_attention(q, k, v, attn_mask, dropout_p, is_causal, scale)
            return _math_attention(q, k, v, attn_mask, dropout_p, is_causal, scale)

    @staticmethod
    def _dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
        if not training or p == 0.0 or x.numel() == 0:
            return x
        out = torch.native_dropout(x, p, True)[0]
        return x.copy_(out) if inplace else out


def _eligible(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64 and t.device.type == "cpu"


def _fp32_kernel(op: torch._ops.OpOverload) -> Callable:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):
            def cast(a: object) -> object:
                return a.float() if _eligible(a) else a
            return op(*[cast(a) for a in args], **{k: cast(v) for k, v in kwargs.items()})
    return kernel


def _fp32_out_kernel(op: torch._ops.OpOverload) -> Callable:
    names = [a.name for a in op._schema.arguments]
    at = names.index("dtype")

    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):
            given = args[at] if len(args) > at else kwargs.get("dtype")
            if given is None and args and _eligible(args[0]):
                if len(args) > at:
                    args = (*args[:at], torch.float32, *args[at + 1 :])
                else:
                    kwargs = {**kwargs, "dtype": torch.float32}
            return op(*args, **kwargs)
    return kernel


def _overload(name: str) -> torch._ops.OpOverload:
    base, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, base), overload or "default")


@contextlib.contextmanager
def _cuda_autocast_lists() -> Iterator[None]:
    """AutocastCPU follows CUDA autocast's op lists while inside (registrations removed on exit)."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            for name in CUDA_FP32_OPS:
                lib.impl(name, _fp32_kernel(_overload(name)), "AutocastCPU")
            for name in CUDA_FP32_OUT_OPS:
                lib.impl(name, _fp32_out_kernel(_overload(name)), "AutocastCPU")
        yield
    finally:
        lib._destroy()


@contextlib.contextmanager
def emulate(policy: KernelPolicy) -> Iterator[_GpuFunctions | None]:
    """Run the enclosed step with `policy`'s kernel choices (yields the mode that counts attention kernels)."""
    with contextlib.ExitStack() as stack:
        if policy.autocast_ops == "cuda":
            stack.enter_context(_cuda_autocast_lists())
        mode = None
        if policy.attention != "native" or policy.bool_dropout_masks:
            mode = stack.enter_context(_GpuFunctions(policy))
        yield mode


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


def workspace_bytes(func: torch._ops.OpOverload, args: tuple) -> int:
    """Scratch bytes a CUDA kernel allocates inside `func` besides its outputs (0 when none is modelled).

    - efficient-attention backward: fp32 dQ accumulation tiles `(B, H, ceil64(L), ceil64(D))` (sm70+
      kernels split the keys) and the `(B, H, L)` fp32 `delta`;
    - flash-attention backward: fp32 `dq_accum (B, H, ceil128(L), ceil32(D))` and `softmax_d (B, H, ceil128(L))`;
    - `_safe_softmax`: the softmax and its bool `-inf` mask before the masked-row `where`.
    """
    aten = torch.ops.aten
    if func is aten._scaled_dot_product_efficient_attention_backward.default:
        q = args[1]
        b, h, length, d = q.shape
        return b * h * (_align(length, 64) * _align(d, 64) + length) * 4
    if func is aten._scaled_dot_product_flash_attention_backward.default:
        q = args[1]
        b, h, length, d = q.shape
        return b * h * _align(length, 128) * (_align(d, 32) + 1) * 4
    if func is aten._safe_softmax.default:
        x = args[0]
        return x.numel() * (x.element_size() + 1)
    return 0


def cpu_output_bytes(func: torch._ops.OpOverload, args: tuple) -> int | None:
    """Storage bytes of `func`'s output where the CPU kernel differs from its meta kernel (None: as meta).

    CPU `mse_loss` with a mean or sum reduction returns its scalar inside the elementwise loss buffer
    (ATen's CPU-only `mean_out` path), so the whole buffer lives as long as the loss; CUDA writes a fresh scalar.
    """
    if func is torch.ops.aten.mse_loss.default:
        reduction = args[2] if len(args) > 2 else 1
        if reduction != 0:
            return torch.broadcast_shapes(args[0].shape, args[1].shape).numel() * args[0].element_size()
    return None
