"""Bad input to sparse_attention gets an error naming the argument."""
import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer import sparse_attention

q = torch.randn(2, 3, 16, 8)


def call(**kw):
    args = dict(q=q, k=q, v=q, pattern=P.Local(4))
    args.update(kw)
    return sparse_attention(**args)


@pytest.mark.parametrize("kw,name", [
    (dict(q=torch.randn(3, 16, 8)), "q"),
    (dict(k=torch.randn(2, 3, 15, 8)), "k"),
    (dict(v=torch.randn(2, 3, 16, 4)), "v"),
    (dict(q=torch.randn(2, 3, 16, 8).int()), "q"),
    (dict(k=q.double()), "dtype"),
    (dict(v=q.to(torch.bfloat16)), "dtype"),
    (dict(key_padding_mask=torch.zeros(2, 15, dtype=torch.bool)), "key_padding_mask"),
    (dict(key_padding_mask=torch.zeros(2, 16)), "key_padding_mask"),
    (dict(key_padding_mask=torch.zeros(16, dtype=torch.bool)), "key_padding_mask"),
    (dict(backend="nope"), "backend"),
    (dict(scale=-1.0), "scale"),
    (dict(scale=0.0), "scale"),
    (dict(scale=float("inf")), "scale must be a positive finite number"),
    (dict(scale=float("nan")), "scale must be a positive finite number"),
])
def test_value_errors_name_the_argument(kw, name):
    with pytest.raises(ValueError, match=name):
        call(**kw)


@pytest.mark.parametrize("kw,name", [(dict(q=q.numpy()), "q"), (dict(pattern="local"), "pattern"),
                                     (dict(causal=1), "causal")])
def test_type_errors_name_the_argument(kw, name):
    with pytest.raises(TypeError, match=name):
        call(**kw)


def test_device_mix_is_refused():
    meta = torch.randn(2, 3, 16, 8, device="meta")
    with pytest.raises(ValueError, match="device"):
        call(k=meta)
