"""Test-wide set-up that must happen before the package is imported.

Without CUDA, Triton kernels run under Triton's interpreter on the CPU (TRITON_INTERPRET=1), so CI
exercises the kernel code. The variable is read when kernels are defined, i.e. at the first
import of ``sparse_transformer``, hence here rather than in a test module.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
