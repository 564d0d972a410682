"""End-to-end training speed: the paper's model with dense, fixed and strided attention.

One run prints a table per preset (``enwik8``: context 12,288; ``enwik8-small``: 2,048) with, for
each pattern and each trainer variant: tokens/s, ms/step, model FLOPs utilisation, peak memory and
the speed-up over dense attention with the same variant in the same run. Steps run through the
library's ``Trainer`` (its compile, checkpointing, optimizer and data path) on random bytes, so no
data set is needed. Timing: ``--warmup`` steps (compilation included), then ``--steps`` steps
between two device synchronisations.

FLOPs per step, as the paper counts them: 6 x parameters per token for the matmuls, plus attention
on its allowed pairs, 3.5 x 4 x d_model x pairs per layer and sequence (forward + backward).
Utilisation is against ``--peak-tflops`` (default 790 TF/s: the bf16 rate the project's earlier
measurements used for H100/H200; the vendors' dense bf16 figure is 989).

Variants: ``eager-block`` (no compile, every block recomputed: the old default), ``eager-auto``
(no compile, checkpointing chosen by memory), ``compiled`` (the default: regional torch.compile,
checkpointing auto), ``graphs`` (compiled blocks replayed as CUDA graphs).

    python benchmarks/train_speed.py                           # GPU: both presets, every variant
    python benchmarks/train_speed.py --presets enwik8 --variants compiled
    python benchmarks/train_speed.py --cpu                     # small shapes (CI exercises this)
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from sparse_transformer.models import get_preset  # noqa: E402
from sparse_transformer.patterns.layout import count_pairs  # noqa: E402
from sparse_transformer.training import Trainer  # noqa: E402

VARIANTS = {
    "eager-block": dict(compile="off", checkpointing="block"),
    "eager-auto": dict(compile="off", checkpointing="auto"),
    "compiled": dict(compile="on", checkpointing="auto"),
    "graphs": dict(compile="on", checkpointing="auto", cuda_graphs=True),
}


def pattern_fields(name: str, base) -> dict:
    """Model fields for ``name`` with the preset's stride (the paper's fixed has summary c)."""
    if name == "dense":
        return dict(pattern="dense")
    if name == "strided":
        return dict(pattern="strided", stride=base.stride)
    return dict(pattern="fixed", stride=base.stride, summary=base.summary)


def step_flops(model_cfg, params: int, batch: int) -> float:
    n, d = model_cfg.seq_len, model_cfg.d_model
    pairs = count_pairs(model_cfg.build_pattern(), n, 1, True)
    return batch * (6.0 * params * n + 3.5 * 4 * d * pairs * model_cfg.n_layers)


def random_data(size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {s: rng.integers(0, 256, size=size, dtype=np.uint8) for s in ("train", "valid", "test")}


def measure(preset: str, pattern: str, variant: str, args) -> dict:
    cfg = get_preset(preset)
    v = dict(VARIANTS[variant])
    m = dataclasses.replace(cfg.model, checkpointing=v.pop("checkpointing"),
                            **pattern_fields(pattern, cfg.model), **args.model)
    batch = args.batch.get(preset, cfg.train.batch_size)
    device = "cpu" if args.cpu else "cuda"
    t = dataclasses.replace(cfg.train, batch_size=batch, device=device, warmup=10,
                            precision="fp32" if args.cpu else "bf16", **v)
    cfg = dataclasses.replace(cfg, model=m, train=t)
    data = random_data(max(4 * m.seq_len * batch, 1 << 20))
    trainer = Trainer(cfg, os.path.join(args.tmp, f"{preset}-{pattern}-{variant}"), data=data,
                      log=lambda *a: None, progress=False)
    params = trainer.model.num_parameters()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        trainer._step()
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = trainer._step()
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    trainer._check_finite()
    tokens = batch * m.seq_len
    mode = trainer.model.checkpoint_mode(tokens, trainer.device)
    row = dict(preset=preset, pattern=pattern, variant=variant, batch=batch, seq_len=m.seq_len,
               params=params, checkpointing=mode, compiled=trainer.compiled,
               ms_per_step=dt * 1e3, tokens_per_s=tokens / dt,
               mfu=step_flops(m, params, batch) / dt / (args.peak_tflops * 1e12),
               peak_gib=(torch.cuda.max_memory_allocated() / 2**30) if device == "cuda" else None,
               warmup_s=warm, loss=float(loss))
    del trainer
    reset(device)
    return row


def reset(device: str) -> None:
    """Forget compiled graphs and CUDA graphs between cases (a failed capture must not leak)."""
    torch._dynamo.reset()
    if device == "cuda":
        try:
            from torch._inductor import cudagraph_trees

            cudagraph_trees.reset_cudagraph_trees()
        except Exception:  # noqa: BLE001 - older torch: nothing to reset
            pass
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def print_table(rows: list[dict]) -> None:
    print("| preset | variant | pattern | ckpt | tokens/s | ms/step | MFU | peak GiB | vs dense | warm-up s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        dense = next((d for d in rows if d["preset"] == r["preset"] and d["variant"] == r["variant"]
                      and d["pattern"] == "dense" and "tokens_per_s" in d), None)
        if "error" in r:
            print(f"| {r['preset']} | {r['variant']} | {r['pattern']} | - | failed: {r['error'][:80]} |")
            continue
        sp = f"{r['tokens_per_s'] / dense['tokens_per_s']:.2f}x" if dense else "-"
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(f"| {r['preset']} | {r['variant']} | {r['pattern']} | {r['checkpointing']} | "
              f"{r['tokens_per_s']:,.0f} | {r['ms_per_step']:.1f} | {100 * r['mfu']:.1f}% | {peak} | "
              f"{sp} | {r['warmup_s']:.0f} |", flush=True)


ROW = "ROW "


def run_case(preset: str, pattern: str, variant: str, args) -> dict:
    try:
        return measure(preset, pattern, variant, args)
    except Exception as e:  # a failed case is a row, not a lost run
        reset("cpu" if args.cpu else "cuda")
        return dict(preset=preset, pattern=pattern, variant=variant,
                    error=f"{type(e).__name__}: {e}")


def run_isolated(preset: str, pattern: str, variant: str, argv) -> dict:
    """One case in a fresh process (same arguments, ``--case`` picks it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--out", "",
           "--case", f"{preset},{variant},{pattern}"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    rows = [ln[len(ROW):] for ln in p.stdout.splitlines() if ln.startswith(ROW)]
    if p.returncode != 0 or not rows:
        return dict(preset=preset, pattern=pattern, variant=variant,
                    error=f"case process exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(rows[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="enwik8,enwik8-small")
    ap.add_argument("--patterns", default="dense,fixed,strided")
    ap.add_argument("--variants", default="eager-block,eager-auto,compiled")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", default="enwik8=2",
                    help="per-preset batch, e.g. enwik8=2,enwik8-small=16 (default: the preset's)")
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    ap.add_argument("--cpu", action="store_true", help="small shapes on the CPU (for CI)")
    ap.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for train_speed.json")
    ap.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                    help="run each case in its own process (default: on a GPU). In one process "
                         "the third compiled case measured ran slow whatever its pattern")
    ap.add_argument("--case", default="", help=argparse.SUPPRESS)  # PRESET,VARIANT,PATTERN: one
    args = ap.parse_args(argv)
    args.batch = {k: int(v) for k, v in (kv.split("=") for kv in args.batch.split(",") if kv)}
    args.model = {}
    if args.cpu:  # the enwik8 shapes shrunk until a step takes a fraction of a second
        args.model = dict(seq_len=256, d_model=64, n_layers=2, n_heads=2)
        args.batch = {p: 2 for p in args.presets.split(",")}
        args.steps, args.warmup = min(args.steps, 3), min(args.warmup, 1)
        if args.variants == ap.get_default("variants"):
            args.variants = "eager-block,eager-auto"
    import tempfile

    args.tmp = tempfile.mkdtemp(prefix="train_speed_")
    torch._dynamo.config.recompile_limit = 64
    dev = "cpu" if args.cpu else torch.cuda.get_device_name()
    import triton

    print(f"device {dev} | torch {torch.__version__} | triton {triton.__version__} | "
          f"cuda {torch.version.cuda} | steps {args.steps} after {args.warmup} warm-up")
    if args.case:  # a child of an isolated run: one case, its row on the last line
        preset, variant, pattern = args.case.split(",")
        print(ROW + json.dumps(run_case(preset, pattern, variant, args)), flush=True)
        return 0
    isolate = (not args.cpu) if args.isolate is None else args.isolate
    rows = []
    for preset in args.presets.split(","):
        for variant in args.variants.split(","):
            for pattern in args.patterns.split(","):
                if isolate:
                    rows.append(run_isolated(preset, pattern, variant, argv))
                else:
                    rows.append(run_case(preset, pattern, variant, args))
                print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "train_speed.json"), "w") as f:
            json.dump(dict(device=dev, torch=torch.__version__, triton=triton.__version__,
                           cuda=torch.version.cuda, rows=rows), f, indent=1)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
