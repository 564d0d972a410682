"""Registers, spills and shared memory of our Triton kernels on a GPU target, without a GPU.

Triton compiles a kernel for a named target (here NVIDIA sm_90, the H100 / H200) on any machine:
its wheel carries ``ptxas`` and ``cuobjdump``. This script compiles the forward, dq and dk/dv
kernels of ``ops/triton/kernels.py`` for bf16 at head dim 64 (or ``--head-dim``) with the launch
settings given, and prints what ``cuobjdump -res-usage`` reports: registers per thread, stack
(bytes spilled per thread), and the shared memory the kernel asks for. Registers decide how many
programs an SM holds at once: 65,536 registers per SM / (registers per thread x threads).

    python benchmarks/kernel_resources.py                    # every kernel, warps 4 and 8
    python benchmarks/kernel_resources.py --configs 4x2 --maxnreg 168

Counts come from the Triton installed here; a GPU machine with another Triton version may
allocate differently, so read them as a guide to where register pressure comes from, not as
the device's figures (ncu reports those).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

KERNELS = ("fwd", "dq", "dkdv", "dkdv-split")  # dkdv-split: with split rows (HAS_SPLIT)
# Pointer arguments that are not q/k/v-typed (bf16): float32 statistics and scratch, int8 masks
# and keys-padding, int32 plan tables.
_POINTERS = {"LSE": "*fp32", "DELTA": "*fp32", "SEED_O": "*fp32", "SEED_LSE": "*fp32",
             "SEED_DQ": "*fp32", "SEED_DK": "*fp32", "SEED_DV": "*fp32", "DQACC": "*fp32",
             "KPM": "*i8", "MASKS": "*i8", "TILES": "*i32", "ORDER": "*i32", "ROWPTR": "*i32",
             "ENT": "*i32", "SPLIT": "*i32", "PARTS": "*i32", "CNT": "*i32", "DKS": "*fp32",
             "DVS": "*fp32"}
_INTS = {"H", "N", "D", "T", "E", "HP_MUL", "S", "NMASK"}
_FLOATS = {"qk_scale", "sm_scale"}


def signature(fn, constexprs: dict) -> tuple[dict, dict]:
    """Triton's (signature, constexprs) for ``fn`` from its argument names: upper-case names are
    pointers (bf16 unless listed above), lower-case ones 32-bit integers (strides), except the
    two scales."""
    sig, cx = {}, {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name], cx[name] = "constexpr", constexprs[name]
        elif name in _INTS:
            sig[name] = "i32"
        elif name in _FLOATS:
            sig[name] = "fp32"
        elif name in _POINTERS or name.isupper():
            sig[name] = _POINTERS.get(name, "*bf16")
        else:
            sig[name] = "i32"
    return sig, cx


def resources(cubin: bytes) -> dict:
    """Registers and stack per thread from ``cuobjdump -res-usage`` of a compiled kernel."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.unlink(f.name)
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    if m is None:
        raise RuntimeError(f"cuobjdump printed no resource usage: {out[:300]!r}")
    return dict(registers=int(m.group(1)), stack_bytes=int(m.group(2)))


# Integers whose value a real launch makes a multiple of 16 for contiguous (B, H, N, D) inputs
# with N and D multiples of 16: strides, H, N, D and HP_MUL (0 or 1 x H). The plan's sizes (T, E,
# S) vary, so they get no hint.
_UNHINTED = {"T", "E", "S", "TQ", "EQ", "TK", "EK", "NMASK"}


def launch_hints(fn, sig: dict) -> dict:
    """What Triton's JIT tells the compiler at a real launch: every tensor pointer 16-byte aligned
    and every integer argument that is a multiple of 16 marked so (``tt.divisibility``), which lets
    it use vector loads. Without them register and instruction counts come out higher than on the
    GPU."""
    attrs = {}
    for i, name in enumerate(fn.arg_names):
        ty = sig[name]
        if ty.startswith("*") or (ty == "i32" and name not in _UNHINTED):
            attrs[(i,)] = [["tt.divisibility", 16]]
    return attrs


