"""DistributedDataParallel context from torchrun's environment (single process otherwise)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_kind: str) -> DistContext:
        """Join the process group torchrun describes (``WORLD_SIZE`` > 1), gloo on CPU, nccl on CUDA."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) without autograd, for metrics."""
        if self.enabled:
            t = t.clone()
            dist.all_reduce(t)
        return t

    def sum_differentiable(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) that back-propagates, so every rank's loss is the global loss."""
        if self.enabled:
            import warnings

            with warnings.catch_warnings():  # deprecated in favour of a private API without autograd
                warnings.simplefilter("ignore", FutureWarning)
                from torch.distributed.nn.functional import all_reduce

                return all_reduce(t)
        return t

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
