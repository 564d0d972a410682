"""The fused Triton backend: execution plans (``plan.py``), kernels (``kernels.py``), and the
launches, autograd function and custom ops behind ``sparse_attention`` (``backend.py``).

Importing this package never needs CUDA or Triton (the kernels are imported on first use).
"""
from .backend import TUNING, is_available, triton_attention, triton_importable

__all__ = ["triton_attention", "is_available", "triton_importable", "TUNING"]
