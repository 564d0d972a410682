"""Every backend this machine can run, on the same inputs, against one float64 truth.

One table of cases chosen to break kernels: lengths that are not multiples of the tile or the
stride (63, 97), head dims that are not powers of two (24, 40), key padding that empties whole
rows, a pattern whose own predicate leaves rows empty, per-head patterns, causal and
bidirectional. Forward and the three gradients, with the project's tolerance rule
(``tolerance.py``: a few times the error of plain PyTorch in the same dtype).

Backends: "reference", "blocked" and "sdpa-masked" everywhere; "triton" on a GPU or under
Triton's interpreter on the CPU (tests/conftest.py turns it on; sizes stay small for it);
"flex" on a GPU with gradients, on the CPU forward only (FlexAttention has no CPU backward).
"""
import warnings

import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer import sparse_attention
from sparse_transformer.ops import BACKENDS
from tolerance import check_backends

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def _triton_runs() -> bool:
    if "triton" not in BACKENDS:
        return False
    from sparse_transformer.ops.triton.backend import is_available

    return is_available(DEVICE)


def _backends():
    """name -> (function, with gradients) for every backend that can run here."""
    out = {}
    for name in ("reference", "blocked", "sdpa-masked", "triton", "flex"):
        if name not in BACKENDS or (name == "triton" and not _triton_runs()):
            continue
        fn = (lambda q, k, v, _name=name, **kw: sparse_attention(q, k, v, backend=_name, **kw))
        out[name] = (fn, name != "flex" or CUDA)
    return out


# (pattern, batch, heads, n, head_dim, causal, padding)
CASES = [
    (P.Strided(8), 2, 2, 63, 24, True, True),
    (P.Strided(8), 1, 2, 97, 40, False, False),
    (P.Fixed(16, 4, distinct_heads=True), 1, 3, 97, 24, True, True),
    (P.Fixed(16, 4), 2, 1, 63, 40, False, True),
    (P.Summary(16, 4, exclude_own_block=True), 1, 2, 63, 24, True, False),  # rows 0-15 empty
    (P.PerHead((P.Local(4), P.Column(8))), 1, 2, 97, 24, True, True),
    (P.Local(5) | P.Global((3,)) | P.Random(1, 16, seed=2, distinct_heads=True),
     1, 2, 63, 40, False, True),
]


def _case_id(case):
    pattern, b, h, n, d, causal, pad = case
    return f"{pattern.name}-b{b}h{h}n{n}d{d}-{'causal' if causal else 'bidir'}" + \
        ("-pad" if pad else "")


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_every_backend_agrees_with_the_truth(case):
    pattern, b, h, n, d, causal, pad = case
    g = torch.Generator().manual_seed(n * 31 + d)
    q, k, v = (torch.randn(b, h, n, d, generator=g).to(DEVICE) for _ in range(3))
    kpm = None
    if pad:
        kpm = torch.rand(b, n, generator=g) < 0.2
        kpm[-1, : n // 2] = True  # causal: the early queries of the last entry see nothing
        kpm = kpm.to(DEVICE)
    backends = _backends()
    assert {"reference", "blocked", "sdpa-masked"} <= set(backends)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FlexAttention's eager-mode warning on the CPU
        failures = check_backends(backends, q, k, v, pattern, causal, kpm)
    assert not failures, "\n".join(failures)


def test_the_backends_this_machine_runs():
    """The interpreter makes the Triton kernels part of every CPU run of this file."""
    names = set(_backends())
    if "triton" in BACKENDS and (CUDA or _triton_runs()):
        assert "triton" in names
    assert {"reference", "blocked", "sdpa-masked"} <= names
