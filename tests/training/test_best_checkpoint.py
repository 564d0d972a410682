"""The best checkpoint by validation loss: kept by the rotation, found by scanning and verified;
early stopping; the warnings about data size before training."""
import json

import pytest
import torch

from sparse_transformer.cli import main
from sparse_transformer.data import embedded_splits
from sparse_transformer.models import get_preset
from sparse_transformer.training import Trainer
from sparse_transformer.training import checkpoint as ckpt
from sparse_transformer.training.fit_check import data_fit_warnings


@pytest.fixture(scope="module")
def data():
    s = embedded_splits()
    return {k: v[:100_000] for k, v in s.items()}


def _save(run, step, valid, model, opt):
    state = {"config": {}, "elapsed_s": 0.0}
    if valid is not None:
        state["valid_bpb"] = valid
    return ckpt.save_checkpoint(run, step, model, opt, state, keep=2, run_id="r1")


def test_rotation_never_removes_the_best(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    for step, v in [(1, 3.0), (2, 2.0), (3, 2.5), (4, None), (5, 2.9), (6, 2.8)]:
        _save(tmp_path, step, v, model, opt)
    names = sorted(p.name for p in ckpt.list_checkpoints(tmp_path))
    assert names == ["step_00000002", "step_00000005", "step_00000006"]  # best + 2 newest
    assert ckpt.find_best_checkpoint(tmp_path) == tmp_path / "step_00000002"
    assert ckpt.find_checkpoint(tmp_path) == tmp_path / "step_00000006"
    # Verified, not a bare pointer: a damaged best is reported and the next best used.
    (tmp_path / "step_00000002" / "model.safetensors").write_bytes(b"garbage")
    warned = []
    assert ckpt.find_best_checkpoint(tmp_path, warn=warned.append) == tmp_path / "step_00000006"
    assert warned and "step_00000002" in warned[0]


def test_best_of_a_run_without_metrics_is_the_newest(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    for step in (1, 2):
        _save(tmp_path, step, None, model, opt)
    assert ckpt.find_best_checkpoint(tmp_path) == tmp_path / "step_00000002"
    assert ckpt.find_best_checkpoint(tmp_path / "step_00000001") == tmp_path / "step_00000001"


def _tiny(**train):
    c = get_preset("tiny")
    c.train.steps, c.train.eval_every, c.train.checkpoint_every, c.train.log_every = 12, 2, 4, 2
    for k, v in train.items():
        setattr(c.train, k, v)
    return c


def _scripted(trainer, values):
    it = iter(values)
    trainer.evaluate = lambda *a, **k: next(it)


def test_trainer_keeps_best_and_stops_early(tmp_path, data, capsys):
    t = Trainer(_tiny(early_stop_patience=3), tmp_path, data=data, progress=False)
    # evals at steps 2, 4, 6, 8, 10: the best is at step 4, then three without improvement.
    _scripted(t, [3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    info = t.fit()
    assert info["stopped_by"] == "early_stop" and info["steps"] == 10
    names = sorted(p.name for p in ckpt.list_checkpoints(tmp_path))
    assert "step_00000004" in names and "step_00000010" in names
    best = ckpt.find_best_checkpoint(tmp_path)
    assert best.name == "step_00000004"
    assert json.loads((best / "state.json").read_text())["valid_bpb"] == 2.0
    # eval and sample use the best by default, the newest with --latest.
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path), "--split", "valid", "--max-bytes",
                 "300", "--device", "cpu"]) == 0
    assert "step_00000004" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path), "--split", "valid", "--max-bytes",
                 "300", "--device", "cpu", "--latest"]) == 0
    assert "step_00000010" in capsys.readouterr().err


def test_best_survives_resume(tmp_path, data):
    t = Trainer(_tiny(steps=8), tmp_path, data=data, progress=False)
    _scripted(t, [3.0, 2.0, 2.5, 2.6])
    t.fit()
    u = Trainer(_tiny(steps=12), tmp_path, data=data, progress=False)
    assert u.resume() and u.best_valid == 2.0 and u._since_best == 2
    _scripted(u, [2.4, 1.5])
    u.fit()
    assert ckpt.find_best_checkpoint(tmp_path).name == "step_00000012"
    assert ckpt.find_best_checkpoint(tmp_path).parent == tmp_path


def test_no_early_stop_by_default(tmp_path, data):
    t = Trainer(_tiny(), tmp_path, data=data, progress=False)
    _scripted(t, [3.0, 3.1, 3.2, 3.3, 3.4, 3.5])
    assert t.fit()["stopped_by"] == "steps"


def test_data_fit_warnings():
    c = get_preset("tiny")  # 20 steps x 4 x 64 = 5,120 planned bytes
    assert data_fit_warnings(c, range(100_000), 30_000) == []
    many = data_fit_warnings(c, range(1_000), 30_000)  # 5 epochs, 30 params per byte
    assert any("passes" in w for w in many) and any("memorise" in w for w in many)
    c.train.steps = 100_000
    assert any("far too small" in w for w in data_fit_warnings(c, range(10**9), 1_000))


def test_trainer_logs_the_warning(tmp_path, data):
    logged = []
    small = {k: v[:3_000] for k, v in data.items()}
    Trainer(_tiny(), tmp_path, data=small, log=logged.append, progress=False)
    assert any(m.startswith("warning:") and "memorise" in m for m in logged)


def test_every_preset_documents_its_data_size():
    from sparse_transformer.models.presets import DATA_SIZES, PRESETS

    assert set(DATA_SIZES) == set(PRESETS)
    assert all(n > 0 and text for n, text in DATA_SIZES.values())


def test_a_run_stopped_by_its_time_limit_scores_its_final_weights(tmp_path, data):
    """Stopped between evaluations (step 1; evals every 2 steps): the final weights are scored
    before the final save, so the final checkpoint records its loss and can be the best."""
    t = Trainer(_tiny(time_limit=1e-9), tmp_path, data=data, progress=False)
    _scripted(t, [1.5])
    info = t.fit()
    assert info["stopped_by"] == "time_limit" and info["steps"] == 1
    assert {"step": 1, "valid_bpb": 1.5} == {k: v for k, v in ckpt.read_log(tmp_path)[-1].items()
                                             if k in ("step", "valid_bpb")}
    best = ckpt.find_best_checkpoint(tmp_path)
    assert best == tmp_path / "step_00000001"
    assert ckpt.checkpoint_metric(best) == 1.5
