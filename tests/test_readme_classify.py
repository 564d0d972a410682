"""The README's four-step encoder example runs as written and learns its toy task."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_four_step_classifier_example(capsys):
    text = README.read_text()
    section = text[text.index("## Classifying long texts"):]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    for step in ("# 1. Tokenize and pad", "# 2. An encoder", "# 3. Train", "# 4. Report"):
        assert step in code
    exec(compile(code, "README.md", "exec"), {})
    m = re.search(r"classifier: accuracy ([\d.]+), macro-F1 ([\d.]+)", capsys.readouterr().out)
    assert m and float(m.group(1)) >= 0.9 and float(m.group(2)) >= 0.9


def test_cli_lines_name_real_subcommands():
    from sparse_transformer.cli import build_parser

    section = README.read_text().split("## Classifying long texts")[1].split("\n## ")[0]
    for line in re.findall(r"^sparse-transformer (\w+)(?: (\w+))?", section, flags=re.M):
        cmd = [w for w in line if w]
        args = {"classify": {"train": ["--train", "x", "--out", "y"],
                             "eval": ["--run", "x", "--data", "y"],
                             "predict": ["--run", "x", "--input", "y"]},
                "listops": {"": ["--out", "x"]}}
        extra = args[cmd[0]][cmd[1] if len(cmd) > 1 else ""]
        build_parser().parse_args(cmd + extra)
