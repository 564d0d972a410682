"""Gradient accumulation: the same global batch split into micro-batches trains the same model."""
import math

import pytest
import torch

from sparse_transformer.data import embedded_splits
from sparse_transformer.models import get_preset
from sparse_transformer.training import Trainer
from sparse_transformer.validation import ConfigError


def config(accum, steps=4):
    c = get_preset("tiny")
    t = c.train
    t.steps, t.log_every, t.eval_every, t.checkpoint_every = steps, 1, 100, 2
    t.grad_accum, t.num_threads, t.warmup, t.compile = accum, 1, 2, "off"
    return c


def data():
    return {k: v[:20_000] for k, v in embedded_splits().items()}


def losses(trainer):
    return [r["loss_bpb"] for r in trainer.history if "loss_bpb" in r]


def test_two_micro_batches_of_half_the_batch_train_like_one(tmp_path):
    runs = {}
    for accum in (1, 2):
        tr = Trainer(config(accum), tmp_path / f"a{accum}", data=data(), progress=False,
                     log=lambda m: None)
        tr.fit()
        runs[accum] = (losses(tr), {k: v.clone() for k, v in tr.model.state_dict().items()})
    (l1, w1), (l2, w2) = runs[1], runs[2]
    assert len(l1) == len(l2) == 4
    assert l1[0] == pytest.approx(l2[0], rel=1e-6)  # the same batch, before any update
    for a, b in zip(l1, l2):
        assert math.isclose(a, b, rel_tol=1e-5), (l1, l2)
    for k in w1:  # Adam divides tiny gradients by their own size: compare against lr (3e-3)
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=3e-5)


def test_accumulated_run_resumes_exactly(tmp_path):
    ref = Trainer(config(2), tmp_path / "ref", data=data(), progress=False, log=lambda m: None)
    ref.fit()
    half = Trainer(config(2, steps=2), tmp_path / "b", data=data(), progress=False,
                   log=lambda m: None)
    half.fit()
    rest = Trainer(config(2), tmp_path / "b", data=data(), progress=False, log=lambda m: None)
    assert rest.resume() and rest.step == 2
    rest.fit()
    assert losses(rest) == losses(ref)


def test_batch_must_split_into_micro_batches():
    c = config(3)  # batch_size 4
    with pytest.raises(ConfigError, match=r"train.batch_size \(4\) must be divisible by "
                                          r"train.grad_accum \(3\)"):
        Trainer(c, "unused", data=data(), progress=False)


def test_accumulated_gradient_is_the_mean_over_the_whole_batch(tmp_path):
    grads = []
    for accum in (1, 4):
        tr = Trainer(config(accum), tmp_path / f"g{accum}", data=data(), progress=False,
                     log=lambda m: None)
        tr._step()
        grads.append([p.grad.clone() for p in tr.model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_ddp_reduces_gradients_once_per_step_not_per_micro_batch():
    """Under DDP, micro-batches before the last run inside ``no_sync``: one all-reduce of the
    gradient buckets per optimizer step, whatever grad_accum is (counted with a comm hook, one
    gloo process)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = DDP(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)))
        calls = []

        def hook(state, bucket):
            calls.append(bucket.index())
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        model.register_comm_hook(None, hook)
        holder = type("T", (), {"train_model": model})()
        x = torch.randn(4, 8)
        for accum in (1, 4):
            calls.clear()
            for i in range(accum):
                with Trainer._sync_gradients(holder, i == accum - 1):
                    model(x[i:i + 1]).sum().backward()
            assert len(calls) == len(set(calls)) >= 1, (accum, calls)  # each bucket once
    finally:
        dist.destroy_process_group()
