"""The project's accuracy rule: a fast path may be at most a few times as wrong as plain PyTorch.

Truth is the reference in float64. "Plain PyTorch" is the same reference computed in the tested
dtype. A backend passes when its relative error against the truth is within ``factor`` times the
plain computation's (2x for outputs, 3x for gradients), with a floor of a few ulps of the dtype
so that exact-in-float64 cases do not demand zero error.
"""
from __future__ import annotations

import torch

from sparse_transformer.ops import reference_attention

_EPS = {torch.float64: 1e-15, torch.float32: 1e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}


def rel_err(x: torch.Tensor, truth: torch.Tensor) -> float:
    x, truth = x.double(), truth.double()
    assert not torch.isnan(x).any(), "NaN in result"
    den = truth.norm().item()
    return (x - truth).norm().item() / (den if den > 0 else 1.0)


def attention_and_grads(fn, q, k, v, dout, **kw):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v, **kw)
    grads = torch.autograd.grad(out, (q, k, v), dout.to(out.dtype), allow_unused=False)
    return (out.detach(), *grads)


def check_against_reference(fn, q, k, v, pattern, causal=True, key_padding_mask=None,
                            out_factor=2.0, grad_factor=3.0, **kw):
    """Compare ``fn`` (same signature as sparse_attention) with the reference; raise on failure."""
    errors = check_backends({"fn": (fn, True)}, q, k, v, pattern, causal, key_padding_mask,
                            out_factor, grad_factor, **kw)
    assert not errors, errors[0]


def check_backends(fns: dict, q, k, v, pattern, causal=True, key_padding_mask=None,
                   out_factor=2.0, grad_factor=3.0, **kw) -> list[str]:
    """Every ``name: (fn, with_grads)`` of ``fns`` against one truth and one plain computation.

    Returns the failures, one line each (empty when all pass), so a caller can report every
    backend that disagrees at once. Backends without a backward (``with_grads`` False) are
    checked on their output only."""
    dout = torch.randn_like(q, dtype=torch.float64)
    args = dict(pattern=pattern, causal=causal, key_padding_mask=key_padding_mask)
    truth = attention_and_grads(reference_attention, q.double(), k.double(), v.double(),
                                dout, **args)
    plain = attention_and_grads(reference_attention, q, k, v, dout,
                                compute_dtype=q.dtype, **args)
    names = ("out", "dq", "dk", "dv")
    failures = []
    for backend, (fn, with_grads) in fns.items():
        if with_grads:
            ours = attention_and_grads(fn, q, k, v, dout, **args, **kw)
        else:
            with torch.no_grad():
                ours = (fn(q, k, v, **args, **kw),)
        for name, t, p, o in zip(names, truth, plain, ours):
            if o.shape != t.shape or o.dtype != q.dtype:
                failures.append(f"{backend} {name}: shape {tuple(o.shape)} dtype {o.dtype}")
                continue
            factor = out_factor if name == "out" else grad_factor
            bound = factor * rel_err(p, t) + 4 * _EPS[q.dtype]
            o = o.double()
            if torch.isnan(o).any():
                failures.append(f"{backend} {name}: NaN in result")
                continue
            err = rel_err(o, t)
            if not err <= bound:
                failures.append(f"{backend} {name}: relative error {err:.3e} > bound {bound:.3e}")
    return failures
