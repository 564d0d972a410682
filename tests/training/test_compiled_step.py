"""The compiled training step (train.compile=on) trains exactly like the eager one."""
import dataclasses

import pytest
import torch

from sparse_transformer.models import get_preset
from sparse_transformer.training import Trainer


def run(tmp_path, name, compile_, steps=6, **model):
    cfg = get_preset("tiny")
    cfg.model = dataclasses.replace(cfg.model, **model)
    cfg.train = dataclasses.replace(cfg.train, steps=steps, compile=compile_, log_every=1,
                                    eval_every=1000, checkpoint_every=1000)
    t = Trainer(cfg, tmp_path / name, progress=False, log=lambda *a: None)
    losses = [t.train_step() for _ in range(steps)]
    return t, losses


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["fixed", "dense"])
def test_compiled_losses_match_eager_at_every_step(tmp_path, pattern):
    torch._dynamo.reset()
    eager, a = run(tmp_path, "eager", "off", pattern=pattern)
    compiled, b = run(tmp_path, "compiled", "on", pattern=pattern)
    assert compiled.compiled and not eager.compiled
    # Same weights at the start; float32 on the CPU, so only reassociation differs.
    assert b == pytest.approx(a, rel=2e-5)
    for (n, p), (_, q) in zip(eager.model.named_parameters(), compiled.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=n)
    # Compiling in place keeps the state-dict names (checkpoints load either way).
    assert list(eager.model.state_dict()) == list(compiled.model.state_dict())


def test_compile_setting_is_checked(tmp_path):
    cfg = get_preset("tiny")
    cfg.train = dataclasses.replace(cfg.train, compile="maybe")
    with pytest.raises(ValueError, match="train.compile must be one of"):
        Trainer(cfg, tmp_path / "r", progress=False)
