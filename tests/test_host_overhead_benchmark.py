"""benchmarks/host_overhead.py runs on a CPU (its own process: it replaces launch internals)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_host_overhead_benchmark_counts_each_launch(tmp_path):
    out = tmp_path / "host.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "host_overhead.py"), "--n", "1024",
                        "--heads", "2", "--calls", "3", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"].split(":")[0] for r in rows] == ["floor (empty autograd Function)",
                                                      "strided", "fixed", "local"]
    # Forward, the delta kernel and at least one backward launch per call; strided runs two
    # tilings (two forward passes).
    launches = {r["case"].split(":")[0]: r["launches"] for r in rows}
    assert launches["strided"] >= 5 and launches["fixed"] >= 3 and launches["local"] >= 3
    assert all(r["fwd_bwd_us"] > 0 for r in rows)
    for r in rows[1:]:  # the backend's forward and backward ran inside each call
        assert r["in_forward_us"] > 0 and r["in_backward_us"] > 0
    assert "launches stubbed" in p.stdout
