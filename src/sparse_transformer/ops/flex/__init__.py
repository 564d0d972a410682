"""The "flex" backend: PyTorch's FlexAttention adapter (``backend.py``).

Re-exports the public names that ``sparse_transformer.ops.flex`` had as a single module.
"""
from .backend import BLOCK, build_block_mask, flex_attention_backend, flex_importable, split_parts

__all__ = ["flex_attention_backend", "flex_importable", "build_block_mask", "split_parts", "BLOCK"]
