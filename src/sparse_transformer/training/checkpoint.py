"""Checkpoints: safetensors for every tensor, JSON for everything else, written atomically, verified.

A run folder holds ``run.json`` (the run's id and first config), ``log.jsonl`` and checkpoints.
A checkpoint is a folder ``step_XXXXXXXX`` holding ``model.safetensors``, ``optimizer.safetensors``
(the optimizer's tensors, flattened), ``rng.safetensors``, ``state.json`` (config, step, optimizer
scalars, loss scaler, elapsed time) and ``manifest.json`` (the run id, and the size and sha256 of
every other file). It is written under a temporary name, every file fsynced, then renamed into
place. A run killed at any moment leaves either the old or the new checkpoint, never half of one.
``train.parallel="fsdp"`` runs write sharded checkpoints instead (``training/sharded.py``: the model
and optimizer through torch.distributed.checkpoint in ``dcp/``, the consolidated weights in
``model.safetensors``), found, verified and pruned by the same code.

The folder is the truth, not a pointer: ``find_checkpoint`` scans the ``step_*`` folders, newest
first, and takes the first one whose manifest checks (every file present, sizes and sha256 equal).
A damaged one is reported with its path and the one before it is used. ``latest`` (a one-line
file naming the newest checkpoint) is still written, for people and other tools, but it is only a
hint: it is never followed outside the run folder and discovery never depends on it.

The best checkpoint: a checkpoint saved right after an evaluation records that validation loss
(``valid_bpb`` in its state.json, covered by the manifest). ``find_best_checkpoint`` scans and
verifies the same way and returns the lowest; the rotation of old checkpoints never deletes it.

What a run may delete: only checkpoints and temporary folders whose manifest (or name) carries its
own run id. A folder that would be overwritten (a damaged checkpoint of the same step, a foreign
one) is renamed aside to ``step_XXXXXXXX.superseded-N`` and kept. Symbolic links in a run folder
are never followed: a linked ``step_*`` folder is not a checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load as load_tensors_bytes
from safetensors.torch import save_file

LATEST = "latest"
MANIFEST = "manifest.json"
RUN_FILE = "run.json"
LOG_FILE = "log.jsonl"
FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")
# A sharded checkpoint (``train.parallel="fsdp"``, training/sharded.py): the model and optimizer
# through torch.distributed.checkpoint in ``dcp/``, plus the consolidated weights.
SHARDED_FILES = ("model.safetensors", "rng.safetensors", "state.json", "dcp/.metadata")
FORMAT = 1
_STEP = re.compile(r"^step_(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint (or every checkpoint of a run) is missing a file, damaged or unreadable."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class RunWriteError(RuntimeError):
    """Writing a checkpoint or the log failed (a full disk, a read-only folder, ...)."""


class RunFolderError(RuntimeError):
    """A run folder holds another run's files: a new run refuses to write there."""


# -- small file helpers ---------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def no_follow(path, flags: int) -> int:
    """``open(..., opener=no_follow)``: refuse (ELOOP) to open a symbolic link."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename (a link at ``path`` is replaced, never
    written through)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def step_of(path: Path) -> int | None:
    m = _STEP.match(Path(path).name)
    return int(m.group(1)) if m else None


# -- the run folder -------------------------------------------------------------------------------
def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def read_run_file(run_dir: str | Path) -> dict | None:
    """``run.json`` of a run folder ({"run_id", "config"}), or None when there is none."""
    p = Path(run_dir) / RUN_FILE
    if p.is_symlink() or not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(p, f"unreadable ({e}); move it away to start a new run here") from None
    if not isinstance(d, dict) or not isinstance(d.get("run_id"), str):
        raise CheckpointError(p, "holds no run_id; move it away to start a new run here")
    return d


def write_run_file(run_dir: str | Path, run_id: str, config: dict) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_FILE, json.dumps({"run_id": run_id, "config": config},
                                                     indent=1, default=str) + "\n")


def run_files(run_dir: str | Path) -> list[str]:
    """Names in ``run_dir`` that a training run writes (empty: nothing of a run is there)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    names = {RUN_FILE, LOG_FILE, LATEST, "summary.json"}
    return sorted(p.name for p in run_dir.iterdir()
                  if p.name in names or _STEP.match(p.name) or p.name.startswith(".tmp_step_"))


