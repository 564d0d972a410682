"""benchmarks/tma.py: its settings parse (or are refused by name); it needs CUDA."""
import argparse
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import tma  # noqa: E402


def test_settings_parse():
    assert tma.parse_setting("none") == (frozenset(), None)
    assert tma.parse_setting("all") == (frozenset({"fwd", "dq", "dkdv"}), None)
    assert tma.parse_setting("fwd,dkdv/168") == (frozenset({"fwd", "dkdv"}), 168)
    assert tma.label(tma.parse_setting("dkdv,fwd/168")) == "fwd,dkdv / dkdv 168 regs"
    for bad in ("auto", "bwd", "all/x", "dq/"):
        if bad == "dq/":  # an empty cap is no cap
            assert tma.parse_setting(bad) == (frozenset({"dq"}), None)
            continue
        with pytest.raises(argparse.ArgumentTypeError, match="ROLES"):
            tma.parse_setting(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_needs_cuda():
    with pytest.raises(SystemExit, match="needs CUDA"):
        tma.main(["--patterns", "fixed"])


def test_one_row_per_pattern_and_setting(monkeypatch, capsys):
    """The A/B loop itself, on the CPU under the interpreter (float16; the timers stubbed): a row
    per setting, the settings restored after, the same gradients with and without descriptors."""
    pytest.importorskip("triton")
    from sparse_transformer.ops.triton import backend as tb

    if torch.cuda.is_available() or not tb.interpreting():
        pytest.skip("runs the kernels under the interpreter")
    monkeypatch.setattr(tma.gpu, "bench", lambda fn, q, k, v, backward: 2.0 if backward else 1.0)
    monkeypatch.setattr(tma.gpu, "graph_time",
                        lambda fn, q, k, v, backward: 1.5 if backward else 0.5)
    monkeypatch.setattr(tma.gpu, "PATTERNS", {"local": tma.gpu.P.Local(20)})
    monkeypatch.setattr(tma.gpu, "heads_for", lambda n, d: 2)
    before = tb.TMA, tb.TUNING
    tma.run(48, 16, ["local"], [tma.parse_setting("none"), tma.parse_setting("all/168")],
            device="cpu", dtype=torch.float16)
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| local")]
    assert [r.split(" | ")[1] for r in rows] == ["none", "fwd,dq,dkdv / dkdv 168 regs"]
    assert all(r.endswith("| 2.00 | 0.00e+00 |") for r in rows), rows  # bwd/fwd from the stubs
    assert (tb.TMA, tb.TUNING) == before
