"""Where one training step spends its time: the torch profiler over the library's ``Trainer`` step.

For each pattern: ms/step, GPU busy time against host time, the compiler's graph breaks, and the
CUDA kernels that take the most time (grouped: our attention kernels, cuDNN/flash attention, GEMMs,
fused elementwise, the optimizer, other).

    python benchmarks/profile_step.py --preset enwik8 --patterns fixed,strided,dense --compile on
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))

from train_speed import pattern_fields, random_data  # noqa: E402

from sparse_transformer.models import get_preset  # noqa: E402
from sparse_transformer.training import Trainer  # noqa: E402

GROUPS = [("attention (ours)", ("_fwd_kernel", "_dq_kernel", "_dkdv_kernel", "_bwd_kernel",
                                "_delta_kernel")),
          ("attention (cuDNN / flash)", ("flash", "cudnn", "fmha", "sdpa")),
          ("gemm", ("gemm", "sm90_xmma", "cutlass", "nvjet", "ampere", "sm80")),
          ("optimizer", ("adam",)),
          ("fused elementwise (inductor)", ("triton_",)),
          ("copies", ("copy", "cat", "index")),
          ]


def group_of(name: str) -> str:
    low = name.lower()
    for g, keys in GROUPS:
        if any(k.lower() in low for k in keys):
            return g
    return "other"


def profile(preset: str, pattern: str, args) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cfg = get_preset(preset)
    m = dataclasses.replace(cfg.model, checkpointing=args.checkpointing,
                            **pattern_fields(pattern, cfg.model))
    t = dataclasses.replace(cfg.train, batch_size=args.batch, compile=args.compile,
                            cuda_graphs=args.cuda_graphs, warmup=10)
    cfg = dataclasses.replace(cfg, model=m, train=t)
    trainer = Trainer(cfg, f"/tmp/profile_{pattern}", data=random_data(4 * m.seq_len * args.batch),
                      log=lambda *a: None, progress=False)
    torch._dynamo.utils.counters.clear()
    for _ in range(3):
        trainer._step()
    torch.cuda.synchronize()
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    reasons = list(torch._dynamo.utils.counters["graph_break"])[:3]
    t0 = time.perf_counter()
    for _ in range(5):
        trainer._step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / 5
    with torch_profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        trainer._step()
        host = time.perf_counter() - t0
        torch.cuda.synchronize()
    kernels = defaultdict(float)
    counts = defaultdict(int)
    groups = defaultdict(float)
    for e in prof.key_averages():
        dev_us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type) and dev_us:
            kernels[e.key] += dev_us / 1e3
            counts[e.key] += e.count
            groups[group_of(e.key)] += dev_us / 1e3
    gpu = sum(kernels.values())
    mode = trainer.model.checkpoint_mode(args.batch * m.seq_len, trainer.device)
    print(f"== {preset} {pattern} compile={args.compile} graphs={args.cuda_graphs} ckpt={mode}: "
          f"{dt * 1e3:.1f} ms/step; profiled step: GPU kernels {gpu:.1f} ms, host issue "
          f"{host * 1e3:.1f} ms; graph breaks {breaks} {reasons}")
    for g, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"   {g:30s} {ms:8.2f} ms")
    for name, ms in sorted(kernels.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"     {ms:8.2f} ms  x{counts[name]:<4d} {name[:90]}")
    del trainer
    torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="enwik8")
    ap.add_argument("--patterns", default="fixed,strided,dense")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--compile", default="on")
    ap.add_argument("--cuda-graphs", action="store_true")
    ap.add_argument("--checkpointing", default="none")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args(argv)
    torch._dynamo.config.recompile_limit = 64
    print(f"device {torch.cuda.get_device_name()} | torch {torch.__version__}")
    for pattern in args.patterns.split(","):
        profile(args.preset, pattern, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
