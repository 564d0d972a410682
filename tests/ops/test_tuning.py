"""The Triton kernels' launch settings kept as data (ops/triton/tuning.py, tuning.json)."""
import json

import pytest
import torch

pytest.importorskip("triton")

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.ops.triton import backend as tb  # noqa: E402
from sparse_transformer.ops.triton import tuning  # noqa: E402

GPU = torch.device("cuda")  # only its type is read: nothing here touches a GPU


def test_packaged_table_holds_todays_defaults():
    table = tuning.load_table(str(tuning.TABLE))
    assert set(table["default"]) == {"fwd", "dq", "dkdv"}
    assert table["default_how"] and table["how"]
    assert tb.TUNING == table["default"]  # the backend's live defaults start as the table's


def _entry(**kw):
    e = dict(kind="Strided", head_dim=64, dtype="16bit", role="dkdv", block=128, num_warps=8,
             num_stages=3)
    e.update(kw)
    return e


@pytest.fixture
def table_with(monkeypatch, tmp_path):
    """Install a table holding ``entries`` as the one the backend reads."""
    def install(*entries):
        path = str(tmp_path / "tuning.json")
        tuning.write_table(path, list(entries), dict(measured_on="test"))
        monkeypatch.setattr(tuning, "INDEX", tuning.load_table(path)["index"])
        tb._PLAN_SETS.clear()
        return path
    yield install
    tb._PLAN_SETS.clear()


def test_an_entry_sets_the_launch_and_tile_of_its_case_only(table_with):
    table_with(_entry())
    opts = dict(tb._launch_opts("dkdv", GPU, "Strided", 64, torch.bfloat16))
    assert opts == {"num_warps": 8, "num_stages": 3}
    assert tb._role_block("dkdv", GPU, None, "Strided", 64, torch.float16) == 128
    # Head dims in the same power-of-two class share it (48 -> BLOCK_D 64).
    assert tb._role_block("dkdv", GPU, None, "Strided", 48, torch.bfloat16) == 128
    default = tb.TUNING["dkdv"]
    for case in (("Fixed", 64, torch.bfloat16), ("Strided", 128, torch.bfloat16),
                 ("Strided", 64, torch.float32)):
        assert dict(tb._launch_opts("dkdv", GPU, *case)) == {
            "num_warps": default["num_warps"], "num_stages": default["num_stages"]}, case
    assert dict(tb._launch_opts("fwd", GPU, "Strided", 64, torch.bfloat16))["num_stages"] == \
        tb.TUNING["fwd"]["num_stages"]
    # An explicit tile size wins; the interpreter keeps its own tile and no launch options.
    assert tb._role_block("dkdv", GPU, 32, "Strided", 64, torch.bfloat16) == 32
    assert tb._launch_opts("dkdv", torch.device("cpu"), "Strided", 64, torch.bfloat16) == ()


def test_a_register_cap_reaches_the_launch(table_with, monkeypatch):
    """``maxnreg`` (optional, in an entry or in ``TUNING``) becomes a launch option."""
    table_with(dict(_entry(), maxnreg=168))
    assert dict(tb._launch_opts("dkdv", GPU, "Strided", 64, torch.bfloat16))["maxnreg"] == 168
    assert "maxnreg" not in dict(tb._launch_opts("dkdv", GPU, "Fixed", 64, torch.bfloat16))
    monkeypatch.setitem(tb.TUNING["dq"], "maxnreg", 128)
    assert dict(tb._launch_opts("dq", GPU, "Fixed", 64, torch.bfloat16))["maxnreg"] == 128


def test_plans_follow_the_tuned_tile_size(table_with, monkeypatch):
    """plan_set builds each role's plan at its tuned tile (the device type is what matters:
    a CPU device gets the interpreter's tile, so the check asks for the GPU's through a stub)."""
    table_with(_entry(block=32))
    role_block = tb._role_block
    monkeypatch.setattr(tb, "default_block", lambda device: 16)
    monkeypatch.setattr(tb, "_role_block",
                        lambda role, dev, block, *case: role_block(role, GPU, block, *case))
    fwd, dq, dkdv = tb.plan_set(P.Strided(8), 96, 2, True, "cpu", None, 64, torch.bfloat16)
    assert (fwd.block, dq.block, dkdv.block) == (16, 16, 32)
    assert fwd.kind == dkdv.kind == "Strided"
    fwd, dq, dkdv = tb.plan_set(P.Strided(8), 96, 2, True, "cpu", None, 64, torch.float32)
    assert dkdv.block == 16


def test_table_off_means_defaults(table_with, monkeypatch):
    table_with(_entry())
    monkeypatch.setattr(tuning, "USE_TABLE", False)
    assert dict(tb._launch_opts("dkdv", GPU, "Strided", 64, torch.bfloat16))["num_warps"] == \
        tb.TUNING["dkdv"]["num_warps"]


def test_write_table_keeps_the_fastest_and_merges(tmp_path):
    rows = [dict(pattern="strided", n=16384, d=64, role="fwd", block=64, warps=4, stages=3,
                 ms=0.20),
            dict(pattern="strided", n=16384, d=64, role="fwd", block=128, warps=8, stages=2,
                 ms=0.15),
            dict(pattern="fixed", n=16384, d=64, role="dq", block=64, warps=4, stages=2,
                 ms=0.50)]
    entries = tuning.best_entries(rows, {"strided": "Strided", "fixed": "Fixed"})
    assert len(entries) == 2
    fwd = next(e for e in entries if e["role"] == "fwd")
    assert (fwd["kind"], fwd["block"], fwd["num_warps"], fwd["num_stages"]) == \
        ("Strided", 128, 8, 2)
    path = str(tmp_path / "t.json")
    tuning.write_table(path, entries, dict(measured_on="GPU A", date="2026-12-05"))
    # A second sweep replaces the same case and keeps the others.
    tuning.write_table(path, [_entry(kind="Strided", role="fwd", block=64, num_warps=4,
                                     num_stages=4)], dict(measured_on="GPU A"))
    table = tuning.load_table(path)
    assert table["measured_on"] == "GPU A" and len(table["entries"]) == 2
    assert table["index"][("Strided", 64, "16bit", "fwd")]["num_stages"] == 4
    assert table["index"][("Fixed", 64, "16bit", "dq")]["block"] == 64
    assert set(table["default"]) == {"fwd", "dq", "dkdv"}


@pytest.mark.parametrize("bad,match", [
    (dict(block=96), "block must be"), (dict(num_warps=3), "num_warps"),
    (dict(role="bwd"), "needs a role"), (dict(dtype="bf16"), "needs a role"),
    (dict(maxnreg=300), "maxnreg")])
def test_a_bad_table_is_refused_by_name(tmp_path, bad, match):
    table = json.loads(tuning.TABLE.read_text())
    table["entries"] = [_entry(**bad)]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(table))
    with pytest.raises(ValueError, match=match):
        tuning.load_table(str(path))


def test_environment_names_another_table(tmp_path, monkeypatch):
    path = str(tmp_path / "mine.json")
    tuning.write_table(path, [_entry()], dict(measured_on="mine"))
    monkeypatch.setenv("SPARSE_TRANSFORMER_TUNING", path)
    assert tuning.table_path() == path
    before = tuning.INDEX
    try:
        tuning.reload()
        assert tuning.entry("dkdv", "Strided", 64, torch.bfloat16)["num_warps"] == 8
    finally:
        monkeypatch.delenv("SPARSE_TRANSFORMER_TUNING")
        tuning.reload()
    assert tuning.INDEX == before
    assert tb.TUNING is tuning.DEFAULT  # reloading updates the backend's defaults in place
