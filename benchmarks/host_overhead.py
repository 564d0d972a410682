"""Host (CPU) time of one eager sparse attention call through the "triton" backend: the Python
path this project controls, from ``sparse_attention`` to the kernels' launch calls.

It runs anywhere, without a GPU. The tensors are CPU tensors of the real shape (allocated, never
computed on), and Triton's compiled-kernel call is replaced by a no-op at the exact point where the
fast launch path calls it. Everything before that point runs as in an eager call on a GPU: argument
checks, the choice of backend, the plan cache, the autograd Function, the allocations and the
per-launch cache key, with the GPU's tile size and launch options. Not counted: Triton's own
launcher and the CUDA driver (not measured here; ``benchmarks/gpu.py --profile`` measures a whole
call on a GPU), and zero-filling: ``torch.zeros`` runs as ``torch.empty`` here, where a GPU would
add one asynchronous fill per call of it. Gradients are taken with ``torch.autograd.grad``, so
nothing is accumulated into ``.grad`` (real arithmetic on a CPU, an asynchronous kernel on a GPU).

Beside the patterns it prints a floor: an autograd Function that only allocates its outputs and
gradients (the least any eager custom attention pays here), timed the same way; and, from a
separate pass, the part of each call spent inside the backend's ``_forward`` and ``_backward``
(the rest is argument checks, the plan lookup and the autograd machinery).

    python benchmarks/host_overhead.py [--n 4096] [--heads 16] [--calls 400] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.ops import dispatch  # noqa: E402
from sparse_transformer.ops.triton import backend as tb  # noqa: E402


class _NoLaunch:
    """Stands in for a compiled Triton kernel: ``compiled[grid](*args)`` does nothing."""

    calls = 0

    def __getitem__(self, grid):
        return self._run

    def _run(self, *args):
        _NoLaunch.calls += 1


class _Compiled:
    """Stands in for the launch cache: every key finds the no-op kernel."""

    def __init__(self):
        self.kernel = _NoLaunch()

    def get(self, key, default=None):
        return self.kernel

    def clear(self):
        pass


def _check_cpu(q) -> None:
    """The reads of ``check_inputs`` (dtype, head dim, device), with the CPU allowed."""
    if q.dtype not in tb.DTYPES or q.shape[-1] > tb.MAX_HEAD_DIM or q.device.type != "cpu":
        raise ValueError("host_overhead.py runs CPU tensors only")
    tb.triton_importable()


def _torch_without_fills():
    """``torch`` as the backend sees it, with ``zeros`` allocating without filling."""
    proxy = types.ModuleType("torch")
    proxy.__dict__.update(torch.__dict__)
    proxy.zeros = torch.empty
    return proxy


def stub_launches() -> None:
    """The fast launch path with Triton's compiled-kernel call replaced by a no-op."""
    tb.check_inputs = _check_cpu  # the device checks would refuse the CPU without Triton's
    tb.interpreting = lambda: False  # interpreter; the fast path is the one a GPU takes
    tb.default_block = lambda device: 64  # the GPU's tile size and launch options
    gpu, opts = torch.device("cuda"), tb._launch_opts
    tb._launch_opts = lambda role, device, *case: opts(role, gpu, *case)
    tb.torch = _torch_without_fills()
    tb.FAST_LAUNCH = True
    tb._COMPILED = _Compiled()


class _Floor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def per_call_us(fn, calls: int, rounds: int = 10) -> float:
    for _ in range(20):
        fn()
    best = float("inf")
    for _ in range(rounds):  # the best round: the least disturbed by other work
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def inside_us(call, calls: int) -> tuple[float, float]:
    """Microseconds per call spent inside the backend's ``_forward`` and ``_backward`` (argument
    set-up, allocations, launches), from a separate pass with those two timed."""
    spent = {"_forward": 0.0, "_backward": 0.0}
    originals = {name: getattr(tb, name) for name in spent}

    def timed(name):
        fn = originals[name]

        def run(*args):
            t0 = time.perf_counter()
            out = fn(*args)
            spent[name] += time.perf_counter() - t0
            return out
        return run

    for name in spent:
        setattr(tb, name, timed(name))
    try:
        for _ in range(calls):
            call()
    finally:
        for name, fn in originals.items():
            setattr(tb, name, fn)
    return spent["_forward"] / calls * 1e6, spent["_backward"] / calls * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    stub_launches()
    b, h, n, d = 1, args.heads, args.n, args.head_dim
    q, k, v = (torch.empty(b, h, n, d, dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    stride = 1 << max(4, round(n ** 0.5).bit_length() - 1)
    patterns = {"strided": P.Strided(stride), "fixed": P.Fixed(stride, stride // 4),
                "local": P.Local(2 * stride)}

    def floor():
        out, _ = _Floor.apply(q, k, v)
        torch.autograd.grad(out, (q, k, v), out)

    rows = []
    for name, pat in patterns.items():
        def call(pat=pat):
            out = dispatch.sparse_attention(q, k, v, pat, backend="triton")
            torch.autograd.grad(out, (q, k, v), out)

        call()
        _NoLaunch.calls = 0
        call()
        launches = _NoLaunch.calls
        fwd_us, bwd_us = inside_us(call, args.calls)
        rows.append(dict(case=f"{name}: {pat.name}", fwd_bwd_us=per_call_us(call, args.calls),
                         launches=launches, in_forward_us=fwd_us, in_backward_us=bwd_us))
    rows.insert(0, dict(case="floor (empty autograd Function)",
                        fwd_bwd_us=per_call_us(floor, args.calls), launches=0,
                        in_forward_us=None, in_backward_us=None))
    print(f"host time of one eager forward+backward call, launches stubbed; B={b}, H={h}, n={n}, "
          f"d={d}, bf16; torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}, 1 thread")
    print(f"{'case':<58} {'us':>8} {'launches':>9} {'in _forward':>12} {'in _backward':>13}")
    for r in rows:
        inside = ("" if r["in_forward_us"] is None else
                  f" {r['in_forward_us']:12.1f} {r['in_backward_us']:13.1f}")
        print(f"{r['case']:<58} {r['fwd_bwd_us']:8.1f} {r['launches']:9d}{inside}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(n=n, heads=h, head_dim=d, torch=torch.__version__, rows=rows), f,
                      indent=1)
    return rows


if __name__ == "__main__":
    main()
