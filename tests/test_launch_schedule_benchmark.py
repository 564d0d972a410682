"""benchmarks/launch_schedule.py: its settings parse (or are refused by name); it needs CUDA."""
import argparse
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import launch_schedule  # noqa: E402


def test_settings_parse():
    assert launch_schedule.parse_setting("0/0") == (None, False)
    assert launch_schedule.parse_setting("auto/auto") == ("auto", "auto")
    assert launch_schedule.parse_setting("32/1") == (32, True)
    for bad in ("auto", "x/1", "0/2", "1/1/1"):
        with pytest.raises(argparse.ArgumentTypeError, match="SPLIT/HEADS"):
            launch_schedule.parse_setting(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_needs_cuda():
    with pytest.raises(SystemExit, match="needs CUDA"):
        launch_schedule.main(["--patterns", "fixed"])
