"""Fault injection: kill -9 at seeded moments, full disks, damaged or missing checkpoint files, a
deleted or hostile ``latest`` pointer, foreign files. Each run either ends with the same weights
and log as the uninterrupted run, or stops with an error that names the file, and loses nothing.
"""
import contextlib
import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparse_transformer.models import SparseTransformer
from sparse_transformer.training import Trainer
from sparse_transformer.training import checkpoint as ckpt

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import fault_runner  # noqa: E402

DETERMINISTIC = ("step", "loss_bpb", "lr", "valid_bpb")  # the log's fields that do not time


def run_proc(run_dir, kill=None):
    cmd = [sys.executable, str(HERE / "fault_runner.py"), str(run_dir)]
    if kill:
        cmd += ["--kill", kill]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def final_tensors(run_dir, step=fault_runner.STEPS):
    path = Path(run_dir) / f"step_{step:08d}"
    return (load_file(str(path / "model.safetensors")),
            load_file(str(path / "optimizer.safetensors")))


def log_of(run_dir):
    return [{k: r[k] for k in DETERMINISTIC if k in r} for r in ckpt.read_log(run_dir)]


def assert_same_run(run_dir, ref_dir):
    (ma, oa), (mb, ob) = final_tensors(run_dir), final_tensors(ref_dir)
    assert ma.keys() == mb.keys() and oa.keys() == ob.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    for k in oa:
        assert torch.equal(oa[k], ob[k]), k
    assert log_of(run_dir) == log_of(ref_dir)


def snapshot(folder):
    """Every file under ``folder`` with the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in a subprocess like the interrupted ones."""
    ref = tmp_path_factory.mktemp("faults") / "reference"
    p = run_proc(ref)
    assert p.returncode == 0, p.stderr
    return ref


# -- kill -9 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_at_seeded_moments_then_resume(tmp_path, reference, seed):
    """Three kills in a row (during a step, a checkpoint write and an evaluation, in a seeded
    order and at seeded moments), then a resume that finishes: weights, optimizer state and log
    are those of the uninterrupted run."""
    rng = random.Random(seed)
    plan = [f"step:{rng.randint(1, 6)}", f"write:{rng.randint(1, 8)}", f"eval:{rng.randint(1, 3)}"]
    rng.shuffle(plan)
    run = tmp_path / "run"
    killed = 0
    for kill in plan:
        p = run_proc(run, kill)
        assert p.returncode in (0, -signal.SIGKILL), p.stderr
        killed += p.returncode == -signal.SIGKILL
    assert killed >= 2, plan  # the moments are chosen so that the kills do happen
    p = run_proc(run)
    assert p.returncode == 0, p.stderr
    assert_same_run(run, reference)
    assert not list(run.glob(".tmp_step_*"))  # the killed writes' leftovers are cleaned up


# -- in one process: faults that do not need a kill ----------------------------------------------
@pytest.fixture(scope="module")
def data():
    return fault_runner.data()


def trainer(run_dir, data, log=None):
    torch.manual_seed(1234)
    return Trainer(fault_runner.config(), run_dir, data=data, progress=False,
                   log=log or (lambda m: None))


def finish(run_dir, data):
    msgs = []
    t = trainer(run_dir, data, msgs.append)
    t.resume()
    t.fit()
    return msgs


class Crash(Exception):
    pass


@contextlib.contextmanager
def crash_in_training_forward(n):
    """Raise ``Crash`` in the n-th training forward pass (inside a step), as a crash would."""
    forward, count = SparseTransformer.forward, [0]

    def patched(self, *a, **k):
        if self.training:
            count[0] += 1
            if count[0] == n:
                raise Crash
        return forward(self, *a, **k)

    SparseTransformer.forward = patched
    try:
        yield
    finally:
        SparseTransformer.forward = forward


def partial_run(run_dir, data, steps):
    """Resume the run (or start it) and crash inside step ``steps + 1``: steps up to ``steps`` are
    done, checkpoints up to there written."""
    t = trainer(run_dir, data)
    t.resume()
    with crash_in_training_forward(steps - t.step + 1), pytest.raises(Crash):
        t.fit()


