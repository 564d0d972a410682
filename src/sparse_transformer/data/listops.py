"""ListOps as in Long Range Arena (Tay et al. 2020), generated locally from its description.

An example is a nested expression over the digits 0-9 with four operators: ``[MIN``, ``[MAX``,
``[MED`` (the median, rounded down as ``int(numpy.median)`` does) and ``[SM`` (sum modulo 10),
each closed by ``]``, e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]`` -> 9. Its label is the value (10 classes).

The generating process (LRA's): a node at depth d < max_depth (the root has depth 1) is an
operator with probability 0.25, else a digit; a node at max_depth is a digit. An operator draws
2..max_args arguments and one of the four operators uniformly. The length counts every digit,
operator and ``]`` (LRA's files add parentheses, which its tokenizer drops; we write none). Trees
whose length is strictly between ``min_length`` and ``max_length`` are kept, duplicates dropped,
and the splits filled in order (train, then valid, then test), so the splits share no example.

``generate`` draws whole batches of trees level by level with numpy, fast enough for the full
96,000 / 2,000 / 2,000 in tens of seconds on one core; the labels it computes on the way are then
checked by ``evaluate``, an independent stack evaluator that reads the token strings.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
# Token ids shared by the generator and ``listops_tokenizer``: 0 padding, 1 [CLS], 2 unknown,
# 3..12 the digits, 13..16 the operators, 17 the closing bracket.
SPECIALS = ("[PAD]", "[CLS]", "[UNK]")
VOCAB = SPECIALS + tuple(str(d) for d in range(10)) + OPERATORS + (END,)
DIGIT0, OP0, END_ID = 3, 13, 17
SPLIT_FILES = {"train": "basic_train.tsv", "valid": "basic_val.tsv", "test": "basic_test.tsv"}


@dataclass(frozen=True)
class ListOpsSpec:
    train: int = 96_000
    valid: int = 2_000
    test: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500  # exclusive
    max_length: int = 2000  # exclusive
    seed: int = 0

    def __post_init__(self):
        for name in ("train", "valid", "test"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if self.max_depth < 1 or self.max_args < 2:
            raise ValueError(f"max_depth must be >= 1 and max_args >= 2, got "
                             f"{self.max_depth}, {self.max_args}")
        if not 0 <= self.min_length < self.max_length - 1:
            raise ValueError(f"need 0 <= min_length < max_length - 1, got "
                             f"{self.min_length}, {self.max_length}")


def _median_floor(vals: np.ndarray, counts: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per group of digits, the median rounded down (the two middle values averaged)."""
    g = len(counts)
    cum = np.bincount(group * 10 + vals, minlength=g * 10).reshape(g, 10).cumsum(1)
    lo = (cum <= ((counts - 1) // 2)[:, None]).sum(1)  # the value at rank (c - 1) // 2
    hi = (cum <= (counts // 2)[:, None]).sum(1)  # the value at rank c // 2
    return (lo + hi) // 2


def _trees(rng: np.random.Generator, count: int, max_depth: int, max_args: int):
    """``count`` random trees: (token arrays of the trees, their lengths, their values)."""
    levels = []  # per depth: (is_op, op, nargs, parent index into the previous level)
    parent = np.full(count, -1)
    m = count
    for depth in range(1, max_depth + 1):
        if depth < max_depth:
            is_op = rng.random(m) <= 0.25  # LRA: r > 0.25 -> a digit
        else:
            is_op = np.zeros(m, bool)
        k = int(is_op.sum())
        nargs = np.zeros(m, np.int64)
        nargs[is_op] = rng.integers(2, max_args + 1, k)
        op = np.zeros(m, np.int64)
        op[is_op] = rng.integers(0, len(OPERATORS), k)
        digit = rng.integers(0, 10, m, dtype=np.int64)
        levels.append({"is_op": is_op, "nargs": nargs, "op": op, "digit": digit, "parent": parent})
        parent = np.repeat(np.arange(m), nargs)  # children in order, grouped by parent
        m = len(parent)
        if m == 0:
            break
    # Bottom-up: sizes (tokens) and values.
    child_size = child_val = None
    for lv in reversed(levels):
        n = len(lv["is_op"])
        size = np.ones(n, np.int64)
        val = lv["digit"].astype(np.int64)
        ops = np.flatnonzero(lv["is_op"])
        if len(ops):
            counts = lv["nargs"][ops]
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            size[ops] = 2 + np.add.reduceat(child_size, starts)
            group = np.repeat(np.arange(len(ops)), counts)
            results = np.stack([np.minimum.reduceat(child_val, starts),
                                np.maximum.reduceat(child_val, starts),
                                _median_floor(child_val, counts, group),
                                np.add.reduceat(child_val, starts) % 10])
            val[ops] = results[lv["op"][ops], np.arange(len(ops))]
        lv["size"], lv["val"] = size, val
        child_size, child_val = size, val
    # Top-down: where each node starts in one buffer holding all trees back to back.
    roots = levels[0]
    start = np.concatenate(([0], np.cumsum(roots["size"])[:-1]))
    buf = np.empty(int(roots["size"].sum()), np.int64)
    for i, lv in enumerate(levels):
        lv["start"] = start
        buf[start] = np.where(lv["is_op"], OP0 + lv["op"], DIGIT0 + lv["digit"])
        ops = lv["is_op"]
        buf[start[ops] + lv["size"][ops] - 1] = END_ID
        if i + 1 < len(levels):
            nxt = levels[i + 1]
            sizes = nxt["size"]
            before = np.cumsum(sizes) - sizes  # exclusive cumsum over all children...
            first = np.concatenate(([0], np.cumsum(lv["nargs"])[:-1]))  # ...minus the group's
            p = nxt["parent"]
            start = start[p] + 1 + before - before[first[p]]
    return buf, roots["start"], roots["size"], roots["val"]


def _chunk(args):
    """Chunk ``index`` of a run: its accepted trees as (int8 token arrays, values)."""
    spec, index, size = args
    rng = np.random.default_rng([spec.seed, index])
    buf, start, length, val = _trees(rng, size, spec.max_depth, spec.max_args)
    keep = np.flatnonzero((length > spec.min_length) & (length < spec.max_length))
    return [buf[start[i]:start[i] + length[i]].astype(np.int8) for i in keep], val[keep]


def _chunks(spec: ListOpsSpec, workers: int, size: int):
    index = 0
    if workers <= 1:
        while True:
            yield _chunk((spec, index, size))
            index += 1
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        while True:  # a round of chunks at a time, consumed in order
            args = [(spec, index + i, size) for i in range(workers)]
            index += workers
            yield from pool.map(_chunk, args)


def generate(spec: ListOpsSpec = ListOpsSpec(), workers: int = 1, chunk: int = 20_000):
    """The splits as {split: (list of int8 token-id arrays, int64 labels)} (ids as in VOCAB).

    Chunk i of trees is drawn from the generator seeded by (seed, i), so the result depends on
    the seed alone, not on ``workers`` (processes drawing chunks in parallel)."""
    want = spec.train + spec.valid + spec.test
    seen: set[bytes] = set()
    seqs, labels = [], []
    chunks = _chunks(spec, workers, chunk)
    for trees, vals in chunks:
        for s, v in zip(trees, vals):
            key = s.tobytes()
            if key in seen:
                continue
            seen.add(key)
            seqs.append(s)
            labels.append(int(v))
            if len(seqs) == want:
                break
        if len(seqs) == want:
            break
    chunks.close()  # shuts the worker pool down
    labels = np.asarray(labels, np.int64)
    out, a = {}, 0
    for name in ("train", "valid", "test"):
        b = a + getattr(spec, name)
        out[name] = (seqs[a:b], labels[a:b])
        a = b
    return out


def to_text(ids) -> str:
    return " ".join(VOCAB[int(i)] for i in ids)


def evaluate(text: str) -> int:
    """The value of one expression, read token by token with a stack (independent of
    ``generate``). Raises ValueError on a malformed expression."""
    stack: list[tuple[str, list[int]]] = []
    result = None
    for tok in text.split():
        if tok in OPERATORS:
            stack.append((tok, []))
            continue
        if tok == END:
            if not stack:
                raise ValueError("']' without an open operator")
            op, args = stack.pop()
            if len(args) < 1:
                raise ValueError(f"{op} has no arguments")
            if op == "[MIN":
                v = min(args)
            elif op == "[MAX":
                v = max(args)
            elif op == "[SM":
                v = sum(args) % 10
            else:
                s = sorted(args)
                mid = len(s) // 2
                v = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
        elif tok.isdigit() and len(tok) == 1:
            v = int(tok)
        else:
            raise ValueError(f"unknown token {tok!r}")
        if stack:
            stack[-1][1].append(v)
        elif result is None:
            result = v
        else:
            raise ValueError("more than one expression")
    if stack or result is None:
        raise ValueError("unclosed operator" if stack else "empty expression")
    return result


def check_labels(seqs, labels, limit: int | None = None) -> int:
    """Evaluate (up to ``limit`` of) the examples independently; raise on any disagreement.
    Returns how many were checked."""
    n = len(seqs) if limit is None else min(limit, len(seqs))
    for i in range(n):
        got = evaluate(to_text(seqs[i]))
        if got != int(labels[i]):
            raise AssertionError(f"ListOps example {i}: generator says {int(labels[i])}, "
                                 f"the evaluator says {got}")
    return n


def write_splits(splits: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write LRA-style TSV files (columns Source, Target) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (seqs, labels) in splits.items():
        path = out_dir / SPLIT_FILES[name]
        tmp = path.with_name(f".{path.name}.part")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["Source", "Target"])
            for s, y in zip(seqs, labels):
                w.writerow([to_text(s), int(y)])
        tmp.replace(path)
        paths[name] = path
    return paths


def listops_tokenizer():
    """A word-level ``tokenizers`` tokenizer whose ids equal the generator's (see VOCAB)."""
    from .tokenize import TextTokenizer

    return TextTokenizer.word_level(list(VOCAB))
