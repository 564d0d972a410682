"""ListOps: the generator follows LRA's description and its labels agree with the evaluator."""
import numpy as np
import pytest

from sparse_transformer.data import listops as L
from sparse_transformer.data.classification import read_examples

SMALL = L.ListOpsSpec(train=300, valid=40, test=40, min_length=20, max_length=200, seed=5)


@pytest.fixture(scope="module")
def splits():
    return L.generate(SMALL)


@pytest.mark.parametrize("text, value", [
    ("7", 7),
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN 3 [MAX 1 0 ] 5 ]", 1),
    ("[MED 1 2 3 4 ]", 2),           # (2 + 3) // 2, rounded down like int(np.median)
    ("[MED 9 1 5 ]", 5),
    ("[SM 9 9 [MED 5 8 ] ]", 4),     # (9 + 9 + 6) % 10
    ("[SM [SM 9 9 ] [MAX 0 0 ] 3 ]", 1),
])
def test_evaluator_on_hand_examples(text, value):
    assert L.evaluate(text) == value


@pytest.mark.parametrize("bad", ["", "[MAX 1 2", "1 2", "[MAX ]", "]", "[FOO 1 2 ]", "[MIN 12 3 ]"])
def test_evaluator_rejects_malformed(bad):
    with pytest.raises(ValueError):
        L.evaluate(bad)


def test_generated_labels_agree_with_the_evaluator(splits):
    for seqs, labels in splits.values():
        assert L.check_labels(seqs, labels) == len(seqs)
    seqs, labels = splits["train"]
    broken = labels.copy()
    broken[3] = (broken[3] + 1) % 10
    with pytest.raises(AssertionError, match="example 3"):
        L.check_labels(seqs, broken)


def _structure(ids):
    """Maximum operator nesting, and the argument counts of every operator."""
    stack, depth, counts = [], 0, []
    for t in ids:
        if L.OP0 <= t < L.OP0 + 4:
            if stack:
                stack[-1] += 1
            stack.append(0)
            depth = max(depth, len(stack))
        elif t == L.END_ID:
            counts.append(stack.pop())
        elif stack:
            stack[-1] += 1
    return depth, counts


def test_lengths_depth_arguments_and_uniqueness(splits):
    all_seqs = [tuple(s) for seqs, _ in splits.values() for s in seqs]
    assert len(set(all_seqs)) == len(all_seqs) == 380
    for s in all_seqs:
        assert SMALL.min_length < len(s) < SMALL.max_length
        depth, counts = _structure(s)
        assert depth <= SMALL.max_depth - 1  # a node at max_depth is a digit
        assert min(counts) >= 2 and max(counts) <= SMALL.max_args
    labels = np.concatenate([y for _, y in splits.values()])
    assert set(labels.tolist()) <= set(range(10)) and len(set(labels.tolist())) >= 8
    # All four operators occur, as roots too.
    roots = {s[0] for s in all_seqs}
    assert roots == set(range(L.OP0, L.OP0 + 4))


def test_seeded_and_independent_of_chunking(splits):
    again = L.generate(SMALL, chunk=20_000)
    other = L.generate(L.ListOpsSpec(**{**SMALL.__dict__, "seed": 6}))
    assert all((a == b).all() for a, b in zip(splits["test"][0], again["test"][0]))
    assert not all(len(a) == len(b) and (a == b).all()
                   for a, b in zip(splits["test"][0], other["test"][0]))


def test_operator_probability_matches_the_description():
    # Root is an operator with probability 0.25: the fraction of one-token trees is 0.75.
    rng = np.random.default_rng(0)
    _, _, size, _ = L._trees(rng, 20_000, 10, 10)
    assert abs((size == 1).mean() - 0.75) < 0.015


def test_tokenizer_ids_equal_generator_ids_and_files_round_trip(splits, tmp_path):
    tok = L.listops_tokenizer()
    seqs, labels = splits["valid"]
    assert tok.ids([L.to_text(s) for s in seqs[:5]]) == [list(s) for s in seqs[:5]]
    paths = L.write_splits(splits, tmp_path)
    ex = read_examples(paths["test"], "Source", "Target")
    assert len(ex) == 40 and ex.labels == [str(y) for y in splits["test"][1]]
    assert all(L.evaluate(t) == int(y) for t, y in zip(ex.texts, ex.labels))


def test_cli_writes_checked_splits(tmp_path, capsys):
    from sparse_transformer.cli import main

    assert main(["listops", "--out", str(tmp_path), "--train", "20", "--valid", "5", "--test",
                 "5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "evaluator agreed on all 30" in out
    rows = (tmp_path / "basic_train.tsv").read_text().splitlines()
    assert rows[0] == "Source\tTarget" and len(rows) == 21
    lengths = [len(r.split("\t")[0].split()) for r in rows[1:]]
    assert min(lengths) > 500 and max(lengths) < 2000


def test_spec_errors_name_the_argument():
    with pytest.raises(ValueError, match="train"):
        L.ListOpsSpec(train=-1)
    with pytest.raises(ValueError, match="min_length"):
        L.ListOpsSpec(min_length=2000)
