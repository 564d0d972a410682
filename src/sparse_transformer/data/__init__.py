"""Byte-level data sets: text streams, and images / audio as whole sequences.

``load_dataset(data_cfg)`` dispatches on ``DataConfig.kind``. A text split is a 1-D uint8 array
(trained on random windows); an image or audio split is a uint8 array (N, L), one sequence a row
(trained and scored whole, see ``items``).
"""
from __future__ import annotations

from .downloads import DataUnavailable, default_root
from .items import is_items, item_batch, items_bits_per_byte
from .text import SPLITS, batch_generator, embedded_splits, file_splits, load_text, random_batch

KINDS = ("text", "image", "audio")


def load_dataset(data_cfg, seq_len: int | None = None) -> dict:
    """The splits of the data set ``data_cfg`` (a ``DataConfig``) describes.

    text:  source "embedded" (the shipped corpus), "enwik8", or a file / folder path.
    image: source "fashion-mnist", "cifar10" or "imagenet64".
    audio: source "bach" (music21 rendered by fluidsynth) or a folder of WAV / OGG / FLAC;
           ``rate`` Hz, sequences of ``length`` bytes (0: ``seq_len``).
    ``limit`` keeps at most that many sequences per split (images, audio); 0 keeps all.
    """
    kind, source = data_cfg.kind, data_cfg.source
    root = getattr(data_cfg, "root", "") or None
    download = bool(getattr(data_cfg, "download", False))
    limit = int(getattr(data_cfg, "limit", 0) or 0)
    if kind == "text":
        if source == "enwik8":
            from .enwik8 import enwik8

            return enwik8(root, download)
        return load_text(source)
    if kind == "image":
        from .images import load_images

        return load_images(source, root, download, limit)
    if kind == "audio":
        from .audio import load_audio

        length = int(getattr(data_cfg, "length", 0) or 0) or seq_len
        if not length:
            raise ValueError("data.length must be set (or a model seq_len given) for audio")
        return load_audio(source, int(getattr(data_cfg, "rate", 16000)), length, root, limit,
                          int(getattr(data_cfg, "pieces", 0) or 0))
    raise ValueError(f"data.kind must be one of {KINDS}, got {kind!r}")


__all__ = ["SPLITS", "KINDS", "load_text", "load_dataset", "embedded_splits", "file_splits",
           "random_batch", "batch_generator", "is_items", "item_batch", "items_bits_per_byte",
           "DataUnavailable", "default_root"]
