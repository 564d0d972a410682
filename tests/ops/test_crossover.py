"""The crossover table's choice logic and the sdpa-masked backend (numbers come from the benchmark)."""
import json

import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer.ops import crossover, dispatch, masked, sparse_attention

TABLE = {"entries": [
    {"kind": "Strided", "head_dim": 64, "dtype": "16bit", "n": [1024, 4096, 16384],
     "best": ["sdpa-masked", "triton", "flex"]},
    {"kind": "Strided", "head_dim": 128, "dtype": "16bit", "n": [1024], "best": ["triton"]},
]}


@pytest.mark.parametrize("n, d, want", [(512, 64, "sdpa-masked"), (1024, 64, "sdpa-masked"),
                                        (2047, 64, "sdpa-masked"), (2100, 64, "triton"),
                                        (4096, 64, "triton"),
                                        (70000, 64, "flex"), (2048, 120, "triton"),
                                        (2048, 80, "sdpa-masked")])
def test_lookup_takes_the_nearest_measured_length(n, d, want):
    assert crossover.lookup(TABLE, "Strided", n, d, torch.bfloat16) == want


def test_masked_choice_holds_only_up_to_the_measured_size():
    table = {"entries": [dict(TABLE["entries"][0], batch_heads=16)]}
    assert crossover.lookup(table, "Strided", 1024, 64, torch.bfloat16, 16) == "sdpa-masked"
    assert crossover.lookup(table, "Strided", 1024, 64, torch.bfloat16, 128) is None
    assert crossover.lookup(table, "Strided", 8192, 64, torch.bfloat16, 128) == "triton"


def test_lookup_without_an_entry_is_none():
    assert crossover.lookup(TABLE, "Fixed", 2048, 64, torch.bfloat16) is None
    assert crossover.lookup(TABLE, "Strided", 2048, 64, torch.float32) is None


def test_pick_falls_back_where_the_choice_cannot_run(tmp_path, monkeypatch):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(TABLE))
    monkeypatch.setenv("SPARSE_TRANSFORMER_CROSSOVER", str(path))
    everything = {"triton", "flex", "sdpa-masked", "blocked"}
    assert crossover.pick("Strided", 2048, 64, torch.float16, everything, 4096) == "sdpa-masked"
    # Beyond the masked backend's bound, or a backend not registered: the built-in order.
    assert crossover.pick("Strided", 2048, 64, torch.float16, everything, 1024) is None
    assert crossover.pick("Strided", 20000, 64, torch.float16, {"triton"}, 4096) is None


def test_bad_table_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"entries": [{"kind": "Local", "head_dim": 64, "dtype": "16bit",
                                             "n": [4096, 1024], "best": ["triton", "flex"]}]}))
    with pytest.raises(ValueError, match="sorted 'n'"):
        crossover.load_table(str(path))


def test_shipped_table_is_well_formed():
    table = crossover.load_table(str(crossover.TABLE))
    for e in table["entries"]:
        assert set(e["best"]) <= {"triton", "flex", "sdpa-masked", "blocked"}


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("pattern", [P.Strided(8), P.Fixed(8, 2), P.Local(5) | P.Global.first(1),
                                     P.PerHead((P.Local(4), P.Strided(6)))])
def test_sdpa_masked_matches_the_reference(pattern, causal):
    torch.manual_seed(0)
    b, h, n, d = 2, 2, 37, 24
    q, k, v = (torch.randn(b, h, n, d, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    pad = torch.zeros(b, n, dtype=torch.bool)
    pad[1, 20:] = True
    if not causal:
        pad[0, :] = True  # a fully padded sequence: zeros, never NaN
    outs, grads = [], []
    for backend in ("reference", "sdpa-masked"):
        out = sparse_attention(q, k, v, pattern, causal=causal, key_padding_mask=pad,
                               backend=backend)
        g = torch.autograd.grad(out.sum(), (q, k, v))
        outs.append(out)
        grads.append(g)
    assert not torch.isnan(outs[1]).any()
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-10)
    for a, r in zip(grads[1], grads[0]):
        assert not torch.isnan(a).any()
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)


def test_sdpa_masked_refuses_long_sequences():
    q = torch.zeros(1, 1, masked.MAX_N + 1, 8)
    with pytest.raises(ValueError, match="at most"):
        sparse_attention(q, q, q, P.Local(4), backend="sdpa-masked")


def test_shipped_cpu_table_is_well_formed_and_names_cpu_backends():
    table = crossover.load_table(str(crossover.CPU_TABLE))
    assert table["entries"], "the CPU table ships with measured entries"
    for e in table["entries"]:
        assert e["dtype"] == "fp32"
        assert set(e["best"]) <= {"blocked", "sdpa-masked"}


