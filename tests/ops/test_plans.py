"""Execution plans list every allowed pair exactly once; their masks are the predicate's."""
import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer.ops.blocked.plans import build_plan

PATTERNS = [P.Strided(16), P.Strided(10), P.Fixed(16, 4), P.Fixed(16, 4, distinct_heads=True),
            P.Fixed(8, 8), P.Local(20), P.Local(1), P.Column(8), P.Block(12), P.Summary(16, 4),
            P.Global((0, 50)), P.Random(2, block_size=16, seed=1), P.Dense(),
            P.Local(9) | P.Global((3,)), P.PerHead((P.Strided(8), P.Fixed(16, 8)))]
IDS = [p.name for p in PATTERNS]


def computed_pairs(plan, heads, n):
    """(count of times each allowed (h, q, k) is computed, count of groups per query row)."""
    count = torch.zeros(heads, n, n, dtype=torch.long)
    rows = torch.zeros(n, dtype=torch.long)
    for task in plan.tasks:
        qpos = task.q_positions()  # (G, Q)
        kpos = task.k_positions(plan.compact_keys)  # (Hp, G, K)
        mask = torch.ones(1, 1, 1, 1, dtype=torch.bool) if task.mask is None else task.mask
        mask = mask.expand(heads, task.groups, task.q_len, task.k_len)
        real_q = qpos < n
        rows.index_add_(0, qpos[real_q], torch.ones_like(qpos[real_q]))
        qq = qpos.view(1, task.groups, -1, 1).expand_as(mask)
        kk = kpos.unsqueeze(2).expand_as(mask)
        hh = torch.arange(heads).view(-1, 1, 1, 1).expand_as(mask)
        assert (kk[mask] >= 0).all() and (qq[mask] < n).all() and (kk[mask] < n).all()
        count.index_put_((hh[mask], qq[mask], kk[mask]), torch.ones_like(hh[mask]), accumulate=True)
    return count, rows


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
@pytest.mark.parametrize("n", [63, 97, 256])
@pytest.mark.parametrize("causal", [True, False])
def test_plans_cover_each_allowed_pair_once(pattern, n, causal):
    heads = 3
    total = torch.zeros(heads, n, n, dtype=torch.long)
    for part in pattern.parts():
        plan = build_plan(part, n, heads, causal)
        count, rows = computed_pairs(plan, heads, n)
        assert rows.max() <= 1, "a query row lies in two groups of one plan"
        # Each part's plan lists exactly the part's pairs.
        assert torch.equal(count, part.mask(n, heads, causal).long())
        total += count
    assert torch.equal(total, pattern.mask(n, heads, causal).long())


def test_common_parts_use_view_plans():
    kinds = {type(p).__name__: {t.kind for t in build_plan(p, 4096, 4, True).tasks}
             for p in P.Strided(128).parts() + P.Fixed(128, 32).parts()}
    assert kinds == {"Local": {"rows"}, "Column": {"column"}, "Block": {"rows"},
                     "Summary": {"rows"}}
    assert all(t.compact for t in build_plan(P.Summary(128, 32, False, True), 4096, 4, True).tasks)


def test_plans_compute_few_wasted_pairs():
    # Causal strided at 4096: the plans compute under 2x the allowed pairs (the waste is the
    # masked half of diagonal blocks and of the transposed column view).
    n = 4096
    pat = P.Strided(64)
    computed = sum(build_plan(p, n, 1, True).pairs_computed for p in pat.parts())
    assert computed <= 2 * pat.mask(n)[0].sum().item()


def test_plan_building_is_quick_at_16k():
    import time
    t = time.perf_counter()
    for p in P.Strided(128).parts() + P.Fixed(128, 32).parts():
        build_plan(p, 16384, 4, True)
    assert time.perf_counter() - t < 10
