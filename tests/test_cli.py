"""The command line, run as a user runs it: in subprocesses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparse_transformer.cli import apply_overrides
from sparse_transformer.models import get_preset


def cli(*args, cwd=None, ok=True):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.run([sys.executable, "-m", "sparse_transformer.cli", *args], cwd=cwd,
                       capture_output=True, text=True, env=env, timeout=300)
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    p = cli("train", "--preset", "tiny", "--out", str(out), "--quiet", "train.steps=6",
            "model.d_model=24", "sample_bytes=16")
    assert "held-out (valid) bits/byte" in p.stdout
    assert "PPMd" in p.stdout
    return out


def test_train_writes_everything(run_dir):
    assert (run_dir / "latest").read_text().strip() == "step_00000006"
    assert (run_dir / "pattern.png").stat().st_size > 100
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 6
    state = json.loads((run_dir / "step_00000006" / "state.json").read_text())
    assert state["config"]["model"]["d_model"] == 24


def test_resume_continues(run_dir):
    p = cli("train", "--out", str(run_dir), "--resume", "--quiet", "train.steps=8")
    assert "resumed from" in p.stdout or "resumed from" in p.stderr
    assert (run_dir / "latest").read_text().strip() == "step_00000008"


def test_train_refuses_to_overwrite(run_dir):
    p = cli("train", "--preset", "tiny", "--out", str(run_dir), "--quiet", ok=False)
    assert p.returncode != 0 and "--resume" in p.stderr


def test_eval_and_sample(run_dir, tmp_path):
    p = cli("eval", "--checkpoint", str(run_dir), "--max-bytes", "500")
    assert "test:" in p.stdout and "bits/byte" in p.stdout
    out = tmp_path / "s.txt"
    p = cli("sample", "--checkpoint", str(run_dir), "--length", "20", "--prompt", "KING",
            "--out", str(out), "--top-k", "5")
    assert out.read_text().startswith("KING")


def test_pattern_command(tmp_path):
    png = tmp_path / "p.png"
    p = cli("pattern", "--pattern", "fixed", "--stride", "8", "--summary", "2", "--seq-len", "40",
            "--out", str(png))
    assert png.exists() and "density" in p.stdout
    p = cli("pattern", "--pattern", "fixed", "--stride", "8", "--summary", "9", "--out",
            str(png), ok=False)
    assert p.returncode != 0 and "summary" in p.stderr


def test_bad_overrides_are_named():
    p = cli("train", "--preset", "tiny", "model.colour=red", ok=False)
    assert "colour" in p.stderr
    p = cli("train", "--preset", "tiny", "model.stride=-3", ok=False)
    assert "stride" in p.stderr


def test_override_types():
    c = apply_overrides(get_preset("tiny"), ["lr=0.5", "model.n_layers=3", "betas=0.8,0.9",
                                             "checkpointing=true", "data.source=/x"])
    assert c.train.lr == 0.5 and c.model.n_layers == 3 and c.train.betas == (0.8, 0.9)
    assert c.model.checkpointing == "block" and c.data.source == "/x"
    c = apply_overrides(get_preset("tiny"), ["checkpointing=attention", "train.compile=off"])
    assert c.model.checkpointing == "attention" and c.train.compile == "off"


def test_train_on_a_file(tmp_path):
    text = Path(__file__).read_bytes() * 20
    f = tmp_path / "bytes.txt"
    f.write_bytes(text)
    p = cli("train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--data", str(f),
            "--quiet", "steps=3", "final_eval_bytes=300", "sample_bytes=0")
    assert "held-out" in p.stdout
