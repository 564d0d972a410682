"""Sweep of the Quickstart demo on a CPU: model size, context, batch, learning rate and schedule,
each trained for the same wall-clock budget, ranked by held-out bits/byte.

    python benchmarks/demo_sweep.py --seconds 75 --out runs/sweep            # rank every candidate
    python benchmarks/demo_sweep.py --seconds 180 --only fixed-s16-c256 dense-c256 --out runs/full

Every candidate starts from the ``demo`` preset with the overrides listed in ``CANDIDATES``. Its
schedule must end inside the budget (a run cut by a time limit keeps its learning rate high), so
each run is calibrated first: a few steps are timed and ``train.steps`` is set to what fits in
``--seconds`` (``train.warmup`` scaled with it). The run then trains (with the budget as a time
limit too, for safety), and is scored on the first ``--eval-bytes`` of the valid split (two
plays no training window saw), each byte with at least seq_len / 2 bytes of context; PPMd order
6, primed on the training split, is scored on the same bytes. The machine's load average
(``os.getloadavg``) before and after each run is in the table: timed numbers from a loaded
machine are worth less. Results go to OUT/results.json and OUT/results.md.

On a machine shared with other jobs, time-sized runs rank the load, not the candidates: there
``--tokens N`` gives every candidate the same N training bytes instead (``--time-limit-factor``
then only guards against a hung run), and the ranking is by bits/byte at equal data.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sparse_transformer.cli import apply_overrides  # noqa: E402
from sparse_transformer.data import load_dataset  # noqa: E402
from sparse_transformer.models import get_preset  # noqa: E402
from sparse_transformer.training import Trainer, ppmd_bits_per_byte  # noqa: E402

# name -> overrides of the demo preset. Every sparse candidate keeps at least 4 strides in its
# context. ``warmup_frac`` (not a config field) sets the warmup as a fraction of the steps.
CANDIDATES: dict[str, list[str]] = {
    # The old demo: context 512, batch 16, large steps.
    "old-demo": ["model.pattern=fixed", "model.seq_len=512", "model.stride=32", "model.summary=8",
                 "train.batch_size=16", "train.lr=2e-3", "train.min_lr_ratio=0.0"],
    # Context 256, stride 32 / 16, fixed and strided, batch 16.
    "fixed-s32-c256-b16": ["model.pattern=fixed",
                           "model.seq_len=256", "model.stride=32", "model.summary=8",
                           "train.batch_size=16", "train.lr=2e-3"],
    "fixed-s16-c256-b16": ["model.pattern=fixed",
                           "model.seq_len=256", "model.stride=16", "model.summary=4",
                           "train.batch_size=16", "train.lr=2e-3"],
    "strided-s16-c256-b16": ["model.seq_len=256", "model.pattern=strided", "model.stride=16",
                             "train.batch_size=16", "train.lr=2e-3"],
    # Context 128 (8 strides of 16), smaller batches, more steps.
    "fixed-s16-c128-b16": ["model.pattern=fixed",
                           "model.seq_len=128", "model.stride=16", "model.summary=4",
                           "train.batch_size=16", "train.lr=2e-3"],
    "fixed-s16-c128-b8": ["model.pattern=fixed",
                          "model.seq_len=128", "model.stride=16", "model.summary=4",
                          "train.batch_size=8", "train.lr=2e-3"],
    "strided-s16-c128-b16": ["model.seq_len=128", "model.pattern=strided", "model.stride=16",
                             "train.batch_size=16", "train.lr=2e-3"],
    # Learning rate and schedule at context 128.
    "fixed-s16-c128-b16-lr4e-3": ["model.pattern=fixed",
                                  "model.seq_len=128", "model.stride=16", "model.summary=4",
                                  "train.batch_size=16", "train.lr=4e-3"],
    "fixed-s16-c128-b16-lr1e-3": ["model.pattern=fixed",
                                  "model.seq_len=128", "model.stride=16", "model.summary=4",
                                  "train.batch_size=16", "train.lr=1e-3"],
    "fixed-s16-c128-b16-floor0.1": ["model.pattern=fixed",
                                    "model.seq_len=128", "model.stride=16", "model.summary=4",
                                    "train.batch_size=16", "train.lr=3e-3",
                                    "train.min_lr_ratio=0.1"],
    # Small batches, many steps (the nanoGPT-like regime), with a floor under the cosine.
    "fixed-s16-c128-b8-lr3e-3": ["model.pattern=fixed",
                                 "model.seq_len=128", "model.stride=16", "model.summary=4",
                                 "train.batch_size=8", "train.lr=3e-3", "train.min_lr_ratio=0.1"],
    "fixed-s16-c128-b4-lr2e-3": ["model.pattern=fixed",
                                 "model.seq_len=128", "model.stride=16", "model.summary=4",
                                 "train.batch_size=4", "train.lr=2e-3", "train.min_lr_ratio=0.1"],
    "strided-s16-c128-b8-lr3e-3": ["model.seq_len=128", "model.pattern=strided",
                                   "model.stride=16", "train.batch_size=8", "train.lr=3e-3",
                                   "train.min_lr_ratio=0.1"],
    "dense-c128-b8-lr3e-3": ["model.seq_len=128", "model.pattern=dense", "train.batch_size=8",
                             "train.lr=3e-3", "train.min_lr_ratio=0.1"],
    # Denser sparse patterns at context 128 (fixed l=16 c=4 keeps 35% of the causal pairs there;
    # these keep 44-56%), and a finer stride (24%).
    "fixed-s16-c8-c128-b8": ["model.pattern=fixed",
                             "model.seq_len=128", "model.stride=16", "model.summary=8",
                             "train.batch_size=8", "train.lr=3e-3", "train.min_lr_ratio=0.1"],
    "fixed-s32-c8-c128-b8": ["model.pattern=fixed",
                             "model.seq_len=128", "model.stride=32", "model.summary=8",
                             "train.batch_size=8", "train.lr=3e-3", "train.min_lr_ratio=0.1"],
    "local32+fixed-s16-c128-b8": ["model.seq_len=128", "model.pattern=local+fixed",
                                  "model.window=32", "model.stride=16", "model.summary=4",
                                  "train.batch_size=8", "train.lr=3e-3",
                                  "train.min_lr_ratio=0.1"],
    "strided-s8-c128-b8": ["model.seq_len=128", "model.pattern=strided", "model.stride=8",
                           "train.batch_size=8", "train.lr=3e-3", "train.min_lr_ratio=0.1"],
    # The demo preset's choice: Strided(32) at context 128 (4 strides), 2,700 steps.
    "strided-s32-c128-b8": ["model.seq_len=128", "model.pattern=strided", "model.stride=32",
                            "train.batch_size=8", "train.lr=3e-3", "train.min_lr_ratio=0.1"],
    # Model size at context 128.
    "fixed-s16-c128-d96-l3": ["model.pattern=fixed",
                              "model.seq_len=128", "model.stride=16", "model.summary=4",
                              "model.d_model=96", "model.n_layers=3", "train.batch_size=16",
                              "train.lr=3e-3"],
    "fixed-s16-c128-d192-l4": ["model.pattern=fixed",
                               "model.seq_len=128", "model.stride=16", "model.summary=4",
                               "model.d_model=192", "model.n_layers=4", "model.n_heads=6",
                               "train.batch_size=16", "train.lr=2e-3"],
    # The same sparse pattern through the masked-SDPA backend (the same attention, computed as
    # a dense product under the pattern's mask: faster on a CPU at these lengths?).
    "fixed-s16-c128-b16-sdpamask": ["model.pattern=fixed",
                                    "model.seq_len=128", "model.stride=16", "model.summary=4",
                                    "train.batch_size=16", "train.lr=2e-3",
                                    "model.backend=sdpa-masked"],
    # Dense baselines of the same budget.
    "dense-c128-b16": ["model.seq_len=128", "model.pattern=dense", "train.batch_size=16",
                       "train.lr=2e-3"],
    "dense-c64-b12-nanogpt": ["model.seq_len=64", "model.pattern=dense", "train.batch_size=12",
                              "train.lr=1e-3"],
}


_PPMD: dict[int, float | None] = {}


def load() -> float:
    return os.getloadavg()[0]


def calibrate(cfg, data, run_dir: Path, steps: int = 6) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per training step of ``cfg``: the medians of
    ``steps`` steps after two warm-up steps."""
    tr = Trainer(cfg, run_dir, data=data, log=lambda *_: None, progress=False)
    tr._step()
    tr._step()
    wall, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        tr._step().item()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return sorted(wall)[len(wall) // 2], sorted(cpu)[len(cpu) // 2]


def run_one(name: str, overrides: list[str], args, data) -> dict:
    cfg = apply_overrides(get_preset("demo"), overrides + list(args.extra))
    cfg.train.num_threads = args.threads
    cfg.train.final_eval_bytes = args.eval_bytes
    cfg.train.sample_bytes = 0
    tmp = Path(args.out) / name
    shutil.rmtree(tmp, ignore_errors=True)
    wall, cpu = calibrate(cfg, data, tmp / "calibrate")
    # Sized by wall time on a quiet machine, or (--size-by cpu, for a machine shared with other
    # jobs) by CPU time spread over the threads, which contention inflates much less. The budget
    # is kept 5 % short for the evaluation the run does at its end.
    per_step = wall if args.size_by == "wall" else cpu / args.threads
    steps = max(20, int(args.seconds * 0.95 / per_step))
    if args.tokens:  # equal training bytes instead of equal time (a machine too loaded to time)
        steps = max(20, args.tokens // (cfg.train.batch_size * cfg.model.seq_len))
    cfg.train.steps = steps
    cfg.train.warmup = max(10, int(steps * args.warmup_frac))
    cfg.train.time_limit = args.seconds * args.time_limit_factor
    cfg.train.eval_every = steps  # one quick eval at the end
    cfg.train.checkpoint_every = steps
    cfg.train.log_every = 50
    before = load()
    tr = Trainer(cfg, tmp / "run", data=data, log=lambda *_: None, progress=False)
    info = tr.fit()
    res = tr.final_eval("valid")
    after = load()
    held = data["valid"][:res["bytes"] + 1]
    key = res["bytes"]
    if args.ppmd and key not in _PPMD:  # the same bytes for every candidate: scored once
        _PPMD[key] = ppmd_bits_per_byte(held[1:], data["train"])
    ppmd = _PPMD.get(key)
    m = cfg.model
    row = {"name": name, "overrides": overrides, "params": tr.model.num_parameters(),
           "pattern": m.build_pattern().name, "seq_len": m.seq_len, "d_model": m.d_model,
           "n_layers": m.n_layers, "batch": cfg.train.batch_size, "lr": cfg.train.lr,
           "min_lr_ratio": cfg.train.min_lr_ratio, "steps": info["steps"],
           "stopped_by": info["stopped_by"], "train_s": info["elapsed_s"],
           "tokens_per_s": info["steps"] * cfg.train.batch_size * m.seq_len / info["elapsed_s"],
           "bits": res["bits_per_byte"], "eval_bytes": res["bytes"], "ppmd": ppmd,
           "calib_wall_s": wall, "calib_cpu_s": cpu,
           "load_before": before, "load_after": after}
    shutil.rmtree(tmp, ignore_errors=True)
    return row


def table(rows: list[dict]) -> str:
    head = ("| candidate | pattern | params | context | batch | lr (floor) | steps | train s | "
            "tokens/s | held-out bits/byte | PPMd | load avg before/after |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in sorted(rows, key=lambda r: r["bits"]):
        ppmd = "n/a" if r["ppmd"] is None else f"{r['ppmd']:.3f}"
        lines.append(f"| {r['name']} | {r['pattern']} | {r['params']:,} | {r['seq_len']} | "
                     f"{r['batch']} | {r['lr']:g} ({r['min_lr_ratio']:g}) | {r['steps']:,} | "
                     f"{r['train_s']:.0f} | {r['tokens_per_s']:,.0f} | **{r['bits']:.3f}** | "
                     f"{ppmd} | {r['load_before']:.1f} / {r['load_after']:.1f} |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=75.0, help="training budget per candidate")
    p.add_argument("--only", nargs="*", default=None, help="candidate names (default: all)")
    p.add_argument("--eval-bytes", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup-frac", type=float, default=0.05)
    p.add_argument("--no-ppmd", dest="ppmd", action="store_false")
    p.add_argument("--size-by", choices=("wall", "cpu"), default="wall",
                   help="how the calibration turns seconds into steps (cpu: on a loaded machine)")
    p.add_argument("--tokens", type=int, default=0,
                   help="give every candidate this many training bytes instead of --seconds "
                        "(for a machine shared with other jobs, where times mean little)")
    p.add_argument("--time-limit-factor", type=float, default=1.0,
                   help="stop a run at this many times --seconds (1: the budget is a hard limit)")
    p.add_argument("--out", default="runs/demo-sweep")
    p.add_argument("extra", nargs="*", help="overrides applied to every candidate")
    args = p.parse_args(argv)
    names = args.only or list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"error: --only: unknown candidates {unknown}; known: {list(CANDIDATES)}")
    torch.set_num_threads(args.threads)
    data = load_dataset(get_preset("demo").data, 64)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        row = run_one(name, CANDIDATES[name], args, data)
        rows.append(row)
        print(f"{name}: {row['bits']:.4f} bits/byte, {row['steps']} steps in "
              f"{row['train_s']:.0f} s, load {row['load_before']:.1f}/{row['load_after']:.1f}",
              flush=True)
        (out / "results.json").write_text(json.dumps(rows, indent=1))
        (out / "results.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
