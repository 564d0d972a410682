"""The training loop: AdamW, warmup + cosine decay, clipping, mixed precision, eval, checkpoints.

Exact resume: batches come from a generator seeded by (seed, step), and a checkpoint holds the
model, optimizer, loss scaler and RNG states, so a resumed run's next loss equals the loss the
uninterrupted run had at that step. A NaN or infinite loss stops the run (``TrainingDiverged``)
without writing a checkpoint, so the last good one stays ``latest``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import batch_generator, is_items, item_batch, items_bits_per_byte, load_dataset, random_batch
from ..models import ModelConfig, RunConfig, SparseTransformer
from ..validation import check_data_splits, check_run_config
from . import checkpoint as ckpt
from . import distributed as dist_utils
from . import sharded
from .evaluate import bits_per_byte
from .fit_check import data_fit_warnings

LN2 = math.log(2)


class TrainingDiverged(RuntimeError):
    pass


def autocast_for(precision: str, device: torch.device):
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA device; use bf16 on the CPU")
    if precision == "fp32":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def lr_at(step: int, cfg) -> float:
    """Linear warmup for ``warmup`` steps, then cosine decay to lr * min_lr_ratio at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW, weight decay on matrices only; PyTorch's fused kernel when every weight is on one
    kind of device that has it (CUDA: one launch for every tensor instead of several per tensor;
    CPU: 0.6 ms a step instead of 2.7 for the demo's 0.86 M parameters on 2 cores)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    params = list(model.parameters())
    fused = (all(p.is_cuda for p in params)
             or all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.bfloat16)
                    for p in params))
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)


