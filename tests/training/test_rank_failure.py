"""A rank that fails (raises, or hangs) ends a torchrun job with a clear message, not a hang;
ranks whose random patterns differ stop before the first step."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.parametrize("how,parallel", [("raise", "fsdp"), ("hang", "ddp"), ("pattern", "ddp")])
def test_a_failing_rank_ends_the_job(tmp_path, how, parallel):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "rank_fail_runner.py"), str(tmp_path / "run"), how, parallel]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    took = time.perf_counter() - t0
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    if how == "raise":
        assert "error: rank 1 of 2 failed at step 2: RuntimeError: injected failure" in out
    elif how == "pattern":  # found before any step
        assert "the attention patterns (model.pattern_seed) differ between ranks" in out
        assert not (tmp_path / "run").exists()
    else:  # rank 0 waits train.dist_timeout (10 s) for rank 1, then fails and names the wait
        assert "error: rank 0 of 2 failed at step 2" in out, out[-3000:]
        assert "waited train.dist_timeout = 10 s for the other ranks" in out, out[-3000:]
    assert took < 200
