"""benchmarks/launch_order.py: the launch-order model runs on the CPU and schedules correctly."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import launch_order  # noqa: E402


def test_greedy_dispatch():
    assert launch_order.makespan([3, 1, 1, 1], 2) == 3  # 3 | 1+1+1
    assert launch_order.makespan([1, 1, 1, 3], 2) == 4  # the long one starts last
    assert launch_order.makespan([2, 2], 4) == 2


def test_model_of_fixed_favours_interleaved_heads(capsys):
    # An H100's slots at n = 16384, 16 heads: the summary-key dk/dv pass (64 programs a head)
    # has a long tail head after head, not with the heads interleaved.
    rows = launch_order.model(launch_order.PATTERNS["fixed"], 16384, 16, 64,
                              {"fwd/dq": 396, "dk/dv": 264})
    summary = [r for r in rows if r["role"] == "dk/dv" and r["programs_per_head"] == 64]
    assert summary and summary[0]["head_major"] > 1.2 and summary[0]["interleaved"] < 1.05
    assert all(r["interleaved"] >= 1.0 and r["head_major"] >= 1.0 for r in rows)
    assert launch_order.main(["--n", "2048", "--heads", "4", "--sms", "8"]) == 0
    out = capsys.readouterr().out
    assert "| fixed | dk/dv 0 |" in out and "| local |" in out


def test_model_of_split_rows_shortens_a_global_column():
    """Longformer's global key column is one long dk/dv program; split at 32 tile pairs its
    modelled launch is shorter (and the splitting is only modelled where a row is longer)."""
    rows = launch_order.model(launch_order.PATTERNS["longformer"], 16384, 16, 64,
                              {"fwd/dq": 396, "dk/dv": 264}, split_cap=32)
    dkdv = [r for r in rows if r["role"] == "dk/dv"]
    assert dkdv[0]["head_major"] > 3 and dkdv[0]["split"] < 1.5
    assert all(r["split"] is None for r in rows if r["role"] == "fwd/dq")


def test_default_schedule_column():
    # The backend's default per dk/dv launch (plan.dkdv_schedule) on an H100's slots at 16K:
    # fixed's summary pass interleaved, longformer's global row split, strided's left alone.
    slots = {"fwd/dq": 396, "dk/dv": 264}
    fixed = launch_order.model(launch_order.PATTERNS["fixed"], 16384, 16, 64, slots)
    summary = [r for r in fixed if r["role"] == "dk/dv" and r["programs_per_head"] == 64][0]
    assert summary["default"] == ("interleaved", summary["interleaved"])
    lf = launch_order.model(launch_order.PATTERNS["longformer"], 16384, 16, 64, slots)
    kv = [r for r in lf if r["role"] == "dk/dv"][0]
    assert kv["default"][0] == "split" and kv["default"][1] < 0.5 * kv["head_major"]
    for r in launch_order.model(launch_order.PATTERNS["strided"], 16384, 16, 64, slots):
        assert r["default"] == ("head after head", r["head_major"])
