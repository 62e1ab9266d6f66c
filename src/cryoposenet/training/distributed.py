"""Data-parallel training on several processes (``torchrun``), with PyTorch's DistributedDataParallel.

``torchrun --nproc_per_node K -m cryoposenet train ...`` starts K copies of the command with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; :func:`from_env` joins them into one process group
(NCCL on GPUs, one GPU per local rank; gloo on CPUs). Every rank builds the same model from the
same seed and draws the same global batch for a step (batches are seeded by (seed, step)); rank r
takes the r-th contiguous share, DDP averages the gradients, so the K ranks take exactly the
step one process would take on the whole batch. Rank 0 alone writes files; checkpoints hold the
bare modules, so they load on any K.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DataParallel", "split_rows", "split_pose_rows", "from_env", "shutdown"]


@dataclass
class DataParallel:
    """This process's place in the group and its DDP-wrapped modules (set by :meth:`wrap`)."""

    rank: int
    world: int
    device: str
    volume: nn.Module | None = None
    encoder: nn.Module | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of ``rows`` ``(B,)`` (shares differ by at most one)."""
        return torch.tensor_split(rows, self.world)[self.rank]

    def wrap(self, volume: nn.Module, encoder: nn.Module | None) -> None:
        """DDP wrappers of the modules (the state keeps the bare ones for checkpoints)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        wrap = lambda m: DDP(m, device_ids=ids, forward_sync_buffers=False)  # noqa: E731 (buffers are fixed)
        self.volume = wrap(volume)
        self.encoder = wrap(encoder) if encoder is not None else None

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed over ranks (a new tensor)."""
        import torch.distributed as dist

        out = x.detach().clone()
        dist.all_reduce(out)
        return out

    def average_grad(self, param: torch.Tensor) -> None:
        """Average ``param.grad`` over ranks in place (for parameters outside the DDP modules)."""
        if param.grad is not None:
            param.grad.copy_(self.sum(param.grad) / self.world)

    def gather_rows(self, local: torch.Tensor, total: int) -> torch.Tensor:
        """Rows ``(n_r, ...)`` of each rank's :meth:`shard` of ``arange(total)``, joined: ``(total, ...)``."""
        import torch.distributed as dist

        sizes = [len(s) for s in torch.tensor_split(torch.arange(total), self.world)]
        padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=self.device)
        padded[: len(local)] = local.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]).cpu()

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def split_rows(
    parallel: DataParallel | None, total: int, compute: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``compute(rows)`` ``(total, ...)`` for ``rows = arange(total)``; under torchrun each rank
    computes its :meth:`~DataParallel.shard` and every rank gets all rows back."""
    rows = torch.arange(total)
    if parallel is None:
        return compute(rows)
    return parallel.gather_rows(compute(parallel.shard(rows)), total)


def split_pose_rows(
    parallel: DataParallel | None, total: int, compute: Callable[[torch.Tensor], tuple]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`split_rows` for ``compute(rows) -> (rotations (R, 3, 3), shifts (R, 2) or None)``:
    the pair travels as one ``(R, 9 or 11)`` tensor."""

    def packed(rows: torch.Tensor) -> torch.Tensor:
        rot, shifts = compute(rows)
        parts = [rot.reshape(len(rot), 9)] + ([shifts.to(rot.dtype)] if shifts is not None else [])
        return torch.cat(parts, dim=1)

    out = split_rows(parallel, total, packed)
    return out[:, :9].reshape(-1, 3, 3), (out[:, 9:] if out.shape[1] > 9 else None)


def from_env(device: str) -> DataParallel | None:
    """Join the process group torchrun describes in the environment; None for a single process.

    ``device`` is ``cpu`` or ``cuda``; under NCCL each process takes GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if device.startswith("cuda"):
        device, backend = f"cuda:{local}", "nccl"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DataParallel(rank, world, device)


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
