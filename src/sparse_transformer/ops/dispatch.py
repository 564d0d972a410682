"""``sparse_attention``: one entry point, argument checks, and the choice of backend.

Every backend takes the same arguments and returns the same thing. ``backend="auto"`` picks the
fastest correct path for the device, dtype and pattern; ``force_backend`` overrides the choice
for tests. Registered backends: "reference" (dense masked, the oracle) and "blocked" (pure
PyTorch); GPU backends register themselves here when they are importable.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Callable

import torch
import torch.nn.functional as F

from ..patterns import Dense, Pattern
from .blocked import blocked_attention
from .reference import reference_attention
# Pure PyTorch at import (Triton itself is imported on a kernel's first launch).
from .triton.backend import triton_attention_packed, unpack_qkv

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


def past_int32(t: torch.Tensor) -> bool:
    """Whether an element of ``t`` lies 2**31 or more elements past its first (32-bit offsets
    overflow): a view of a packed q/k/v projection reaches that at 1.4M positions of width 512."""
    far = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()) if size > 0)
    return far >= 2**31 or t.numel() >= 2**31


def choose_backend(q: torch.Tensor, pattern: Pattern, causal: bool, key_padding_mask) -> str:
    """The backend ``backend="auto"`` runs: dense SDPA for the Dense pattern; on a GPU the
    choice the crossover table measured for this pattern kind, length, head dim and dtype
    (``crossover.py``); on a CPU in float32 the CPU table's choice; otherwise triton, then flex, on a
    GPU, and blocked anywhere else. Never flex for tensors whose offsets pass 32 bits (triton
    then: its kernels switch to 64-bit offsets)."""
    if _FORCED:
        return _FORCED[-1]
    if isinstance(pattern, Dense):
        return "sdpa"
    # The table is measured on eager calls, and reading it inside torch.compile would break
    # the graph: compiled graphs take the built-in order (triton's custom op).
    if q.is_cuda and q.dtype != torch.float64 and not torch.compiler.is_compiling():
        from . import crossover, masked

        available = set(BACKENDS)
        if past_int32(q) and "triton" in available:
            available.discard("flex")  # FlexAttention's kernels index in 32 bits; ours in 64
        choice = crossover.pick(type(pattern).__name__, q.shape[-2], q.shape[-1], q.dtype,
                                available, masked.MAX_N, q.shape[0] * q.shape[1])
        if choice is not None:
            return choice
    if q.device.type == "cpu" and q.dtype == torch.float32 and not torch.compiler.is_compiling():
        # Measured on a CPU (crossover_cpu.json): at short lengths a masked dense product beats
        # the blocked path's per-block work.
        from . import crossover, masked

        choice = crossover.pick(type(pattern).__name__, q.shape[-2], q.shape[-1], q.dtype,
                                {"blocked", "sdpa-masked"} & set(BACKENDS), masked.MAX_N,
                                device_type="cpu")
        if choice is not None:
            return choice
    if q.is_cuda and "triton" in BACKENDS and q.dtype in (torch.float16, torch.bfloat16,
                                                           torch.float32) and q.shape[-1] <= 128:
        return "triton"
    if q.is_cuda and "flex" in BACKENDS and q.dtype != torch.float64:
        return "flex"
    return "blocked"


def _sdpa_dense(q, k, v, pattern, causal=True, key_padding_mask=None, scale=None,
                return_lse=False, q_offset=None, query_padding_mask=None):
    """Dense attention through PyTorch's SDPA, for the Dense pattern only (checked by the caller)."""
    if return_lse:
        return blocked_attention(q, k, v, pattern, causal, key_padding_mask, scale, True,
                                 q_offset=q_offset, query_padding_mask=query_padding_mask)
    lq, lk = q.shape[2], k.shape[2]
    q_offset = default_q_offset(lq, lk) if q_offset is None else q_offset
    if k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    aligned = q_offset == 0 and lq == lk
    if key_padding_mask is None and (aligned or not causal):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal and lq > 0, scale=scale)
    else:
        keep = torch.ones(1, 1, 1, lk, dtype=torch.bool, device=q.device)
        if key_padding_mask is not None:
            keep = ~key_padding_mask[:, None, None, :]
        if causal:
            qpos = torch.arange(q_offset, q_offset + lq, device=q.device).view(-1, 1)
            keep = keep & (torch.arange(lk, device=q.device).view(1, -1) <= qpos)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale)
        # Rows with no allowed key come out as NaN from SDPA; they must be zeros.
        out = torch.where(keep.any(-1, keepdim=True), out, torch.zeros_like(out))
    if query_padding_mask is not None:
        out = out.masked_fill(query_padding_mask[:, None, :, None], 0.0)
    return out


