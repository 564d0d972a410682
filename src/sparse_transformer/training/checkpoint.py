"""Checkpoints: safetensors for every tensor, JSON for everything else, written atomically.

A checkpoint is a folder ``step_XXXXXXXX`` holding ``model.safetensors``, ``optimizer.safetensors``
(the optimizer's tensors, flattened), ``state.json`` (config, step, optimizer scalars, RNG states,
loss scaler) and is first written under a temporary name, every file fsynced, then renamed into
place; ``latest`` (a one-line file, itself replaced atomically) names the newest complete one.
A run killed at any moment leaves either the old or the new checkpoint, never half of one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for name, t in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = t
    for name, val in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
        if states:
            torch.cuda.set_rng_state_all(states)


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, state: dict, keep: int = 2,
                    rng: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint ``step`` under run_dir atomically and point ``latest`` at it.

    ``rng``: the RNG states to store (default: this process's); distributed runs pass every
    rank's."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".tmp_step_{step:08d}_"))
    model_tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(model_tensors, str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng = rng_state() if rng is None else rng
    save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
    with open(tmp / "state.json", "w") as f:
        json.dump({**state, "step": step, "optimizer": opt_meta}, f, indent=1, default=str)
    for p in tmp.iterdir():
        _fsync_file(p)
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    atomic_write_text(run_dir / LATEST, final.name + "\n")
    _prune(run_dir, keep)
    return final


def _prune(run_dir: Path, keep: int) -> None:
    ckpts = sorted(p for p in run_dir.glob("step_*") if p.is_dir())
    for p in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    for p in run_dir.glob(".tmp_step_*"):
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or a checkpoint folder itself."""
    run_dir = Path(run_dir)
    if (run_dir / "model.safetensors").exists():
        return run_dir
    pointer = run_dir / LATEST
    if not pointer.exists():
        return None
    path = run_dir / pointer.read_text().strip()
    return path if (path / "state.json").exists() else None


def load_state(ckpt: str | Path) -> dict:
    with open(Path(ckpt) / "state.json") as f:
        return json.load(f)


def load_model_weights(ckpt: str | Path, model: torch.nn.Module, device="cpu") -> None:
    model.load_state_dict(load_file(str(Path(ckpt) / "model.safetensors"), device=str(device)))


def load_optimizer(ckpt: str | Path, optimizer: torch.optim.Optimizer, state: dict) -> None:
    tensors = load_file(str(Path(ckpt) / "optimizer.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))


def load_rng(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """The stored RNG states (see ``set_rng_state``)."""
    return load_file(str(Path(ckpt) / "rng.safetensors"))
