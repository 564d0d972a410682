"""Every backend cache has a bound, and results stay right after its entries are evicted."""
import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer.ops.triton import plan as triton_plan
from sparse_transformer.ops.blocked import backend as blocked, plans
from sparse_transformer.ops.cache import LRUCache
from sparse_transformer.ops.flex import backend as flex


def test_lru_cache_evicts_the_least_recently_used():
    c = LRUCache(2)
    c["a"], c["b"] = 1, 2
    assert c.get("a") == 1  # "a" is now the most recently used
    c["c"] = 3
    assert list(c) == ["a", "c"] and c.get("b") is None and c.get("b", 0) == 0
    c["a"] = 4
    c["d"] = 5
    assert dict(c) == {"a": 4, "d": 5}
    with pytest.raises(ValueError, match="maxsize"):
        LRUCache(0)


def test_function_caches_have_a_bound():
    """No ``lru_cache(maxsize=None)`` is left among the backends' caches."""
    fns = [triton_plan._build_cached, plans._plan_on, plans._build_plan_cached,
           blocked._offset_plan, flex._compiled_flex, flex._layout_tables,
           flex._cached_block_mask, flex._summary_base_mask, flex._transposed_order]
    for fn in fns:
        assert fn.cache_info().maxsize is not None, fn.__qualname__


triton = pytest.importorskip("triton")
from sparse_transformer.ops.triton import backend as tb  # noqa: E402
from tolerance import check_against_reference  # noqa: E402

needs_interp = pytest.mark.skipif(torch.cuda.is_available() or not tb.interpreting(),
                                  reason="CPU kernel tests need TRITON_INTERPRET=1")


def test_triton_caches_stay_within_their_bounds():
    """Many lengths and patterns (plans only, no kernels): no cache grows past its bound."""
    for n in range(8, 8 + 3 * tb.CACHE_SIZES["plan_sets"], 3):
        tb.plan_set(P.Local(1 + n % 5), n, 2, True, "cpu")
    assert len(tb._PLAN_SETS) == tb._PLAN_SETS.maxsize == tb.CACHE_SIZES["plan_sets"]
    assert len(tb._PLANS) <= tb.CACHE_SIZES["plans"]
    assert len(tb._COMPILED) <= tb.CACHE_SIZES["launches"]
    assert len(tb._EMPTY) <= tb.CACHE_SIZES["empty_passes"]
    assert len(tb._LAYOUTS) <= tb.CACHE_SIZES["layouts"]


@needs_interp
def test_triton_backward_survives_eviction_of_its_plans(monkeypatch):
    """A forward's plans are evicted (cache bound 1) by another problem before its backward runs:
    the backward still uses the right plans, and a fresh call rebuilds them."""
    monkeypatch.setattr(tb, "_PLAN_SETS", LRUCache(1))
    monkeypatch.setattr(tb, "_PLANS", LRUCache(1))
    monkeypatch.setattr(tb, "_LAYOUTS", LRUCache(1))
    pattern, other = P.Strided(4), P.Fixed(8, 2)

    def evicting(q, k, v, **kw):
        out = tb.triton_attention(q, k, v, **kw)
        g = torch.Generator().manual_seed(3)
        x = torch.randn(1, 1, 21, 16, generator=g)
        tb.triton_attention(x, x, x, other)  # another problem takes the only cache slot
        assert all(key[0] is not kw["pattern"] for key in tb._PLAN_SETS)
        return out

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 37, 16, generator=g) for _ in range(3))
    check_against_reference(evicting, q, k, v, pattern, True)
    # The custom ops name plans by token and rebuild them on a miss.
    rebuilt = tb._op_plans(pattern.token, q, True, -1)
    assert rebuilt[0].seq_len == 37 and rebuilt[0].causal

