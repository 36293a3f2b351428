"""torchrun's environment (RANK / WORLD_SIZE / LOCAL_RANK), or a single process.

Under torchrun every process trains on its own device (`cuda:LOCAL_RANK` for `--device cuda` or
`auto`) and joins one process group (NCCL on CUDA, gloo on the CPU); rank 0 validates and writes.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from bttf.runtime import resolve_device


class Dist:
    """The process's place in the run: rank, world size, its device; DDP helpers."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        self.owns_group = False
        self.device = resolve_device(device)
        if self.device.type == "cuda" and self.device.index is None and self.world > 1:
            self.device = resolve_device(f"cuda:{self.local_rank}")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def set_threads(self, threads: int | None) -> None:
        """torch CPU threads: `threads`, else the cores this process may use shared by the
        processes of this machine."""
        if hasattr(os, "sched_getaffinity"):
            cores = len(os.sched_getaffinity(0))
        else:
            cores = os.cpu_count()
        torch.set_num_threads(max(1, threads or (cores or 1) // max(1, self.local_world)))

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` in DistributedDataParallel (call only with world > 1)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, x: float) -> float:
        """The mean of `x` over the processes."""
        if self.world == 1:
            return x
        t = torch.tensor(
            [x], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu"
        )
        dist.all_reduce(t)
        return float(t) / self.world

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
