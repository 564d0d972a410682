"""Benchmark runner: forward+backward time and peak memory per case, sparse vs dense SDPA.

    python benchmarks/run.py                      # the CPU suite (benchmarks/cases.py), a table
    python benchmarks/run.py --lengths 1024 4096 --patterns strided-128 --json out.json

Each case runs in two fresh subprocesses, each starting with one warm-up call (plans are built
and cached there). The first times ``--repeats`` whole runs (forward, then backward with a random
upstream gradient) and reports their median. The second measures peak memory over one run (Linux):
the resident-set high water mark (VmHWM) is reset (``echo 5 > /proc/self/clear_refs``) right
before the run, and the figure is VmHWM after it minus VmRSS before it. That process serves large
allocations by mmap (MALLOC_MMAP_THRESHOLD_) so that freed buffers leave the resident set and the
figure follows live memory; the timing process keeps the allocator's defaults, since mapping and
faulting in every buffer would distort the times. Effective GFLOP/s counts 3.5 * 4 * batch * heads * head_dim * allowed pairs (DESIGN.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

_MMAP_THRESHOLD = "65536"


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _worker(case_json: str, repeats: int, mode: str) -> dict:
    """Runs in the subprocess: time and measure one case, return the numbers."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cases import Case
    from sparse_transformer.ops import sparse_attention

    case = Case(**json.loads(case_json))
    pattern = case.make_pattern()
    dtype = getattr(torch, case.dtype)
    gen = torch.Generator().manual_seed(0)
    shape = (case.batch, case.heads, case.seq_len, case.head_dim)
    q, k, v = (torch.randn(shape, generator=gen, dtype=dtype).requires_grad_() for _ in range(3))
    dout = torch.randn(shape, generator=gen, dtype=dtype)

    def attend():
        if pattern is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return sparse_attention(q, k, v, pattern, causal=True, backend=case.backend)

    def fwd_bwd():
        attend().backward(dout)
        q.grad = k.grad = v.grad = None

    fwd_bwd()  # warm-up: plans, allocator, threads
    if mode == "time":
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fwd_bwd()
            times.append(time.perf_counter() - t0)
        return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}
    times = []
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    fwd_bwd()
    return {"peak_mb": (_status_kb("VmHWM") - before) / 1024}


def _subprocess(case, repeats: int, timeout: float, mode: str) -> dict:
    env = dict(os.environ)
    if mode == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = _MMAP_THRESHOLD
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(case.to_dict()),
           "--repeats", str(repeats), "--mode", mode]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{mode}: timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": f"{mode}: " + " ".join(proc.stderr.strip().splitlines()[-1:])}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_case(case, repeats: int, timeout: float) -> dict:
    result = {"case": case.to_dict()}
    for mode in ("time", "memory"):
        result.update(_subprocess(case, repeats, timeout, mode))
        if "error" in result:
            break
    return result


def _allowed_pairs(case) -> int:
    from sparse_transformer.patterns import count_pairs

    pattern = case.make_pattern()
    n = case.seq_len
    if pattern is None:
        return n * (n + 1) // 2
    return count_pairs(pattern, n, 1, True)


def environment() -> dict:
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "processor": _cpu_name(), "device": "cpu"}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(results: list[dict], baseline: str) -> str:
    base = {r["case"]["seq_len"]: r for r in results
            if r["case"]["pattern"] == baseline and "error" not in r}
    head = ("| n | pattern | fwd+bwd median (ms) | min (ms) | speed-up vs SDPA | peak mem (MB) "
            "| mem vs SDPA | eff. GFLOP/s |")
    lines = [head, "|" + "---|" * 8]
    for r in results:
        c = r["case"]
        if "error" in r:
            lines.append(f"| {c['seq_len']} | {c['pattern']} | error: {r['error']} | | | | | |")
            continue
        b = base.get(c["seq_len"])
        speed = f"{b['median_s'] / r['median_s']:.2f}x" if b else "-"
        mem = f"{r['peak_mb'] / b['peak_mb']:.2f}x" if b and b["peak_mb"] > 0 else "-"
        flops = 3.5 * 4 * c["batch"] * c["heads"] * c["head_dim"] * r["pairs"]
        lines.append(f"| {c['seq_len']} | {c['pattern']} | {1e3 * r['median_s']:.1f} "
                     f"| {1e3 * r['min_s']:.1f} | {speed} "
                     f"| {r['peak_mb']:.1f} | {mem} | {flops / r['median_s'] / 1e9:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cases import BASELINE, CPU_LENGTHS, PATTERNS, cpu_suite

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=list(CPU_LENGTHS))
    ap.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=list(PATTERNS))
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per case")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=("time", "memory"), default="time", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    if any(n < 1 for n in args.lengths):
        ap.error(f"--lengths must be positive, got {args.lengths}")
    if args.worker:
        print(json.dumps(_worker(args.worker, args.repeats, args.mode)))
        return 0

    env = environment()
    print(f"# device: {env['processor']} ({env['cpu_count']} CPUs, torch threads "
          f"{env['torch_threads']}); torch {env['torch']}; python {env['python']}")
    print(f"# forward+backward, median of {args.repeats} whole runs in a fresh process per case; "
          "peak memory = VmHWM - VmRSS over one run in another", flush=True)
    results = []
    for case in cpu_suite(args.lengths, args.patterns):
        r = run_case(case, args.repeats, args.timeout)
        if "error" not in r:
            r["pairs"] = _allowed_pairs(case)
        results.append(r)
        print(f"#   {case.pattern:>14} n={case.seq_len:>6}: "
              + (f"{1e3 * r['median_s']:.1f} ms, {r['peak_mb']:.1f} MB" if "error" not in r
                 else f"error {r['error']}"), flush=True)
    print(table(results, BASELINE))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "repeats": args.repeats, "results": results}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