def compile_enabled(setting: str, device: torch.device) -> bool:
    """``train.compile``: "on", "off", or "auto" (on for CUDA devices, where it fuses the
    elementwise work around the matmuls; off on the CPU, where compiling costs more than a short
    run gains)."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"train.compile must be one of ('auto', 'on', 'off'), got {setting!r}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def config_to_dict(cfg: RunConfig) -> dict:
    return asdict(cfg)


def config_from_dict(d: dict) -> RunConfig:
    from ..models import DataConfig, TrainConfig

    model = dict(d["model"])
    model["data_shape"] = tuple(model.get("data_shape", ()))
    train = dict(d["train"])
    train["betas"] = tuple(train.get("betas", (0.9, 0.95)))
    return RunConfig(model=ModelConfig(**model), train=TrainConfig(**train),
                     data=DataConfig(**d["data"]))


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, data=None, log=print,
                 progress: bool = True):
        check_run_config(cfg, source=data is None)  # every argument, before anything loads
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.log = log
        self.progress = progress
        t = cfg.train
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.dist, self.device = dist_utils.setup(t.device, t.dist_timeout)
        if t.batch_size % (self.dist.world * t.grad_accum):
            raise ValueError(f"batch_size ({t.batch_size}) must be divisible by the number of "
                             f"processes ({self.dist.world}) x grad_accum ({t.grad_accum})")
        self.autocast = autocast_for(t.precision, self.device)
        self.data = data if data is not None else load_dataset(cfg.data, cfg.model.seq_len)
        check_data_splits(cfg, self.data)  # long enough for the context, before any step
        torch.manual_seed(t.seed)
        self.model = SparseTransformer(cfg.model).to(self.device)
        self.compiled = compile_enabled(t.compile, self.device)
        self.model.prepare(cfg.model.seq_len, self.device)
        if self.dist.enabled:  # every rank must attend with the same (seeded) patterns
            dist_utils.check_same(dist_utils.pattern_fingerprint(self.model, cfg.model.seq_len),
                                  self.dist, "the attention patterns (model.pattern_seed)")
        # fsdp with one process: nothing to shard; its checkpoints are still sharded ones, so
        # that another number of processes can resume the run.
        self.sharded = self.dist.enabled and t.parallel == "fsdp"
        if self.sharded:  # shard first, then compile the sharded blocks
            dist_utils.shard(self.model)
        if self.compiled:
            self.model.compile_blocks(cuda_graphs=t.cuda_graphs)
        self.train_model = self.model
        if self.dist.enabled and not self.sharded:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = make_optimizer(self.model, t)
        self.scaler = torch.amp.GradScaler("cuda", enabled=(t.precision == "fp16"))
        self.step = 0
        self.history: list[dict] = []
        self.run_id: str | None = None  # set by resume() or by the first write (see _claim)
        self._saved_step: int | None = None  # the step of the checkpoint this run has on disk
        self._elapsed_before, self._t0 = 0.0, None  # training seconds before this process
        self._bad = None  # device flag: a non-finite loss since the last check (see _step)
        self._bad_step = None
        self.best_valid: float | None = None  # lowest validation loss of the run (bits/byte)
        self._valid_at: tuple[int, float] | None = None  # (step, loss) of the last evaluation
        self._since_best = 0  # evaluations since the best one (early stopping)
        if self.dist.is_main:
            for w in data_fit_warnings(cfg, self.data["train"], self.model.num_parameters()):
                self.log(f"warning: {w}")

    # -- state ----------------------------------------------------------------------------------
    def save(self) -> Path:
        self._check_finite()  # never write weights that a NaN step may have spoiled
        state = {"config": config_to_dict(self.cfg), "scaler": self.scaler.state_dict(),
                 "elapsed_s": self.elapsed_s()}
        if self._valid_at is not None and self._valid_at[0] == self.step:
            state["valid_bpb"] = self._valid_at[1]  # read back by ckpt.find_best_checkpoint
        rng = dist_utils.gather_rng(ckpt.rng_state(), self.dist)
        path = None
        if self.cfg.train.parallel == "fsdp":
            claimed = None
            if self.dist.is_main:
                try:
                    self._claim()
                except (ckpt.RunFolderError, ckpt.CheckpointError, OSError) as e:
                    claimed = e
            claimed = dist_utils.broadcast_object(claimed, self.dist)
            if claimed is not None:
                raise claimed
            path = sharded.save_checkpoint(self.run_dir, self.step, self.model, self.optimizer,
                                           state, self.dist, rng, self.run_id, log=self.log)
            self._saved_step = self.step
            return path
        if self.dist.is_main:
            self._claim()
            path = ckpt.save_checkpoint(self.run_dir, self.step, self.model, self.optimizer, state,
                                        rng=rng, run_id=self.run_id, log=self.log)
        dist_utils.barrier(self.dist)
        self._saved_step = self.step
        return path

    def consolidate(self) -> None:
        """After training under fsdp (every rank calls this): rank 0's ``model`` becomes a plain
        copy holding the whole model, so that rank 0 alone can evaluate and sample. A no-op
        for other runs."""
        if not self.sharded:
            return
        full = sharded.full_model_state(self.model)
        if self.dist.is_main:
            plain = SparseTransformer(self.cfg.model).to(self.device)
            plain.load_state_dict(full)
            plain.prepare(self.cfg.model.seq_len, self.device)
            self.model = plain

    def elapsed_s(self) -> float:
        """Training seconds of the whole run (every process that resumed it) until now."""
        now = time.perf_counter()
        return self._elapsed_before + (now - self._t0 if self._t0 is not None else 0.0)

    def _claim(self) -> None:
        """Before this trainer's first write: a run folder holds one run. A folder with another
        run's files is refused (resume it instead); nothing in it is touched."""
        if self.run_id is not None:
            return
        found = ckpt.run_files(self.run_dir)
        if found:
            raise ckpt.RunFolderError(
                f"{self.run_dir} already holds a run ({', '.join(found[:4])}); resume it "
                "(Trainer.resume, or --resume on the command line) or use another folder")
        self.run_id = ckpt.new_run_id()
        ckpt.write_run_file(self.run_dir, self.run_id, config_to_dict(self.cfg))

    def resume(self) -> bool:
        """Continue the run in ``run_dir`` from its newest complete checkpoint, found by scanning
        the folder and verified against its manifest; a damaged checkpoint is reported and the one
        before it used. The log keeps only the records of the steps up to the checkpoint (the
        rest are redone). Returns False when there is no checkpoint (the run starts at step 0).
        Raises ``CheckpointError`` when every checkpoint is damaged (nothing is changed then)."""
        run = ckpt.read_run_file(self.run_dir)
        loaded, damaged = None, []
        for path in ckpt.list_checkpoints(self.run_dir):
            try:
                loaded = ckpt.load_checkpoint(path)
                break
            except ckpt.CheckpointError as e:
                damaged.append(str(e))
                self.log(f"warning: damaged checkpoint, using the one before it: {e}")
        if loaded is None and damaged:
            raise ckpt.CheckpointError(self.run_dir, "every checkpoint is damaged (" +
                                       "; ".join(damaged) + "); nothing was changed")
        if (self.run_dir / ckpt.LATEST).exists() and ckpt.read_pointer(self.run_dir) is None:
            self.log(f"warning: ignoring {self.run_dir / ckpt.LATEST}: it does not name a "
                     "checkpoint of this folder (the folder is scanned instead)")
        if loaded is None:
            if run is None:
                return False
            self.run_id, self.step, self._elapsed_before = run["run_id"], 0, 0.0
            if self.dist.is_main:
                self.history = ckpt.truncate_log(self.run_dir, 0)
            self.log(f"no checkpoint yet in {self.run_dir}: the run restarts at step 0")
            return False
        state = loaded.state
        try:
            if loaded.sharded:
                sharded.load_into(loaded.path, self.model, self.optimizer)
            elif self.sharded:  # written by one process or by ddp: shard it now
                sharded.load_full_into(self.model, self.optimizer, loaded.model,
                                       ckpt._unflatten_optimizer(loaded.optimizer,
                                                                 state["optimizer"]))
            else:
                self.model.load_state_dict(loaded.model)
                self.optimizer.load_state_dict(ckpt._unflatten_optimizer(loaded.optimizer,
                                                                         state["optimizer"]))
        except (RuntimeError, ValueError, KeyError) as e:
            raise ckpt.CheckpointError(loaded.path, f"does not fit this model or optimizer "
                                       f"({e})") from None
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(dist_utils.own_rng(loaded.rng, self.dist))
        self.step = self._saved_step = int(state["step"])
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self.run_id = run["run_id"] if run else None
        if self.dist.is_main:
            if self.run_id is None:  # a run folder from before run.json: adopt it
                self.run_id = ckpt._manifest_run_id(loaded.path) or ckpt.new_run_id()
                ckpt.write_run_file(self.run_dir, self.run_id, state["config"])
            self.history = ckpt.truncate_log(self.run_dir, self.step)
        self._restore_best()
        self.log(f"resumed from {loaded.path} at step {self.step}")
        return True

    def _restore_best(self) -> None:
        """The best validation loss so far and the evaluations since, from the kept log."""
        vals = [r["valid_bpb"] for r in self.history if "valid_bpb" in r]
        self.best_valid = min(vals) if vals else None
        self._since_best = len(vals) - 1 - vals.index(self.best_valid) if vals else 0

    def _record_valid(self, v: float) -> bool:
        """Note an evaluation; True when it is the best so far."""
        self._valid_at = (self.step, v)
        if self.best_valid is None or v < self.best_valid:
            self.best_valid, self._since_best = v, 0
            return True
        self._since_best += 1
        return False

    # -- steps ----------------------------------------------------------------------------------
    def batch(self, step: int, split: str = "train", stream: int = 0):
        """This rank's rows of the global batch of ``step``. Every rank draws the same global
        batch (one stream per step, whatever the number of processes) and keeps its slice, so a
        run's batches do not depend on how many processes share it."""
        t = self.cfg.train
        rng = batch_generator(t.seed, step, stream)
        x, y = self._draw(self.data[split], t.batch_size, rng)
        per = t.batch_size // self.dist.world
        x, y = x[self.dist.rank * per:(self.dist.rank + 1) * per], \
            y[self.dist.rank * per:(self.dist.rank + 1) * per]
        if self.device.type == "cuda":  # copy while the GPU still works on the previous step
            return (x.pin_memory().to(self.device, non_blocking=True),
                    y.pin_memory().to(self.device, non_blocking=True))
        return x.to(self.device), y.to(self.device)

    def _draw(self, split, batch_size, rng):
        """Images / audio (rows): whole sequences; text (a stream): random windows."""
        if is_items(split):
            return item_batch(split, batch_size, rng)
        return random_batch(split, self.cfg.model.seq_len, batch_size, rng)

    def train_step(self) -> float:
        """One optimizer step; returns its loss (nats per byte), read back to the host."""
        loss = self._step()
        self._check_finite()
        return dist_utils.all_mean(loss.item(), self.dist, self.device)

    def _step(self) -> torch.Tensor:
        """One optimizer step without waiting for the device: the loss stays a device tensor
        and a non-finite loss is recorded on the device, to be checked at the next log step or
        checkpoint (``_check_finite``), before anything is written."""
        t = self.cfg.train
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(self.step, t)
        x, y = self.batch(self.step)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        k = t.grad_accum
        micro = x.shape[0] // k
        total = None
        for i in range(k):  # micro-batches; gradients are averaged over the whole batch
            xs, ys = x[i * micro:(i + 1) * micro], y[i * micro:(i + 1) * micro]
            with self._sync_gradients(i == k - 1):
                ctx = self.autocast() if self.autocast else contextlib.nullcontext()
                with ctx:
                    logits = self.train_model(xs)
                    part = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ys.reshape(-1))
                self.scaler.scale(part / k if k > 1 else part).backward()
            total = part.detach() if total is None else total + part.detach()
        loss = total / k if k > 1 else total
        bad = ~torch.isfinite(loss.detach())
        if self._bad is None:
            self._bad, self._bad_step = bad, torch.full((), -1, device=loss.device)
        first = bad & (self._bad_step < 0)
        self._bad_step = torch.where(first, torch.full_like(self._bad_step, self.step),
                                     self._bad_step)
        self._bad = self._bad | bad
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return loss

    def _sync_gradients(self, last: bool):
        """The gradient reduction of one micro-batch: DDP all-reduces on the last one only
        (``no_sync`` before it); FSDP reduce-scatters every micro-batch, so that gradients stay
        sharded (accumulating without it would hold every unit's whole gradient)."""
        if last or not isinstance(self.train_model, torch.nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return self.train_model.no_sync()

    def _check_finite(self) -> None:
        """Raise ``TrainingDiverged`` if any step since the last check had a NaN or infinite
        loss (one host sync; every rank agrees)."""
        if self._bad is None:
            return
        bad = dist_utils.all_mean(float(self._bad.item()), self.dist, self.device) > 0
        step = int(self._bad_step.item())
        self._bad = None
        if bad:
            where = f"at step {step}" if step >= 0 else f"before step {self.step}"
            raise TrainingDiverged(
                f"loss became NaN or infinite {where}; stopping. The last good "
                f"checkpoint in {self.run_dir} is kept: lower the learning rate or use fp32 and "
                f"resume with --resume")

    def evaluate(self, split: str = "valid", batches: int | None = None) -> float:
        """Quick held-out loss in bits/byte on fixed random windows (same every call)."""
        t = self.cfg.train
        n = t.eval_batches if batches is None else batches
        self.model.eval()
        total = 0.0
        with torch.no_grad():
            for i in range(n):
                rng = batch_generator(t.seed + 1, i, stream=1)
                x, y = self._draw(self.data[split], t.batch_size, rng)
                ctx = self.autocast() if self.autocast else contextlib.nullcontext()
                with ctx:
                    total += self.model.loss(x.to(self.device), y.to(self.device)).item()
        self.model.train()
        return total / n / LN2

    def _evaluate_and_log(self) -> float:
        """The quick validation loss at this step, written to the run's log."""
        v = self.evaluate()
        self._write_log({"step": self.step, "valid_bpb": v, "elapsed_s": self.elapsed_s()})
        return v

    def final_eval(self, split: str = "valid") -> dict:
        m, t = self.cfg.model, self.cfg.train
        if is_items(self.data[split]):
            rows = self.data[split]
            max_items = -(-t.final_eval_bytes // rows.shape[1]) if t.final_eval_bytes else 0
            return items_bits_per_byte(self.model, rows, t.batch_size, max_items, self.device,
                                       self.autocast)
        return bits_per_byte(self.model, self.data[split], m.seq_len, batch_size=t.batch_size,
                             max_bytes=t.final_eval_bytes, device=self.device,
                             autocast=self.autocast)

    def _write_log(self, rec: dict) -> None:
        self.history.append(rec)
        if not self.dist.is_main:
            return
        self._claim()
        path = self.run_dir / ckpt.LOG_FILE
        try:
            with open(path, "a", opener=ckpt.no_follow) as f:  # a link there is refused
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            good = ckpt.find_checkpoint(self.run_dir)
            raise ckpt.RunWriteError(
                f"could not append to {path}: {e}. Nothing was deleted; "
                + (f"the last complete checkpoint {good} is kept. " if good else "")
                + "Free some space (or fix the folder) and continue the run with --resume") from e

    def fit(self) -> dict:
        t, m = self.cfg.train, self.cfg.model
        t0 = time.perf_counter()
        self._t0 = t0 if self.step < t.steps else None  # a finished run adds no time
        tokens = t.batch_size * m.seq_len
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=t.steps, initial=self.step, unit="step", dynamic_ncols=True)
        stopped = "steps"
        last_t, last_step = t0, self.step
        try:
            while self.step < t.steps:
                loss_t = self._step()
                now = time.perf_counter()
                if bar is not None:
                    bar.update(1)
                if self.step % t.log_every == 0 or self.step == t.steps:
                    self._check_finite()  # the host waits for the device here, and only here
                    loss = dist_utils.all_mean(loss_t.item(), self.dist, self.device)
                    now = time.perf_counter()
                    tps = tokens * (self.step - last_step) / max(1e-9, now - last_t)
                    last_t, last_step = now, self.step
                    rec = {"step": self.step, "loss_bpb": loss / LN2, "lr": lr_at(self.step - 1, t),
                           "tokens_per_s": tps, "elapsed_s": self.elapsed_s()}
                    self._write_log(rec)
                    if bar is not None:
                        bar.set_postfix(bpb=f"{loss / LN2:.3f}", tok_s=f"{tps:,.0f}")
                if self.step % t.eval_every == 0 or self.step == t.steps:
                    v = self._evaluate_and_log()
                    if bar is not None:
                        bar.write(f"step {self.step}: valid {v:.3f} bits/byte")
                    if (self._record_valid(v) and t.keep_best
                            and self.step % t.checkpoint_every and self.step != t.steps):
                        self.save()  # the best so far: kept by the rotation, found by scanning
                    elif t.early_stop_patience and self._since_best >= t.early_stop_patience:
                        stopped = "early_stop"
                        break
                if self.step % t.checkpoint_every == 0:
                    self.save()
                if t.time_limit:
                    over = float(time.perf_counter() - t0 >= t.time_limit)
                    if dist_utils.all_mean(over, self.dist, self.device) > 0:  # ranks agree
                        stopped = "time_limit"
                        break
        except Exception as e:
            if self.dist.enabled:  # the other ranks stop too (torchrun, or train.dist_timeout)
                waited = "timed out" in str(e).lower() or "timeout" in str(e).lower()
                self.log(f"error: rank {self.dist.rank} of {self.dist.world} failed at step "
                         f"{self.step}: {type(e).__name__}: {e}" + (
                             f" (waited train.dist_timeout = {t.dist_timeout:g} s for the other "
                             "ranks: one of them stopped or hangs)" if waited else ""))
            raise
        finally:
            if bar is not None:
                bar.close()
        if stopped == "time_limit" and (self._valid_at is None or self._valid_at[0] != self.step):
            # Stopped between evaluations: score the final weights too, so that the final
            # checkpoint records its validation loss and can be the run's best (eval and sample
            # use the best one by default).
            self._record_valid(self._evaluate_and_log())
        if self.step != self._saved_step:  # one save per step: the final one is never redone
            self.save()
        elapsed = self.elapsed_s()  # the whole run's training time, resumes included
        self._elapsed_before, self._t0 = elapsed, None
        return {"steps": self.step, "stopped_by": stopped, "elapsed_s": elapsed}
