"""Command line: ``sparse-transformer train | eval | sample | pattern | classify | listops``.

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
from .models.pattern_spec import PATTERN_KINDS
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
    from .validation import qualified

    new = {}
    for sec, obj in sections.items():
        try:
            new[sec] = dataclasses.replace(obj, **changes[sec])
        except ValueError as e:
            raise SystemExit(f"error: {qualified(sec, type(obj), str(e))}") from None
    return RunConfig(**new)


def _printable(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _train_config(args, out: Path) -> RunConfig:
    """The run's config: the checkpoint's (resume) or the preset's, with the overrides; every
    argument checked (validation.check_train_command) before any data loads."""
    from .training import checkpoint as ckpt
    from .training import config_from_dict
    from .validation import check_output_dir, check_resume_overrides, check_train_command

    check_output_dir("--out", out)
    saved = None
    if args.resume:
        found = ckpt.find_checkpoint(out, warn=_warn)
        run = ckpt.read_run_file(out)
        if found is not None:
            saved = ckpt.load_state(found)["config"]
        elif ckpt.damaged_checkpoints(out):
            raise SystemExit(f"error: every checkpoint in {out} is damaged: " + "; ".join(
                str(e) for e in ckpt.damaged_checkpoints(out)) + ". Nothing was changed")
        elif run is not None:
            saved = run["config"]
        elif ckpt.run_files(out):
            raise SystemExit(f"error: {out} holds files of a run ({', '.join(ckpt.run_files(out))})"
                             " but no checkpoint and no run.json; move them away or use another "
                             "--out")
        else:
            print(f"no checkpoint in {out}; starting a new run", file=sys.stderr)
    elif ckpt.run_files(out):
        raise SystemExit(f"error: {out} already holds a run; pass --resume to continue it or "
                         "--out to start elsewhere")
    if saved is not None:
        try:
            base = config_from_dict(saved)
        except (TypeError, ValueError, KeyError) as e:
            raise SystemExit(f"error: the config saved in {out} is unreadable ({e})") from None
        cfg = apply_overrides(base, args.overrides) if args.overrides else base
        check_resume_overrides(base.model, cfg.model)
    else:
        cfg = apply_overrides(get_preset(args.preset), args.overrides)
    if args.data:
        cfg.data.source = args.data
    check_train_command(cfg, out, args.data)
    return cfg


def cmd_train(args) -> int:
    from .data import DataUnavailable
    from .training import Trainer, TrainingDiverged, ppmd_bits_per_byte
    from .training import checkpoint as ckpt
    from .training import distributed as dist_utils
    from .sampling import generate
    from .validation import ConfigError
    from .viz import save_pattern_png

    out = Path(args.out or f"runs/{args.preset}")
    faults = (ConfigError, DataUnavailable, ckpt.CheckpointError, ckpt.RunFolderError,
              ckpt.RunWriteError)
    try:
        cfg = _train_config(args, out)
        trainer = Trainer(cfg, out, progress=not args.quiet)
        if args.resume:
            trainer.resume()
    except faults as e:
        raise SystemExit(f"error: {e}") from None
    m = cfg.model
    if trainer.dist.is_main:
        print(f"model: {trainer.model.num_parameters():,} parameters, {m.n_layers} layers, "
              f"d={m.d_model}, {m.n_heads} heads, pattern {m.build_pattern().name} ({m.mode}), "
              f"context {m.seq_len}, device {trainer.device}, precision {cfg.train.precision}"
              + (f", {trainer.dist.world} process{'es' if trainer.dist.world > 1 else ''}"
                 if trainer.dist.enabled else ""))
    try:
        info = trainer.fit()
    except (TrainingDiverged, ckpt.RunWriteError, ckpt.RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    trainer.consolidate()  # fsdp: the whole model onto rank 0 (every rank takes part)
    if not trainer.dist.is_main:  # under torchrun, rank 0 alone evaluates, samples and draws
        dist_utils.leave(trainer.dist)  # after a barrier with rank 0; exits this process
        return 0
    dist_utils.barrier(trainer.dist)  # rank 0's side of that barrier
    note = " (time limit reached)" if info["stopped_by"] == "time_limit" else ""
    print(f"trained {info['steps']} steps in {info['elapsed_s']:.0f} s{note}")
    report = {"steps": info["steps"], "elapsed_s": info["elapsed_s"]}
    items = getattr(trainer.data["valid"], "ndim", 1) == 2  # images / audio: whole sequences
    if cfg.train.final_eval_bytes >= 0:
        t0 = time.perf_counter()
        res = trainer.final_eval("valid")
        if items:
            base = _ppmd_items(trainer.data["valid"][:res["items"]], trainer.data["train"])
        else:
            held = trainer.data["valid"][:res["bytes"] + 1] if cfg.train.final_eval_bytes else trainer.data["valid"]
            base = ppmd_bits_per_byte(held[1:], trainer.data["train"])
        report.update(valid_bits_per_byte=res["bits_per_byte"], eval_bytes=res["bytes"],
                      ppmd_bits_per_byte=base)
        print(f"held-out (valid) bits/byte: {res['bits_per_byte']:.4f} over {res['bytes']:,} bytes "
              f"(context >= {res['min_context']}; {time.perf_counter() - t0:.0f} s)")
        if base is not None:
            print(f"PPMd order-6 baseline, primed on the training split, same bytes: {base:.4f}")
    if items and cfg.train.sample_bytes:
        path = _write_items(trainer.model, cfg, out / "samples", 16, 1.0, 0, cfg.train.seed, None)
        print(f"samples (temperature 1.0): {path}")
    elif cfg.train.sample_bytes:
        seq = generate(trainer.model, b"\n", cfg.train.sample_bytes, seed=cfg.train.seed)
        text = _printable(bytes(seq[0].tolist()))
        (out / "sample.txt").write_text(text)
        print("---- sample (temperature 1.0) ----")
        print(text)
        print("----------------------------------")
    pic = save_pattern_png(m.build_pattern(), min(m.seq_len, 3 * m.stride, 128),
                           out / "pattern.png")
    print(f"attention pattern picture: {pic}")
    if (out / "log.jsonl").exists():
        from .plots import save_training_curves

        print(f"training curves: {save_training_curves(out, out / 'curves.png', str(out))}")
    ckpt.atomic_write_text(out / "summary.json", json.dumps(report, indent=1))
    dist_utils.cleanup(trainer.dist)
    return 0


def _open_checkpoint(path: str, latest: bool = False):
    """(checkpoint folder, its RunConfig): the complete checkpoint of a run folder with the best
    validation loss (``latest``: the newest one), or a checkpoint folder itself, verified; only
    its small state.json is read."""
    from .training import checkpoint as ckpt
    from .training import config_from_dict

    if not Path(path).is_dir():
        raise SystemExit(f"error: --checkpoint: {path!r} is not a folder (a run folder or a "
                         "step_* checkpoint folder is allowed)")
    try:
        find = ckpt.find_checkpoint if latest else ckpt.find_best_checkpoint
        c = find(path, warn=_warn)
        if c is None:
            damaged = ckpt.damaged_checkpoints(path)
            raise SystemExit(f"error: no complete checkpoint in {path!r}" + (
                " (damaged: " + "; ".join(map(str, damaged)) + ")" if damaged else ""))
        return c, config_from_dict(ckpt.load_state(c)["config"])
    except (ckpt.CheckpointError, TypeError, KeyError) as e:
        raise SystemExit(f"error: {e}") from None


def _load_model(path: str, device: str = "auto", opened=None):
    from .models import SparseTransformer
    from .training import checkpoint as ckpt
    from .training.distributed import resolve_device

    c, cfg = opened or _open_checkpoint(path)
    dev = resolve_device(device)
    model = SparseTransformer(cfg.model).to(dev)
    try:
        ckpt.load_model_weights(c, model, dev)
    except ckpt.CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    model.eval()
    return model, cfg, dev


def _checked(check, *args) -> None:
    from .validation import ConfigError

    try:
        check(*args)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


def _ppmd_items(rows, train, prime_bytes: int = 4_000_000):
    """PPMd baseline on whole sequences, primed on (up to ``prime_bytes`` of) the training rows."""
    from .training import ppmd_bits_per_byte

    per = max(1, prime_bytes // train.shape[1])
    return ppmd_bits_per_byte(rows.reshape(-1), train[:per].reshape(-1))


def _write_items(model, cfg, out, count, temperature, top_k, seed, prefix_fraction):
    """Sample whole sequences: a PNG grid for images, WAV files for audio. Returns the path."""
    import numpy as np

    from .sampling import sample_items

    prefix = None
    if prefix_fraction:
        from .data import load_dataset

        test = load_dataset(cfg.data, cfg.model.seq_len)["test"][:count]
        count = len(test)
        prefix = test[:, :int(test.shape[1] * prefix_fraction)]
    rows = sample_items(model, count, prefix, temperature, top_k, seed)
    out = Path(out)
    if cfg.data.kind == "image":
        from .data.images import rows_to_images
        from .plots import save_sample_grid

        shape = cfg.model.data_shape
        if len(shape) != 3:
            raise SystemExit(f"error: image models need model.data_shape (H, W, C), got {shape}")
        grid = rows_to_images(rows, shape)
        if prefix is not None:  # the real images beside their completions
            grid = np.concatenate([rows_to_images(test, shape), grid])
        return save_sample_grid(grid, out.with_suffix(".png"), cols=count)
    from .data.audio import mu_law_decode, write_wav

    out.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(rows):
        write_wav(out / f"sample_{i:02d}.wav", mu_law_decode(r), cfg.data.rate)
    return out


def cmd_eval(args) -> int:
    from .data import load_dataset
    from .training import bits_per_byte, ppmd_bits_per_byte

    from .validation import check_eval_command, check_eval_split

    if args.dynamic_lr <= 0 or args.dynamic_lr != args.dynamic_lr:
        raise SystemExit(f"error: --dynamic-lr must be > 0, got {args.dynamic_lr}")
    opened = _open_checkpoint(args.checkpoint, args.latest)
    print(f"checkpoint: {opened[0]}", file=sys.stderr)
    _checked(check_eval_command, opened[1], args.split, args.min_context, args.batch_size,
             args.max_bytes, args.device, args.data)
    model, cfg, dev = _load_model(args.checkpoint, args.device, opened)
    if args.data:
        cfg.data.source = args.data
    data = load_dataset(cfg.data, cfg.model.seq_len)
    _checked(check_eval_split, cfg, data, args.split)
    split = data[args.split]
    if getattr(split, "ndim", 1) == 2:  # images / audio: each sequence scored whole
        from .data import items_bits_per_byte

        if args.dynamic:
            raise SystemExit("error: --dynamic: dynamic evaluation reads one text stream; this "
                             f"checkpoint's data ({cfg.data.kind}) is whole sequences")

        max_items = -(-args.max_bytes // split.shape[1]) if args.max_bytes else 0
        res = items_bits_per_byte(model, split, args.batch_size, max_items, dev)
        unit = "bits/dim" if cfg.data.kind == "image" else "bits/byte"
        print(f"{args.split}: {res['bits_per_byte']:.4f} {unit} over {res['items']:,} sequences of "
              f"{res['seq_len']} bytes (each byte predicted from all earlier bytes of its sequence)")
        base = _ppmd_items(split[:res["items"]], data["train"])
        if base is not None:
            print(f"PPMd order-6 baseline, primed on training sequences, same bytes: {base:.4f}")
        return 0
    t0 = time.perf_counter()
    res = bits_per_byte(model, split, cfg.model.seq_len, args.min_context, args.batch_size,
                        args.max_bytes, dev)
    static_s = time.perf_counter() - t0
    held = split[:res["bytes"] + 1]
    base = ppmd_bits_per_byte(held[1:], data["train"])
    print(f"{args.split}: {res['bits_per_byte']:.4f} bits/byte over {res['bytes']:,} bytes "
          f"(context {res['min_context']}..{res['seq_len'] - 1})")
    if base is not None:
        print(f"PPMd order-6 baseline, primed on the training split, same bytes: {base:.4f}")
    if args.dynamic:
        from .training import dynamic_bits_per_byte

        dyn = dynamic_bits_per_byte(model, split, cfg.model.seq_len, args.dynamic_lr,
                                    args.min_context, args.max_bytes, dev)
        print(f"| {args.split}, {res['bytes']:,} bytes | bits/byte | seconds |\n|---|---|---|\n"
              f"| static | {res['bits_per_byte']:.4f} | {static_s:.1f} |\n"
              f"| dynamic (Adam lr {args.dynamic_lr:g}, one step per window) | "
              f"{dyn['bits_per_byte']:.4f} | {dyn['seconds']:.1f} |"
              + (f"\n| PPMd order 6, primed | {base:.4f} | |" if base is not None else ""))
    return 0


def cmd_sample(args) -> int:
    from .sampling import generate

    from .validation import check_sample_command

    opened = _open_checkpoint(args.checkpoint, args.latest)
    _checked(check_sample_command, opened[1], args.length, args.temperature, args.top_k, args.num,
             args.prefix_fraction, args.seed, args.device, args.out)
    model, cfg, _ = _load_model(args.checkpoint, args.device, opened)
    if cfg.data.kind in ("image", "audio"):
        default = "samples" if cfg.data.kind == "image" else "samples_audio"
        path = _write_items(model, cfg, args.out or default, args.num, args.temperature,
                            args.top_k, args.seed, args.prefix_fraction)
        print(f"{args.num} {cfg.data.kind} samples (temperature {args.temperature}): {path}")
        return 0
    prompt = args.prompt.encode() if args.prompt else b"\n"
    seq = generate(model, prompt, args.length, args.temperature, args.top_k, args.seed)
    text = _printable(bytes(seq[0].tolist()))
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def cmd_attention(args) -> int:
    """Draw one layer's attention weights, for the chosen heads, on one sequence."""
    import numpy as np
    import torch

    from . import attention_maps as am

    opened = _open_checkpoint(args.checkpoint, args.latest)
    model, cfg, dev = _load_model(args.checkpoint, args.device, opened)
    m = cfg.model
    if not 0 <= args.layer < m.n_layers:
        raise SystemExit(f"error: --layer must be in [0, {m.n_layers - 1}], got {args.layer}")
    heads = args.head if args.head else [0]
    bad = [h for h in heads if not 0 <= h < m.n_heads]
    if bad:
        raise SystemExit(f"error: --head must be in [0, {m.n_heads - 1}], got {bad[0]}")
    limit = min(m.seq_len, am.MAX_LEN)
    image = cfg.data.kind == "image"
    if args.length is None:
        args.length = limit if image else min(256, limit)
    if not 2 <= args.length <= limit:
        raise SystemExit(f"error: --length must be in [2, {limit}] (the model's context), got "
                         f"{args.length}")
    if args.text and image:
        raise SystemExit("error: --text: this checkpoint models images; leave --text out")
    if args.text:
        seq = np.frombuffer(args.text.encode()[:args.length], dtype=np.uint8)
        if len(seq) < 2:
            raise SystemExit("error: --text must hold at least 2 bytes")
    else:
        from .data import load_dataset

        split = load_dataset(cfg.data, m.seq_len)[args.split]
        seq = np.asarray(split[0] if getattr(split, "ndim", 1) == 2 else split[:args.length])
        seq = seq[:args.length]
    n = len(seq)
    queries = args.query if args.query else ([n - 1] if not image else
                                              [n // 4, n // 2, 3 * n // 4, n - 1])
    bad = [q for q in queries if not 0 <= q < n]
    if bad:
        raise SystemExit(f"error: --query must be in [0, {n - 1}] (the sequence), got {bad[0]}")
    weights = am.attention_weights(model, torch.from_numpy(seq.astype(np.int64)), args.layer)
    out = Path(args.out or Path(opened[0]).parent / "attention")
    paths = []
    for h in heads:
        stem = f"layer{args.layer}_head{h}"
        paths.append(am.save_png(am.matrix_image(weights, h), out / f"{stem}_matrix.png"))
        if image:
            shape = tuple(m.data_shape)
            if len(shape) != 3:
                raise SystemExit(f"error: image models need model.data_shape (H, W, C), got {shape}")
            paths.append(am.save_png(am.image_overlay(weights, seq, shape, h, queries),
                                     out / f"{stem}_image.png"))
        else:
            for q in queries:
                paths.append(am.save_png(am.text_heatmap(weights, bytes(seq.tolist()), h, q),
                                         out / f"{stem}_query{q}.png"))
    print(f"attention of layer {args.layer} over {n} positions ({opened[0]}):")
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_plot(args) -> int:
    from .plots import save_training_curves

    try:
        path = save_training_curves(args.run, args.out or Path(args.run) / "curves.png", args.run)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"training curves: {path}")
    return 0


def _positions(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise SystemExit(f"error: --global-tokens must be comma-separated positions, got {text!r}") from None


def cmd_pattern(args) -> int:
    from .models import ModelConfig
    from .viz import save_pattern_png

    try:
        mc = ModelConfig(pattern=args.pattern, stride=args.stride, summary=args.summary,
                         window=args.window, distinct_heads=args.distinct_heads,
                         global_tokens=_positions(args.global_tokens),
                         random_blocks=args.random_blocks,
                         random_block_size=args.random_block_size,
                         pattern_seed=args.pattern_seed, seq_len=max(args.seq_len, 1))
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
    e.add_argument("--latest", action="store_true",
                   help="use the newest checkpoint (default: the best by validation loss)")
    e.add_argument("--dynamic", action="store_true",
                   help="also score with dynamic evaluation: a gradient step on each window "
                        "after scoring it (text)")
    e.add_argument("--dynamic-lr", type=float, default=1e-4,
                   help="--dynamic: Adam learning rate of the steps")
    e.set_defaults(fn=cmd_eval)

    s = sub.add_parser("sample", help="sample bytes from a checkpoint")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--length", type=int, default=400)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--prompt", default="")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="text: also write here; images: PNG grid; audio: folder of WAVs")
    s.add_argument("--num", type=int, default=16, help="images / audio: how many samples")
    s.add_argument("--prefix-fraction", type=float, default=0.0,
                   help="images / audio: start from this fraction of test sequences (0.5: the "
                        "top half of each image)")
    s.add_argument("--device", default="auto")
    s.add_argument("--latest", action="store_true",
                   help="use the newest checkpoint (default: the best by validation loss)")
    s.set_defaults(fn=cmd_sample)

    a = sub.add_parser("attention", help="draw a trained model's attention weights as PNGs")
    a.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    a.add_argument("--layer", type=int, default=0, help="0-based layer")
    a.add_argument("--head", type=int, action="append", help="head (repeatable; default 0)")
    a.add_argument("--length", type=int, default=None,
                   help="positions of the sequence drawn (default: 256 for text, the whole image)")
    a.add_argument("--text", default="", help="text models: this text instead of the data's")
    a.add_argument("--split", default="valid", choices=["train", "valid", "test"],
                   help="where the sequence comes from (its first bytes, or first image)")
    a.add_argument("--query", type=int, action="append",
                   help="query position (repeatable; default: the last, or four for images)")
    a.add_argument("--out", help="folder (default RUN/attention)")
    a.add_argument("--latest", action="store_true",
                   help="use the newest checkpoint (default: the best by validation loss)")
    a.add_argument("--device", default="cpu")
    a.set_defaults(fn=cmd_attention)

    c = sub.add_parser("plot", help="draw a run's training curves (bits/byte vs steps, seconds)")
    c.add_argument("--run", required=True, help="run folder (holding log.jsonl)")
    c.add_argument("--out", help="PNG path (default RUN/curves.png)")
    c.set_defaults(fn=cmd_plot)

    d = sub.add_parser("pattern", help="draw a pattern's connectivity matrix and print density")
    d.add_argument("--pattern", default="strided",
                   help=f"a kind ({', '.join(PATTERN_KINDS)}), a union 'local+global+random', or "
                        "one pattern per head 'local+global,strided'")
    d.add_argument("--stride", type=int, default=8)
    d.add_argument("--summary", type=int, default=2)
    d.add_argument("--window", type=int, default=8)
    d.add_argument("--distinct-heads", action="store_true")
    d.add_argument("--global-tokens", default="0",
                   help="global / bigbird / longformer: comma-separated global positions ('' "
                        "for none)")
    d.add_argument("--random-blocks", type=int, default=2,
                   help="random / bigbird: random blocks per query block")
    d.add_argument("--random-block-size", type=int, default=8,
                   help="random / bigbird: random block size")
    d.add_argument("--pattern-seed", type=int, default=0,
                   help="random / bigbird: seed of the random blocks")
    d.add_argument("--head", type=int, default=0)
    d.add_argument("--seq-len", type=int, default=64)
    d.add_argument("--bidirectional", action="store_true")
    d.add_argument("--out", default="pattern.png")
    d.set_defaults(fn=cmd_pattern)

    from .cli_classify import add_parsers  # classify | listops

    add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
