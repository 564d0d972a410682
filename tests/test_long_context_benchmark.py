"""benchmarks/long_context.py: the doubling-then-bisecting search, and a dry run on the CPU."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("long_context", ROOT / "benchmarks" / "long_context.py")
long_context = importlib.util.module_from_spec(spec)
spec.loader.exec_module(long_context)


@pytest.mark.parametrize("limit_fits,expect", [
    (3000, (2944, 3008)), (100, (0, 128)), (10**9, (8192, None)), (8000, (8000, 8064)),
    (8191, (8128, 8192))])
def test_search_doubles_then_bisects(limit_fits, expect):
    tried = []

    def fits(n):
        tried.append(n)
        return n <= limit_fits

    assert long_context.longest(fits, 128, 8192, 64) == expect
    assert all(n % 64 == 0 and n <= 8192 for n in tried)
    assert len(tried) == len(set(tried)) and len(tried) <= 13  # 7 doublings, 6 halvings at most


def test_long_context_runs_on_the_cpu(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "long_context.py"), "--cpu",
                        "--patterns", "dense,strided", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads((tmp_path / "long_context.json").read_text())
    dense, strided = res["rows"]
    assert dense["pattern"] == "dense" and strided["pattern"] == "strided"
    assert 0 < dense["longest"] < strided["longest"]  # the simulated budget: pairs, not tokens
    assert not dense["capped"] and dense["first_failed"] - dense["longest"] <= 32
    assert all(r["tokens_per_s"] > 0 for r in res["rows"])
    assert res["audio"]["tokens_per_s"] > 0 and res["audio"]["seq_len"] == 2048
    assert "| strided |" in p.stdout and "audio model" in p.stdout


def test_a_step_time_limit_stops_the_search(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "long_context.py"), "--cpu",
                        "--patterns", "strided", "--no-audio", "--max-step-s", "0",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    (row,) = json.loads((tmp_path / "long_context.json").read_text())["rows"]
    assert row["longest"] == 0 and row["limited_by"] == "time"
    assert row["tried"][0]["why"].startswith("time: one step took")
