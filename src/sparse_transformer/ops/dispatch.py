"""``sparse_attention``: one entry point, argument checks, and the choice of backend.

Every backend takes the same arguments and returns the same thing. ``backend="auto"`` picks the
fastest correct path for the device, dtype and pattern; ``force_backend`` overrides the choice
for tests. Registered backends: "reference" (dense masked, the oracle) and "blocked" (pure
PyTorch); GPU backends register themselves here when they are importable.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F

from ..patterns import Dense, Pattern
from .blocked import blocked_attention
from .reference import reference_attention

BACKENDS: dict[str, Callable] = {"reference": reference_attention, "blocked": blocked_attention}
_FORCED: list[str] = []
_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def register_backend(name: str, fn: Callable) -> None:
    BACKENDS[name] = fn


@contextlib.contextmanager
def force_backend(name: str):
    """Within this context, ``backend="auto"`` resolves to ``name`` (for tests)."""
    _check_backend_name(name)
    _FORCED.append(name)
    try:
        yield
    finally:
        _FORCED.pop()


def _check_backend_name(name):
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {name!r}")


def choose_backend(q: torch.Tensor, pattern: Pattern, causal: bool, key_padding_mask) -> str:
    if _FORCED:
        return _FORCED[-1]
    if isinstance(pattern, Dense):
        return "sdpa"
    if q.is_cuda and "triton" in BACKENDS and q.dtype in (torch.float16, torch.bfloat16,
                                                           torch.float32) and q.shape[-1] <= 128:
        return "triton"
    if q.is_cuda and "flex" in BACKENDS and q.dtype != torch.float64:
        return "flex"
    return "blocked"


def _sdpa_dense(q, k, v, pattern, causal=True, key_padding_mask=None, scale=None,
                return_lse=False):
    if return_lse:
        return blocked_attention(q, k, v, pattern, causal, key_padding_mask, scale, True)
    if key_padding_mask is not None:
        keep = ~key_padding_mask[:, None, None, :]
        if causal:
            n = q.shape[-2]
            keep = keep & torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale)
        # Rows with no allowed key come out as NaN from SDPA; they must be zeros.
        return torch.where(keep.any(-1, keepdim=True), out, torch.zeros_like(out))
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def validate(q, k, v, pattern, causal, key_padding_mask, scale):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (batch, heads, seq, head_dim), got {tuple(t.shape)}")
        if t.dtype not in _FLOAT:
            raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"k must have q's shape {tuple(q.shape)} and v (batch, heads, seq, *): "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if v.shape[-1] != q.shape[-1]:
        raise ValueError(f"v's head_dim must equal q's ({q.shape[-1]}), got {v.shape[-1]}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a sparse_transformer.patterns.Pattern, got {type(pattern).__name__}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if key_padding_mask is not None:
        b, _, n, _ = q.shape
        if (not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool
                or tuple(key_padding_mask.shape) != (b, n)):
            raise ValueError("key_padding_mask must be a bool tensor of shape (batch, seq) = "
                             f"{(b, n)}, True where a key is padding; got "
                             f"{getattr(key_padding_mask, 'dtype', type(key_padding_mask))} "
                             f"{tuple(getattr(key_padding_mask, 'shape', ()))}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask must be on q's device {q.device}, "
                             f"got {key_padding_mask.device}")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale must be a positive number or None, got {scale!r}")


def sparse_attention(q, k, v, pattern: Pattern, causal: bool = True, key_padding_mask=None,
                     scale=None, backend: str = "auto", return_lse: bool = False):
    """Attention restricted to ``pattern``.

    q, k, v: (batch, heads, seq, head_dim), one dtype and device. ``key_padding_mask``: optional
    bool (batch, seq), True marks padding keys (PyTorch's convention). ``scale`` defaults to
    head_dim ** -0.5. Returns a tensor of q's shape and dtype (and the float32 log-sum-exp per
    query, shape (batch, heads, seq), with ``return_lse=True``). Queries with no allowed key give
    zeros and zero gradients.
    """
    validate(q, k, v, pattern, causal, key_padding_mask, scale)
    if backend == "auto":
        backend = choose_backend(q, pattern, causal, key_padding_mask)
    elif backend != "sdpa":
        _check_backend_name(backend)
    fn = _sdpa_dense if backend == "sdpa" else BACKENDS[backend]
    # Backends choose their own precision for the inputs' dtype (fp32 accumulation for half
    # inputs); an enclosing autocast region must not recast their internal products.
    with torch.autocast(q.device.type, enabled=False):
        return fn(q, k, v, pattern, causal=causal, key_padding_mask=key_padding_mask,
                  scale=scale, return_lse=return_lse)


def _register_gpu_backends() -> None:
    """Register "triton" and "flex" where their packages import; never fails without CUDA."""
    try:
        from .triton_backend import triton_attention, triton_importable

        if triton_importable():
            register_backend("triton", triton_attention)
    except Exception:  # a broken Triton install must not break the package
        pass
    try:
        from .flex import flex_attention_backend, flex_importable

        if flex_importable():
            register_backend("flex", flex_attention_backend)
    except Exception:
        pass


_register_gpu_backends()
