"""Several CPU processes through torchrun (gloo): ddp and fsdp follow one process's loss curve
with the same global batch, a run saved with N processes resumes with M (2 -> 1, 1 -> 2), and a
ddp checkpoint resumes under fsdp."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparse_transformer.training import checkpoint as ckpt

HERE = Path(__file__).parent
COMMON = ["log_every=1", "sample_bytes=0", "final_eval_bytes=200", "checkpoint_every=2",
          "eval_every=100", "model.checkpointing=block", "compile=off"]


def train(out, procs, *args, torchrun=False):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launch = [sys.executable]
    if procs > 1 or torchrun:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    cmd = launch + ["-m", "sparse_transformer.cli", "train", "--quiet", "--out", str(out), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def losses(run):
    return [r["loss_bpb"] for r in ckpt.read_log(run) if "loss_bpb" in r]


def close(a, b):
    assert len(a) == len(b) == 4, (a, b)
    assert all(math.isclose(x, y, rel_tol=2e-5) for x, y in zip(a, b)), (a, b)


@pytest.mark.slow
def test_fsdp_and_ddp_follow_one_process_and_resume_across_sizes(tmp_path):
    one = tmp_path / "one"
    train(one, 1, "--preset", "tiny", "steps=4", "parallel=fsdp", *COMMON)
    ref = losses(one)
    step2 = one / "step_00000002"
    assert ckpt.is_sharded(step2) and (step2 / "dcp" / ".metadata").is_file()

    fsdp = tmp_path / "fsdp"  # 2 processes for 2 steps, then 1 process
    out = train(fsdp, 2, "--preset", "tiny", "steps=2", "parallel=fsdp", *COMMON)
    assert "2 processes" in out and "held-out" in out
    manifest = json.loads((fsdp / "step_00000002" / ckpt.MANIFEST).read_text())
    assert {"dcp/.metadata", "dcp/__0_0.distcp", "dcp/__1_0.distcp",
            "model.safetensors"} <= set(manifest["files"])
    ckpt.verify_checkpoint(fsdp / "step_00000002")
    train(fsdp, 1, "--resume", "steps=4")
    close(losses(fsdp), ref)

    grow = tmp_path / "grow"  # 1 process for 2 steps, then 2 processes
    train(grow, 1, "--preset", "tiny", "steps=2", "parallel=fsdp", *COMMON)
    train(grow, 2, "--resume", "steps=4")
    close(losses(grow), ref)
    # The consolidated weights are the whole model, as a one-process checkpoint holds it.
    a, b = (load_file(str(r / "step_00000004" / "model.safetensors")) for r in (one, grow))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=3e-5)

    ddp = tmp_path / "ddp"  # ddp for 2 steps, then fsdp from its whole (unsharded) checkpoint
    train(ddp, 2, "--preset", "tiny", "steps=2", "parallel=ddp", *COMMON)
    assert not ckpt.is_sharded(ddp / "step_00000002")
    train(ddp, 2, "--resume", "steps=4", "parallel=fsdp")
    close(losses(ddp), ref)


@pytest.mark.slow
def test_torchrun_with_one_process_wraps_as_asked(tmp_path):
    """torchrun --nproc_per_node=1 gets a process group: fsdp shards over the one rank and writes
    sharded checkpoints (the launch path one GPU can check), on the plain run's loss curve."""
    plain, one = tmp_path / "plain", tmp_path / "one"
    args = ("--preset", "tiny", "steps=4", "parallel=fsdp", *COMMON)
    out_plain = train(plain, 1, *args)
    out = train(one, 1, *args, torchrun=True)
    def model_line(text):
        return next(line for line in text.splitlines() if line.startswith("model:"))

    assert model_line(out).endswith(", 1 process") and "process" not in model_line(out_plain)
    ckpt.verify_checkpoint(one / "step_00000002")
    manifest = json.loads((one / "step_00000002" / ckpt.MANIFEST).read_text())
    assert {"dcp/.metadata", "dcp/__0_0.distcp"} <= set(manifest["files"])
    close(losses(one), losses(plain))


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_with_micro_batches_follow_one_process(tmp_path, parallel):
    """train.grad_accum under each mode's no-sync handling: 2 processes x 2 micro-batches of the
    same global batch give one process's loss curve (gradients reduced once per step)."""
    one = tmp_path / "one"
    train(one, 1, "--preset", "tiny", "steps=4", f"parallel={parallel}", *COMMON)
    two = tmp_path / "two"
    out = train(two, 2, "--preset", "tiny", "steps=4", f"parallel={parallel}", "grad_accum=2",
                *COMMON)
    assert "2 processes" in out
    close(losses(two), losses(one))