# -- writing --------------------------------------------------------------------------------------
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


def _write_files(tmp: Path, step: int, model, optimizer, state: dict, rng, run_id) -> None:
    model_tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(model_tensors, str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
    with open(tmp / "state.json", "w") as f:
        json.dump({**state, "step": step, "optimizer": opt_meta}, f, indent=1, default=str)
    files = {name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
             for name in FILES}
    with open(tmp / MANIFEST, "w") as f:
        json.dump({"format": FORMAT, "step": step, "run_id": run_id, "files": files}, f, indent=1)
    for p in tmp.iterdir():
        _fsync_file(p)
    _fsync_dir(tmp)


def _set_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.superseded-N`` (kept, never deleted); returns the new name."""
    n = 1
    while (path.parent / f"{path.name}.superseded-{n}").exists():
        n += 1
    aside = path.parent / f"{path.name}.superseded-{n}"
    os.replace(path, aside)
    return aside


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, state: dict, keep: int = 2,
                    rng: dict[str, torch.Tensor] | None = None, run_id: str | None = None,
                    log: Callable[[str], None] | None = None) -> Path:
    """Write checkpoint ``step`` under run_dir atomically, point ``latest`` at it, and delete this
    run's checkpoints older than the ``keep`` newest.

    ``rng``: the RNG states to store (default: this process's); distributed runs pass every
    rank's. ``run_id``: the run's id (see the module doc for what it allows to delete). Raises
    ``RunWriteError`` when a write fails; the checkpoints already there are untouched then."""
    run_dir = Path(run_dir)
    final = run_dir / f"step_{step:08d}"
    tmp = None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".tmp_step_{step:08d}_{run_id or 'x'}_"))
        _write_files(tmp, step, model, optimizer, state, rng_state() if rng is None else rng,
                     run_id)
        if final.exists() or final.is_symlink():
            aside = _set_aside(final)
            if log:
                log(f"{final} already existed (damaged or from another run): kept as {aside}")
        os.replace(tmp, final)
        tmp = None
        _fsync_dir(run_dir)
        atomic_write_text(run_dir / LATEST, final.name + "\n")
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        good = find_checkpoint(run_dir)
        kept = f"the last complete checkpoint {good} is kept" if good else "no checkpoint was lost"
        raise RunWriteError(f"could not write checkpoint {final}: {e}. Nothing was deleted; "
                            f"{kept}. Free some space (or fix the folder) and continue the run "
                            f"with --resume") from e
    _prune(run_dir, step, keep, run_id)
    return final


def _manifest_run_id(path: Path) -> str | None:
    try:
        return json.loads((path / MANIFEST).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def _prune(run_dir: Path, step: int, keep: int, run_id: str | None) -> None:
    """Delete this run's checkpoints older than its ``keep`` newest up to ``step``, and this run's
    temporary folders. Anything without this run's id in its manifest is left alone (a caller
    without a run id prunes the checkpoints whose manifest has none; a folder without a manifest
    is never deleted)."""
    ours = sorted((p for p in _step_dirs(run_dir) if step_of(p) <= step
                   and (p / MANIFEST).exists() and _manifest_run_id(p) == run_id), key=step_of)
    best = _best_of(ours)  # the best checkpoint by validation loss is never rotated out
    for p in ours[:-keep] if keep > 0 else []:
        if p != best:
            shutil.rmtree(p, ignore_errors=True)
    for p in run_dir.glob(f".tmp_step_*_{run_id or 'x'}_*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


# -- finding and verifying ------------------------------------------------------------------------
def _step_dirs(run_dir: Path) -> list[Path]:
    if not run_dir.is_dir():
        return []
    return [p for p in run_dir.iterdir()
            if _STEP.match(p.name) and p.is_dir() and not p.is_symlink()]


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Every ``step_*`` folder of a run folder (links excluded), newest first, unverified."""
    return sorted(_step_dirs(Path(run_dir)), key=step_of, reverse=True)


def verify_checkpoint(path: str | Path) -> None:
    """Raise ``CheckpointError`` (naming the file) unless every file of the checkpoint is present
    with the size and sha256 its manifest records, and the manifest is of this folder's step. A
    folder without a manifest (written before manifests existed, in a run folder without
    ``run.json``) only needs its files present; its damage shows when it is read."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        raise CheckpointError(path, "not a checkpoint folder")
    mpath = path / MANIFEST
    if not mpath.exists():
        if (path.parent / RUN_FILE).exists():  # every checkpoint of such a run has a manifest
            raise CheckpointError(mpath, "missing")
        for name in FILES:
            if not (path / name).is_file():
                raise CheckpointError(path / name, "missing")
        return
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
        complete = isinstance(files, dict) and (set(FILES) <= set(files)
                                                or set(SHARDED_FILES) <= set(files))
    except (OSError, ValueError, KeyError, TypeError):
        complete = False
    if not complete:
        raise CheckpointError(mpath, "damaged manifest")
    if step_of(path) is not None and manifest.get("step") != step_of(path):
        raise CheckpointError(mpath, f"is the manifest of step {manifest.get('step')}, not of "
                                     f"{path.name} (a renamed or foreign folder)")
    for name, want in files.items():
        f = path / name
        if not isinstance(want, dict):
            raise CheckpointError(mpath, "damaged manifest")
        if not _inside(name):
            raise CheckpointError(mpath, f"names a file outside the checkpoint: {name!r}")
        if f.is_symlink() or not f.is_file():
            raise CheckpointError(f, "missing")
        size = f.stat().st_size
        if size != want.get("bytes"):
            raise CheckpointError(f, f"{size} bytes, the manifest says {want.get('bytes')} "
                                     "(truncated or overwritten)")
        if sha256_file(f) != want.get("sha256"):
            raise CheckpointError(f, "sha256 differs from the manifest (damaged)")


def _inside(name: str) -> bool:
    """A manifest name of a file in the checkpoint: a plain name, or ``dcp/<plain name>``."""
    parts = name.split("/")
    if len(parts) == 2 and parts[0] == "dcp":
        return parts[1] not in ("", ".", "..")
    return len(parts) == 1 and not name.startswith(".")


def is_sharded(path: str | Path) -> bool:
    """True for a checkpoint written by ``training/sharded.py`` (a ``dcp/`` folder)."""
    return (Path(path) / "dcp").is_dir() and not (Path(path) / "optimizer.safetensors").exists()


def read_pointer(run_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` names, when it is a plain ``step_*`` name inside the run folder;
    None otherwise (missing, a link, a path, anything else: it is only a hint)."""
    p = Path(run_dir) / LATEST
    if p.is_symlink() or not p.is_file():
        return None
    try:
        name = p.read_text(errors="replace").strip()
    except OSError:
        return None
    return Path(run_dir) / name if _STEP.match(name) else None


def _verified(run_dir: Path, warn: Callable[[str], None] | None):
    """The run's checkpoints, newest first, that verify; damaged ones reported through ``warn``
    and skipped (lazily: a caller that stops early verifies no further)."""
    for p in list_checkpoints(run_dir):
        try:
            verify_checkpoint(p)
        except CheckpointError as e:
            if warn:
                warn(f"skipping a damaged checkpoint: {e}")
            continue
        yield p


def find_checkpoint(run_dir: str | Path, warn: Callable[[str], None] | None = None) -> Path | None:
    """The newest complete checkpoint of a run folder (or a checkpoint folder itself), verified.

    Damaged checkpoints newer than the one returned are reported through ``warn``. A checkpoint
    folder passed directly must verify (``CheckpointError`` otherwise)."""
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST).exists() or (run_dir / "model.safetensors").exists():
        verify_checkpoint(run_dir)
        return run_dir
    found = next(_verified(run_dir, warn), None)
    hint = read_pointer(run_dir)
    if warn and (run_dir / LATEST).exists() and hint is None:
        warn(f"ignoring {run_dir / LATEST}: it does not name a step_* folder of this run")
    return found