def test_cpu_auto_reads_the_cpu_table(tmp_path, monkeypatch):
    from sparse_transformer.ops import dispatch

    path = tmp_path / "cpu.json"
    path.write_text(json.dumps({"entries": [
        {"kind": "Fixed", "head_dim": 32, "dtype": "fp32", "n": [128, 512],
         "best": ["sdpa-masked", "blocked"]}]}))
    monkeypatch.setenv("SPARSE_TRANSFORMER_CROSSOVER_CPU", str(path))
    crossover.load_table.cache_clear()
    try:
        def choice(n, pattern=P.Fixed(16, 4), dtype=torch.float32):
            return dispatch.choose_backend(torch.zeros(1, 2, n, 32, dtype=dtype), pattern,
                                           True, None)

        assert choice(128) == "sdpa-masked"
        assert choice(600) == "blocked"
        # Beyond the masked backend's length bound, in float64, or without an entry: blocked.
        assert choice(masked.MAX_N * 2) == "blocked"
        assert choice(128, dtype=torch.float64) == "blocked"
        assert choice(128, pattern=P.Local(8)) == "blocked"
        assert choice(128, pattern=P.Dense()) == "sdpa"
    finally:
        crossover.load_table.cache_clear()


def test_cpu_auto_choice_matches_the_reference():
    """What auto runs on the CPU at a short length (sdpa-masked per the shipped table) gives the
    reference's forward and gradients."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 128, 32, requires_grad=True) for _ in range(3))
    pad = torch.zeros(2, 128, dtype=torch.bool)
    pad[1, 100:] = True
    res = []
    for backend in ("reference", "auto"):
        out = sparse_attention(q, k, v, P.Fixed(16, 4), key_padding_mask=pad, backend=backend)
        res.append((out, *torch.autograd.grad(out.square().sum(), (q, k, v))))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_pick_keeps_its_answers_in_a_bounded_memo(monkeypatch):
    """pick answers as lookup does, from a memo kept with the loaded table, which never grows
    past its bound."""
    monkeypatch.setattr(crossover, "_MEMO_SIZE", 3)
    table = crossover.load_table(str(crossover.TABLE))
    everything = {"triton", "flex", "sdpa-masked", "blocked"}
    for n in (512, 1024, 2048, 4096, 8192, 16384, 1024, 512):
        got = crossover.pick("Strided", n, 64, torch.bfloat16, everything, 1 << 20)
        assert got == crossover.lookup(table, "Strided", n, 64, torch.bfloat16)
        assert len(table[crossover._MEMO]) <= 3


class _FakeCudaQ:
    """What choose_backend reads of q, for a CUDA tensor too large to make here: a view of a
    packed (1, n, 3 x 512) projection at n = 1.5M (offsets past 2**31 elements)."""

    is_cuda, dtype, device = True, torch.bfloat16, torch.device("cuda")

    def __init__(self, n):
        self.shape = (1, 8, n, 64)
        self._stride = (n * 1536, 64, 1536, 1)

    def stride(self):
        return self._stride

    def numel(self):
        return 8 * self.shape[2] * 64


def test_auto_never_sends_offsets_past_32_bits_to_flex(monkeypatch):
    """Where the table says flex but a q/k/v offset passes 2**31, auto runs triton (64-bit
    offsets) instead: FlexAttention's kernels faulted (illegal memory access) there on an H100."""
    seen = []

    def pick(kind, n, head_dim, dtype, available, *a, **k):
        seen.append(set(available))
        return "flex" if "flex" in available else "triton"

    monkeypatch.setattr(crossover, "pick", pick)
    monkeypatch.setattr(dispatch, "BACKENDS", {**dispatch.BACKENDS, "flex": None, "triton": None})
    assert dispatch.choose_backend(_FakeCudaQ(1_376_256), P.Local(128), True, None) == "flex"
    assert dispatch.choose_backend(_FakeCudaQ(1_507_328), P.Local(128), True, None) == "triton"
    assert "flex" in seen[0] and "flex" not in seen[1]


def test_past_int32_bound():
    meta = dict(device="meta", dtype=torch.bfloat16)
    view = lambda n: torch.empty_strided((1, 8, n, 64), (0, 64, 1536, 1), **meta)  # noqa: E731
    assert not dispatch.past_int32(view(1_376_256))
    assert dispatch.past_int32(view(1_507_328))
    assert dispatch.past_int32(torch.empty(2**31, **meta))
    assert not dispatch.past_int32(torch.empty(2**31 - 1, **meta))
    assert not dispatch.past_int32(torch.empty(0, 5, **meta))
