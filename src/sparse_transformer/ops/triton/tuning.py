"""Launch settings of the Triton kernels, kept as data: ``tuning.json`` beside this file.

Each kernel role (``fwd``, ``dq``, ``dkdv``) launches with a tile size (``block``; null: the
device's default tile), ``num_warps`` and ``num_stages``, and optionally ``maxnreg`` (a cap on
registers per thread). The table holds:

* ``default``: the settings every call gets without a better entry, with ``default_how``
  saying how they were chosen. ``backend.TUNING`` is a live copy of them that benchmarks may
  change at run time.
* ``entries``: settings measured per (pattern kind, head dim, dtype class, role), written by
  ``benchmarks/gpu.py --sweep D --write-tuning PATH``, with the device, versions and date at
  the table's top. An entry applies to calls of the same pattern kind (the class name:
  "Strided", "Fixed", "Local", "Union", ...), the same head-dim class (the head dim rounded up
  to a power of two, at least 16: the kernels' ``BLOCK_D``) and the same dtype class
  ("16bit" or "fp32"); other calls get the defaults.

A sweep's results are kept, not recomputed: ``SPARSE_TRANSFORMER_TUNING=PATH`` (read at import)
makes a table written by the sweep (on the user's own GPU) take the place of the packaged one.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from ..crossover import dtype_class  # "16bit" or "fp32", as the crossover tables class dtypes

TABLE = Path(__file__).with_name("tuning.json")
ROLES = ("fwd", "dq", "dkdv")
FIELDS = ("block", "num_warps", "num_stages")
# Optional: ``maxnreg``, a cap on registers per thread (null or absent: the compiler's choice).
OPTIONAL = ("maxnreg",)
# False: every call gets ``backend.TUNING`` (the sweep turns the table off while it measures).
USE_TABLE = True


def table_path() -> str:
    return os.environ.get("SPARSE_TRANSFORMER_TUNING") or str(TABLE)


def head_dim_class(head_dim: int) -> int:
    """The kernels' ``BLOCK_D``: the head dim rounded up to a power of two, at least 16."""
    return max(16, 1 << max(0, (int(head_dim) - 1).bit_length()))


def _check_settings(where: str, s: dict) -> None:
    block, warps, stages = (s.get(f) for f in FIELDS)
    ok = (block is None or block in (16, 32, 64, 128)) and warps in (1, 2, 4, 8, 16) \
        and isinstance(stages, int) and 1 <= stages <= 8
    cap = s.get("maxnreg")
    ok = ok and (cap is None or (isinstance(cap, int) and 32 <= cap <= 255))
    if not ok:
        raise ValueError(f"tuning table {where}: block must be null or one of 16, 32, 64, 128, "
                         f"num_warps one of 1, 2, 4, 8, 16, num_stages 1..8 and maxnreg null "
                         f"or 32..255; got {s}")


@lru_cache(maxsize=4)
def load_table(path: str) -> dict:
    """The table at ``path``, checked; ``entries`` become a dict keyed by
    (kind, head-dim class, dtype class, role)."""
    with open(path) as f:
        table = json.load(f)
    default = table.get("default", {})
    if set(default) != set(ROLES):
        raise ValueError(f"tuning table {path}: 'default' needs settings for {ROLES}")
    for role in ROLES:
        _check_settings(f"{path} default {role}", default[role])
    index = {}
    for e in table.get("entries", []):
        if e.get("role") not in ROLES or e.get("dtype") not in ("16bit", "fp32"):
            raise ValueError(f"tuning table {path}: entry {e} needs a role in {ROLES} and a "
                             "dtype of '16bit' or 'fp32'")
        _check_settings(f"{path} entry", e)
        key = (e["kind"], head_dim_class(e["head_dim"]), e["dtype"], e["role"])
        index[key] = {f: e[f] for f in FIELDS}
        index[key].update({f: e[f] for f in OPTIONAL if e.get(f) is not None})
    return dict(table, index=index)


# Counts changes of the settings (``reload``, or a benchmark setting ``backend.TUNING[role]``):
# the backend keeps each call signature's launches, with their settings, under this number.
GENERATION = 0


class Settings(dict):
    """One role's settings; changing them counts in ``GENERATION``."""

    def _changed(self):
        global GENERATION
        GENERATION += 1

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key):
        super().__delitem__(key)
        self._changed()

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        self._changed()

    def clear(self):
        super().clear()
        self._changed()

    def pop(self, *args):
        self._changed()
        return super().pop(*args)

    def setdefault(self, key, default=None):
        self._changed()
        return super().setdefault(key, default)


def reload(path: str | None = None) -> None:
    """Read the table (``path``, else ``table_path()``) into ``INDEX`` and ``DEFAULT`` (in place:
    ``backend.TUNING`` is the same dict)."""
    global INDEX, GENERATION
    table = load_table(path or table_path())
    INDEX = table["index"]
    DEFAULT.clear()
    DEFAULT.update({r: Settings(s) for r, s in table["default"].items()})
    GENERATION += 1


INDEX: dict = {}
DEFAULT: dict = Settings()  # role -> Settings
reload()


def entry(role: str, kind: str, head_dim: int, dtype) -> dict | None:
    """The measured settings for this case, or None (then the defaults apply)."""
    if not (USE_TABLE and INDEX):
        return None
    return INDEX.get((kind, head_dim_class(head_dim), dtype_class(dtype), role))


def best_entries(rows: list[dict], kinds: dict[str, str]) -> list[dict]:
    """The fastest setting per (pattern, head dim, role) of a sweep's rows (each with pattern,
    d, role, block, warps, stages, ms), as table entries; ``kinds``: pattern name -> kind."""
    best: dict = {}
    for r in rows:
        key = (r["pattern"], r["d"], r["role"])
        if key not in best or r["ms"] < best[key]["ms"]:
            best[key] = r
    return [dict(kind=kinds[p], head_dim=d, dtype=r.get("dtype", "16bit"), role=role,
                 block=r["block"], num_warps=r["warps"], num_stages=r["stages"], ms=r["ms"],
                 n=r["n"]) for (p, d, role), r in sorted(best.items())]


def write_table(path: str, entries: list[dict], info: dict) -> dict:
    """Merge ``entries`` into the table at ``path`` (a new one from the packaged defaults when
    there is none), replacing entries of the same case, record ``info`` (device, versions, date)
    and write it atomically. Returns the table as written."""
    src = path if os.path.isfile(path) else str(TABLE)
    with open(src) as f:
        table = json.load(f)
    key = lambda e: (e["kind"], head_dim_class(e["head_dim"]), e["dtype"], e["role"])  # noqa: E731
    merged = {key(e): e for e in table.get("entries", [])}
    for e in entries:
        _check_settings(f"{path} new entry", e)
        merged[key(e)] = e
    table.update(info)
    table["entries"] = [merged[k] for k in sorted(merged, key=str)]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    load_table.cache_clear()
    return table
