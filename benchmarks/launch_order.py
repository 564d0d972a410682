"""A model of how long a Triton launch takes in each launch order, from the real plans (CPU).

The GPU starts a launch's programs in grid order and gives each free slot the next one. Our
launches are (programs per head, batch x heads) grids whose programs are ordered most work first
within a head; head after head, or with the heads interleaved (``HEADS_FAST``, see
``ops/triton/kernels._ids``): every head's first program, then every head's second, ... (the
backend picks per dk/dv launch: ``plan.dkdv_schedule``). This
script builds the plans on the CPU, takes each program's work as its computed tile pairs plus
one (its own loads and stores), and simulates greedy dispatch onto ``--sms`` x programs-per-SM
slots. It prints each pass's modelled time against a perfectly balanced one (total work / slots)
in both orders. It models scheduling alone: not memory traffic, L2 locality or clock behaviour,
so what it predicts must be measured (``benchmarks/gpu.py`` with SPARSE_TRANSFORMER_HEADS_FAST=0|1
and SPARSE_TRANSFORMER_SPLIT_ROWS=0|N|auto). The last column splits dk/dv rows longer than
``--split-cap`` tile pairs into pieces (``plan.split_rows``), in the head-after-head order.

    python benchmarks/launch_order.py                       # n = 16384, 16 heads, 132 SMs
    python benchmarks/launch_order.py --n 65536 --heads 8
"""
from __future__ import annotations

import argparse
import heapq
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.ops.triton.plan import (  # noqa: E402
    auto_split_cap, build_plan, dkdv_schedule, split_rows)

PATTERNS = {"fixed": P.Fixed(128, 32), "strided": P.Strided(128), "local": P.Local(256),
            "longformer": P.longformer(128, (0,)), "bigbird": P.bigbird(128, (0,))}


def program_work(ps, head: int = 0) -> list[float]:
    """Computed tile pairs (+1) of each program of one head group, in launch order."""
    rowptr, ent, order = ps.rowptr[head].long(), ps.entries[head].long(), ps.order[head].long()
    counts = ent[:, 4].clamp(min=1)
    return [float(counts[rowptr[t]:rowptr[t + 1]].sum()) + 1.0 for t in order.tolist()]


def makespan(work: list[float], slots: int) -> float:
    free = [0.0] * slots
    end = 0.0
    for w in work:
        t = heapq.heappop(free) + w
        heapq.heappush(free, t)
        end = max(end, t)
    return end


def split_makespan(sp, heads: int, slots: int) -> float:
    """Modelled time of a split pass head after head; each piece of a split row costs one extra
    tile pair (adding its partial sums)."""
    pieces = program_work(sp)
    extra = [1.0 if int(x) >= 0 else 0.0 for x in sp.split[0][sp.order[0].long()]]
    return makespan([w + e for w, e in zip(pieces, extra)] * heads, slots)


def model(pattern, n: int, heads: int, block: int, slots: dict,
          split_cap: "int | str | None" = None) -> list[dict]:
    """Per pass: modelled time over balanced time head after head and heads interleaved, and
    (dk/dv passes, ``split_cap``) head after head with rows split at ``split_cap`` tile pairs
    (``plan.split_rows``; each piece costs one extra tile pair for its partial sums); and
    ``default``: (the backend's default schedule for the pass, its modelled time)."""
    plan = build_plan(pattern, n, heads, True, "cpu", block)
    rows = []
    for role, passes in (("fwd/dq", plan.fwd), ("dk/dv", plan.bwd)):
        for i, ps in enumerate(passes):
            per_head = [program_work(ps, min(h, plan.heads - 1)) for h in range(heads)]
            head_major = [w for ws in per_head for w in ws]
            interleaved = [ws[j] for j in range(len(per_head[0])) for ws in per_head]
            s = slots[role]
            ideal = sum(head_major) / s
            a, b = makespan(head_major, s), makespan(interleaved, s)
            row = dict(role=role, index=i, programs_per_head=len(per_head[0]),
                       longest=max(head_major), head_major=a / ideal, interleaved=b / ideal,
                       gain=a / b, split=None)
            cap = auto_split_cap(ps, heads, s) if split_cap == "auto" else split_cap
            sp = split_rows(ps, cap) if cap and role == "dk/dv" and plan.heads == 1 else None
            if sp is not None:
                row["split"] = split_makespan(sp, heads, s) / ideal
            elif split_cap and role == "dk/dv":
                row["split"] = row["head_major"]  # no row longer than the cap
            row["default"] = ("head after head", row["head_major"])
            if role == "dk/dv":  # what the backend does by default (plan.dkdv_schedule)
                dcap, fast = dkdv_schedule(ps, heads, s)
                if dcap is not None and plan.heads == 1:
                    row["default"] = ("split", split_makespan(split_rows(ps, dcap), heads, s)
                                      / ideal)
                elif fast:
                    row["default"] = ("interleaved", row["interleaved"])
            rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--heads", type=int, default=16, help="batch x heads")
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--fwd-per-sm", type=int, default=3, help="forward/dq programs per SM")
    ap.add_argument("--dkdv-per-sm", type=int, default=2, help="dk/dv programs per SM")
    ap.add_argument("--patterns", default="fixed,strided,local")
    ap.add_argument("--split-cap", default="auto",
                    help="model dk/dv rows split at this many tile pairs, or 'auto' (the cap "
                         "plan.auto_split_cap gives each launch); 0: not modelled")
    args = ap.parse_args(argv)
    if args.split_cap != "auto":
        if not args.split_cap.isdigit():
            ap.error(f"--split-cap must be 'auto' or an integer >= 0, got {args.split_cap!r}")
        args.split_cap = int(args.split_cap)
    for name, value in (("--n", args.n), ("--heads", args.heads), ("--block", args.block),
                        ("--sms", args.sms)):
        if value < 1:
            ap.error(f"{name} must be >= 1, got {value}")
    slots = {"fwd/dq": args.sms * args.fwd_per_sm, "dk/dv": args.sms * args.dkdv_per_sm}
    print(f"n = {args.n:,}, {args.heads} heads, tiles of {args.block}, {args.sms} SMs "
          f"({args.fwd_per_sm} forward/dq and {args.dkdv_per_sm} dk/dv programs per SM)\n")
    print("| pattern | pass | programs per head | longest (tile pairs) | head after head | "
          f"heads interleaved | gain | rows split at {args.split_cap} | default schedule |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.patterns.split(","):
        if name not in PATTERNS:
            ap.error(f"--patterns: names from {', '.join(PATTERNS)}, got {name!r}")
        for r in model(PATTERNS[name], args.n, args.heads, args.block, slots, args.split_cap):
            split = "-" if r["split"] is None else f"{r['split']:.2f}x"
            print(f"| {name} | {r['role']} {r['index']} | {r['programs_per_head']} | "
                  f"{r['longest']:.0f} | {r['head_major']:.2f}x | {r['interleaved']:.2f}x | "
                  f"{r['gain']:.2f}x | {split} | {r['default'][0]} {r['default'][1]:.2f}x |")
    print("\n(times relative to a perfectly balanced launch: total work / slots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