def checkpoint_metric(path: str | Path) -> float | None:
    """The validation loss (bits/byte) recorded in a checkpoint's state.json when it was saved
    right after an evaluation (``valid_bpb``); None otherwise."""
    try:
        v = json.loads((Path(path) / "state.json").read_text()).get("valid_bpb")
    except (OSError, ValueError, AttributeError):
        return None
    return float(v) if isinstance(v, (int, float)) and v == v else None


def _best_of(paths: list[Path]) -> Path | None:
    """The path with the lowest recorded validation loss (the newest among equals); None when
    none records one."""
    scored = [(m, -step_of(p), p) for p in paths if (m := checkpoint_metric(p)) is not None]
    return min(scored)[2] if scored else None


def find_best_checkpoint(run_dir: str | Path,
                         warn: Callable[[str], None] | None = None) -> Path | None:
    """The complete checkpoint of a run folder with the lowest validation loss, found by
    scanning the ``step_*`` folders and verifying each against its manifest (the loss is read
    from its state.json, which the manifest covers); damaged ones are reported through ``warn``
    and skipped. A run whose checkpoints record no validation loss gives ``find_checkpoint``'s
    newest one; a checkpoint folder passed directly is itself (verified)."""
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST).exists() or (run_dir / "model.safetensors").exists():
        verify_checkpoint(run_dir)
        return run_dir
    good = list(_verified(run_dir, warn))
    return _best_of(good) or (good[0] if good else None)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``find_checkpoint`` without reports (None when the run has no complete checkpoint)."""
    return find_checkpoint(run_dir)


def damaged_checkpoints(run_dir: str | Path) -> list[CheckpointError]:
    out = []
    for p in list_checkpoints(run_dir):
        try:
            verify_checkpoint(p)
        except CheckpointError as e:
            out.append(e)
    return out


# -- loading --------------------------------------------------------------------------------------
@dataclass
class Loaded:
    """Everything a checkpoint holds, read into memory (nothing applied yet)."""
    path: Path
    state: dict
    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    rng: dict[str, torch.Tensor]
    sharded: bool = False  # model and optimizer not read: see training/sharded.load_into


def _read_tensors(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    try:
        tensors = load_tensors_bytes(path.read_bytes())
    except Exception as e:  # safetensors raises its own error type for damaged files
        raise CheckpointError(path, f"unreadable tensors ({e})") from None
    return {k: v.to(device) for k, v in tensors.items()} if str(device) != "cpu" else tensors


def load_state(ckpt: str | Path) -> dict:
    p = Path(ckpt) / "state.json"
    try:
        with open(p) as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(p, f"unreadable ({e})") from None
    if not isinstance(state, dict) or "config" not in state or "step" not in state:
        raise CheckpointError(p, "holds no config or step")
    return state


def load_checkpoint(ckpt: str | Path) -> Loaded:
    """Verify ``ckpt`` and read it whole; ``CheckpointError`` names the file that is wrong."""
    ckpt = Path(ckpt)
    verify_checkpoint(ckpt)
    if is_sharded(ckpt):
        return Loaded(ckpt, load_state(ckpt), {}, {}, _read_tensors(ckpt / "rng.safetensors"),
                      sharded=True)
    return Loaded(ckpt, load_state(ckpt), _read_tensors(ckpt / "model.safetensors"),
                  _read_tensors(ckpt / "optimizer.safetensors"),
                  _read_tensors(ckpt / "rng.safetensors"))


def load_model_weights(ckpt: str | Path, model: torch.nn.Module, device="cpu") -> None:
    model.load_state_dict(_read_tensors(Path(ckpt) / "model.safetensors", device))


def load_optimizer(ckpt: str | Path, optimizer: torch.optim.Optimizer, state: dict) -> None:
    tensors = _read_tensors(Path(ckpt) / "optimizer.safetensors")
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))


def load_rng(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """The stored RNG states (see ``set_rng_state``)."""
    return _read_tensors(Path(ckpt) / "rng.safetensors")


# -- the log --------------------------------------------------------------------------------------
def read_log(run_dir: str | Path) -> list[dict]:
    """The records of ``log.jsonl`` (a torn last line, left by a kill, is skipped)."""
    p = Path(run_dir) / LOG_FILE
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            out.append(rec)
    return out


def truncate_log(run_dir: str | Path, step: int) -> list[dict]:
    """Keep the records of steps <= ``step`` (those a resumed run does not redo); returns them."""
    p = Path(run_dir) / LOG_FILE
    if not p.is_file():
        return []
    recs = read_log(run_dir)
    kept = [r for r in recs if r["step"] <= step]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    if text != p.read_text(errors="replace"):
        atomic_write_text(p, text)
    return kept
