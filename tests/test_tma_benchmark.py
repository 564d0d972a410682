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
