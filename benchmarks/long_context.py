"""The longest context one GPU trains: each pattern and dense attention at the ``enwik8`` size.

For the ``enwik8`` preset's width and depth (d 512, 30 layers, 8 heads; the patterns at its
stride 128, fixed with summary 32), batch 1, bf16, every block recomputed (``checkpointing=block``;
a length that runs out of memory so is tried again with ``full``, which also recomputes each
block's feed-forward in chunks: ``--checkpointing``), this finds the longest context a training
step fits in: lengths double from ``--start`` until a step runs out of memory
(``torch.cuda.OutOfMemoryError``), then bisect between the last length that fit and the first
that did not, down to ``--granule`` tokens. At the longest length it reports tokens/s
(``--steps`` steps after one warm-up step, between two synchronisations) and the peak allocated
memory. Each step is the library's ``Trainer`` step (AdamW, clipping, the data
path) on random bytes, so no data set is needed.

Dense attention here is flash attention (SDPA), whose memory also grows linearly with n, so
dense and sparse both stop at the memory of the activations; what differs is the time of a step
(quadratic for dense and fixed, about n^1.5 for strided, linear for local). ``--max-step-s``
makes "trains" mean "fits and one step takes at most that many seconds": a length whose step
(a second step when the first, which compiles, is slower) takes longer counts as not fitting,
with the reason "time". Without it a dense
search at the enwik8 size runs minutes per step near its memory limit.

Next to it (``--audio``), the paper's audio-style model: about 3M parameters, strided attention
with stride 1024 = sqrt(n), at n = 2^20, batch 1 (the targets: sparse at least 8x longer than
dense; the audio model at 1M tokens/s or more on one H100/H200).

    python benchmarks/long_context.py                      # GPU: every pattern, then the audio model
    python benchmarks/long_context.py --patterns dense,strided --max-len 1048576
    python benchmarks/long_context.py --cpu                # tiny shapes on the CPU (CI runs it)

``--cpu`` runs the same search on a tiny model, with out-of-memory simulated by a budget of
attention pairs (``--cpu-pair-budget``), so that the search, the table and the JSON are exercised
without a GPU. Its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from sparse_transformer.models import ModelConfig, get_preset  # noqa: E402
from sparse_transformer.training import Trainer  # noqa: E402

PATTERNS = ("dense", "fixed", "strided", "local", "bigbird", "longformer")


def pattern_fields(name: str, base: ModelConfig) -> dict:
    """Model fields for ``name`` at the preset's stride (local / bigbird / longformer: a window
    of one stride)."""
    if name == "dense":
        return dict(pattern="dense")
    if name == "strided":
        return dict(pattern="strided", stride=base.stride)
    if name == "fixed":
        return dict(pattern="fixed", stride=base.stride, summary=base.summary)
    return dict(pattern=name, stride=base.stride, window=base.stride)


def longest(fits: Callable[[int], bool], start: int, limit: int,
            granule: int) -> tuple[int, int | None]:
    """(longest length that fits, the shortest length found not to fit): doubling from ``start``
    up to ``limit``, then bisecting to ``granule``. The second value is None when every length up
    to ``limit`` fits (the search was capped); the first is 0 when ``start`` does not fit."""
    good, n = 0, start
    while n <= limit and fits(n):
        good, n = n, 2 * n
    if good == 0:
        return 0, start
    if n <= limit:
        bad = n
    elif good == limit or fits(limit):
        return limit, None
    else:
        bad = limit
    while bad - good > granule:
        mid = (good + bad) // 2 // granule * granule
        if mid <= good:
            break
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good, bad


def random_data(size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {s: rng.integers(0, 256, size=size, dtype=np.uint8) for s in ("train", "valid", "test")}


class Oom(Exception):
    """A step that did not fit (a CUDA out-of-memory error, or the CPU run's pair budget)."""


def run_steps(model_cfg: ModelConfig, args, steps: int, budget: bool = True,
              retime_over: float | None = None) -> dict:
    """Train ``steps`` steps (after one warm-up step) at ``model_cfg.seq_len``; ``Oom`` when it
    does not fit. ``step_s`` in the result is the warm-up step's time, or, when that exceeds
    ``retime_over`` (it includes kernel compilation), the time of one more step."""
    cfg = get_preset("enwik8")
    device = "cpu" if args.cpu else "cuda"
    t = dataclasses.replace(cfg.train, batch_size=1, device=device, warmup=10, steps=10**9,
                            precision="fp32" if args.cpu else "bf16", compile=args.compile,
                            grad_accum=1, parallel="ddp")
    cfg = dataclasses.replace(cfg, model=model_cfg, train=t)
    if args.cpu and budget:
        from sparse_transformer.patterns.layout import count_pairs

        pairs = count_pairs(model_cfg.build_pattern(), model_cfg.seq_len, 1, True)
        if pairs > args.cpu_pair_budget:
            raise Oom(f"simulated: {pairs:,} pairs > --cpu-pair-budget {args.cpu_pair_budget:,}")
    trainer = None
    try:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        data = random_data(model_cfg.seq_len + 2)
        trainer = Trainer(cfg, os.path.join(args.tmp, "run"), data=data, log=lambda *a: None,
                          progress=False)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        trainer._step()
        sync()
        warm = step_s = time.perf_counter() - t0
        if retime_over is not None and warm > retime_over:
            t0 = time.perf_counter()
            trainer._step()
            sync()
            step_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loss = None
        for _ in range(steps):
            loss = trainer._step()
        sync()
        dt = (time.perf_counter() - t0) / max(1, steps)
        trainer._check_finite()
        return dict(params=trainer.model.num_parameters(), warmup_s=warm, step_s=step_s,
                    s_per_step=dt if steps else None,
                    tokens_per_s=model_cfg.seq_len / dt if steps else None,
                    peak_gib=(torch.cuda.max_memory_allocated() / 2**30) if device == "cuda"
                    else None, loss=float(loss) if loss is not None else None)
    except torch.cuda.OutOfMemoryError as e:
        raise Oom(str(e).split("\n")[0][:200]) from None
    except MemoryError as e:  # host memory (plans, tables)
        raise Oom(f"host MemoryError: {e}") from None
    finally:
        del trainer
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()


def search(name: str, base: ModelConfig, args) -> dict:
    tried = []

    modes = args.checkpointing.split(",")
    used = {}

    def fits(n: int) -> bool:
        t0 = time.perf_counter()
        for mode in modes:  # the first mode that fits in memory; a slower one after an OOM
            m = dataclasses.replace(base, seq_len=n, checkpointing=mode, dropout=0.0,
                                    **pattern_fields(name, base))
            try:
                step_s = run_steps(m, args, steps=0, retime_over=args.max_step_s)["step_s"]
                ok = True
                if args.max_step_s is not None and step_s > args.max_step_s:
                    ok, why = False, (f"time: one step took {step_s:.1f} s > --max-step-s "
                                      f"{args.max_step_s:g}")
                break
            except Oom as e:
                ok, why = False, str(e)
        if ok:
            used[n] = mode
        took = time.perf_counter() - t0
        tried.append(dict(seq_len=n, fits=ok, checkpointing=mode, s=round(took, 2),
                          **({} if ok else {"why": why})))
        print(json.dumps(dict(pattern=name, **tried[-1])), flush=True)
        return ok

    good, bad = longest(fits, args.start, args.max_len, args.granule)
    limit = next((t["why"].split(":")[0] for t in tried if t["seq_len"] == bad and not t["fits"]),
                 None)
    row = dict(pattern=name, longest=good, first_failed=bad, capped=bad is None,
               limited_by="time" if limit == "time" else ("memory" if bad else "--max-len"),
               tried=tried)
    if good:
        row["checkpointing"] = used[good]
        m = dataclasses.replace(base, seq_len=good, checkpointing=used[good], dropout=0.0,
                                **pattern_fields(name, base))
        try:
            row.update(run_steps(m, args, steps=args.steps))
        except Oom as e:  # fitted once, not twice: the allocator's fragmentation
            row["error"] = f"out of memory when timed: {e}"
    return row


def audio_model(args) -> dict:
    """About 3M parameters, strided (stride sqrt(n)), n = 2^20 (or --audio-len)."""
    n = args.audio_len
    stride = 1 << (max(n, 4).bit_length() // 2)
    d, layers = (args.audio_width, args.audio_layers)
    m = ModelConfig(seq_len=n, d_model=d, n_layers=layers, n_heads=max(1, d // 64),
                    pattern="strided", stride=stride, position="factorized",
                    checkpointing="block")
    row = dict(pattern="strided", model="audio", seq_len=n, stride=stride, d_model=d,
               n_layers=layers)
    try:
        row.update(run_steps(m, args, steps=args.steps, budget=False))
    except Oom as e:
        row["error"] = f"out of memory: {e}"
    return row


def print_tables(rows: list[dict], audio: dict | None) -> None:
    dense = next((r for r in rows if r["pattern"] == "dense"), None)
    print("| pattern | longest context | vs dense | tokens/s | peak GiB | checkpointing | "
          "first failed | limited by |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        vs = (f"{r['longest'] / dense['longest']:.1f}x" if dense and dense["longest"]
              and r["longest"] else "-")
        tps = f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else "-"
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "-"
        bad = f"{r['first_failed']:,}" if r["first_failed"] else "-"
        print(f"| {r['pattern']} | {r['longest']:,} | {vs} | {tps} | {peak} | "
              f"{r.get('checkpointing', '-')} | {bad} | {r['limited_by']} |")
    if audio:
        if "error" in audio:
            print(f"\naudio model, n = {audio['seq_len']:,}: {audio['error']}")
        else:
            peak = f"{audio['peak_gib']:.1f} GiB" if audio.get("peak_gib") is not None else "-"
            print(f"\naudio model ({audio['params']:,} parameters, d {audio['d_model']}, "
                  f"{audio['n_layers']} layers, strided {audio['stride']}), n = "
                  f"{audio['seq_len']:,}: {audio['tokens_per_s']:,.0f} tokens/s, peak {peak}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patterns", default=",".join(PATTERNS))
    ap.add_argument("--start", type=int, default=4096, help="first length tried")
    ap.add_argument("--max-len", type=int, default=1 << 21, help="longest length tried")
    ap.add_argument("--granule", type=int, default=1024, help="bisection stops at this gap")
    ap.add_argument("--steps", type=int, default=3, help="timed steps at the longest length")
    ap.add_argument("--max-step-s", type=float, default=None,
                    help="a length whose first training step takes longer does not count as "
                         "training (default: no limit, memory alone decides)")
    ap.add_argument("--checkpointing", default="block,full",
                    help="checkpointing modes to try at each length, in order: the next one "
                         "only after the previous ran out of memory (default: block, then full)")
    ap.add_argument("--compile", default="off", choices=("auto", "on", "off"))
    ap.add_argument("--no-audio", dest="audio", action="store_false")
    ap.add_argument("--audio-len", type=int, default=1 << 20)
    ap.add_argument("--audio-width", type=int, default=128)
    ap.add_argument("--audio-layers", type=int, default=14)
    ap.add_argument("--cpu", action="store_true", help="tiny shapes on the CPU (for CI)")
    ap.add_argument("--cpu-pair-budget", type=int, default=20_000,
                    help="--cpu: a length whose pattern allows more pairs 'runs out of memory'")
    ap.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for long_context.json")
    args = ap.parse_args(argv)
    modes = ("none", "attention", "block", "full")
    bad = [m for m in args.checkpointing.split(",") if m not in modes]
    if bad or not args.checkpointing:
        ap.error(f"--checkpointing: modes from none, attention, block, full, comma-separated; "
                 f"got {args.checkpointing!r}")
    base = get_preset("enwik8").model
    if args.cpu:
        base = dataclasses.replace(base, d_model=16, n_layers=2, n_heads=2, stride=16, summary=4)
        args.start, args.granule = 32, 32
        args.max_len = min(args.max_len, 2048)
        args.steps = min(args.steps, 1)
        args.audio_len, args.audio_width, args.audio_layers = 2048, 16, 2
    elif not torch.cuda.is_available():
        raise SystemExit("error: this benchmark needs a CUDA device (or --cpu for a dry run)")
    args.tmp = tempfile.mkdtemp(prefix="long_context_")
    import triton

    dev = "cpu" if args.cpu else torch.cuda.get_device_name()
    head = dict(device=dev, torch=torch.__version__, triton=triton.__version__,
                cuda=torch.version.cuda, d_model=base.d_model, n_layers=base.n_layers,
                n_heads=base.n_heads, batch=1, precision="fp32" if args.cpu else "bf16",
                checkpointing=args.checkpointing, compile=args.compile, max_step_s=args.max_step_s)
    print(json.dumps(head), flush=True)
    rows = [search(p, base, args) for p in args.patterns.split(",") if p]
    audio = audio_model(args) if args.audio else None
    print_tables(rows, audio)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "long_context.json"), "w") as f:
            json.dump(dict(**head, rows=rows, audio=audio), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