def test_full_disk_during_a_checkpoint_stops_clearly_and_loses_nothing(tmp_path, data, reference,
                                                                       monkeypatch):
    run = tmp_path / "run"
    real, calls = ckpt.save_file, [0]

    def fails_on_the_second_checkpoint(tensors, path, *a, **k):
        calls[0] += 1
        if calls[0] == 5:  # the second checkpoint's optimizer file
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt, "save_file", fails_on_the_second_checkpoint)
    t = trainer(run, data)
    with pytest.raises(ckpt.RunWriteError, match="No space left") as e:
        t.fit()
    assert "step_00000004" in str(e.value) and "--resume" in str(e.value)
    assert not list(run.glob(".tmp_step_*"))
    ckpt.verify_checkpoint(run / "step_00000004")
    monkeypatch.setattr(ckpt, "save_file", real)
    finish(run, data)
    assert_same_run(run, reference)


def test_full_disk_while_logging_stops_clearly(tmp_path, data, reference, monkeypatch):
    run = tmp_path / "run"
    real_open, calls = open, [0]

    def full(path, mode="r", *a, **k):
        if str(path).endswith(ckpt.LOG_FILE) and "a" in mode:
            calls[0] += 1
            if calls[0] == 5:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(ckpt.RunWriteError, match="log.jsonl.*No space left"):
        trainer(run, data).fit()
    monkeypatch.setattr("builtins.open", real_open)
    finish(run, data)
    assert_same_run(run, reference)


@pytest.mark.parametrize("damage", ["truncate-model", "garbage-state", "missing-optimizer",
                                    "missing-rng", "missing-manifest"])
def test_damaged_newest_checkpoint_is_reported_and_the_one_before_used(tmp_path, data, reference,
                                                                       damage):
    run = tmp_path / "run"
    partial_run(run, data, 8)
    bad = run / "step_00000008"
    if damage == "truncate-model":
        f = bad / "model.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    elif damage == "garbage-state":
        (bad / "state.json").write_text("{not json")
    elif damage == "missing-optimizer":
        (bad / "optimizer.safetensors").unlink()
    elif damage == "missing-rng":
        (bad / "rng.safetensors").unlink()
    else:
        (bad / "manifest.json").unlink()
    before = snapshot(bad)
    msgs = finish(run, data)
    assert any("damaged" in m and str(bad) in m for m in msgs), msgs
    assert any("resumed from" in m and "step_00000004" in m for m in msgs), msgs
    assert_same_run(run, reference)
    aside = run / "step_00000008.superseded-1"  # the damaged folder is kept, byte for byte
    assert snapshot(aside) == before


def test_every_checkpoint_damaged_stops_and_changes_nothing(tmp_path, data):
    run = tmp_path / "run"
    partial_run(run, data, 8)
    for p in ckpt.list_checkpoints(run):
        (p / "model.safetensors").write_bytes(b"\0" * 10)
    before = snapshot(run)
    with pytest.raises(ckpt.CheckpointError, match="every checkpoint is damaged") as e:
        trainer(run, data).resume()
    assert "step_00000004" in str(e.value) and "step_00000008" in str(e.value)
    assert snapshot(run) == before


def test_deleted_pointer_resumes_from_the_newest_checkpoint(tmp_path, data, reference):
    run = tmp_path / "run"
    partial_run(run, data, 8)
    (run / "latest").unlink()
    msgs = finish(run, data)
    assert any("resumed from" in m and "step_00000008" in m for m in msgs), msgs
    assert_same_run(run, reference)


@pytest.mark.parametrize("pointer", ["../outside", "/etc", "symlink"])
def test_pointer_outside_the_run_folder_is_ignored(tmp_path, data, reference, pointer):
    run = tmp_path / "run"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.safetensors").write_bytes(b"not ours")
    partial_run(run, data, 8)
    (run / "latest").unlink()
    if pointer == "symlink":
        (run / "latest").symlink_to(outside)
    else:
        (run / "latest").write_text(pointer + "\n")
    assert ckpt.read_pointer(run) is None
    msgs = finish(run, data)
    assert any("ignoring" in m for m in msgs) and any("step_00000008" in m for m in msgs)
    assert_same_run(run, reference)
    assert (outside / "model.safetensors").read_bytes() == b"not ours"
    assert not (run / "latest").is_symlink()  # replaced, never written through


