"""GPU benchmark: dense causal SDPA, FlexAttention (pattern in token order) and our Triton kernels.

One run prints, for n in {4096, 16384, 65536} and head_dim in {64, 128}, bf16, batch 1, the
forward and forward+backward time (median of triton.testing.do_bench) and the effective TFLOP/s
counted on allowed pairs P (causal included): 4 * B * H * d * P forward, 3.5x that forward+backward.
Patterns: Strided(128), Fixed(128, 32), Local(256). FlexAttention gets the pattern as a user would
write it (its predicate, in token order, through create_block_mask); ours gets the same pattern.
Ours and dense are also timed as a CUDA graph (GPU time alone, no host overhead). Writes the
rows as JSON to $OUT/gpu_bench.json when OUT is set.

    python benchmarks/gpu.py                   # the full table
    python benchmarks/gpu.py --n 16384 --d 64  # one size
    python benchmarks/gpu.py --sweep           # also try a few kernel launch configurations
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.ops.triton import backend as tb  # noqa: E402
from sparse_transformer.ops.triton import tuning  # noqa: E402

PATTERNS = {"strided": P.Strided(128), "fixed": P.Fixed(128, 32), "local": P.Local(256)}
# Unions with a global column (one long dk/dv row): not in the default sweep, ask for them by name.
EXTRA = {"longformer": P.longformer(256), "bigbird": P.bigbird(256)}


def heads_for(n: int, d: int) -> int:
    return 16 if (n <= 16384 and d == 64) else 8


def allowed_pairs(pattern, n: int, device) -> int:
    """Causal allowed (query, key) pairs of one head, counted on the GPU in chunks of rows."""
    total, step = 0, max(1, (1 << 26) // n)
    k = torch.arange(n, device=device).view(1, -1)
    h = torch.zeros(1, 1, dtype=torch.long, device=device)
    for s in range(0, n, step):
        q = torch.arange(s, min(n, s + step), device=device).view(-1, 1)
        total += int((pattern.allowed(q, k, h) & (k <= q)).sum())
    return total


def bench(fn, q, k, v, backward: bool) -> float:
    from triton.testing import do_bench

    if not backward:
        return do_bench(lambda: fn(q, k, v), warmup=25, rep=100, return_mode="median")
    g = torch.randn_like(q)

    def step():
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(g)

    return do_bench(step, warmup=25, rep=100, return_mode="median")


def flex_token_order(pattern, n, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q_idx, kv_idx):
        return pattern.allowed(q_idx, kv_idx, h) & (kv_idx <= q_idx)

    # Every case is a new mask_mod closure and shape: let Dynamo keep all of them compiled
    # (past its default limit of 8 it silently falls back to the unfused eager path).
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 1024)
    bm = create_block_mask(mask_mod, None, None, n, n, device=device)
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, block_mask=bm)


def run_case(rows, name, kind, n, h, d, pairs, fn, q, k, v, skip_bwd=False):
    flops = 4 * h * d * pairs
    try:
        tf = bench(fn, q, k, v, False)
        tb_ = None if skip_bwd else bench(fn, q, k, v, True)
    except Exception as e:  # keep the table going; the failure is printed and recorded
        print(f"  {name} {kind} n={n} d={d}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
        rows.append(dict(pattern=name, impl=kind, n=n, H=h, d=d, error=repr(e)[:300]))
        return
    gpu_ms = None
    if kind != "flex_token":  # GPU time alone: the step captured in a CUDA graph and replayed
        try:
            gpu_ms = graph_time(fn, q, k, v, True)
        except Exception as e:
            print(f"  {name} {kind}: CUDA graph capture failed: {e!r}"[:300], flush=True)
    row = dict(pattern=name, impl=kind, n=n, H=h, d=d, pairs=pairs, fwd_ms=tf, fwdbwd_ms=tb_,
               fwdbwd_graph_ms=gpu_ms, fwd_tflops=flops / tf / 1e9,
               fwdbwd_tflops=(3.5 * flops / tb_ / 1e9) if tb_ else None)
    rows.append(row)
    print(f"  {name:8s} {kind:10s} n={n:6d} H={h:2d} d={d:3d} fwd {tf:8.3f} ms "
          f"{row['fwd_tflops']:6.1f} TF/s | fwd+bwd "
          + (f"{tb_:8.3f} ms {row['fwdbwd_tflops']:6.1f} TF/s" if tb_ else "-")
          + (f" | graph f+b {gpu_ms:.3f} ms" if gpu_ms else ""), flush=True)


def profile(n=4096, d=64, name="local"):
    """Where the time of one small forward+backward goes (host vs device), per operator."""
    from torch.profiler import ProfilerActivity, profile as prof

    h = heads_for(n, d)
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    g = torch.randn_like(q)
    pat = PATTERNS[name]
    for _ in range(5):
        tb.triton_attention(q, k, v, pat).backward(g)
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in range(10):
            tb.triton_attention(q, k, v, pat).backward(g)
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="cpu_time_total", row_limit=25), flush=True)
    t0 = time.perf_counter()
    for _ in range(50):
        tb.triton_attention(q, k, v, pat).backward(g)
    host = (time.perf_counter() - t0) / 50
    torch.cuda.synchronize()
    print(f"host time per fwd+bwd call (not synchronized): {host * 1e3:.3f} ms", flush=True)


def graph_time(fn, q, k, v, backward: bool) -> float:
    """GPU time alone (no host overhead): the call captured in a CUDA graph, replayed."""
    from triton.testing import do_bench

    g = torch.randn_like(q)

    def step():
        out = fn(q, k, v)
        if backward:
            out.backward(g)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            q.grad = k.grad = v.grad = None
            step()
        q.grad = k.grad = v.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=s):
            step()
    torch.cuda.current_stream().wait_stream(s)
    t = do_bench(graph.replay, warmup=10, rep=50, return_mode="median")
    q.grad = k.grad = v.grad = None
    return t


class SettingsAB:
    """An A/B of backend settings in one process (``launch_schedule.py``, ``tma.py``): the same
    bf16 q, k, v (batch 1, seeded) for every setting, dense SDPA timed once as the yardstick,
    and one table row per (pattern, setting)."""

    COLUMNS = ("fwd ms | f+b ms | fwd GPU ms | f+b GPU ms | share of dense (GPU) | bwd/fwd (GPU) "
               "| max grad diff vs first")

    def __init__(self, n: int, d: int, first_columns: str, device="cuda", dtype=torch.bfloat16):
        self.n, self.d, self.device = n, d, device
        self.h = heads_for(n, d)
        torch.manual_seed(0)
        self.q, self.k, self.v = (torch.randn(1, self.h, n, d, device=device, dtype=dtype,
                                              requires_grad=True) for _ in range(3))
        self.g = torch.randn_like(self.q)
        dense = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
        q, k, v = self.q, self.k, self.v
        self.dense_gpu = graph_time(dense, q, k, v, True)
        name = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else device
        print(f"{name} | torch {torch.__version__} | n={n} d={d} "
              f"H={self.h} | dense f+b eager {bench(dense, q, k, v, True):.3f} ms, GPU "
              f"{self.dense_gpu:.3f} ms", flush=True)
        print(f"| {first_columns} | {self.COLUMNS} |")
        print("|" + "---|" * (first_columns.count("|") + self.COLUMNS.count("|") + 2))
        self.first = None

    def pattern(self, pattern) -> None:
        """Start a pattern: its allowed pairs, and gradients compared from its first setting."""
        self.pat, self.pairs = pattern, allowed_pairs(pattern, self.n, self.device)
        self.first = None

    def row(self, first_cells: str) -> None:
        """Time ``tb.triton_attention`` on the current pattern under the settings in force."""
        q, k, v = self.q, self.k, self.v
        fn = lambda q, k, v, pat=self.pat: tb.triton_attention(q, k, v, pat)  # noqa: E731
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(self.g)
        grads = [t.grad.float().clone() for t in (q, k, v)]
        self.first = self.first or grads
        diff = max(float((a - b).abs().max()) for a, b in zip(grads, self.first))
        fwd, fb = bench(fn, q, k, v, False), bench(fn, q, k, v, True)
        fb_gpu, fwd_gpu = graph_time(fn, q, k, v, True), graph_time(fn, q, k, v, False)
        n = self.n
        share = (self.pairs / fb_gpu) / ((n * (n + 1) // 2) / self.dense_gpu)
        print(f"| {first_cells} | {fwd:.3f} | {fb:.3f} | {fwd_gpu:.3f} | {fb_gpu:.3f} | "
              f"{100 * share:.0f}% | {(fb_gpu - fwd_gpu) / fwd_gpu:.2f} | {diff:.2e} |",
              flush=True)


def sweep(n=16384, d=64, patterns=None):
    """Per kernel role (fwd, dq, dkdv), try tile sizes, warps and pipeline stages at one size;
    GPU time from CUDA graphs, so host overhead does not blur the comparison."""
    h = heads_for(n, d)
    default = {r: dict(c) for r, c in tb.TUNING.items()}
    fuse, table_on = tb.FUSE_BWD_BELOW, tuning.USE_TABLE
    tb.FUSE_BWD_BELOW = 0
    tuning.USE_TABLE = False  # every call takes TUNING, which the sweep sets
    out = []
    for name in patterns or PATTERNS:
        pat = PATTERNS[name]
        for role in ("fwd", "dq", "dkdv"):
            best = None
            for block in (64, 128):
                for warps in (4, 8):
                    for stages in (2, 3, 4):
                        tb.TUNING[role].update(block=block, num_warps=warps, num_stages=stages)
                        q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16,
                                               requires_grad=True) for _ in range(3))
                        fn = lambda q, k, v, pat=pat: tb.triton_attention(q, k, v, pat)  # noqa
                        try:
                            t = graph_time(fn, q, k, v, role != "fwd")
                        except Exception as e:
                            print(f"  sweep {name} {role} {block} {warps} {stages}: "
                                  f"{type(e).__name__} {str(e)[:120]}", flush=True)
                            continue
                        row = dict(pattern=name, n=n, d=d, role=role, block=block, warps=warps,
                                   stages=stages, ms=t)
                        out.append(row)
                        if best is None or t < best["ms"]:
                            best = row
            tb.TUNING[role].update(default[role])
            print(f"  sweep best {name} n={n} d={d} {role}: {best}", flush=True)
    tb.FUSE_BWD_BELOW, tuning.USE_TABLE = fuse, table_on
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="*", default=[4096, 16384, 65536])
    ap.add_argument("--d", type=int, nargs="*", default=[64, 128])
    ap.add_argument("--patterns", nargs="*", default=list(PATTERNS),
                    choices=list(PATTERNS) + list(EXTRA),
                    help="patterns to time (default: %(default)s; also: longformer, bigbird)")
    ap.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compiles are slow)")
    ap.add_argument("--sweep", type=int, nargs="?", const=64, default=None,
                    help="sweep launch configurations per kernel role for this head_dim "
                         "(default 64) at the first --n")
    ap.add_argument("--write-tuning", metavar="PATH",
                    help="with --sweep: merge the fastest setting per pattern kind and role "
                         "into the tuning table at PATH (created from the packaged one); point "
                         "SPARSE_TRANSFORMER_TUNING at it, or copy it over "
                         "src/sparse_transformer/ops/triton/tuning.json")
    ap.add_argument("--profile", action="store_true", help="profile a small case and exit")
    ap.add_argument("--atomic-dq", action="store_true",
                    help="also time the one-pass backward (dq added atomically) and the "
                         "two-pass one, each forced (triton backend ATOMIC_DQ), beside the default")
    args = ap.parse_args(argv)
    import triton

    dev = "cuda"
    info = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__, cuda=torch.version.cuda)
    print(info, flush=True)
    rows, sweeps = [], []
    if args.profile:
        profile()
        return
    if args.sweep:
        sweeps = sweep(n=args.n[0], d=args.sweep, patterns=args.patterns)
        if os.environ.get("OUT"):
            with open(os.path.join(os.environ["OUT"], "gpu_sweep.json"), "w") as f:
                json.dump(sweeps, f, indent=1)
        if args.write_tuning:
            kinds = {name: type(p).__name__ for name, p in PATTERNS.items()}
            tuning.write_table(args.write_tuning, tuning.best_entries(sweeps, kinds),
                               dict(measured_on=info["device"], torch=info["torch"],
                                    triton=info["triton"], date=time.strftime("%Y-%m-%d")))
            print(f"tuning table written to {args.write_tuning}", flush=True)
        return
    for d in args.d:
        for n in args.n:
            h = heads_for(n, d)
            q, k, v = (torch.randn(1, h, n, d, device=dev, dtype=torch.bfloat16,
                                   requires_grad=True) for _ in range(3))
            dense = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa
            run_case(rows, "dense", "sdpa", n, h, d, n * (n + 1) // 2, dense, q, k, v)
            for name in args.patterns:
                pat = {**PATTERNS, **EXTRA}[name]
                pairs = allowed_pairs(pat, n, dev)
                t0 = time.time()
                _, plan = tb.get_plan(pat, n, h, True, q.device)
                build = time.time() - t0
                ours = lambda q, k, v, pat=pat: tb.triton_attention(q, k, v, pat)  # noqa: E731
                run_case(rows, name, "triton", n, h, d, pairs, ours, q, k, v)
                rows[-1].update(plan_build_s=build, pairs_computed=plan.pairs_computed)
                if args.atomic_dq:  # the default ("auto") beside both fixed choices
                    before = tb.ATOMIC_DQ
                    try:
                        for mode, kind in ((True, "triton_atomic_dq"), (False, "triton_two_pass")):
                            tb.ATOMIC_DQ = mode
                            run_case(rows, name, kind, n, h, d, pairs, ours, q, k, v)
                    finally:
                        tb.ATOMIC_DQ = before
                if not args.no_flex:
                    try:
                        fl = flex_token_order(pat, n, dev)
                    except Exception as e:
                        print(f"  flex block mask failed: {e!r}"[:300], flush=True)
                        continue
                    run_case(rows, name, "flex_token", n, h, d, pairs, fl, q, k, v)
            del q, k, v
            torch.cuda.empty_cache()
    summary(rows)
    # Direct launches switch themselves off for the whole process if a compiled kernel's call
    # fails; eager times are then host-bound (kernel[grid] binding on every launch).
    print(f"direct launches: {'on' if tb.FAST_LAUNCH else 'OFF'} at the end of the run", flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_bench.json"), "w") as f:
            json.dump(dict(info=info, rows=rows, sweep=sweeps), f, indent=1)


def summary(rows):
    """Short table, printed last: our fwd+bwd effective TF/s against dense and flex."""
    dense = {(r["n"], r["d"]): r for r in rows if r["impl"] == "sdpa" and "error" not in r}
    flex = {(r["pattern"], r["n"], r["d"]): r for r in rows
            if r["impl"] == "flex_token" and "error" not in r}
    print("\npattern          n      d   | ours fwd ms  f+b ms  TF/s(f+b) %dense | dense f+b ms | "
          "flex f+b ms  speedup | graph f+b: ours  dense")
    for r in rows:
        if r["impl"] not in ("triton", "triton_atomic_dq", "triton_two_pass") or "error" in r:
            continue
        dn = dense.get((r["n"], r["d"]))
        fx = flex.get((r["pattern"], r["n"], r["d"]))
        pct = 100 * r["fwdbwd_tflops"] / dn["fwdbwd_tflops"] if dn else float("nan")
        name = r["pattern"] + {"triton_atomic_dq": "+atomic",
                                "triton_two_pass": "+two-pass"}.get(r["impl"], "")
        print(f"{name:15s} {r['n']:6d} {r['d']:4d} | {r['fwd_ms']:10.3f} {r['fwdbwd_ms']:7.3f}"
              f" {r['fwdbwd_tflops']:8.1f} {pct:6.0f}% | "
              f"{dn['fwdbwd_ms'] if dn else float('nan'):11.3f} | "
              + (f"{fx['fwdbwd_ms']:10.3f} {fx['fwdbwd_ms'] / r['fwdbwd_ms']:7.1f}x" if fx else "-")
              + f" | {r.get('fwdbwd_graph_ms') or float('nan'):8.3f} "
              + f"{(dn or {}).get('fwdbwd_graph_ms') or float('nan'):8.3f}")


if __name__ == "__main__":
    main()
