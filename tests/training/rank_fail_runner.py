"""A two-process run (under torchrun) whose rank 1 fails at its third training step (raises, or
hangs), or whose ranks were given different random patterns, for test_rank_failure:
``python -m torch.distributed.run ... rank_fail_runner.py RUN_DIR raise|hang|pattern ddp|fsdp``.
"""
import os
import sys
import time

from sparse_transformer.data import embedded_splits
from sparse_transformer.models import SparseTransformer, get_preset
from sparse_transformer.training import Trainer


def main(run_dir, how, parallel):
    c = get_preset("tiny")
    c.train.steps, c.train.num_threads, c.train.compile = 50, 1, "off"
    c.train.parallel, c.train.dist_timeout = parallel, 10.0
    if how == "pattern":  # rank 1 draws other random blocks than rank 0
        c.model.pattern, c.model.window, c.model.random_block_size = "bigbird", 8, 8
        c.model.pattern_seed = int(os.environ["RANK"])
    forward, count = SparseTransformer.forward, [0]

    def patched(self, *a, **k):
        if self.training and t.dist.rank == 1:
            count[0] += 1
            if count[0] == 3:
                if how == "hang":
                    time.sleep(3600)
                raise RuntimeError("injected failure")
        return forward(self, *a, **k)

    SparseTransformer.forward = patched
    t = Trainer(c, run_dir, data={k: v[:20_000] for k, v in embedded_splits().items()},
                progress=False, log=lambda m: print(m, file=sys.stderr, flush=True))
    t.fit()


if __name__ == "__main__":
    main(*sys.argv[1:])
