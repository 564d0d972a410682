"""Dense vs strided vs fixed attention, time-boxed, on text and on images, on whatever device is
present: trains each for ``--seconds`` with the same preset and schedule, then reports held-out
bits per byte (bits per dim for images), training tokens/s and the exact command of each run.

    python benchmarks/compare_patterns.py --seconds 180 --out runs/compare   # e.g. on a GPU
    python benchmarks/compare_patterns.py --seconds 90 --text-preset enwik8-cpu \\
        --image-preset cifar10-cpu --out runs/compare-cpu                    # on a CPU

Text: the embedded corpus (or the preset's data); images: Fashion-MNIST (offline: Debian
``dataset-fashion-mnist``) for the -cpu preset, CIFAR-10 for the others. Results go to
OUT/results.json and OUT/results.md.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

PATTERNS = ("dense", "strided", "fixed")


def run_one(task: str, preset: str, pattern: str, args) -> dict:
    out = Path(args.out) / f"{task}-{pattern}"
    cmd = [sys.executable, "-m", "sparse_transformer.cli", "train", "--preset", preset,
           "--out", str(out), "--quiet", f"model.pattern={pattern}",
           f"train.time_limit={args.seconds}", f"train.steps={args.max_steps}",
           f"train.final_eval_bytes={args.eval_bytes if task == 'text' else args.eval_images * args.image_bytes}",
           "train.sample_bytes=0", f"train.eval_every={args.max_steps}", "train.log_every=1",
           f"train.checkpoint_every={args.max_steps}", *args.extra]
    if out.exists():
        import shutil

        shutil.rmtree(out)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"run failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    log = out / "log.jsonl"
    logs = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    tps = [r["tokens_per_s"] for r in logs if "tokens_per_s" in r]
    return {"task": task, "pattern": pattern, "preset": preset, "steps": summary["steps"],
            "train_s": summary["elapsed_s"], "wall_s": wall,
            "bits": summary.get("valid_bits_per_byte"), "ppmd": summary.get("ppmd_bits_per_byte"),
            "eval_bytes": summary.get("eval_bytes"),
            "tokens_per_s": statistics.median(tps) if tps else None,
            "command": " ".join(shlex.quote(c) for c in cmd[2:])}


def _f(x, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=180.0, help="training time per run")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--text-preset", default="enwik8-small")
    p.add_argument("--image-preset", default="cifar10-small")
    p.add_argument("--tasks", default="text,image")
    p.add_argument("--patterns", default=",".join(PATTERNS))
    p.add_argument("--eval-bytes", type=int, default=100_000, help="text: held-out bytes scored")
    p.add_argument("--eval-images", type=int, default=64, help="images: held-out images scored")
    p.add_argument("--out", default="runs/compare")
    p.add_argument("extra", nargs="*", help="more field=value overrides for every run")
    args = p.parse_args(argv)
    from sparse_transformer.models import get_preset

    args.image_bytes = get_preset(args.image_preset).model.seq_len
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    rows = []
    for task in args.tasks.split(","):
        if task not in ("text", "image"):
            raise SystemExit(f"error: --tasks must be text and/or image, got {task!r}")
        preset = args.text_preset if task == "text" else args.image_preset
        for pattern in args.patterns.split(","):
            if pattern not in PATTERNS:
                raise SystemExit(f"error: --patterns must name {PATTERNS}, got {pattern!r}")
            r = run_one(task, preset, pattern, args)
            rows.append(r)
            print(f"{task:5} {pattern:8} steps {r['steps']:6d}  held-out {_f(r['bits'])} "
                  f"bits/{'byte' if task == 'text' else 'dim'}  (PPMd {_f(r['ppmd'])})  "
                  f"{_f(r['tokens_per_s'], ',.0f')} tok/s  | {r['command']}", flush=True)
    meta = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "seconds_per_run": args.seconds}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"Device {device}, torch {torch.__version__}, {args.seconds:.0f} s of training per run.",
             "", "| task | pattern | steps | held-out bits | PPMd bits | train tokens/s | command |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['pattern']} | {r['steps']} | {_f(r['bits'])} | "
                     f"{_f(r['ppmd'])} | {_f(r['tokens_per_s'], ',.0f')} | `{r['command']}` |")
    (Path(args.out) / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
