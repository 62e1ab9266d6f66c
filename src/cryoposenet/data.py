"""Streamed particle images: a stack read batch by batch, a background loader, a data-scale sample.

:class:`StackImages` stands where :class:`~cryoposenet.train.ParticleData` holds an image tensor:
``images[idx]`` reads just those rows from the stack files, checks them, and returns a tensor, so
training never loads a stack whole. :class:`Prefetcher` reads the next batch in a background
thread while the current step computes (batches are seeded per step, so the next one is known).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import torch

from .errors import InputError
from .io.particles import ParticleStack

__all__ = ["StackImages", "Prefetcher", "read_batch", "read_chunks", "sample_images", "SAMPLE_IMAGES"]

SAMPLE_IMAGES = 2000  # images that set the data scale (and are checked before training starts)
T = TypeVar("T")


class StackImages:
    """The images of a :class:`ParticleStack` as an indexable ``(M, N, N)`` float32 source.

    ``images[idx]`` (``idx`` a 1-D integer tensor or array) reads those rows and returns a
    ``(len(idx), N, N)`` tensor; a row holding NaN or Inf is an :class:`InputError` naming it.
    """

    def __init__(self, stack: ParticleStack):
        self.stack = stack
        self.shape = (len(stack), stack.box, stack.box)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        rows = torch.as_tensor(idx).reshape(-1).cpu().numpy()
        images = torch.from_numpy(self.stack[rows])
        finite = torch.isfinite(images).flatten(1).all(dim=1)
        if not finite.all():
            bad = rows[~finite.numpy()]
            names = self.stack.table.particles["rlnImageName"].iloc[bad[:3]].tolist()
            message = f"images contain NaN or Inf ({len(bad)} in a batch, e.g. {', '.join(names)})"
            raise InputError(message, self.stack.table.source)
        return images


def sample_images(images, count: int = SAMPLE_IMAGES, seed: int = 0) -> torch.Tensor:
    """Up to ``count`` images ``(≤count, N, N)``: all of a small set, else a seeded random subset.

    Sets the data scale at the start of training from a bounded read; with a stack source it also
    checks those images (NaN/Inf) before anything is written.
    """
    m = len(images)
    if m <= count:
        rows = torch.arange(m)
    else:
        rows = torch.randperm(m, generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return images[rows]


class Prefetcher(Generic[T]):
    """Calls ``read(key)`` one key ahead in a background thread.

    ``get(key, next_key)`` returns ``read(key)`` (from the thread when it was scheduled, else read
    now) and schedules ``next_key`` (None: nothing). An exception raised by a read is raised by the
    ``get`` that returns its key. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, read: Callable[[int], T]):
        self._read = read
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cryoposenet-loader")
        self._pending: dict[int, Future] = {}

    def get(self, key: int, next_key: int | None = None) -> T:
        future = self._pending.pop(key, None)
        for stale in self._pending.values():
            stale.cancel()
        self._pending.clear()
        if next_key is not None:
            self._pending[next_key] = self._pool.submit(self._read, next_key)
        return future.result() if future is not None else self._read(key)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_batch(images, rows: torch.Tensor, pin: bool = False) -> torch.Tensor:
    """``images[rows]`` ``(B, N, N)``, pinned for a fast copy to a GPU when ``pin``."""
    batch = images[rows]
    return batch.pin_memory() if pin else batch


def read_chunks(
    images, rows: torch.Tensor, batch_size: int, pin: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(positions, images)`` for consecutive chunks of ``rows`` ``(R,)``: ``positions`` index
    ``rows``, ``images`` are ``images[rows[positions]]``; the next chunk is read in a background
    thread while the caller works on the current one."""
    chunks = list(torch.arange(len(rows)).split(batch_size))
    with Prefetcher(lambda k: read_batch(images, rows[chunks[k]], pin)) as loader:
        for k, positions in enumerate(chunks):
            yield positions, loader.get(k, k + 1 if k + 1 < len(chunks) else None)