def default_q_offset(q_len: int, k_len: int) -> int:
    """Absolute position of query 0 when none is given: the queries are the last ``q_len``
    positions of the keys (decoding against a cache, a prefix), or start at 0 when there are
    more queries than keys."""
    return max(0, k_len - q_len)


def _check_mask(name, mask, shape, device):
    if (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool
            or tuple(mask.shape) != shape):
        what = "key" if name == "key_padding_mask" else "query"
        raise ValueError(f"{name} must be a bool tensor of shape (batch, {what}_len) = {shape}, "
                         f"True where a {what} is padding; got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)} "
                         f"{tuple(getattr(mask, 'shape', ()))}")
    if mask.device != device:
        raise ValueError(f"{name} must be on q's device {device}, got {mask.device}")


def validate(q, k, v, pattern, causal, key_padding_mask, scale, q_offset=None,
             query_padding_mask=None) -> int:
    """Check the arguments of ``sparse_attention``; return the query offset to use."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (batch, heads, seq, head_dim), got {tuple(t.shape)}")
        if t.dtype not in _FLOAT:
            raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    b, h, lq, d = q.shape
    if k.shape[-1] != d or k.shape[0] != b or v.shape[:-1] != k.shape[:-1]:
        raise ValueError("k must have shape (batch, kv_heads, k_len, head_dim) with q's batch "
                         f"{b} and head_dim {d}, and v k's first three sizes: got q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if v.shape[-1] != d:
        raise ValueError(f"v's head_dim must equal q's ({d}), got {v.shape[-1]}")
    if k.shape[1] < 1 or h % k.shape[1]:
        raise ValueError(f"k and v's heads ({k.shape[1]}) must divide q's heads ({h}) "
                         "(grouped-query attention: query head i uses key/value head "
                         f"i // {max(1, h // max(1, k.shape[1]))})")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a sparse_transformer.patterns.Pattern, got {type(pattern).__name__}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    lk = k.shape[2]
    if key_padding_mask is not None:
        _check_mask("key_padding_mask", key_padding_mask, (b, lk), q.device)
    if query_padding_mask is not None:
        _check_mask("query_padding_mask", query_padding_mask, (b, lq), q.device)
    if scale is not None and not (isinstance(scale, (int, float)) and not isinstance(scale, bool)
                                  and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number or None, got {scale!r}")
    if q_offset is None:
        return default_q_offset(lq, lk)
    if isinstance(q_offset, torch.Tensor) and q_offset.numel() == 1 and not q_offset.is_floating_point():
        q_offset = int(q_offset)
    if isinstance(q_offset, bool) or not isinstance(q_offset, int) or q_offset < 0:
        raise ValueError(f"q_offset must be an int >= 0 (the absolute position of query 0) or "
                         f"None (default k_len - q_len = {default_q_offset(lq, lk)}), got {q_offset!r}")
    return q_offset


# Backends that take every argument of ``sparse_attention`` themselves (other k/v lengths and
# head counts, q_offset, query padding). Others are called on the square, one-head-per-query
# form that the adapter below builds for them.
GENERAL_BACKENDS = {"reference", "blocked"}


def _square_call(fn, q, k, v, pattern, causal, key_padding_mask, scale, return_lse, q_offset,
                 query_padding_mask):
    """Run a backend that only takes q, k, v of one shape on any of the shapes above.

    Grouped-query k/v are expanded to q's heads (autograd sums their gradients). Queries that do
    not start at position 0 of the keys are placed at their positions in a frame holding every
    key (zero rows elsewhere, keys past k_len padded): correct, but it computes every row of the
    frame. Padded queries are zeroed (their gradients are then zero too).
    """
    b, h, lq, d = q.shape
    lk = k.shape[2]
    if k.shape[1] != h:
        k, v = (t.repeat_interleave(h // t.shape[1], dim=1) for t in (k, v))
    aligned = q_offset == 0 and lq == lk
    if not aligned:
        n = max(lk, q_offset + lq)
        q = F.pad(q, (0, 0, q_offset, n - q_offset - lq))
        k, v = (F.pad(t, (0, 0, 0, n - lk)) for t in (k, v))
        if key_padding_mask is None:
            key_padding_mask = torch.zeros(b, lk, dtype=torch.bool, device=q.device)
        key_padding_mask = torch.cat([key_padding_mask, key_padding_mask.new_ones(b, n - lk)], 1)
    res = fn(q, k, v, pattern, causal=causal, key_padding_mask=key_padding_mask, scale=scale,
             return_lse=return_lse)
    out, lse = res if return_lse else (res, None)
    if not aligned:
        out = out[:, :, q_offset:q_offset + lq]
        lse = None if lse is None else lse[:, :, q_offset:q_offset + lq]
    if query_padding_mask is not None:
        out = out.masked_fill(query_padding_mask[:, None, :, None], 0.0)
        if lse is not None:
            lse = lse.masked_fill(query_padding_mask[:, None, :], float("-inf"))
    return (out, lse) if return_lse else out


def _empty_attention(q, k, v, return_lse):
    """No queries or no keys: every query has no allowed key, so zeros (and zero gradients,
    still connected to q, k and v) and a log-sum-exp of -inf."""
    out = q * 0 + (k.sum() + v.sum()) * 0
    if not return_lse:
        return out
    lse = torch.full(q.shape[:3], float("-inf"), dtype=torch.float32, device=q.device)
    return out, lse


def sparse_attention(q, k, v, pattern: Pattern, causal: bool = True, key_padding_mask=None,
                     scale=None, backend: str = "auto", return_lse: bool = False, *,
                     q_offset: int | None = None, query_padding_mask=None):
    """Attention restricted to ``pattern``.

    q: (batch, heads, q_len, head_dim); k, v: (batch, kv_heads, k_len, head_dim), one dtype and
    device. ``kv_heads`` divides ``heads`` (grouped-query attention: query head i reads key/value
    head i // (heads // kv_heads)). Query i sits at absolute position ``q_offset + i`` and key j
    at position j; causality (key position <= query position) and the pattern's predicate are
    evaluated on these positions. ``q_offset`` defaults to ``k_len - q_len`` (the queries are
    the last positions: decoding against a cache), or 0 when q_len > k_len.
    ``key_padding_mask``: optional bool (batch, k_len), True marks padding keys (PyTorch's
    convention); ``query_padding_mask``: optional bool (batch, q_len), True marks padding queries,
    whose output and gradients are zero. ``scale`` defaults to head_dim ** -0.5. Returns a
    tensor of q's shape and dtype (and the float32 log-sum-exp per query, shape
    (batch, heads, q_len), with ``return_lse=True``; -inf for rows without keys). Queries with
    no allowed key give zeros and zero gradients.

    ``backend="sdpa"`` is PyTorch's dense SDPA: it takes the Dense pattern only.
    """
    q_offset = validate(q, k, v, pattern, causal, key_padding_mask, scale, q_offset,
                        query_padding_mask)
    aligned = q_offset == 0 and q.shape[2] == k.shape[2]
    if backend == "auto":
        backend = choose_backend(q, pattern, causal, key_padding_mask)
        if (not aligned and not _FORCED and backend not in GENERAL_BACKENDS
                and backend != "sdpa" and 2 * q.shape[2] < k.shape[2]):
            # A square backend would compute every row of the frame; few queries (decoding)
            # are cheaper through the blocked path, which lists only their key blocks.
            backend = "blocked"
    elif backend == "sdpa":
        if not isinstance(pattern, Dense):
            raise ValueError(f"backend='sdpa' is dense attention and takes only the Dense "
                             f"pattern, got {pattern.name}; use backend='auto' or one of "
                             f"{list(BACKENDS)} for a sparse pattern")
    else:
        _check_backend_name(backend)
    if q.numel() == 0 or k.shape[2] == 0:
        return _empty_attention(q, k, v, return_lse)
    extra = dict(q_offset=q_offset, query_padding_mask=query_padding_mask)
    # Backends choose their own precision for the inputs' dtype (fp32 accumulation for half
    # inputs); an enclosing autocast region must not recast their internal products. (Entering
    # a region costs a few microseconds a call, so only when autocast is on.)
    with _no_autocast(q.device.type):
        if backend == "sdpa" or backend in GENERAL_BACKENDS:
            fn = _sdpa_dense if backend == "sdpa" else BACKENDS[backend]
            return fn(q, k, v, pattern, causal=causal, key_padding_mask=key_padding_mask,
                      scale=scale, return_lse=return_lse, **extra)
        return _square_call(BACKENDS[backend], q, k, v, pattern, causal, key_padding_mask,
                            scale, return_lse, **extra)


# Packed q/k/v (``sparse_attention_packed``) through the Triton kernels: off until it has been
# timed and compiled on a GPU; SPARSE_TRANSFORMER_PACKED_QKV=1 turns it on.
PACKED_QKV = os.environ.get("SPARSE_TRANSFORMER_PACKED_QKV", "0") == "1"


def sparse_attention_packed(qkv, heads: int, pattern: Pattern, causal: bool = True,
                            key_padding_mask=None, scale=None, backend: str = "auto"):
    """``sparse_attention`` of q, k, v packed in one (batch, seq, 3 x heads x head_dim) tensor
    (one linear layer's projection: q, then k, then v, heads within each). Where the Triton
    backend runs it (and ``PACKED_QKV`` is on), its kernels read the packed tensor and write its
    gradient whole, with no concatenation of dq, dk, dv; every other backend gets q, k, v as
    views. Returns (batch, heads, seq, head_dim). Under ``torch.compile`` the views path runs:
    the packed call is eager only (it does not trace)."""
    q, k, v = unpack_qkv(qkv, heads)
    if PACKED_QKV and q.numel() > 0 and not torch.compiler.is_compiling():
        validate(q, k, v, pattern, causal, key_padding_mask, scale, None, None)
        chosen = choose_backend(q, pattern, causal, key_padding_mask) if backend == "auto" else backend
        if chosen == "triton":
            with _no_autocast(q.device.type):
                return triton_attention_packed(qkv, heads, pattern, causal, key_padding_mask,
                                               scale)
    return sparse_attention(q, k, v, pattern, causal=causal, key_padding_mask=key_padding_mask,
                            scale=scale, backend=backend)


def _no_autocast(device_type: str):
    # Under torch.compile the region is always entered: the compiler traces an autocast region
    # for free, but not ``torch.amp.is_autocast_available`` (a graph break in every block).
    if torch.compiler.is_compiling() or (torch.amp.is_autocast_available(device_type)
                                         and torch.is_autocast_enabled(device_type)):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def prepare_attention(pattern: Pattern, n: int, heads: int, causal: bool, device,
                      head_dim: int | None = None) -> None:
    """Build now what the GPU backends would build on their first call for this problem (the
    Triton plans, whose tile sizes may be tuned per ``head_dim``), so that it is not allocated
    inside a CUDA-graph capture or a timed step."""
    device = torch.device(device)
    if device.type != "cuda" or isinstance(pattern, Dense) or "triton" not in BACKENDS:
        return
    from .triton.backend import prepare

    prepare(pattern, n, heads, causal, device, head_dim)


def _register_gpu_backends() -> None:
    """Register "triton" and "flex" where their packages import; never fails without CUDA."""
    from .masked import masked_sdpa_attention

    register_backend("sdpa-masked", masked_sdpa_attention)
    try:
        from .triton.backend import triton_attention, triton_importable

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
