"""Byte-level data sets."""
from .text import SPLITS, batch_generator, embedded_splits, file_splits, load_text, random_batch

__all__ = ["SPLITS", "load_text", "embedded_splits", "file_splits", "random_batch",
           "batch_generator"]
