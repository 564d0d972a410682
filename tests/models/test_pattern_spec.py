"""Every pattern class is reachable from ModelConfig and EncoderConfig, in Python and through the
command-line override parsers, and builds the mask of the same pattern built in Python."""
import dataclasses
import json

import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer.cli import apply_overrides
from sparse_transformer.cli_classify import parse_fields
from sparse_transformer.models import ModelConfig, get_preset
from sparse_transformer.models.encoder import EncoderConfig
from sparse_transformer.models.pattern_spec import (KIND_FIELDS, PATTERN_FIELDS, PATTERN_KINDS,
                                                    parse_spec)
from sparse_transformer.validation import ConfigError, check_model_config

N, HEADS = 40, 4
FIELDS = {"stride": 8, "summary": 2, "window": 3, "global_tokens": (0, 17), "random_blocks": 1,
          "random_block_size": 4, "pattern_seed": 3}
OVERRIDES = ["stride=8", "summary=2", "window=3", "global_tokens=0,17", "random_blocks=1",
             "random_block_size=4", "pattern_seed=3"]

PYTHON = {  # kind -> the same pattern built in Python from FIELDS
    "dense": P.Dense(),
    "local": P.Local(3),
    "strided": P.Strided(8),
    "column": P.Column(8),
    "fixed": P.Fixed(8, 2),
    "block": P.Block(8),
    "summary": P.Summary(8, 2),
    "global": P.Global((0, 17)),
    "random": P.Random(1, 4, 3),
    "bigbird": P.bigbird(3, (0, 17), 1, 4, 3),
    "longformer": P.longformer(3, (0, 17)),
}
CLASSES = {P.Dense, P.Local, P.Strided, P.Column, P.Fixed, P.Block, P.Summary, P.Global, P.Random,
           P.Union, P.PerHead}


def same_masks(a, b):
    for causal in (True, False):
        assert torch.equal(a.mask(N, HEADS, causal=causal), b.mask(N, HEADS, causal=causal)), \
            (a.name, b.name, causal)


def from_model_cli(spec, extra=()):
    cfg = apply_overrides(get_preset("tiny"), [f"model.pattern={spec}", *OVERRIDES, *extra])
    return cfg.model.build_pattern()


def from_encoder_cli(spec, extra=()):
    model_fields, _ = parse_fields([f"model.pattern={spec}"]
                                   + [f"model.{o}" for o in (*OVERRIDES, *extra)])
    return EncoderConfig(**model_fields).build_pattern()


def test_the_table_covers_every_pattern_class_and_both_configs_hold_every_field():
    assert set(PYTHON) == set(PATTERN_KINDS) == set(KIND_FIELDS)
    reached = {type(p) for p in PYTHON.values()} | {P.PerHead}
    reached |= {type(m) for p in PYTHON.values() if isinstance(p, P.Union) for m in p.members}
    assert CLASSES <= reached
    for config in (ModelConfig, EncoderConfig):
        names = {f.name for f in dataclasses.fields(config)}
        assert set(PATTERN_FIELDS) <= names, config
        assert all(set(f) <= names for f in KIND_FIELDS.values())


@pytest.mark.parametrize("kind", PATTERN_KINDS)
def test_every_kind_from_config_and_command_line(kind):
    want = PYTHON[kind]
    for got in (ModelConfig(pattern=kind, **FIELDS).build_pattern(),
                EncoderConfig(pattern=kind, **FIELDS).build_pattern(),
                from_model_cli(kind), from_encoder_cli(kind)):
        assert got == want
        same_masks(got, want)


def test_distinct_heads_reaches_fixed_summary_and_random():
    for kind, want in (("fixed", P.Fixed(8, 2, True)), ("summary", P.Summary(8, 2, True)),
                       ("random", P.Random(1, 4, 3, True))):
        for got in (from_model_cli(kind, ["distinct_heads=true"]),
                    from_encoder_cli(kind, ["distinct_heads=true"])):
            assert got == want
            same_masks(got, want)


@pytest.mark.parametrize("spec,want", [
    ("local+global+random", P.Local(3) | P.Global((0, 17)) | P.Random(1, 4, 3)),
    ("column + block", P.Column(8) | P.Block(8)),
    ("local+summary", P.Local(3) | P.Summary(8, 2)),
], ids=lambda x: x if isinstance(x, str) else "")
def test_unions(spec, want):
    for got in (from_model_cli(spec), from_encoder_cli(spec)):
        assert isinstance(got, P.Union) and got == want
        same_masks(got, want)


