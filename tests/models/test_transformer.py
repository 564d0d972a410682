import math

import pytest
import torch

from sparse_transformer.models import ModelConfig, SparseTransformer
from sparse_transformer.patterns import Block, Column, Local, Summary


def tiny(**kw):
    base = dict(seq_len=48, d_model=32, n_layers=2, n_heads=2, pattern="fixed", stride=8,
                summary=2)
    base.update(kw)
    return ModelConfig(**base)


def test_initial_loss_is_uniform_over_bytes():
    torch.manual_seed(0)
    m = SparseTransformer(tiny())
    x = torch.randint(0, 256, (2, 48))
    assert m.loss(x, x).item() == pytest.approx(math.log(256), abs=1e-6)


def test_scaled_initialisation():
    torch.manual_seed(0)
    cfg = tiny(d_model=256, n_layers=8, n_heads=4)
    m = SparseTransformer(cfg)
    resid = 1 / math.sqrt(2 * cfg.n_layers)
    blk = m.blocks[0]
    assert blk.attn.proj.weight.std().item() == pytest.approx(math.sqrt(0.125 / 256) * resid, rel=0.05)
    assert blk.ff.w2.weight.std().item() == pytest.approx(math.sqrt(0.125 / 1024) * resid, rel=0.05)
    assert blk.ff.w1.weight.std().item() == pytest.approx(math.sqrt(0.125 / 256), rel=0.05)
    assert m.tok.weight.std().item() == pytest.approx(math.sqrt(0.125 / 256), rel=0.05)
    assert blk.ff.w1.out_features == 4 * 256
    assert torch.count_nonzero(m.head.weight) == 0
    assert torch.count_nonzero(blk.ff.w1.bias) == 0
    assert SparseTransformer(tiny(ff_mult=2.0)).blocks[0].ff.w1.out_features == 64


def test_integration_modes_assign_factors():
    cfg = tiny(n_heads=4, pattern="strided", mode="interleaved")
    m = SparseTransformer(cfg)
    assert [p for _, p in m.blocks[0].attn.head_patterns()] == [Local(9)]
    assert [p for _, p in m.blocks[1].attn.head_patterns()] == [Column(8)]
    m = SparseTransformer(tiny(n_heads=4, mode="split"))
    (h1, p1), (h2, p2) = m.blocks[0].attn.head_patterns()
    assert (h1, h2) == (slice(0, 2), slice(2, 4))
    assert p1 == Block(8) and p2 == Summary(8, 2)


CAUSAL_CASES = [(p, m) for p in ("strided", "fixed") for m in ("merged", "interleaved", "split")]
CAUSAL_CASES += [("local", "merged"), ("dense", "merged")]  # only factorized patterns have modes


@pytest.mark.parametrize("pattern,mode", CAUSAL_CASES)
def test_model_is_causal(pattern, mode):
    torch.manual_seed(0)
    m = SparseTransformer(tiny(pattern=pattern, mode=mode, window=6))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    x = torch.randint(0, 256, (1, 48))
    y = x.clone()
    y[0, 30:] = torch.randint(0, 256, (18,))
    a, b = m(x), m(y)
    assert torch.allclose(a[0, :30], b[0, :30], atol=1e-5)
    assert not torch.allclose(a[0, 30:], b[0, 30:])


def test_checkpointing_gives_same_loss_and_grads():
    torch.manual_seed(0)
    m = SparseTransformer(tiny())
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.1)
    x = torch.randint(0, 256, (2, 48))
    grads = []
    for ck in ("none", "block", "attention"):
        m.cfg.checkpointing = ck
        m.zero_grad()
        loss = m.loss(x[:, :-1], x[:, 1:])
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in m.parameters()]))
    for other in grads[1:]:
        assert grads[0][0] == pytest.approx(other[0], rel=1e-6)
        for g0, g1 in zip(grads[0][1], other[1]):
            torch.testing.assert_close(g0, g1, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("storage", ["auto", "float32"])
def test_block_checkpointing_under_bf16_autocast(storage):
    """Under bf16 autocast, "block" checkpointing with checkpoint_storage "auto" hands each block
    (and so stores) its input in bf16, half the bytes of the float32 stream; "float32" keeps it
    exact. Loss and gradients match the run without checkpointing: exactly for "float32", to
    bf16's precision for "auto"."""
    torch.manual_seed(0)
    m = SparseTransformer(tiny(n_layers=3, checkpoint_storage=storage))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.1)
    x = torch.randint(0, 256, (2, 48))
    seen = []
    hooks = [blk.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
             for blk in m.blocks]
    runs = []
    for ck in ("none", "block"):
        m.cfg.checkpointing = ck
        m.zero_grad()
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = m.loss(x[:, :-1], x[:, 1:])
        loss.backward()
        runs.append((loss.item(), [p.grad.clone() for p in m.parameters()], list(seen)))
    for h in hooks:
        h.remove()
    stored = torch.bfloat16 if storage == "auto" else torch.float32
    assert runs[0][2] == [torch.float32] * 3
    assert runs[1][2] == [stored] * 3 + [stored] * 3  # forward, then recomputed in backward
    tol = dict(rtol=1e-5, atol=1e-7) if storage == "float32" else dict(rtol=5e-2, atol=2e-3)
    assert runs[0][0] == pytest.approx(runs[1][0], rel=tol["rtol"])
    for g0, g1 in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(g0, g1, **tol)


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    m = SparseTransformer(tiny(d_model=64))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    x = torch.randint(0, 256, (2, 49))
    first = None
    for _ in range(150):
        loss = m.loss(x[:, :-1], x[:, 1:])
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 5.0 and loss.item() < 0.5


