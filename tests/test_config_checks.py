"""The validation layer at the library's entry point: ``Trainer`` checks the whole RunConfig
before any data loads, and the data's splits before the model is built."""
import numpy as np
import pytest

from sparse_transformer.models import get_preset
from sparse_transformer.training import Trainer
from sparse_transformer.validation import (ConfigError, check_resume_overrides,
                                           check_run_config)


@pytest.fixture
def no_data_load(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("data was loaded before the arguments were checked")

    monkeypatch.setattr("sparse_transformer.training.trainer.load_dataset", fail)


@pytest.mark.parametrize("section,field,value,message", [
    ("train", "steps", 0, "train.steps must be an int >= 1, got 0"),
    ("train", "checkpoint_every", 0, "train.checkpoint_every"),
    ("train", "lr", float("nan"), "train.lr must be a finite number"),
    ("train", "betas", (0.9,), "train.betas must be two numbers"),
    ("train", "batch_size", 2.5, "train.batch_size must be an int >= 1, got 2.5"),
    ("model", "stride", 0, "stride"),  # set after construction: checked again
    ("model", "ff_mult", float("inf"), "model.ff_mult"),
    ("data", "kind", "video", "data.kind"),
])
def test_trainer_checks_every_argument_before_loading(tmp_path, no_data_load, section, field,
                                                      value, message):
    cfg = get_preset("tiny")
    setattr(getattr(cfg, section), field, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Trainer(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_context_longer_than_a_split_is_refused_before_the_model(tmp_path):
    cfg = get_preset("tiny")
    data = {"train": np.zeros(10_000, np.uint8), "valid": np.zeros(40, np.uint8),
            "test": np.zeros(40, np.uint8)}
    with pytest.raises(ConfigError, match="the 'valid' split holds 40"):
        Trainer(cfg, tmp_path, data=data, progress=False)
    rows = {"train": np.zeros((4, 100), np.uint8), "valid": np.zeros((4, 100), np.uint8)}
    with pytest.raises(ConfigError, match="shorter than the 'train' split's sequences"):
        Trainer(cfg, tmp_path, data=rows, progress=False)


def test_resume_overrides_that_keep_the_shapes_are_allowed():
    import dataclasses

    m = get_preset("tiny").model
    check_resume_overrides(m, dataclasses.replace(m, dropout=0.3, backend="blocked"))
    with pytest.raises(ConfigError, match="model.n_heads: 2 -> 4"):
        check_resume_overrides(m, dataclasses.replace(m, n_heads=4, d_model=64))


def test_presets_are_valid():
    from sparse_transformer.models.presets import PRESETS

    for name, make in PRESETS.items():
        check_run_config(make(), source=False)


@pytest.mark.parametrize("model_fields,train_fields,message", [
    ({}, {"warmup": -5}, "train.warmup must be an int >= 0, got -5"),
    ({}, {"lr": float("nan")}, "train.lr must be a finite number"),
    ({"pattern": "local+globl"}, {}, "model.pattern must be one of"),
    ({"max_len": 16}, {"max_length": 32}, "model.max_len (16) must be >= train.max_length (32)"),
])
def test_classifier_entry_points_check_every_argument_before_loading(
        tmp_path, monkeypatch, model_fields, train_fields, message):
    from sparse_transformer.models.encoder import EncoderConfig
    from sparse_transformer.training import classify

    def fail(*a, **k):
        raise AssertionError("data was loaded before the arguments were checked")

    monkeypatch.setattr(classify, "load_source", fail)
    cfg = classify.ClassifyConfig()
    for k, v in train_fields.items():  # set after construction: checked again
        setattr(cfg, k, v)
    pattern = message.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ConfigError, match=pattern):
        classify.train_from_sources("x.csv", tmp_path / "run", model_fields=model_fields, cfg=cfg)
    model = EncoderConfig(max_len=cfg.max_length)
    for k, v in model_fields.items():
        setattr(model, k, v)
    with pytest.raises(ConfigError, match=pattern):
        classify.ClassifierTrainer(model, cfg, ["a", "b"], None, None, tmp_path / "run")
    assert not (tmp_path / "run").exists()
