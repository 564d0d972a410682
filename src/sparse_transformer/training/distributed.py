"""Several processes through torchrun: process group set-up and the few collectives we need.

``torchrun --nproc_per_node=N -m sparse_transformer.cli train ...`` sets RANK / WORLD_SIZE /
LOCAL_RANK; the trainer then wraps the model in DistributedDataParallel (NCCL on GPUs, gloo on
CPUs), gives each rank its own slice of every batch, writes checkpoints from rank 0 only (with
every rank's RNG state, so a resumed run continues exactly), and logs from rank 0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_name: str) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_name)
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name, info.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
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


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
