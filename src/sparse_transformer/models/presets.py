"""Named run presets, as code: a model, a training schedule and a data source each.

``demo`` is the Quickstart: a small strided-pattern model on the embedded Shakespeare corpus
that trains for at most three minutes on a 2-core CPU. ``tiny`` is for tests. ``DATA_SIZES``
(below) records the amount of training data each preset was made for. Other issues add the paper's
configurations (enwik8, CIFAR-10, ImageNet 64x64, audio) and their "-small" / "-cpu" twins.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import ModelConfig


@dataclass
class DataConfig:
    source: str = "embedded"  # "embedded" (the shipped corpus) or a path to a file / folder
    kind: str = "text"  # text | image | audio (see data.load_dataset for each kind's sources)
    download: bool = False  # fetch a missing data set (enwik8, CIFAR-10, Fashion-MNIST)
    root: str = ""  # where data sets live; "" = $SPARSE_TRANSFORMER_DATA or ~/.cache/sparse-transformer
    limit: int = 0  # images / audio: at most this many sequences per split (0 = all)
    rate: int = 16000  # audio: samples per second
    length: int = 0  # audio: bytes per sequence (0 = the model's seq_len)
    pieces: int = 0  # audio "bach": render at most this many pieces (0 = all)


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.0  # cosine decay down to lr * min_lr_ratio
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16: CUDA only, dynamic loss scaling)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    eval_every: int = 200
    eval_batches: int = 8
    log_every: int = 10
    checkpoint_every: int = 200
    time_limit: float = 0.0  # seconds; 0 = none. Stops early (the schedule is by steps).
    final_eval_bytes: int = 200_000  # held-out bytes scored at the end (0 = whole split)
    sample_bytes: int = 400  # bytes sampled at the end of training
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    compile: str = "auto"  # auto | on | off: torch.compile each block (auto: on for CUDA)
    cuda_graphs: bool = False  # with compile: replay each block as a CUDA graph (static shapes)
    keep_best: bool = True  # save a checkpoint at every eval that improves the validation loss
    early_stop_patience: int = 0  # stop after this many evals without improvement (0 = off)
    grad_accum: int = 1  # micro-batches per optimizer step (the global batch stays batch_size)
    parallel: str = "ddp"  # ddp | fsdp: how the processes of a torchrun job share the model
    dist_timeout: float = 600.0  # seconds a collective waits for a missing rank before failing


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)


def _demo() -> RunConfig:
    # Chosen by benchmarks/demo_sweep.py and full-schedule runs (docs/results.md): many small
    # steps beat few large ones in three CPU minutes, and at context 128 Strided(32) (a 32-byte
    # window and every 32nd byte before it: 4 strides) learns within 0.03 bits/byte of dense
    # attention, where Fixed(16, 4) and Strided(16) stay 0.2 bits behind. About 0.061 s a step
    # on a quiet 2-core CPU with 2 threads (attention runs as a masked dense product there, see
    # ops/crossover_cpu.json; fused AdamW), so 2,800 steps train in 172-180 s (the speed of this
    # shared machine varies by a few percent from run to run). The time limit, 178 s, keeps the
    # demo within three minutes on a slower machine: the cosine schedule is at its floor by then,
    # so stopping a few dozen steps early costs little (docs/results.md). Made for the embedded corpus (4.6 MB of training bytes): the
    # schedule reads 2.8 MB, about 0.6 of a pass, so no dropout.
    return RunConfig(
        model=ModelConfig(seq_len=128, d_model=128, n_layers=4, n_heads=4, pattern="strided",
                          stride=32, mode="merged", dropout=0.0),
        train=TrainConfig(steps=2800, batch_size=8, lr=3e-3, warmup=100, min_lr_ratio=0.1,
                          eval_every=600, eval_batches=8, checkpoint_every=600, log_every=50,
                          time_limit=178.0, final_eval_bytes=100_000, num_threads=2),
    )


def _tiny() -> RunConfig:
    return RunConfig(
        model=ModelConfig(seq_len=64, d_model=32, n_layers=2, n_heads=2, pattern="fixed",
                          stride=8, summary=2),
        train=TrainConfig(steps=20, batch_size=4, lr=3e-3, warmup=5, eval_every=10,
                          eval_batches=2, log_every=5, checkpoint_every=10,
                          final_eval_bytes=2000, sample_bytes=32),
    )


PRESETS = {"demo": _demo, "tiny": _tiny}


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]()

from .paper_presets import PAPER_PRESETS  # noqa: E402  (the paper's configurations)

PRESETS.update(PAPER_PRESETS)

# The training data each preset was made for: (training bytes, what they are). The schedule and
# the model size were chosen for this much data; ``training.fit_check`` warns before training
# when a run plans more than a few passes over its data or has a model far too large or small for
# it. "demo": under one pass (about 0.6 of the 4.6 MB training split in its three minutes).
DATA_SIZES: dict[str, tuple[int, str]] = {
    "demo": (4_603_000, "the embedded Shakespeare corpus, 38 plays and poems for training"),
    "tiny": (4_603_000, "the embedded corpus (tests: far under one pass)"),
    "enwik8": (90_000_000, "enwik8, the first 90 MB (about 100 passes over its schedule; "
                           "dropout 0.4 as in the paper)"),
    "enwik8-small": (90_000_000, "enwik8, the first 90 MB (about 1.5 passes)"),
    "enwik8-cpu": (4_603_000, "the embedded corpus (about 0.3 of a pass)"),
    "cifar10": (153_600_000, "CIFAR-10, 50,000 training images of 3,072 bytes"),
    "cifar10-small": (153_600_000, "CIFAR-10, 50,000 training images"),
    "cifar10-cpu": (47_040_000, "Fashion-MNIST, 60,000 training images of 784 bytes"),
    "imagenet64": (15_740_000_000, "ImageNet 64x64, 1.28 M training images of 12,288 bytes"),
    "imagenet64-small": (15_740_000_000, "ImageNet 64x64, 1.28 M training images"),
    "imagenet64-cpu": (47_040_000, "Fashion-MNIST, 60,000 training images"),
    "audio": (1_000_000_000, "about a gigabyte of 12 kHz mu-law classical music"),
    "audio-small": (100_000_000, "about 100 MB of rendered Bach at 12 kHz"),
    "audio-cpu": (10_000_000, "about 10 MB: 40 rendered Bach pieces at 8 kHz"),
}
