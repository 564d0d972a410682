import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer import sparse_attention
from tolerance import check_against_reference


@pytest.mark.parametrize("pattern", [P.Strided(16), P.Fixed(16, 4), P.Local(20)])
@pytest.mark.parametrize("causal", [True, False])
def test_blocked_matches_reference(pattern, causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 97, 32) for _ in range(3))
    kpm = torch.rand(2, 97) < 0.2
    check_against_reference(sparse_attention, q, k, v, pattern, causal, kpm, backend="blocked")