@pytest.mark.parametrize("spec,want", [
    ("strided,local+global", P.PerHead((P.Strided(8), P.Local(3) | P.Global((0, 17))))),
    ("block,summary,dense", P.PerHead((P.Block(8), P.Summary(8, 2), P.Dense()))),
    ("fixed,fixed", P.PerHead((P.Fixed(8, 2), P.Fixed(8, 2)))),
], ids=lambda x: x if isinstance(x, str) else "")
def test_per_head(spec, want):
    for got in (from_model_cli(spec), from_encoder_cli(spec)):
        assert got == want
        same_masks(got, want)
    m = want.mask(N, HEADS, causal=True)
    assert not torch.equal(m[0], m[1]) or spec == "fixed,fixed"


@pytest.mark.parametrize("spec,detail", [
    ("bigbirdd", "'bigbirdd' is not a kind"),
    ("local+", "an empty kind"),
    (",local", "an empty kind"),
    ("Local", "'Local' is not a kind"),
    ("", "got ''"),
])
def test_bad_specs_name_the_field_and_the_kinds(spec, detail):
    for make in (lambda: ModelConfig(pattern=spec), lambda: EncoderConfig(pattern=spec)):
        with pytest.raises(ValueError, match="pattern must be one of") as e:
            make()
        assert detail in str(e.value) and "'longformer'" in str(e.value) and "'+'" in str(e.value)
    with pytest.raises(SystemExit, match="model.pattern must be one of"):
        from_model_cli(spec)
    cfg = get_preset("tiny")
    cfg.model.pattern = spec  # set after construction: the validation layer checks it again
    with pytest.raises(ConfigError, match="model.pattern must be one of"):
        check_model_config(cfg.model)


@pytest.mark.parametrize("spec,fields,message", [
    ("global", dict(global_tokens=()), "global_tokens must hold at least one position"),
    ("local+random", dict(random_blocks=0), "random_blocks must be >= 1 for the kind 'random'"),
    ("summary", dict(stride=4, summary=8), "summary must be <= stride"),
    ("random", dict(random_block_size=0), "random_block_size must be an int >= 1"),
    ("local", dict(distinct_heads="yes"), "distinct_heads must be true or false"),
])
def test_bad_fields_name_the_field(spec, fields, message):
    for config in (ModelConfig, EncoderConfig):
        with pytest.raises(ValueError, match=message):
            config(pattern=spec, **fields)


def test_fields_a_spec_does_not_read_are_ignored():
    assert ModelConfig(pattern="local", global_tokens=(), random_blocks=0).build_pattern() \
        == P.Local(128)
    assert ModelConfig(pattern="bigbird", global_tokens=(), random_blocks=0).build_pattern() \
        == P.Local(128)


def test_parse_spec():
    assert parse_spec("local+global,strided") == (("local", "global"), ("strided",))
    assert parse_spec(" fixed ") == (("fixed",),)


def test_encoder_old_field_names_still_load():
    old = {"vocab_size": 50, "n_classes": 2, "max_len": 64, "d_model": 32, "n_layers": 1,
           "n_heads": 2, "ff_mult": 4.0, "dropout": 0.1, "pattern": "bigbird", "window": 8,
           "n_global": 2, "n_random": 1, "block_size": 16, "stride": 64, "summary": 8, "seed": 5,
           "mode": "merged", "pooling": "cls", "checkpointing": False, "backend": "auto"}
    cfg = EncoderConfig(**json.loads(json.dumps(old)))  # as a checkpoint's state.json holds it
    assert cfg.global_tokens == (0, 1) and cfg.random_blocks == 1
    assert cfg.random_block_size == 16 and cfg.pattern_seed == 5
    assert cfg.build_pattern() == P.bigbird(8, 2, 1, 16, seed=5)
    saved = dataclasses.asdict(cfg)  # saved again: the new names only
    assert "n_global" not in saved and EncoderConfig(**saved) == cfg
    with pytest.raises(ValueError, match="n_global is the old name of global_tokens"):
        EncoderConfig(n_global=2, global_tokens=(0, 5))
    with pytest.raises(ValueError, match="n_random must be an int >= 0"):
        EncoderConfig(n_random=-1)
    fields, _ = parse_fields(["n_global=3", "model.block_size=8", "model.n_random=1"])
    cfg = EncoderConfig(**fields)
    assert (cfg.global_tokens, cfg.random_block_size, cfg.random_blocks) == ((0, 1, 2), 8, 1)


def test_pattern_command_takes_specs(tmp_path, capsys):
    from sparse_transformer.cli import main

    png = tmp_path / "p.png"
    assert main(["pattern", "--pattern", "local+summary,column", "--window", "2", "--stride", "4",
                 "--summary", "1", "--seq-len", "16", "--out", str(png)]) == 0
    assert "PerHead" in capsys.readouterr().out and png.exists()
    with pytest.raises(SystemExit, match="pattern must be one of"):
        main(["pattern", "--pattern", "locl", "--out", str(png)])
