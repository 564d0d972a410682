"""The paper's configurations as presets, each with a "-small" twin (minutes on one GPU) and a
"-cpu" twin (minutes on a laptop CPU, on data that is installable offline).

Shapes, patterns, dropout and context lengths are the paper's (Child et al. 2019, section 7).
Where the paper gives no value it is marked "our choice" below: the learning rate for enwik8,
ImageNet and audio, the CIFAR-10 stride (96 = one image row, 32 pixels x 3 channels), and every
shape of the audio models except the pattern and the context.
"""
from __future__ import annotations

from .config import ModelConfig
from .presets import DataConfig, RunConfig, TrainConfig


def _gpu_train(**kw) -> TrainConfig:
    base = dict(lr=3.5e-4, warmup=5000, steps=500_000, batch_size=8, precision="bf16",
                eval_every=2000, eval_batches=16, checkpoint_every=2000, log_every=50,
                final_eval_bytes=0, sample_bytes=0)
    base.update(kw)
    return TrainConfig(**base)


def _small_train(**kw) -> TrainConfig:
    base = dict(lr=5e-4, warmup=200, steps=4000, batch_size=16, precision="bf16",
                eval_every=500, eval_batches=8, checkpoint_every=500, log_every=20,
                time_limit=900.0, final_eval_bytes=200_000, sample_bytes=0)
    base.update(kw)
    return TrainConfig(**base)


def _cpu_train(**kw) -> TrainConfig:
    base = dict(lr=2e-3, warmup=30, steps=300, batch_size=8, eval_every=100, eval_batches=4,
                checkpoint_every=100, log_every=10, time_limit=120.0, final_eval_bytes=50_000,
                sample_bytes=0)
    base.update(kw)
    return TrainConfig(**base)


# -- enwik8: fixed pattern, merged heads ------------------------------------------------------
def enwik8() -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=12288, d_model=512, n_layers=30, n_heads=8, pattern="fixed",
                          stride=128, summary=32, mode="merged", dropout=0.4,
                          position="factorized", checkpointing="auto"),
        train=_gpu_train(),  # lr: our choice (not in the paper)
        data=DataConfig(kind="text", source="enwik8"))


def enwik8_small() -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=2048, d_model=256, n_layers=8, n_heads=8, pattern="fixed",
                          stride=64, summary=16, mode="merged", dropout=0.1),
        train=_small_train(),
        data=DataConfig(kind="text", source="enwik8"))


def enwik8_cpu() -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=256, d_model=128, n_layers=4, n_heads=4, pattern="fixed",
                          stride=16, summary=4, mode="merged"),
        train=_cpu_train(batch_size=16, final_eval_bytes=50_000, sample_bytes=200),
        data=DataConfig(kind="text", source="embedded"))


# -- CIFAR-10: strided, half-size feed-forward and query-key --------------------------------
def cifar10() -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=3072, d_model=256, n_layers=128, n_heads=2, ff_mult=2.0,
                          qk_ratio=0.5, pattern="strided", stride=96, mode="merged",
                          dropout=0.25, position="data", data_shape=(32, 32, 3),
                          checkpointing="auto"),
        train=_gpu_train(lr=3.5e-4, batch_size=16),
        data=DataConfig(kind="image", source="cifar10"))


def cifar10_small() -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=3072, d_model=256, n_layers=12, n_heads=4, ff_mult=2.0,
                          qk_ratio=0.5, pattern="strided", stride=96, dropout=0.1,
                          position="data", data_shape=(32, 32, 3)),
        train=_small_train(batch_size=16),
        data=DataConfig(kind="image", source="cifar10"))


def _fashion_cpu(stride: int, d: int, layers: int) -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=784, d_model=d, n_layers=layers, n_heads=4, ff_mult=2.0,
                          qk_ratio=0.5, pattern="strided", stride=stride, position="data",
                          data_shape=(28, 28, 1)),
        train=_cpu_train(batch_size=8, final_eval_bytes=784 * 64),
        data=DataConfig(kind="image", source="fashion-mnist"))


def cifar10_cpu() -> RunConfig:
    return _fashion_cpu(stride=28, d=128, layers=4)  # one image row per stride, as for CIFAR


# -- ImageNet 64x64: strided l=128 ------------------------------------------------------------
def imagenet64() -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=12288, d_model=512, n_layers=48, n_heads=16, pattern="strided",
                          stride=128, mode="merged", dropout=0.01, position="data",
                          data_shape=(64, 64, 3), checkpointing="auto"),
        train=_gpu_train(),  # lr: our choice (not in the paper)
        data=DataConfig(kind="image", source="imagenet64"))


def imagenet64_small() -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=12288, d_model=256, n_layers=8, n_heads=8, pattern="strided",
                          stride=128, dropout=0.01, position="data", data_shape=(64, 64, 3),
                          checkpointing="auto"),
        train=_small_train(batch_size=4),
        data=DataConfig(kind="image", source="imagenet64"))


def imagenet64_cpu() -> RunConfig:
    return _fashion_cpu(stride=56, d=96, layers=6)  # two rows per stride, a deeper narrow model


# -- classical music as 8-bit mu-law bytes: strided, very long context -----------------------
def audio() -> RunConfig:
    return RunConfig(  # the paper: 65,536 steps at 12 kHz; widths are our choice
        model=ModelConfig(seq_len=65536, d_model=256, n_layers=24, n_heads=4, pattern="strided",
                          stride=256, position="factorized", checkpointing="auto"),
        train=_gpu_train(batch_size=1),
        data=DataConfig(kind="audio", source="bach", rate=12000))


def audio_small() -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=16384, d_model=128, n_layers=8, n_heads=4, pattern="strided",
                          stride=128, position="factorized"),
        train=_small_train(batch_size=4, final_eval_bytes=16384 * 8),
        data=DataConfig(kind="audio", source="bach", rate=12000))


def audio_cpu() -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=2048, d_model=64, n_layers=4, n_heads=4, pattern="strided",
                          stride=32, position="factorized"),
        train=_cpu_train(batch_size=4, final_eval_bytes=2048 * 16),
        data=DataConfig(kind="audio", source="bach", rate=8000, pieces=40))


PAPER_PRESETS = {
    "enwik8": enwik8, "enwik8-small": enwik8_small, "enwik8-cpu": enwik8_cpu,
    "cifar10": cifar10, "cifar10-small": cifar10_small, "cifar10-cpu": cifar10_cpu,
    "imagenet64": imagenet64, "imagenet64-small": imagenet64_small,
    "imagenet64-cpu": imagenet64_cpu,
    "audio": audio, "audio-small": audio_small, "audio-cpu": audio_cpu,
}
