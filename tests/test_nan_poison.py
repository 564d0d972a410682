"""The test session fills uninitialised floating-point tensors with NaN (tests/conftest.py)."""
import torch


def test_empty_tensors_start_as_nan():
    x = torch.zeros(3)
    for t in (torch.empty(4), torch.empty_like(x), x.new_empty(2, 2),
              torch.empty_strided((2, 2), (2, 1)), torch.empty(2, requires_grad=True)):
        assert torch.isnan(t).all()
    assert not torch.empty(2, requires_grad=True).grad_fn  # still a leaf
    assert torch.empty(3, dtype=torch.int64).dtype == torch.int64  # integers are left alone
