"""Test-wide set-up that must happen before the package is imported.

Without CUDA, Triton kernels run under Triton's interpreter on the CPU (TRITON_INTERPRET=1), so CI
exercises the kernel code. The variable is read when kernels are defined, i.e. at the first
import of ``sparse_transformer``, hence here rather than in a test module.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# -- torch.empty poisoned with NaN -----------------------------------------------------------------
# For the whole session, floating-point tensors from torch.empty, empty_like, empty_strided and
# Tensor.new_empty start as NaN instead of whatever memory held: a tile or row that a kernel (or
# any code) forgets to write then fails the accuracy checks instead of passing by luck on zeroed
# memory. Integer and bool tensors are left as they come.
import pytest  # noqa: E402


def _poisoned(make):
    def empty(*args, **kwargs):
        t = make(*args, **kwargs)
        if t.is_floating_point() or t.is_complex():
            with torch.no_grad():
                t.fill_(float("nan"))
        return t

    empty.__wrapped__ = make
    return empty


@pytest.fixture(scope="session", autouse=True)
def _nan_poisoned_empty():
    mp = pytest.MonkeyPatch()
    for name in ("empty", "empty_like", "empty_strided"):
        mp.setattr(torch, name, _poisoned(getattr(torch, name)))
    mp.setattr(torch.Tensor, "new_empty", _poisoned(torch.Tensor.new_empty))
    yield
    mp.undo()
