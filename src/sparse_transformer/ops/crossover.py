"""Which backend ``backend="auto"`` runs: crossover tables measured by a benchmark.

Two tables sit beside this file, both written by ``benchmarks/crossover.py``: ``crossover.json``
for GPUs (triton, flex or sdpa-masked) and ``crossover_cpu.json`` for CPUs (blocked or sdpa-masked,
float32, measured with patterns of the paper's proportions at each length). Each lists, for the
device it was measured on, per pattern kind, head dim and dtype, the fastest backend at each
measured length (forward + backward of one eager call, host time included, as a training step
feels it). ``pick`` answers from it:

* the entry for the same pattern kind (``Pattern.kind``: the class name, or "Union" / "PerHead"),
  the nearest head dim and the same dtype class (16-bit or float32);
* at length n, the choice measured at the nearest length on a log scale (ties: the shorter);
* a choice that cannot run here (a backend not registered, "sdpa-masked" beyond its length bound)
  falls back to the built-in order: triton, then flex, then blocked;
* "sdpa-masked" is taken only for calls no larger (batch x heads) than the ones it was measured
  on (``batch_heads``): it wins short calls whose time is the fused kernels' fixed host cost, and
  that cost is shared by more rows in a larger call (ListOps at batch 32, n = 2,000 trained
  slower with it, see docs/benchmarks.md), so beyond the measured size the fused kernels run.

Set ``SPARSE_TRANSFORMER_CROSSOVER`` (GPU) or ``SPARSE_TRANSFORMER_CROSSOVER_CPU`` to another
table's path to use it instead (the benchmark does, to check its own table). No table entry: the
built-in order.
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

TABLE = Path(__file__).with_name("crossover.json")
CPU_TABLE = Path(__file__).with_name("crossover_cpu.json")


@lru_cache(maxsize=4)
def load_table(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        return {"entries": []}
    with open(p) as f:
        table = json.load(f)
    for e in table.get("entries", []):
        if len(e["n"]) != len(e["best"]) or list(e["n"]) != sorted(e["n"]):
            raise ValueError(f"crossover table {path}: entry {e.get('kind')} needs sorted 'n' "
                             "and one 'best' per length")
    return table


def table_path(device_type: str = "cuda") -> str:
    if device_type == "cpu":
        return os.environ.get("SPARSE_TRANSFORMER_CROSSOVER_CPU") or str(CPU_TABLE)
    return os.environ.get("SPARSE_TRANSFORMER_CROSSOVER") or str(TABLE)


def dtype_class(dtype) -> str:
    return "fp32" if str(dtype).endswith("float32") else "16bit"


def lookup(table: dict, kind: str, n: int, head_dim: int, dtype,
           batch_heads: int | None = None) -> str | None:
    """The measured choice for this case, or None when the table has no entry for it."""
    cls = dtype_class(dtype)
    rows = [e for e in table.get("entries", []) if e["kind"] == kind and e["dtype"] == cls]
    if not rows:
        return None
    row = min(rows, key=lambda e: (abs(e["head_dim"] - head_dim), e["head_dim"]))
    # The nearest measured length on a log scale (ties: the shorter one).
    gap = lambda length: abs(math.log(max(n, 1) / length))  # noqa: E731
    best = min(zip(row["n"], row["best"]), key=lambda lc: (gap(lc[0]), lc[0]))[1]
    measured = row.get("batch_heads")
    if best == "sdpa-masked" and batch_heads is not None and measured and batch_heads > measured:
        return None
    return best


_MEMO = "_answers"  # a key of a loaded table (never in its file): the answers of ``lookup``
_MISSING = object()
_MEMO_SIZE = 4096


def pick(kind: str, n: int, head_dim: int, dtype, available, masked_max_n: int,
         batch_heads: int | None = None, device_type: str = "cuda") -> str | None:
    """The backend to run, or None to use the built-in order. ``available``: the names that can
    run here; ``device_type``: "cuda" or "cpu", which table to read."""
    table = load_table(table_path(device_type))
    # Every attention call of a model asks again: the answers are kept with the loaded table.
    memo, key = table.setdefault(_MEMO, {}), (kind, n, head_dim, dtype, batch_heads)
    choice = memo.get(key, _MISSING)
    if choice is _MISSING:
        if len(memo) >= _MEMO_SIZE:  # bounded: many distinct lengths start it afresh
            memo.clear()
        choice = memo[key] = lookup(table, kind, n, head_dim, dtype, batch_heads)
    if choice is None:
        return None
    if choice == "sdpa-masked" and n > masked_max_n:
        return None
    return choice if choice in available else None