def test_foreign_files_are_never_deleted(tmp_path, data, reference):
    run = tmp_path / "run"
    partial_run(run, data, 4)
    # A checkpoint copied in from another run, and another run's temporary folder.
    other = tmp_path / "other"
    partial_run(other, data, 4)
    os.replace(other / "step_00000004", run / "step_00000001")
    (run / ".tmp_step_00000002_someoneelse_x").mkdir()
    finish(run, data)
    assert (run / "step_00000001").is_dir() and (run / ".tmp_step_00000002_someoneelse_x").is_dir()
    assert sorted(p.name for p in ckpt.list_checkpoints(run)) == [
        "step_00000001", "step_00000008", "step_00000012"]  # own ones pruned to the newest 2


def test_a_new_run_refuses_a_folder_holding_a_run(tmp_path, data):
    run = tmp_path / "run"
    partial_run(run, data, 4)
    before = snapshot(run)
    with pytest.raises(ckpt.RunFolderError, match="already holds a run"):
        trainer(run, data).fit()  # no resume: a new run
    assert snapshot(run) == before


def test_final_step_is_saved_once_and_a_finished_run_keeps_its_summary(tmp_path, data,
                                                                       monkeypatch):
    run = tmp_path / "run"
    saves = []
    real = ckpt.save_checkpoint
    monkeypatch.setattr(ckpt, "save_checkpoint", lambda *a, **k: saves.append(a[1]) or real(*a, **k))
    info = trainer(run, data).fit()
    assert saves == [4, 8, 12]  # steps is a multiple of checkpoint_every: no second final save
    before = snapshot(run)
    t = trainer(run, data)
    assert t.resume()
    again = t.fit()  # a finished run: nothing to do, nothing rewritten
    assert again["steps"] == 12 and saves == [4, 8, 12]
    saved = json.loads((run / "step_00000012" / "state.json").read_text())["elapsed_s"]
    assert again["elapsed_s"] == saved > 0  # the run's training time, not this call's ~0 s
    assert info["elapsed_s"] >= saved  # (the first call also counts its last save)
    assert snapshot(run) == before


def test_log_is_exact_after_many_resumes(tmp_path, data, reference):
    run = tmp_path / "run"
    for steps in (2, 3, 5, 8, 9, 11):  # crashes before the first checkpoint, between and after
        partial_run(run, data, steps)
    finish(run, data)
    assert_same_run(run, reference)
    elapsed = [r["elapsed_s"] for r in ckpt.read_log(run)]
    assert elapsed == sorted(elapsed)  # the run's time goes on across resumes


def test_log_link_out_of_the_run_folder_is_refused(tmp_path, data):
    run = tmp_path / "run"
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("keep me\n")
    run.mkdir()
    ckpt.write_run_file(run, "r1", {})
    (run / ckpt.LOG_FILE).symlink_to(outside)
    t = trainer(run, data)
    t.run_id = "r1"  # the run that owns the folder
    with pytest.raises(ckpt.RunWriteError, match="log.jsonl"):
        t.fit()
    assert outside.read_text() == "keep me\n"


def test_cli_resume_without_pointer_continues_the_run(tmp_path, capsys):
    from sparse_transformer.cli import main

    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--out", str(run), "--quiet", "final_eval_bytes=-1",
            "sample_bytes=0", "checkpoint_every=4", "keep_best=false"]
    assert main(args + ["steps=8"]) == 0
    (run / "latest").unlink()
    log = ckpt.read_log(run)
    assert main(["train", "--out", str(run), "--resume", "--quiet", "steps=12"]) == 0
    err = capsys.readouterr()
    assert "resumed from" in err.out + err.err and "step_00000008" in err.out + err.err
    assert "starting a new run" not in err.out + err.err
    assert sorted(p.name for p in ckpt.list_checkpoints(run)) == ["step_00000008", "step_00000012"]
    assert ckpt.read_log(run)[:len(log)] == log  # the old records kept, none duplicated
    steps = [r["step"] for r in ckpt.read_log(run) if "loss_bpb" in r]
    assert steps == sorted(set(steps))
