"""Time the Triton kernels with and without tensor-descriptor (TMA) loads on a GPU.

Every setting runs in one process on the same q, k, v (kernels compile once per setting), so
the rows compare like with like. A setting is ``ROLES`` or ``ROLES/R``: ROLES is ``none``,
``all`` or a comma list of fwd, dq, dkdv (the roles that read contiguous runs through tensor
descriptors, ``SPARSE_TRANSFORMER_TMA``); ``/R`` also caps the dk/dv kernel at R registers per
thread (``maxnreg``: 168 lets an H100 SM hold three 4-warp programs instead of two, at the cost
of a few spilled bytes; ``benchmarks/kernel_resources.py --tma --maxnreg 168`` shows how many).
Per pattern and setting it prints the eager forward, the eager forward+backward (``do_bench``
medians), the forward and the forward+backward captured in CUDA graphs (GPU time alone), the
share of dense SDPA's allowed pairs per GPU-ms, backward over forward in GPU time, and the
largest gradient difference from the first setting.

    python benchmarks/tma.py --n 16384 --d 64 --patterns fixed local longformer
    python benchmarks/tma.py --settings none all dkdv fwd,dkdv all/168
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu  # noqa: E402  (benchmarks/gpu.py: PATTERNS, EXTRA, SettingsAB)

from sparse_transformer.ops.triton import backend as tb  # noqa: E402


def parse_setting(text: str) -> tuple:
    """'ROLES' or 'ROLES/R' -> (frozenset of roles, dk/dv register cap or None)."""
    roles, _, cap = text.partition("/")
    try:
        parsed = tb._tma_setting(roles)
        if parsed == "auto":
            raise ValueError("name the roles")
        return parsed, (int(cap) if cap else None)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--settings takes ROLES or ROLES/R (ROLES: none, all or a comma list of "
            f"{', '.join(tb.TMA_ROLES)}; R: registers), got {text!r}: {e}") from None


def label(setting: tuple) -> str:
    roles, cap = setting
    name = ",".join(r for r in tb.TMA_ROLES if r in roles) or "none"
    return name + (f" / dkdv {cap} regs" if cap else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--patterns", nargs="*", default=["fixed", "local", "strided", "longformer"],
                    choices=list(gpu.PATTERNS) + list(gpu.EXTRA))
    ap.add_argument("--settings", nargs="*", type=parse_setting,
                    default=[parse_setting("none"), parse_setting("all")])
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("tma.py times GPU kernels: it needs CUDA")
    run(args.n, args.d, args.patterns, args.settings)


def run(n: int, d: int, patterns: list, settings: list, **where) -> None:
    """One table: every pattern under every setting (``where``: ``gpu.SettingsAB``'s device
    and dtype)."""
    ab = gpu.SettingsAB(n, d, "pattern | setting", **where)
    before = tb.TMA, tb.TUNING
    try:
        for name in patterns:
            ab.pattern({**gpu.PATTERNS, **gpu.EXTRA}[name])
            for setting in settings:
                roles, cap = setting
                tb.TMA = roles
                tb.TUNING = copy.deepcopy(before[1])
                if cap:
                    tb.TUNING["dkdv"]["maxnreg"] = cap
                tb._LAYOUTS.clear()
                ab.row(f"{name} | {label(setting)}")
    finally:
        tb.TMA, tb.TUNING = before
        tb._LAYOUTS.clear()


if __name__ == "__main__":
    main()
