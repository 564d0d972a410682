"""Triton plans at long lengths: shift-invariant parts (band, column) share one evaluation per
tile offset, a summary part's far tiles share one per side and run as spans, and global and
random parts list their candidate tiles directly, so a plan at n = 2^20 builds in seconds and a
few hundred MB; the shortcuts give the same coverage as evaluating every tile pair."""
import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer.ops.triton import plan as triton_plan
from sparse_transformer.patterns import Pattern, Structure

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("_triton_tests", HERE / "test_triton.py")


def _coverage():
    pytest.importorskip("triton")
    mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(mod)
    return mod._coverage


@pytest.mark.parametrize("pattern", [P.Strided(8), P.Local(20), P.Column(8), P.Strided(16)])
@pytest.mark.parametrize("n", [256, 301])
@pytest.mark.parametrize("causal", [True, False])
def test_shared_evaluation_covers_each_allowed_pair_once(pattern, n, causal):
    coverage = _coverage()
    plan = triton_plan._build_cached(pattern, n, 1, causal, "cpu", 16)
    want = pattern.mask(n, 1, causal)[:1].long()
    for passes, key_major in ((plan.fwd, False), (plan.bwd, True)):
        assert torch.equal(coverage(plan, passes, n, 1, key_major), want)


def test_same_residue_pairs_match_the_square_construction():
    r = torch.tensor([0, 0, 0, 1, 2, 2, 4, 4, 4, 4])
    qi, ki = triton_plan._same_residue_pairs(r)
    want = (r[:, None] == r[None, :]).nonzero(as_tuple=True)
    assert torch.equal(qi, want[0]) and torch.equal(ki, want[1])


FIXED = [P.Fixed(8, 2), P.Fixed(16, 4, distinct_heads=True), P.Fixed(32, 16), P.Fixed(64, 32)]


@pytest.mark.parametrize("pattern", FIXED, ids=lambda p: p.name)
@pytest.mark.parametrize("n,block", [(256, 16), (301, 16), (301, 32)])
@pytest.mark.parametrize("causal", [True, False])
def test_summary_spans_cover_each_allowed_pair_once(pattern, n, block, causal):
    coverage = _coverage()
    heads = 3 if pattern.per_head else 1
    plan = triton_plan._build_cached(pattern, n, heads, causal, "cpu", block)
    want = pattern.mask(n, heads, causal)[: plan.heads].long()
    for passes, key_major in ((plan.fwd, False), (plan.bwd, True)):
        assert torch.equal(coverage(plan, passes, n, heads, key_major), want)


def test_summary_far_tiles_are_spans():
    summary = P.Fixed(8, 2).parts()[1]
    got = triton_plan._pairs_for_part(summary, 256, 1, True, 16, "cpu", True)
    assert got.qspans is not None and int(got.qspans[3].sum()) == int(got.kspans[3].sum()) > 0
    assert got.hp.numel() < 2 * 256 // 16  # a couple of near tiles per query tile


@dataclass(frozen=True)
class _NearSummary(Pattern):
    """Claims "summary" but sees only nearby summary keys: its far tiles break the claim."""

    def allowed(self, q, k, h):
        return P.Summary(8, 2, exclude_own_block=True).allowed(q, k, h) & ((q - k).abs() < 40)

    def structure(self):
        return Structure("summary", stride=8, summary=2, exclude_own_block=True)


@dataclass(frozen=True)
class _BlockAndNearSummary(Pattern):
    def allowed(self, q, k, h):
        return P.Block(8).allowed(q, k, h) | _NearSummary().allowed(q, k, h)

    def parts(self):
        return [P.Block(8), _NearSummary()]


@pytest.mark.parametrize("causal", [True, False])
def test_the_predicate_decides_when_a_summary_claim_fails(causal):
    coverage = _coverage()
    pattern, n = _BlockAndNearSummary(), 256
    plan = triton_plan._build_cached(pattern, n, 1, causal, "cpu", 16)
    want = pattern.mask(n, 1, causal).long()
    for passes, key_major in ((plan.fwd, False), (plan.bwd, True)):
        assert torch.equal(coverage(plan, passes, n, 1, key_major), want)


@pytest.mark.parametrize("pattern", [P.bigbird(9, 2, 2, 16, 3), P.longformer(7, (0, 40, 299)),
                                     P.Local(3) | P.Random(2, 8, seed=5, distinct_heads=True),
                                     P.Random(1, 40, seed=2)], ids=lambda p: p.name)
@pytest.mark.parametrize("causal", [True, False])
def test_listed_global_and_random_tiles_cover_each_allowed_pair_once(pattern, causal):
    coverage = _coverage()
    n, heads = 301, 2
    plan = triton_plan._build_cached(pattern, n, heads if pattern.per_head else 1, causal, "cpu",
                                     16)
    want = pattern.mask(n, heads, causal)[: plan.heads].long()
    for passes, key_major in ((plan.fwd, False), (plan.bwd, True)):
        assert torch.equal(coverage(plan, passes, n, heads, key_major), want)


PROBE = """
import json, resource, sys, time, torch
from sparse_transformer import patterns as P
from sparse_transformer.ops.triton import plan as triton_plan
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
plan = triton_plan.build_plan(eval(sys.argv[1]), 1 << 20, 1, True, torch.device("cpu"), 64)
print(json.dumps(dict(s=time.perf_counter() - t0, tiles=plan.tiles_computed,
                      grew_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)))
"""


N = 1 << 20
TILES = N // 64
LONG = [
    # (pattern, most tiles): band + column, no n^2 tiles
    ("P.Strided(1024)", 2 * TILES * (1024 // 64 + 2)),
    ("P.Local(1024)", 2 * TILES * (1024 // 64 + 2)),
    # BigBird-style: per query tile a band of 4, 3 random tiles, the global column (+ one spare)
    ("P.bigbird(192, 2, 3, 64, 0)", 9 * TILES),
    # Fixed: the summary keys are a quarter of all keys, so its tiles grow as n^2 / 8 (the
    # kernels compute them); the plan lists their far tiles as spans, one per tile.
    ("P.Fixed(128, 32)", TILES * TILES // 8 + 4 * TILES),
]


@pytest.mark.parametrize("pattern,most_tiles", LONG, ids=[p for p, _ in LONG])
def test_plan_at_a_million_positions_is_fast_and_small(pattern, most_tiles):
    p = subprocess.run([sys.executable, "-c", PROBE, pattern], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    # Measured on 2 shared CPU cores: Strided and Local about 1 s, Fixed(128, 32) about 2 s,
    # the BigBird-style pattern about 8 s, each under 200 MB above the interpreter's start
    # (before: Strided 81 s and 2 GB; BigBird 68 s at n = 2^16, Fixed 6 s and 1.5 GB at 2^17,
    # both quadratic: hours at 2^20). The time bound leaves room for a loaded CI machine (one
    # BigBird build took 31 s there).
    assert got["s"] < 90 and got["grew_mb"] < 600, got
    assert got["tiles"] <= most_tiles
