"""Two CPU processes through torchrun (gloo): training runs, and a resumed run continues exactly."""
import json
import os
import subprocess
import sys

import pytest


def torchrun(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", "-m", "sparse_transformer.cli", "train", "--quiet",
                        *args], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def losses(run):
    return [json.loads(line)["loss_bpb"] for line in (run / "log.jsonl").read_text().splitlines()
            if "loss_bpb" in line]


@pytest.mark.slow
def test_two_processes_resume_exactly(tmp_path):
    common = ["log_every=1", "sample_bytes=0", "final_eval_bytes=300", "model.dropout=0.1"]
    out = torchrun("--preset", "tiny", "--out", str(tmp_path / "a"), "steps=4", *common)
    assert "2 processes" in out and "held-out" in out
    torchrun("--preset", "tiny", "--out", str(tmp_path / "b"), "steps=2", *common)
    torchrun("--out", str(tmp_path / "b"), "--resume", "steps=4")
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(a) == 4 and a == b


def test_pattern_fingerprint_tells_seeded_patterns_apart():
    from sparse_transformer.models import ModelConfig, SparseTransformer
    from sparse_transformer.training.distributed import pattern_fingerprint

    def fp(**kw):
        cfg = ModelConfig(seq_len=512, d_model=32, n_layers=2, n_heads=2, pattern="bigbird",
                          window=16, random_blocks=1, random_block_size=16, **kw)
        return pattern_fingerprint(SparseTransformer(cfg), cfg.seq_len)

    assert fp(pattern_seed=3) == fp(pattern_seed=3)
    assert fp(pattern_seed=3) != fp(pattern_seed=4)
