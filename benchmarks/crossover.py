"""Measures the crossover table that ``backend="auto"`` reads (src/sparse_transformer/ops/crossover.json).

For each pattern kind (Strided(128), Fixed(128, 32), Local(256)) and length, it times one eager
forward + backward call of every GPU backend that can run it ("triton", "flex", "sdpa-masked"
up to its length bound), with host time included (``triton.testing.do_bench`` median, events
around whole calls), and records the fastest. Dense causal SDPA (flash) is timed beside them as
the reference a user compares with. Prints a table and writes the crossover table.

    python benchmarks/crossover.py --write src/sparse_transformer/ops/crossover.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.ops import sparse_attention  # noqa: E402
from sparse_transformer.ops import masked  # noqa: E402

PATTERNS = {"Strided": P.Strided(128), "Fixed": P.Fixed(128, 32), "Local": P.Local(256)}
BACKENDS = ("triton", "flex", "sdpa-masked")


def time_call(fn, q, k, v) -> float:
    from triton.testing import do_bench

    g = torch.randn_like(q)

    def step():
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(g)

    return do_bench(step, warmup=10, rep=60, return_mode="median")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="1024,2048,4096,8192,16384")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--write", default="", help="path of the crossover table to write")
    args = ap.parse_args(argv)
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