def _train_losses(steps=6, **model):
    torch.manual_seed(0)
    m = SparseTransformer(tiny(seq_len=40, **model))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        x = torch.randint(0, 256, (2, 41), generator=gen)
        loss = m.loss(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


def _interp_triton() -> bool:
    from sparse_transformer.ops import BACKENDS

    if "triton" not in BACKENDS or torch.cuda.is_available():
        return False
    from sparse_transformer.ops.triton.backend import interpreting

    return interpreting()


@pytest.mark.parametrize("pattern", [dict(pattern="strided", stride=6),
                                     dict(pattern="fixed", stride=8, summary=2)],
                         ids=["strided", "fixed"])
def test_every_backend_trains_like_the_reference(pattern):
    """A tiny model trained with each CPU backend (the Triton kernels under the interpreter
    where it is on) follows the reference's losses at every step (float32)."""
    backends = ["blocked"] + (["triton"] if _interp_triton() else [])
    want = _train_losses(backend="reference", **pattern)
    for backend in backends:
        got = _train_losses(backend=backend, **pattern)
        assert got == pytest.approx(want, rel=1e-5), backend


def test_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    m = SparseTransformer(tiny())
    x = torch.randint(0, 256, (2, 48))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m.loss(x[:, :-1], x[:, 1:])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in m.parameters())


def test_data_position_embeddings():
    m = SparseTransformer(tiny(seq_len=12, position="data", data_shape=(2, 2, 3)))
    assert [t.shape[0] for t in m.pos.tables] == [2, 2, 3]
    x = torch.randint(0, 256, (1, 12))
    assert m(x).shape == (1, 12, 256)


@pytest.mark.parametrize("field,value,word", [
    ("stride", 0, "stride"), ("summary", 9, "summary"), ("pattern", "diagonal", "pattern"),
    ("mode", "sideways", "mode"), ("dropout", 1.5, "dropout"), ("n_heads", 3, "n_heads"),
    ("position", "data", "data_shape"),
])
def test_bad_config_names_the_field(field, value, word):
    with pytest.raises(ValueError, match=word):
        SparseTransformer(tiny(**{field: value}))


def test_bad_input_is_refused():
    m = SparseTransformer(tiny())
    with pytest.raises(ValueError, match="long"):
        m(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="seq_len"):
        m(torch.zeros(1, 49, dtype=torch.long))


@pytest.mark.parametrize("mode", ["block", "attention"])
def test_checkpointing_replays_dropout(mode):
    """Recomputation draws the same dropout masks as the forward pass did."""
    m = SparseTransformer(tiny(dropout=0.3))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.1)
    x = torch.randint(0, 256, (2, 48))
    grads = []
    for ck in ("none", mode):
        m.cfg.checkpointing = ck
        m.zero_grad()
        torch.manual_seed(7)
        m.loss(x[:, :-1], x[:, 1:]).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g0, g1, rtol=1e-5, atol=1e-7)


def test_graphed_blocks_run_in_training_steps_only():
    """CUDA-graph callables (compile_blocks(cuda_graphs=True)) serve training forwards; eval,
    no-grad calls and block recomputation use the plain blocks."""
    m = SparseTransformer(tiny())
    calls = []

    def spy(blk):
        def run(*a, **kw):
            calls.append(1)
            return blk(*a, **kw)
        return run

    m._graphed = [spy(b) for b in m.blocks]
    x = torch.randint(0, 256, (2, 17))
    m.train()
    m.loss(x[:, :-1], x[:, 1:]).backward()
    assert len(calls) == len(m.blocks)
    with torch.no_grad():
        m(x)
    m.eval()
    m(x)
    m.train()
    m.cfg.checkpointing = "block"
    m.loss(x[:, :-1], x[:, 1:]).backward()
    assert len(calls) == len(m.blocks)
