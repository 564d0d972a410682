"""A training run that kills itself (SIGKILL, as ``kill -9``) at a chosen moment, for test_faults.

    python fault_runner.py RUN_DIR [--kill KIND:N]

Always resumes (a folder without a checkpoint starts a new run). KIND:
* ``step``: during the N-th training forward pass of this process (inside a step);
* ``eval``: during the N-th evaluation forward pass (inside an evaluation);
* ``write``: at the N-th moment of a checkpoint write: in the middle of a tensor file (half of it
  written), after the temporary folder is complete, after it is renamed into place (before the
  ``latest`` pointer), after the pointer is written.
"""
import os
import signal
import sys

import torch

from sparse_transformer.data import embedded_splits
from sparse_transformer.models import SparseTransformer, get_preset
from sparse_transformer.training import Trainer
from sparse_transformer.training import checkpoint as ckpt

STEPS, EVERY = 12, 4


def config():
    c = get_preset("tiny")
    c.model.dropout = 0.1  # the RNG state must survive the resumes
    t = c.train
    t.steps, t.checkpoint_every, t.eval_every, t.log_every = STEPS, EVERY, EVERY, 2
    t.eval_batches, t.num_threads, t.warmup = 2, 1, 3
    return c


def data():
    return {k: v[:50_000] for k, v in embedded_splits().items()}


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(kind: str, n: int) -> None:
    count = [0]

    def hit():
        count[0] += 1
        return count[0] == n

    if kind in ("step", "eval"):
        forward = SparseTransformer.forward

        def patched(self, *a, **k):
            if self.training == (kind == "step") and hit():
                die()
            return forward(self, *a, **k)

        SparseTransformer.forward = patched
    elif kind == "write":
        save_file, fsync_dir = ckpt.save_file, ckpt._fsync_dir

        def save_half(tensors, path, *a, **k):
            save_file(tensors, path, *a, **k)
            if hit():
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                die()

        def sync_then_die(path):
            fsync_dir(path)
            if hit():
                die()

        ckpt.save_file, ckpt._fsync_dir = save_half, sync_then_die
    else:
        raise SystemExit(f"unknown kill kind {kind!r}")


def main(argv):
    run_dir = argv[0]
    if len(argv) > 2 and argv[1] == "--kill":
        kind, n = argv[2].split(":")
        install(kind, int(n))
    torch.manual_seed(1234)  # a fresh process has some other RNG state: resume must restore it
    t = Trainer(config(), run_dir, data=data(), progress=False,
                log=lambda m: print(m, file=sys.stderr))
    t.resume()
    t.fit()
    print("finished", t.step)


if __name__ == "__main__":
    main(sys.argv[1:])
