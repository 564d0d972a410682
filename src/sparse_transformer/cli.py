"""Command line: ``sparse-transformer train | eval | sample | pattern``.

Configs are dataclasses; a preset gives them values and ``key=value`` arguments override fields,
e.g. ``sparse-transformer train --preset demo model.d_model=128 train.steps=50`` (a bare field
name works when it is unique across model / train / data).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from .models import RunConfig, get_preset
from .models.presets import PRESETS


def _coerce(value: str, current, name: str):
    try:
        if isinstance(current, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            parts = [p for p in value.replace("(", "").replace(")", "").split(",") if p.strip()]
            kind = type(current[0]) if current else int
            return tuple(kind(p) for p in parts)
    except ValueError:
        raise SystemExit(f"error: {name}={value!r}: expected {type(current).__name__}") from None
    return value


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    sections = {"model": cfg.model, "train": cfg.train, "data": cfg.data}
    changes: dict[str, dict] = {k: {} for k in sections}
    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"error: override {item!r} must look like field=value")
        key, value = item.split("=", 1)
        if "." in key:
            sec, field = key.split(".", 1)
            if sec not in sections:
                raise SystemExit(f"error: {key!r}: section must be one of {list(sections)}")
        else:
            owners = [s for s, obj in sections.items() if hasattr(obj, key)]
            if len(owners) != 1:
                raise SystemExit(f"error: {key!r} is {'ambiguous' if owners else 'unknown'}; "
                                 "write section.field (model.*, train.*, data.*)")
            sec, field = owners[0], key
        obj = sections[sec]
        names = [f.name for f in dataclasses.fields(obj)]
        if field not in names:
            raise SystemExit(f"error: unknown field {sec}.{field}; fields: {', '.join(names)}")
        changes[sec][field] = _coerce(value, getattr(obj, field), f"{sec}.{field}")
    try:
        return RunConfig(model=dataclasses.replace(cfg.model, **changes["model"]),
                         train=dataclasses.replace(cfg.train, **changes["train"]),
                         data=dataclasses.replace(cfg.data, **changes["data"]))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def _printable(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def cmd_train(args) -> int:
    from .training import Trainer, TrainingDiverged, config_from_dict, ppmd_bits_per_byte
    from .training import checkpoint as ckpt
    from .sampling import generate
    from .viz import save_pattern_png

    out = Path(args.out or f"runs/{args.preset}")
    latest = ckpt.latest_checkpoint(out) if args.resume else None
    if latest is not None:
        cfg = config_from_dict(ckpt.load_state(latest)["config"])
        if args.overrides:
            cfg = apply_overrides(cfg, args.overrides)
    else:
        if args.resume:
            print(f"no checkpoint in {out}; starting a new run", file=sys.stderr)
        elif ckpt.latest_checkpoint(out) is not None:
            raise SystemExit(f"error: {out} already holds a run; pass --resume to continue it or "
                             "--out to start elsewhere")
        cfg = apply_overrides(get_preset(args.preset), args.overrides)
    if args.data:
        cfg.data.source = args.data
    trainer = Trainer(cfg, out, progress=not args.quiet)
    if latest is not None:
        trainer.resume()
    m = cfg.model
    print(f"model: {trainer.model.num_parameters():,} parameters, {m.n_layers} layers, "
          f"d={m.d_model}, {m.n_heads} heads, pattern {m.build_pattern().name} ({m.mode}), "
          f"context {m.seq_len}, device {trainer.device}, precision {cfg.train.precision}")
    try:
        info = trainer.fit()
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    note = " (time limit reached)" if info["stopped_by"] == "time_limit" else ""
    print(f"trained {info['steps']} steps in {info['elapsed_s']:.0f} s{note}")
    report = {"steps": info["steps"], "elapsed_s": info["elapsed_s"]}
    if cfg.train.final_eval_bytes >= 0:
        t0 = time.perf_counter()
        res = trainer.final_eval("valid")
        held = trainer.data["valid"][:res["bytes"] + 1] if cfg.train.final_eval_bytes else trainer.data["valid"]
        base = ppmd_bits_per_byte(held[1:], trainer.data["train"])
        report.update(valid_bits_per_byte=res["bits_per_byte"], eval_bytes=res["bytes"],
                      ppmd_bits_per_byte=base)
        print(f"held-out (valid) bits/byte: {res['bits_per_byte']:.4f} over {res['bytes']:,} bytes "
              f"(context >= {res['min_context']}; {time.perf_counter() - t0:.0f} s)")
        if base is not None:
            print(f"PPMd order-6 baseline, primed on the training split, same bytes: {base:.4f}")
    if cfg.train.sample_bytes:
        seq = generate(trainer.model, b"\n", cfg.train.sample_bytes, seed=cfg.train.seed)
        text = _printable(bytes(seq[0].tolist()))
        (out / "sample.txt").write_text(text)
        print("---- sample (temperature 1.0) ----")
        print(text)
        print("----------------------------------")
    pic = save_pattern_png(m.build_pattern(), min(m.seq_len, 3 * m.stride, 128),
                           out / "pattern.png")
    print(f"attention pattern picture: {pic}")
    with open(out / "summary.json", "w") as f:
        json.dump(report, f, indent=1)
    return 0


def _load_model(path: str, device: str = "auto"):
    from .models import SparseTransformer
    from .training import checkpoint as ckpt
    from .training import config_from_dict
    from .training.trainer import resolve_device

    c = ckpt.latest_checkpoint(path)
    if c is None:
        raise SystemExit(f"error: no checkpoint found in {path!r}")
    cfg = config_from_dict(ckpt.load_state(c)["config"])
    dev = resolve_device(device)
    model = SparseTransformer(cfg.model).to(dev)
    ckpt.load_model_weights(c, model, dev)
    model.eval()
    return model, cfg, dev


def cmd_eval(args) -> int:
    from .data import load_text
    from .training import bits_per_byte, ppmd_bits_per_byte

    model, cfg, dev = _load_model(args.checkpoint, args.device)
    data = load_text(args.data or cfg.data.source)
    split = data[args.split]
    res = bits_per_byte(model, split, cfg.model.seq_len, args.min_context, args.batch_size,
                        args.max_bytes, dev)
    held = split[:res["bytes"] + 1]
    base = ppmd_bits_per_byte(held[1:], data["train"])
    print(f"{args.split}: {res['bits_per_byte']:.4f} bits/byte over {res['bytes']:,} bytes "
          f"(context {res['min_context']}..{res['seq_len'] - 1})")
    if base is not None:
        print(f"PPMd order-6 baseline, primed on the training split, same bytes: {base:.4f}")
    return 0


def cmd_sample(args) -> int:
    from .sampling import generate

    model, cfg, _ = _load_model(args.checkpoint, args.device)
    prompt = args.prompt.encode() if args.prompt else b"\n"
    seq = generate(model, prompt, args.length, args.temperature, args.top_k, args.seed)
    text = _printable(bytes(seq[0].tolist()))
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def cmd_pattern(args) -> int:
    from .models import ModelConfig
    from .viz import save_pattern_png

    try:
        mc = ModelConfig(pattern=args.pattern, stride=args.stride, summary=args.summary,
                         window=args.window, distinct_heads=args.distinct_heads,
                         seq_len=max(args.seq_len, 1))
        pat = mc.build_pattern()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    causal = not args.bidirectional
    path = save_pattern_png(pat, args.seq_len, args.out, causal=causal, head=args.head)
    dens = pat.density(args.seq_len, num_heads=args.head + 1, causal=causal)
    print(f"{pat.name}, n={args.seq_len}, {'causal' if causal else 'bidirectional'}: "
          f"density {dens:.4f} of the {'causal ' if causal else ''}pairs; picture: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparse-transformer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model (then evaluate, sample and draw the pattern)")
    t.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    t.add_argument("--out", help="run folder (default runs/PRESET)")
    t.add_argument("--data", help="a file or folder of bytes instead of the embedded corpus")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("overrides", nargs="*", help="field=value, e.g. model.d_model=128")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="bits/byte of a checkpoint on a split")
    e.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    e.add_argument("--split", default="test", choices=["train", "valid", "test"])
    e.add_argument("--data")
    e.add_argument("--min-context", type=int, default=None)
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--max-bytes", type=int, default=0, help="score at most this many bytes")
    e.add_argument("--device", default="auto")
    e.set_defaults(fn=cmd_eval)

    s = sub.add_parser("sample", help="sample bytes from a checkpoint")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--length", type=int, default=400)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--prompt", default="")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out")
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=cmd_sample)

    d = sub.add_parser("pattern", help="draw a pattern's connectivity matrix and print density")
    d.add_argument("--pattern", default="strided", choices=["strided", "fixed", "local", "dense"])
    d.add_argument("--stride", type=int, default=8)
    d.add_argument("--summary", type=int, default=2)
    d.add_argument("--window", type=int, default=8)
    d.add_argument("--distinct-heads", action="store_true")
    d.add_argument("--head", type=int, default=0)
    d.add_argument("--seq-len", type=int, default=64)
    d.add_argument("--bidirectional", action="store_true")
    d.add_argument("--out", default="pattern.png")
    d.set_defaults(fn=cmd_pattern)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
