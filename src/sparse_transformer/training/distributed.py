"""Several processes through torchrun: process group set-up and the few collectives we need.

``torchrun --nproc_per_node=N -m sparse_transformer.cli train ...`` sets RANK / WORLD_SIZE /
LOCAL_RANK; the trainer then wraps the model (``train.parallel``): DistributedDataParallel, or
FSDP2 (``fully_shard``: one unit per residual block, then the root for the embeddings, the final
norm and the head). NCCL on GPUs, gloo on CPUs; every collective waits at most
``train.dist_timeout`` seconds for a missing rank. Each rank takes its slice of every global
batch; logging, evaluation and sampling happen on rank 0. DDP checkpoints are written by rank 0
(with every rank's RNG state, so a resumed run continues exactly); FSDP checkpoints by every
rank through ``torch.distributed.checkpoint`` (``training/sharded.py``).
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (a process group exists, even for one process)

    @property
    def enabled(self) -> bool:
        return self.world > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_name: str, timeout: float = 600.0) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun; pick this rank's device.
    ``timeout``: seconds a collective waits for the other ranks before it fails (a rank that
    hangs ends the job with an error instead of holding the others forever).

    A run that torchrun starts gets a process group even with one process
    (``--nproc_per_node=1``): ``train.parallel`` then wraps the model as asked (DDP, or FSDP
    shards over that one rank), so one GPU checks the whole launch path (NCCL, the wrapping,
    sharded checkpoints) before a job takes several. A plain ``python -m`` run has none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = "TORCHELASTIC_RUN_ID" in os.environ and "MASTER_ADDR" in os.environ
    if world <= 1 and not launched:
        return DistInfo(), resolve_device(device_name)
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                    launched)
    device = resolve_device(device_name, info.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))
    return info, device


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> this rank's GPU when there is one, else the CPU; "cuda" -> cuda:local_rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but CUDA is not available; use device=cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev


def all_mean(value: float, info: DistInfo, device: torch.device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / info.world


def gather_rng(states: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """Every rank's RNG states, keyed ``rank{r}.{name}`` (on every rank)."""
    if not info.enabled:
        return states
    out: list = [None] * info.world
    dist.all_gather_object(out, {k: v.cpu() for k, v in states.items()})
    return {f"rank{r}.{k}": v for r, st in enumerate(out) for k, v in st.items()}


def own_rng(states: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    prefix = f"rank{info.rank}."
    mine = {k[len(prefix):]: v for k, v in states.items() if k.startswith(prefix)}
    return mine or states


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 in place: one ``fully_shard`` unit per residual block, then the root (token and
    position embeddings, the final norm, the head). Parameters become DTensors sharded over every
    rank; the module keeps its class' methods and its state-dict names. Mixed precision stays the
    trainer's autocast (fp32 parameters, all-gathered in fp32), as on one device."""
    from torch.distributed.fsdp import fully_shard

    for blk in model.blocks:
        fully_shard(blk)
    fully_shard(model)
    return model


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_same(value, info: DistInfo, what: str) -> None:
    """Raise on every rank unless ``value`` is equal on every rank."""
    if not info.enabled:
        return
    out: list = [None] * info.world
    dist.all_gather_object(out, value)
    differ = [r for r, v in enumerate(out) if v != out[0]]
    if differ:
        raise RuntimeError(f"{what} differ between ranks: rank 0 has {out[0]!r}, rank "
                           f"{differ[0]} has {out[differ[0]]!r}")


def pattern_fingerprint(model: torch.nn.Module, seq_len: int, samples: int = 4096) -> str:
    """A digest of every layer's attention pattern: its predicate at a fixed set of ``samples``
    (query, key) pairs in the first 8,192 positions, for each head (no n x n table)."""
    n = min(seq_len, 8192)
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, n, (samples,), generator=g)
    k = torch.randint(0, n, (samples,), generator=g)
    k = torch.minimum(k, q)  # causal pairs, where the patterns differ
    h = hashlib.sha256()
    for blk in model.blocks:
        attn = blk.attn
        for heads, pat in attn.head_patterns():
            for head in range(len(range(attn.n_heads)[heads])):
                ok = pat.allowed(q, k, torch.full_like(q, head))
                h.update(ok.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def leave(info: DistInfo, code: int = 0) -> None:
    """End a rank that has nothing left to do while rank 0 goes on alone: after a barrier (no
    collective of this rank is still queued), destroy the process group and exit with ``code``
    without the interpreter's teardown. Gloo's worker threads could otherwise be torn down
    during that teardown and abort the process (SIGABRT) after a run that succeeded."""
    if not info.enabled:
        return
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
