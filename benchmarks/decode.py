"""Incremental decoding with the pattern-following KV cache against re-running the full forward.

For each pattern: tokens/s of ``decode_step`` over ``--new`` positions from the middle of a
``--ctx``-byte context (after a prefill of the first half), against tokens/s of re-running the
forward over the whole prefix for each new token at the same positions (what sampling without a
cache costs); and the cache's largest size while decoding
(after the prefill, which briefly holds every key, as any full forward does) against a dense cache
of every key and value. Median of ``--repeats`` runs.

    python benchmarks/decode.py --ctx 4096 --new 32 --json results.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sparse_transformer.models import ModelConfig, SparseTransformer

PATTERNS = {"fixed": dict(pattern="fixed", stride=128, summary=32),
            "strided": dict(pattern="strided", stride=64),
            "local": dict(pattern="local", window=256),
            "dense": dict(pattern="dense")}


def measure(name: str, args) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(seq_len=args.ctx, d_model=args.d_model, n_layers=args.layers,
                      n_heads=args.heads, **PATTERNS[name])
    model = SparseTransformer(cfg).to(args.device).eval()
    x = torch.randint(0, 256, (1, args.ctx), device=args.device)
    start = args.ctx // 2  # mid-context: near the end the column keys start to go (see kv_cache)
    inc, full, peak = [], [], 0
    with torch.no_grad():
        for _ in range(args.repeats):
            cache = model.new_cache()
            model.prefill(x[:, :start], cache)
            for layer in cache.layers:  # measure the decoding phase (the prefill holds all keys)
                layer.peak = layer.nbytes()
            t0 = time.perf_counter()
            for t in range(start, start + args.new):
                model.decode_step(x[:, t], cache)
            inc.append(args.new / (time.perf_counter() - t0))
            peak = max(peak, cache.peak_bytes())
            n_full = max(2, args.new // 8)  # the full forward is slow: time fewer tokens
            t0 = time.perf_counter()
            for t in range(start, start + n_full):  # the same positions, no cache
                model(x[:, :t + 1])
            full.append(n_full / (time.perf_counter() - t0))
    el = next(model.parameters()).element_size()
    dense_bytes = cfg.n_layers * args.ctx * (int(cfg.d_model * cfg.qk_ratio) + cfg.d_model) * el
    return {"pattern": name, "ctx": args.ctx, "incremental_tok_s": statistics.median(inc),
            "full_forward_tok_s": statistics.median(full),
            "speedup": statistics.median(inc) / statistics.median(full),
            "cache_peak_bytes": peak, "dense_cache_bytes": dense_bytes,
            "cache_ratio": peak / dense_bytes}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--new", type=int, default=32, help="positions decoded at the end of the context")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--patterns", default=",".join(PATTERNS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = []
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads; "
          f"model d={args.d_model}, {args.layers} layers, {args.heads} heads, context {args.ctx}")
    print(f"{'pattern':8} {'incremental tok/s':>18} {'full-forward tok/s':>19} {'speedup':>8} "
          f"{'cache MiB':>10} {'dense MiB':>10} {'ratio':>6}")
    for name in args.patterns.split(","):
        if name not in PATTERNS:
            raise SystemExit(f"error: --patterns must name {list(PATTERNS)}, got {name!r}")
        r = measure(name, args)
        rows.append(r)
        print(f"{name:8} {r['incremental_tok_s']:18.1f} {r['full_forward_tok_s']:19.2f} "
              f"{r['speedup']:7.1f}x {r['cache_peak_bytes'] / 2**20:10.2f} "
              f"{r['dense_cache_bytes'] / 2**20:10.2f} {r['cache_ratio']:6.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": args.device, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
