"""Long Range Arena ListOps: dense against the sparse patterns, time-boxed, one command.

    PYTHONPATH=src python benchmarks/listops.py --out OUT/listops.json --time-per-model 60

Generates ListOps (96,000 / 2,000 / 2,000 examples, lengths strictly between 500 and 2,000,
seed 0; labels checked by the independent evaluator), then trains one encoder classifier per
pattern for ``--time-per-model`` seconds of training steps each (the same model size, batch and
schedule: linear warmup, cosine decay over the time budget; inputs padded to 2,000 positions,
[CLS] included), and reports test accuracy (2,000 examples), validation accuracy, steps,
training time, positions per second (steady state, after the first steps; padding included, so
the same work per step for every pattern) and peak memory. The table goes to stdout, the JSON
to ``--out`` (rewritten after each pattern, so a run stopped early keeps what it finished) and a
Markdown table beside it.

Tiny on a CPU (what the test runs): ``--train 64 --valid 16 --test 16 --min-length 10
--max-length 60 --d-model 32 --layers 1 --heads 2 --time-per-model 2``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sparse_transformer.data import listops  # noqa: E402
from sparse_transformer.models.encoder import ENCODER_PATTERNS, EncoderConfig  # noqa: E402
from sparse_transformer.training.classify import (ClassifierTrainer, ClassifyConfig,  # noqa: E402
                                                  Split, score)

# Test accuracy on ListOps from the LRA paper (Tay et al. 2020, table 1).
LRA_PUBLISHED = {"Transformer": 36.37, "Local Attention": 15.82, "Sparse Trans.": 17.07,
                 "Longformer": 35.63, "BigBird": 36.05, "Reformer (best attention row)": 37.27}


def pattern_fields(name: str, args) -> dict:
    """Each pattern's fields at this length (EncoderConfig's, models/pattern_spec.py)."""
    return {"dense": {},
            "local": {"window": args.window},
            "longformer": {"window": args.window, "global_tokens": (0,)},
            "bigbird": {"window": args.window // 2 + args.block_size // 2,
                        "global_tokens": tuple(range(args.block_size)), "random_blocks": 3,
                        "random_block_size": args.block_size},
            "strided": {"stride": args.stride},
            "fixed": {"stride": args.stride, "summary": args.summary}}[name]


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def warm_up(trainer: ClassifierTrainer, seqs) -> None:
    """One forward and backward pass and one evaluation batch, gradients thrown away: the
    kernels are compiled and the plans built before the clock starts."""
    import torch.nn.functional as F

    ids, pad = trainer._encode(seqs)
    trainer.model.train()
    with trainer._ctx():
        loss = F.cross_entropy(trainer.model(ids, pad), torch.zeros(len(seqs), dtype=torch.long,
                                                                     device=ids.device))
    loss.backward()
    trainer.model.zero_grad(set_to_none=True)
    trainer.predict_proba(seqs)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)


def backend_used(mc: EncoderConfig, dev: torch.device, precision: str) -> str:
    """What ``backend`` resolves to for this model's attention calls (auto reads the device's
    crossover table, so a sparse pattern may run as masked dense attention where that is faster)."""
    if mc.backend != "auto":
        return mc.backend
    try:
        from sparse_transformer.ops.dispatch import choose_backend

        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        q = torch.empty(1, mc.n_heads, mc.max_len, mc.d_model // mc.n_heads, device=dev,
                        dtype=dtype)
        return choose_backend(q, mc.build_pattern(), False, None)
    except Exception as e:  # informational only
        return f"unknown ({type(e).__name__})"


def run_pattern(name: str, data: dict, args, dev: torch.device) -> dict:
    seq = args.max_length  # [CLS] + at most max_length - 1 tokens
    mc = EncoderConfig(vocab_size=len(listops.VOCAB), n_classes=10, max_len=seq,
                       d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                       ff_mult=args.ff_mult, dropout=args.dropout, pattern=name,
                       pooling=args.pooling, backend=args.backend, **pattern_fields(name, args))
    cfg = ClassifyConfig(epochs=args.epochs, batch_size=args.batch_size,
                         eval_batch_size=args.eval_batch_size, lr=args.lr, warmup=args.warmup,
                         weight_decay=args.weight_decay, precision=args.precision,
                         device=str(dev), seed=args.seed, max_length=seq, pad_to=seq,
                         time_limit=args.time_per_model, schedule="time", save=False,
                         eval_every=0)
    train = Split(data["train"][0], data["train"][1])
    trainer = ClassifierTrainer(mc, cfg, [str(d) for d in range(10)], train, None, None,
                                log=lambda *_: None, progress=args.progress)
    t0 = time.perf_counter()
    warm_up(trainer, data["train"][0][:args.batch_size])  # compiles kernels, not counted
    warm_s = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    info = trainer.fit()
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    steady = trainer.step_times[args.skip_steps:] or trainer.step_times
    per_step = statistics.median(steady) if steady else float("nan")
    positions = args.batch_size * seq
    t1 = time.perf_counter()
    res = {}
    for split in ("valid", "test"):
        probs = trainer.predict_proba(data[split][0])
        res[split] = score(probs, data[split][1], 10)
    return {"pattern": name, "pattern_repr": repr(mc.build_pattern()),
            "backend": backend_used(mc, dev, args.precision),
            "density": mc.build_pattern().density(seq, causal=False),
            "test_accuracy": res["test"]["accuracy"], "valid_accuracy": res["valid"]["accuracy"],
            "test_macro_f1": res["test"]["macro_f1"], "test_loss": res["test"]["loss"],
            "steps": info["steps"], "examples_seen": info["steps"] * args.batch_size,
            "train_time_s": info["train_time_s"], "wall_s": wall, "warm_up_s": warm_s,
            "eval_s": time.perf_counter() - t1,
            "positions_per_s": positions / per_step,
            "real_tokens_per_s": info["tokens"] / max(info["train_time_s"], 1e-9),
            "median_step_s": per_step, "peak_memory_bytes": peak,
            "parameters": trainer.model.num_parameters(), "model": asdict(mc),
            "test_confusion": res["test"]["confusion"]}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"ListOps (seed {meta['seed']}; {meta['sizes']}), {meta['device']}, "
             f"{meta['precision']}, {meta['time_per_model']} s of training per pattern, "
             f"torch {meta['torch']}", "",
             "| pattern | backend | density | test acc. | valid acc. | steps | train s "
             "| positions/s | peak GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['pattern']} | | | failed: {r['error'][:80]} | | | | | |")
            continue
        mem = f"{r['peak_memory_bytes'] / 2**30:.1f}" if r["peak_memory_bytes"] else "-"
        lines.append(f"| {r['pattern']} | {r['backend']} | {r['density']:.3f} "
                     f"| {100 * r['test_accuracy']:.2f} "
                     f"| {100 * r['valid_accuracy']:.2f} | {r['steps']:,} "
                     f"| {r['train_time_s']:.0f} | {r['positions_per_s']:,.0f} | {mem} |")
    lines += ["", "LRA (Tay et al. 2020) published ListOps test accuracy: "
              + ", ".join(f"{k} {v}" for k, v in LRA_PUBLISHED.items())]
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON results (a .md table is written beside)")
    p.add_argument("--patterns", default=",".join(ENCODER_PATTERNS))
    p.add_argument("--time-per-model", type=float, default=60.0)
    p.add_argument("--epochs", type=int, default=100, help="upper bound; time decides")
    p.add_argument("--train", type=int, default=96_000)
    p.add_argument("--valid", type=int, default=2_000)
    p.add_argument("--test", type=int, default=2_000)
    p.add_argument("--min-length", type=int, default=500)
    p.add_argument("--max-length", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--check-train", type=int, default=1000)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ff-mult", type=float, default=4.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--pooling", default="mean", choices=["cls", "mean"])
    p.add_argument("--window", type=int, default=128, help="local / longformer half-width")
    p.add_argument("--block-size", type=int, default=64, help="bigbird blocks")
    p.add_argument("--stride", type=int, default=64)
    p.add_argument("--summary", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 on a GPU, fp32 on a CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto")
    p.add_argument("--skip-steps", type=int, default=10, help="steps left out of positions/s")
    p.add_argument("--progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse(argv)
    names = [n.strip() for n in args.patterns.split(",") if n.strip()]
    for n in names:
        if n not in ENCODER_PATTERNS:
            raise SystemExit(f"error: --patterns: {n!r} is not one of {ENCODER_PATTERNS}")
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                       else ("cpu" if args.device == "auto" else args.device))
    if args.precision == "auto":
        args.precision = "bf16" if dev.type == "cuda" else "fp32"
    spec = listops.ListOpsSpec(train=args.train, valid=args.valid, test=args.test,
                               min_length=args.min_length, max_length=args.max_length,
                               seed=args.seed)
    t0 = time.perf_counter()
    data = listops.generate(spec, workers=args.workers)
    gen_s = time.perf_counter() - t0
    checked = sum(listops.check_labels(s, y, None if k != "train" else args.check_train)
                  for k, (s, y) in data.items())
    lengths = [len(s) for s in data["train"][0]]
    print(f"ListOps generated in {gen_s:.1f} s ({args.workers} workers): "
          f"{args.train}/{args.valid}/{args.test}, train lengths {min(lengths)}..{max(lengths)} "
          f"(mean {np.mean(lengths):.0f}); evaluator agreed on {checked} labels; "
          f"test label counts {np.bincount(data['test'][1], minlength=10).tolist()}", flush=True)
    meta = {"seed": args.seed, "sizes": f"{args.train}/{args.valid}/{args.test}",
            "device": device_name(dev), "precision": args.precision,
            "time_per_model": args.time_per_model, "torch": torch.__version__,
            "generate_s": gen_s, "args": vars(args),
            "majority_test_accuracy": float(np.bincount(data["test"][1]).max() / args.test)}
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        pass
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            r = run_pattern(name, data, args, dev)
        except Exception as e:  # one failing pattern must not lose the others
            r = {"pattern": name, "error": f"{type(e).__name__}: {e}"}
        rows.append(r)
        msg = (f"{name}: failed: {r['error']}" if "error" in r else
               f"{name}: test {100 * r['test_accuracy']:.2f}%, valid "
               f"{100 * r['valid_accuracy']:.2f}%, {r['steps']} steps in "
               f"{r['train_time_s']:.0f} s, {r['positions_per_s']:,.0f} positions/s")
        print(msg, flush=True)
        out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
        out.with_suffix(".md").write_text(markdown(rows, meta) + "\n")
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    print()
    print(markdown(rows, meta))
    return rows


if __name__ == "__main__":
    main()
