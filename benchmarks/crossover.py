"""Measures the crossover tables that ``backend="auto"`` reads (src/sparse_transformer/ops/crossover.json
for GPUs, crossover_cpu.json for CPUs).

On a GPU (the default), for each pattern kind (Strided(128), Fixed(128, 32), Local(256)) and length, it times one eager
forward + backward call of every GPU backend that can run it ("triton", "flex", "sdpa-masked"
up to its length bound), with host time included (``triton.testing.do_bench`` median, events
around whole calls), and records the fastest. Dense causal SDPA (flash) is timed beside them as
the reference a user compares with. Prints a table and writes the crossover table.

    python benchmarks/crossover.py --write src/sparse_transformer/ops/crossover.json

On a CPU (``--device cpu``, float32), the backends that train there are timed: "blocked" (the
pure-PyTorch path, memory growing with the allowed pairs) and "sdpa-masked" (a dense product under
the pattern's mask), with dense causal SDPA beside them; the median of ``--repeats`` whole
forward + backward calls after two warm-up calls. Each length gets the paper-style pattern of its
size (stride about sqrt(n), a power of two from 16: Strided(l), Fixed(l, l/4), Local(2l)), so the
short lengths of a CPU run (the Quickstart demo: Fixed(16, 4) at 128) are measured with patterns
that are sparse there.

    python benchmarks/crossover.py --device cpu --write src/sparse_transformer/ops/crossover_cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.ops import sparse_attention  # noqa: E402
from sparse_transformer.ops import masked  # noqa: E402

PATTERNS = {"Strided": P.Strided(128), "Fixed": P.Fixed(128, 32), "Local": P.Local(256)}
BACKENDS = ("triton", "flex", "sdpa-masked")
CPU_BACKENDS = ("blocked", "sdpa-masked")


def cpu_patterns(n: int) -> dict:
    """Paper-style patterns for length n: stride about sqrt(n), a power of two, at least 16."""
    stride = max(16, 2 ** round(math.log2(math.sqrt(n))))
    return {"Strided": P.Strided(stride), "Fixed": P.Fixed(stride, stride // 4),
            "Local": P.Local(2 * stride)}


def time_cpu(fn, q, k, v, repeats: int) -> float:
    """Median milliseconds of one forward + backward call on the CPU."""
    g = torch.randn_like(q)
    times = []
    for i in range(repeats + 2):
        q.grad = k.grad = v.grad = None
        t0 = time.perf_counter()
        fn(q, k, v).backward(g)
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def main_cpu(args) -> int:
    torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.n.split(",")]
    head_dims = [int(x) for x in str(args.d).split(",")]
    print(f"device cpu ({os.cpu_count()} cores, {args.threads} threads) | torch "
          f"{torch.__version__} | B={args.batch} H={args.heads} d={head_dims} fp32, "
          "fwd+bwd ms per call (median)")
    entries, rows = [], []
    for d in head_dims:
        for kind in ("Strided", "Fixed", "Local"):
            best = []
            for n in lengths:
                pattern = cpu_patterns(n)[kind]
                torch.manual_seed(0)
                q, k, v = (torch.randn(args.batch, args.heads, n, d, requires_grad=True)
                           for _ in range(3))
                ms = {"dense": time_cpu(lambda a, b, c: F.scaled_dot_product_attention(
                    a, b, c, is_causal=True), q, k, v, args.repeats)}
                for name in CPU_BACKENDS:
                    if name == "sdpa-masked" and n > masked.MAX_N:
                        continue
                    ms[name] = time_cpu(lambda a, b, c, name=name: sparse_attention(
                        a, b, c, pattern, backend=name), q, k, v, args.repeats)
                choice = min((m for m in ms if m != "dense"), key=ms.get)
                best.append(choice)
                rows.append((kind, d, n, repr(pattern), ms, choice))
                print(f"| {kind} | d={d} | {n} | {pattern!r} | "
                      + " | ".join(f"{m} {t:.2f}" for m, t in ms.items())
                      + f" | best {choice} ({ms['dense'] / ms[choice]:.2f}x dense) |", flush=True)
            entries.append(dict(kind=kind, head_dim=d, dtype="fp32", n=lengths, best=best,
                                pattern="stride about sqrt(n): " + ", ".join(
                                    repr(cpu_patterns(n)[kind]) for n in lengths)))
    table = dict(measured_on=f"CPU, {os.cpu_count()} cores, {args.threads} threads",
                 torch=torch.__version__, date=datetime.date.today().isoformat(),
                 how=f"benchmarks/crossover.py --device cpu: B={args.batch}, H={args.heads}, "
                     f"fp32, median of {args.repeats} forward+backward calls",
                 entries=entries,
                 timings=[dict(kind=k, head_dim=d, n=n, pattern=p, ms=ms, best=c)
                          for k, d, n, p, ms, c in rows])
    if args.write:
        tmp = args.write + ".tmp"
        with open(tmp, "w") as f:
            json.dump(table, f, indent=1)
        os.replace(tmp, args.write)
        print(f"wrote {args.write}")
    return 0


def time_call(fn, q, k, v) -> float:
    from triton.testing import do_bench

    g = torch.randn_like(q)

    def step():
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(g)

    return do_bench(step, warmup=10, rep=60, return_mode="median")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--n", default=None,
                    help="lengths (default: 1024..16384 on a GPU, 128..4096 on a CPU)")
    ap.add_argument("--batch", type=int, default=None, help="default: 2 on a GPU, 8 on a CPU")
    ap.add_argument("--heads", type=int, default=None, help="default: 8 on a GPU, 4 on a CPU")
    ap.add_argument("--d", default=None, help="head dims (default: 64 on a GPU, 32,64 on a CPU)")
    ap.add_argument("--threads", type=int, default=2, help="--device cpu: torch threads")
    ap.add_argument("--repeats", type=int, default=7, help="--device cpu: timed calls")
    ap.add_argument("--write", default="", help="path of the crossover table to write")
    args = ap.parse_args(argv)
    cpu = args.device == "cpu"
    args.n = args.n or ("128,256,512,1024,2048,4096" if cpu else "1024,2048,4096,8192,16384")
    args.batch = args.batch or (8 if cpu else 2)
    args.heads = args.heads or (4 if cpu else 8)
    args.d = args.d or ("32,64" if cpu else "64")
    if cpu:
        return main_cpu(args)
    args.d = int(args.d)
    torch._dynamo.config.recompile_limit = 256
    dtype = torch.bfloat16
    import triton

    dev = torch.cuda.get_device_name()
    print(f"device {dev} | torch {torch.__version__} | triton {triton.__version__} | "
          f"B={args.batch} H={args.heads} d={args.d} bf16, fwd+bwd ms per eager call")
    lengths = [int(x) for x in args.n.split(",")]
    entries, rows = [], []
    for kind, pattern in PATTERNS.items():
        best = []
        for n in lengths:
            q, k, v = (torch.randn(args.batch, args.heads, n, args.d, device="cuda", dtype=dtype,
                                   requires_grad=True) for _ in range(3))
            ms = {"dense": time_call(lambda a, b, c: F.scaled_dot_product_attention(
                a, b, c, is_causal=True), q, k, v)}
            for name in BACKENDS:
                if name == "sdpa-masked" and n > masked.MAX_N:
                    continue
                try:
                    ms[name] = time_call(lambda a, b, c, name=name: sparse_attention(
                        a, b, c, pattern, backend=name), q, k, v)
                except Exception as e:  # noqa: BLE001 - a backend that fails is not chosen
                    print(f"  {kind} n={n} {name} failed: {type(e).__name__}: {str(e)[:120]}")
            choice = min((m for m in ms if m != "dense"), key=ms.get)
            best.append(choice)
            rows.append((kind, n, ms, choice))
            print(f"| {kind} | {n} | " + " | ".join(f"{m} {t:.3f}" for m, t in ms.items())
                  + f" | best {choice} ({ms['dense'] / ms[choice]:.2f}x dense) |", flush=True)
            del q, k, v
            torch.cuda.empty_cache()
        entries.append(dict(kind=kind, head_dim=args.d, dtype="16bit", n=lengths, best=best,
                            batch_heads=args.batch * args.heads, pattern=repr(pattern)))
    table = dict(measured_on=dev, torch=torch.__version__, triton=triton.__version__,
                 date=datetime.date.today().isoformat(),
                 how=f"benchmarks/crossover.py: B={args.batch}, H={args.heads}, d={args.d}, bf16, "
                     "fastest eager forward+backward call, host time included",
                 entries=entries,
                 timings=[dict(kind=k, n=n, ms=ms, best=c) for k, n, ms, c in rows])
    if args.write:
        with open(args.write, "w") as f:
            json.dump(table, f, indent=1)
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
