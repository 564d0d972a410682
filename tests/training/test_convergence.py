"""Convergence: a tiny model trained for a fixed number of steps follows a stored loss curve.

The golden curve (``golden_curve.json``) holds, at each evaluation step, the mean and standard
deviation of the validation loss over several seeds (initialisation and batches). The test trains
seed 0 and requires every point within ``K`` standard deviations (at least ``FLOOR`` bits) of
the mean: a change to the model, the optimizer or the data that slows learning by more than seed
noise fails it. Regenerate after an intended change with

    .venv/bin/python tests/training/test_convergence.py --write
"""
import json
import statistics
import sys
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden_curve.json")
SEEDS = (0, 1, 2, 3, 4)
K, FLOOR = 3.0, 0.05


def curve(seed: int) -> list[tuple[int, float]]:
    import torch

    from sparse_transformer.data import embedded_splits
    from sparse_transformer.models import get_preset
    from sparse_transformer.training import Trainer

    torch.set_num_threads(1)  # the same sums on any machine
    data = {k: v[:300_000] for k, v in embedded_splits().items()}
    cfg = get_preset("tiny")
    t = cfg.train
    t.seed, t.steps, t.warmup, t.lr = seed, 150, 10, 3e-3
    t.eval_every, t.eval_batches, t.log_every, t.checkpoint_every = 25, 4, 25, 1000
    t.final_eval_bytes = -1
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, d, data=data, log=lambda *_: None, progress=False)
        tr.fit()
    return [(r["step"], r["valid_bpb"]) for r in tr.history if "valid_bpb" in r]


def test_tiny_model_follows_the_golden_curve():
    golden = json.loads(GOLDEN.read_text())
    got = curve(0)
    assert [s for s, _ in got] == [p["step"] for p in golden["points"]]
    for (step, v), p in zip(got, golden["points"]):
        band = max(K * p["std"], FLOOR)
        assert abs(v - p["mean"]) <= band, (
            f"step {step}: validation {v:.4f} bits/byte, golden {p['mean']:.4f} +- {band:.4f} "
            f"(seeds {golden['seeds']})")
    assert got[-1][1] < got[0][1] - 0.5  # and it learned


if __name__ == "__main__" and "--write" in sys.argv:
    runs = [curve(s) for s in SEEDS]
    points = [{"step": runs[0][i][0], "mean": statistics.mean(r[i][1] for r in runs),
               "std": statistics.stdev(r[i][1] for r in runs),
               "seeds": [r[i][1] for r in runs]} for i in range(len(runs[0]))]
    GOLDEN.write_text(json.dumps({"seeds": list(SEEDS), "k": K, "floor": FLOOR,
                                  "points": points}, indent=1) + "\n")
    print(json.dumps(points, indent=1))