def compile_kernel(role: str, head_dim: int, warps: int, stages: int, maxnreg: int | None,
                   arch: int, hints: bool = True, tma: bool = False) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from sparse_transformer.ops.triton import kernels as K
    from sparse_transformer.ops.triton.tuning import head_dim_class

    fn = {"fwd": K._fwd_kernel, "dq": K._dq_kernel, "dkdv": K._dkdv_kernel,
          "dkdv-split": K._dkdv_kernel}[role]
    constexprs = dict(BLOCK=64, BLOCK_D=head_dim_class(head_dim), HAS_KPM=False, HAS_SEED=False,
                      DOT_PREC="tf32", I64=False, ATOMIC_DQ=False, HEADS_FAST=False,
                      HAS_SPLIT=role == "dkdv-split", TMA=tma)
    sig, cx = signature(fn, constexprs)
    opts = dict(num_warps=warps, num_stages=stages)
    if maxnreg:
        opts["maxnreg"] = maxnreg
    attrs = launch_hints(fn, sig) if hints else None
    k = triton.compile(ASTSource(fn, sig, cx, attrs), target=GPUTarget("cuda", arch, 32), options=opts)
    row = dict(kernel=role + (" tma" if tma else ""), head_dim=head_dim, num_warps=warps, num_stages=stages,
               maxnreg=maxnreg, shared_bytes=int(k.metadata.shared), **resources(k.asm["cubin"]))
    per_thread = -(-max(1, row["registers"]) // 8) * 8  # allocated in steps of 8 registers
    row["programs_per_sm"] = min(65536 // (per_thread * 32 * warps), 64 // warps)
    row["wgmma"] = len(re.findall(r"wgmma\.mma_async", k.asm["ptx"]))
    row["tma_loads"] = len(re.findall(r"cp\.async\.bulk\.tensor", k.asm["ptx"]))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernels", default=",".join(KERNELS),
                    help=f"comma-separated, from {', '.join(KERNELS)}")
    ap.add_argument("--configs", default="4x2,8x2",
                    help="comma-separated WARPSxSTAGES launch settings (default 4x2,8x2)")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--maxnreg", type=int, default=None,
                    help="cap registers per thread (what spills then shows in the stack column)")
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (90: Hopper)")
    ap.add_argument("--tma", action="store_true",
                    help="the kernels with tensor-descriptor (TMA) loads, as on Hopper")
    ap.add_argument("--no-hints", action="store_true",
                    help="compile without the alignment hints a real launch gives (older figures)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    roles = [r.strip() for r in args.kernels.split(",") if r.strip()]
    bad = [r for r in roles if r not in KERNELS]
    if bad:
        ap.error(f"--kernels: unknown {bad}; allowed: {', '.join(KERNELS)}")
    configs = []
    for c in args.configs.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", c)
        if not m:
            ap.error(f"--configs: {c!r} is not WARPSxSTAGES (for example 4x2)")
        configs.append((int(m.group(1)), int(m.group(2))))
    if args.head_dim < 1 or args.head_dim > 128:
        ap.error(f"--head-dim must be in 1..128, got {args.head_dim}")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    import triton

    print(f"Triton {triton.__version__}, target sm_{args.arch}, bf16, head dim {args.head_dim}, "
          f"64-position tiles", flush=True)
    print("| kernel | warps | stages | maxnreg | registers/thread | stack (spill) B | shared B "
          "| programs/SM | wgmma instrs | TMA load instrs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for role in roles:
        for warps, stages in configs:
            r = compile_kernel(role, args.head_dim, warps, stages, args.maxnreg, args.arch,
                               hints=not args.no_hints, tma=args.tma)
            rows.append(r)
            print(f"| {r['kernel']} | {warps} | {stages} | {r['maxnreg'] or '-'} | {r['registers']} | "
                  f"{r['stack_bytes']} | {r['shared_bytes']} | {r['programs_per_sm']} | "
                  f"{r['wgmma']} | {r['tma_loads']} |", flush=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(triton=triton.__version__, arch=args.arch, rows=rows), f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
