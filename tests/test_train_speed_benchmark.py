"""benchmarks/train_speed.py runs on the CPU at small shapes and writes its table as JSON."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_speed_runs_on_the_cpu(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--cpu",
                        "--presets", "enwik8-small", "--patterns", "dense,strided",
                        "--variants", "eager-block,eager-auto", "--steps", "1", "--warmup", "1",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = json.loads((tmp_path / "train_speed.json").read_text())["rows"]
    assert [(r["variant"], r["pattern"]) for r in rows] == [
        ("eager-block", "dense"), ("eager-block", "strided"),
        ("eager-auto", "dense"), ("eager-auto", "strided")]
    assert all(r["tokens_per_s"] > 0 and r["checkpointing"] in ("block", "none") for r in rows)
    assert rows[0]["checkpointing"] == "block"
    assert "| enwik8-small | eager-auto | strided |" in p.stdout


def test_train_speed_isolates_cases_in_their_own_processes(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--cpu",
                        "--isolate", "--presets", "enwik8-small", "--patterns", "dense,fixed",
                        "--variants", "eager-auto", "--steps", "1", "--warmup", "1",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = json.loads((tmp_path / "train_speed.json").read_text())["rows"]
    assert [r["pattern"] for r in rows] == ["dense", "fixed"]
    assert all("error" not in r and r["tokens_per_s"] > 0 for r in rows)
