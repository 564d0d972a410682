"""Time the Triton backend's dk/dv launch schedules on a GPU: split rows x interleaved heads.

Every setting runs in one process on the same q, k, v (kernels compile once per setting), so
the rows compare like with like. Per pattern and setting it prints the eager forward, the eager
forward+backward (``do_bench`` medians), the forward and the forward+backward captured in CUDA
graphs (GPU time alone), the share of dense SDPA's allowed pairs per GPU-ms, backward over
forward in GPU time, and the largest gradient difference from the first setting (split rows add
in any order, so a few bf16 ulps are expected; the GPU tests check against the reference).

Settings are ``SPLIT/HEADS``: SPLIT is 0 (rows whole), ``auto`` or a cap in tile pairs; HEADS is
0 (head after head), 1 (every launch interleaved) or ``auto`` (``plan.dkdv_schedule``). The
defaults compare the old schedule (0/0) with today's (auto/auto).

    python benchmarks/launch_schedule.py --n 16384 --d 64 --patterns fixed longformer bigbird
    python benchmarks/launch_schedule.py --settings 0/0 auto/auto auto/0 0/1 32/0
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu  # noqa: E402  (benchmarks/gpu.py: PATTERNS, EXTRA, SettingsAB)

from sparse_transformer.ops.triton import backend as tb  # noqa: E402


def parse_setting(text: str) -> tuple:
    """'SPLIT/HEADS' -> (``SPLIT_ROWS_ABOVE``, ``HEADS_FAST``) values."""
    try:
        split, heads = text.split("/")
        return tb._split_setting(split), tb._heads_fast_setting(heads)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--settings takes SPLIT/HEADS (SPLIT: 0, auto or a cap; HEADS: 0, 1 or auto), "
            f"got {text!r}: {e}") from None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--patterns", nargs="*", default=["fixed", "longformer", "bigbird",
                                                       "strided", "local"],
                    choices=list(gpu.PATTERNS) + list(gpu.EXTRA))
    ap.add_argument("--settings", nargs="*", type=parse_setting,
                    default=[parse_setting("0/0"), parse_setting("auto/auto")])
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("launch_schedule.py times GPU kernels: it needs CUDA")
    ab = gpu.SettingsAB(args.n, args.d, "pattern | split | heads")
    before = tb.SPLIT_ROWS_ABOVE, tb.HEADS_FAST
    try:
        for name in args.patterns:
            ab.pattern({**gpu.PATTERNS, **gpu.EXTRA}[name])
            for split, heads in args.settings:
                tb.SPLIT_ROWS_ABOVE, tb.HEADS_FAST = split, heads
                ab.row(f"{name} | {split or 0} | {heads}")
    finally:
        tb.SPLIT_ROWS_ABOVE, tb.HEADS_FAST = before


if __name__ == "__main__":
    main()
