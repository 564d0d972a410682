"""The registry of benchmark cases: which attention, which pattern, which shape.

A case is plain data so that ``run.py`` can hand it to a fresh subprocess. Dense causal SDPA is
always part of a suite: it is the baseline every sparse case is compared with.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from sparse_transformer import patterns as P

# name -> pattern factory; None is dense causal SDPA (torch.nn.functional).
PATTERNS = {
    "sdpa-causal": None,
    "strided-128": lambda: P.Strided(128),
    "fixed-128-32": lambda: P.Fixed(128, 32),
    "local-256": lambda: P.Local(256),
}
BASELINE = "sdpa-causal"
CPU_LENGTHS = (1024, 2048, 4096, 8192, 16384)


@dataclass(frozen=True)
class Case:
    pattern: str  # a key of PATTERNS
    seq_len: int
    heads: int = 4
    head_dim: int = 64
    batch: int = 1
    dtype: str = "float32"
    backend: str = "blocked"  # for sparse patterns; the baseline is always SDPA

    def to_dict(self) -> dict:
        return asdict(self)

    def make_pattern(self):
        make = PATTERNS[self.pattern]
        return None if make is None else make()


def cpu_suite(lengths=CPU_LENGTHS, patterns=tuple(PATTERNS)) -> list[Case]:
    """The foundation CPU table: H=4, d=64, batch 1, float32, forward + backward."""
    names = [BASELINE] + [p for p in patterns if p != BASELINE]
    return [Case(p, n) for n in lengths for p in names]
