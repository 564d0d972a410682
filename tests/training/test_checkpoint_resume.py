import json
import math

import pytest
import torch

from sparse_transformer.data import embedded_splits
from sparse_transformer.models import get_preset
from sparse_transformer.training import Trainer, TrainingDiverged
from sparse_transformer.training import checkpoint as ckpt


@pytest.fixture(scope="module")
def data():
    s = embedded_splits()
    return {k: v[:200_000] for k, v in s.items()}


def cfg(**train):
    c = get_preset("tiny")
    c.model.dropout = 0.1  # exercises the RNG state on resume
    for k, v in train.items():
        setattr(c.train, k, v)
    return c


def losses(trainer, upto):
    out = []
    while trainer.step < upto:
        out.append(trainer.train_step())
    return out


def test_checkpoint_round_trip(tmp_path, data):
    t = Trainer(cfg(), tmp_path, data=data, progress=False)
    losses(t, 3)
    path = t.save()
    assert sorted(p.name for p in path.iterdir()) == [
        "manifest.json", "model.safetensors", "optimizer.safetensors", "rng.safetensors",
        "state.json"]
    u = Trainer(cfg(), tmp_path, data=data, progress=False)
    assert u.resume() and u.step == 3
    for (k, a), b in zip(t.model.state_dict().items(), u.model.state_dict().values()):
        assert torch.equal(a, b), k
    sa, sb = t.optimizer.state_dict(), u.optimizer.state_dict()
    for pid in sa["state"]:
        for key, val in sa["state"][pid].items():
            assert torch.equal(torch.as_tensor(val), torch.as_tensor(sb["state"][pid][key]))
    assert json.loads((path / "state.json").read_text())["config"]["model"]["stride"] == 8


def test_resume_continues_exactly(tmp_path, data):
    full = Trainer(cfg(), tmp_path / "a", data=data, progress=False)
    ref = losses(full, 10)
    first = Trainer(cfg(), tmp_path / "b", data=data, progress=False)
    losses(first, 5)
    first.save()
    torch.manual_seed(1234)  # a fresh process would have some other RNG state
    second = Trainer(cfg(), tmp_path / "b", data=data, progress=False)
    assert second.resume()
    resumed = losses(second, 10)
    assert resumed == ref[5:]


def test_fit_writes_log_and_latest(tmp_path, data):
    t = Trainer(cfg(steps=10, checkpoint_every=5, eval_every=5), tmp_path, data=data,
                progress=False)
    info = t.fit()
    assert info["steps"] == 10
    assert (tmp_path / "latest").read_text().strip() == "step_00000010"
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any("valid_bpb" in r for r in recs) and any("loss_bpb" in r for r in recs)
    assert all(math.isfinite(r.get("loss_bpb", 0)) for r in recs)


def test_interrupted_write_keeps_last_complete_checkpoint(tmp_path, data):
    t = Trainer(cfg(), tmp_path, data=data, progress=False)
    losses(t, 2)
    good = t.save()
    # A crash in the middle of the next save leaves a temporary folder behind.
    junk = tmp_path / ".tmp_step_00000004_crash"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(tmp_path) == good
    u = Trainer(cfg(), tmp_path, data=data, progress=False)
    assert u.resume() and u.step == 2


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, data):
    t = Trainer(cfg(), tmp_path, data=data, progress=False)
    losses(t, 2)
    good = t.save()
    with torch.no_grad():
        t.model.head.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        t.train_step()
    assert ckpt.latest_checkpoint(tmp_path) == good


def test_learning_rate_schedule():
    from sparse_transformer.training.trainer import lr_at

    c = cfg(steps=100, warmup=10, lr=1.0).train
    assert lr_at(0, c) == pytest.approx(0.1)
    assert lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(55, c) == pytest.approx(0.5)
    assert lr_at(100, c) == pytest.approx(0.0, abs=1e-12)


def test_fp16_needs_cuda(tmp_path, data):
    c = cfg()
    c.train.precision = "fp16"
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="fp16"):
        Trainer(c, tmp_path, data=data, progress=False)
