"""benchmarks/kernel_resources.py compiles the Triton kernels for sm_90 on a CPU machine."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
triton = pytest.importorskip("triton")
TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


@pytest.mark.skipif(not (TOOLS / "ptxas").exists() or not (TOOLS / "cuobjdump").exists(),
                    reason="this Triton wheel carries no ptxas / cuobjdump")
def test_kernel_resources_reports_each_kernel(tmp_path):
    out = tmp_path / "res.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_resources.py"),
                        "--kernels", "fwd,dkdv,dkdv-split", "--configs", "4x2", "--json",
                        str(out)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    # dkdv-split: the split-row path (atomics, a barrier, acquire-release count) compiles for
    # sm_90, which the interpreter cannot check.
    assert [r["kernel"] for r in rows] == ["fwd", "dkdv", "dkdv-split"]
    for r in rows:
        assert 1 <= r["registers"] <= 255 and r["stack_bytes"] >= 0
        assert r["shared_bytes"] > 0 and r["wgmma"] > 0  # Hopper's warpgroup matmuls
        assert 1 <= r["programs_per_sm"] <= 16
    assert "| dkdv | 4 | 2 |" in p.stdout
    assert all(r["tma_loads"] == 0 for r in rows)  # pointer loads unless asked


@pytest.mark.skipif(not (TOOLS / "ptxas").exists() or not (TOOLS / "cuobjdump").exists(),
                    reason="this Triton wheel carries no ptxas / cuobjdump")
def test_kernel_resources_compiles_the_tma_kernels(tmp_path):
    """The tensor-descriptor kernels lower to Hopper's TMA loads (the interpreter runs them, but
    only this compile shows they build for sm_90)."""
    out = tmp_path / "res.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_resources.py"),
                        "--kernels", "fwd,dq,dkdv", "--configs", "4x2", "--tma", "--json",
                        str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["kernel"] for r in rows] == ["fwd tma", "dq tma", "dkdv tma"]
    for r in rows:
        assert r["tma_loads"] > 0 and r["wgmma"] > 0 and 1 <= r["registers"] <= 255


def test_kernel_resources_names_bad_arguments():
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_resources.py"),
                        "--kernels", "fwd,bwd"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "--kernels" in p.stderr and "bwd" in p.stderr
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_resources.py"),
                        "--configs", "4-2"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "--configs" in p.stderr and "WARPSxSTAGES" in p.stderr
