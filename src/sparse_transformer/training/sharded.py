"""Checkpoints of ``train.parallel="fsdp"`` runs: sharded through ``torch.distributed.checkpoint``.

A sharded checkpoint is a ``step_XXXXXXXX`` folder like the others (``training/checkpoint.py``),
with the same guarantees: written under a temporary name and renamed into place, found by
scanning, verified against a manifest that names the run and records the size and sha256 of every
file. It holds:

* ``dcp/``: the model and optimizer state as every rank holds it (its shards), written by every
  rank at once through ``torch.distributed.checkpoint`` (``.metadata`` plus one file per rank).
  Loading reshards: a run saved with N processes resumes with M (one process included, where
  the model is not sharded at all);
* ``model.safetensors``: the consolidated weights (gathered onto rank 0), so ``eval``,
  ``sample`` and ``load_model_weights`` read it as they read any checkpoint;
* ``rng.safetensors`` (every rank's RNG states), ``state.json`` and ``manifest.json``.

Rank 0 makes the temporary folder and tells the others its name; every rank writes its shard;
rank 0 then writes the rest, the manifest last, fsyncs every file and renames the folder. A
failure on any rank raises ``RunWriteError`` on every rank; nothing already on disk is touched.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from . import checkpoint as ckpt
from . import distributed as dist_utils

DCP_DIR = "dcp"


def _no_dist() -> bool:
    return not (dist.is_available() and dist.is_initialized())


def _dcp():
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import state_dict as sd

    return dcp, sd


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU of rank 0 (empty on the other ranks); every rank must
    call it (it all-gathers the shards). A model that is not sharded gives its own state dict."""
    _, sd = _dcp()
    opts = sd.StateDictOptions(full_state_dict=True, cpu_offload=True)
    return sd.get_model_state_dict(model, options=opts)


def _files_of(folder: Path) -> list[str]:
    """Every file under ``folder`` (one level of sub-folders), as manifest names."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ckpt.MANIFEST:
            out.append(p.relative_to(folder).as_posix())
    return out


def _fsync_tree(folder: Path) -> None:
    for p in sorted(folder.rglob("*"), reverse=True):
        if p.is_file():
            ckpt._fsync_file(p)
        elif p.is_dir():
            ckpt._fsync_dir(p)
    ckpt._fsync_dir(folder)


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, state: dict, info: dist_utils.DistInfo,
                    rng: dict[str, torch.Tensor], run_id: str | None, keep: int = 2,
                    log: Callable[[str], None] | None = None) -> Path:
    """Write sharded checkpoint ``step`` (every rank calls this); returns its path."""
    dcp, sd = _dcp()
    run_dir = Path(run_dir)
    final = run_dir / f"step_{step:08d}"
    made = None
    if info.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            made = tempfile.mkdtemp(dir=run_dir, prefix=f".tmp_step_{step:08d}_{run_id or 'x'}_")
        except OSError as e:
            made = e
    made = dist_utils.broadcast_object(made, info)
    if isinstance(made, BaseException):
        _fail(run_dir, final, made)
    tmp = Path(made)
    error = None
    try:
        msd, osd = sd.get_state_dict(model, optimizer)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp / DCP_DIR),
                 no_dist=_no_dist())
    except Exception as e:  # OSError, or DCP's CheckpointException gathering every rank's
        error = e
    full = full_model_state(model)  # a collective: every rank, whatever happened above
    if info.is_main and error is None:
        try:
            _write_rest(tmp, step, full, state, rng, run_id)
            if final.exists() or final.is_symlink():
                aside = ckpt._set_aside(final)
                if log:
                    log(f"{final} already existed (damaged or from another run): kept as {aside}")
            os.replace(tmp, final)
            ckpt._fsync_dir(run_dir)
            ckpt.atomic_write_text(run_dir / ckpt.LATEST, final.name + "\n")
        except OSError as e:
            error = e
    errors = [None] * info.world
    if info.enabled:
        dist.all_gather_object(errors, None if error is None else repr(error))
    else:
        errors = [None if error is None else repr(error)]
    failed = [e for e in errors if e is not None]
    if failed:
        if info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        dist_utils.barrier(info)
        _fail(run_dir, final, failed[0])
    if info.is_main:
        ckpt._prune(run_dir, step, keep, run_id)
    dist_utils.barrier(info)
    return final


def _write_rest(tmp: Path, step: int, full: dict, state: dict, rng: dict, run_id) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in full.items()},
              str(tmp / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
    with open(tmp / "state.json", "w") as f:
        json.dump({**state, "step": step, "layout": "sharded"}, f, indent=1, default=str)
    files = {name: {"bytes": (tmp / name).stat().st_size, "sha256": ckpt.sha256_file(tmp / name)}
             for name in _files_of(tmp)}
    with open(tmp / ckpt.MANIFEST, "w") as f:
        json.dump({"format": ckpt.FORMAT, "step": step, "run_id": run_id, "files": files}, f,
                  indent=1)
    _fsync_tree(tmp)


def _fail(run_dir: Path, final: Path, e) -> None:
    good = ckpt.find_checkpoint(run_dir)
    kept = f"the last complete checkpoint {good} is kept" if good else "no checkpoint was lost"
    raise ckpt.RunWriteError(f"could not write checkpoint {final}: {e}. Nothing was deleted; "
                             f"{kept}. Free some space (or fix the folder) and continue the run "
                             f"with --resume")


def load_into(path: str | Path, model: torch.nn.Module,
              optimizer: torch.optim.Optimizer) -> None:
    """Read a sharded checkpoint's model and optimizer state into ``model`` (sharded over any
    number of ranks, or not sharded) and ``optimizer``; every rank calls this."""
    dcp, sd = _dcp()
    msd, osd = sd.get_state_dict(model, optimizer)
    both = {"model": msd, "optim": osd}
    dcp.load(both, checkpoint_id=str(Path(path) / DCP_DIR), no_dist=_no_dist())
    sd.set_state_dict(model, optimizer, model_state_dict=both["model"],
                      optim_state_dict=both["optim"])


def load_full_into(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   weights: dict[str, torch.Tensor], optim_state: dict) -> None:
    """Read a whole (unsharded) checkpoint, as one process or DDP writes it, into a sharded
    ``model`` and its ``optimizer``: every rank holds the same tensors and keeps its own shard of
    each (no communication). The optimizer numbers the parameters as it did when it was saved
    (``trainer.make_optimizer``'s groups over the same names)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    def like(ref, t):
        if isinstance(ref, DTensor) and torch.is_tensor(t) and not isinstance(t, DTensor) \
                and t.shape == ref.shape:
            return distribute_tensor(t.to(ref.device), ref.device_mesh, ref.placements,
                                     src_data_rank=None)
        return t

    params = dict(model.named_parameters())
    model.load_state_dict({k: like(params.get(k), v) for k, v in weights.items()})
    order = [p for g in optimizer.param_groups for p in g["params"]]
    if len(order) != sum(len(g["params"]) for g in optim_state["param_groups"]):
        raise ValueError("the optimizer state holds another number of parameters")
    state = {int(i): {k: like(order[int(i)], v) for k, v in st.items()}
             for i, st in optim_state["state"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": optim_state["param_groups"]})
