"""Streamed particle images: a stack read batch by batch, a background loader, a data-scale sample.

:class:`StackImages` stands where :class:`~cryoposenet.training.train.ParticleData` holds an image tensor:
``images[idx]`` reads just those rows from the stack files, checks them, and returns a tensor, so
training never loads a stack whole. The rows are Fourier-cropped to the training box and their
contrast inverted on the way (the stack on disk is never rewritten). :class:`Prefetcher` reads
the next batch in a background thread while the current step computes (batches are seeded per
step, so the next one is known). :func:`read_chunks` is the one loop over all particles (final
poses, refinement, predict, the full-size map); inside :func:`pass_progress` it advances a
progress bar (images, images/s, time left) after each chunk its caller has processed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from ..errors import InputError
from ..io.particles import ParticleStack
from ..physics.ctf import ctf_half_plane
from ..physics.fourier_crop import cropped_apix, fourier_crop

__all__ = [
    "ParticleData",
    "StackImages",
    "checked_box",
    "Prefetcher",
    "read_batch",
    "read_chunks",
    "pass_progress",
    "sample_images",
    "sample_rows",
    "SAMPLE_IMAGES",
]

SAMPLE_IMAGES = 2000  # images that set the data scale (and are checked before training starts)


@dataclass
class ParticleData:
    """A particle stack. ``images`` ``(M, N, N)`` float32; ``apix`` Å/pixel.

    ``images`` is a tensor or any source with ``shape``, ``len`` and ``images[idx] -> (B, N, N)``
    tensor for a 1-D index tensor (:class:`cryoposenet.training.data.StackImages` reads stack files).

    ``ctf``: None or a dict of ``(M,)`` tensors keyed by :func:`cryoposenet.physics.ctf.ctf_2d`'s
    parameter names (``defocus_u_A``, ``defocus_v_A``, ``defocus_angle_deg``, ``voltage_kv``,
    ``cs_mm``, ``amplitude_contrast``, optional ``phase_shift_deg``). ``translations_px``: None or
    ``(M, 2)`` (x, y): the shift that moves the centred projection onto the image (see
    :func:`cryoposenet.physics.imaging.origin_to_translation`). ``rotations``: ``(M, 3, 3)``,
    needed only for ``poses="known"``.
    """

    images: torch.Tensor
    apix: float
    ctf: dict[str, torch.Tensor] | None = None
    translations_px: torch.Tensor | None = None
    rotations: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def box(self) -> int:
        return self.images.shape[-1]

    def ctf_of(self, rows: torch.Tensor, device=None) -> torch.Tensor | None:
        """The CTFs ``(R, N, N//2+1)`` of images ``rows`` ``(R,)`` on ``device``, or None without CTF."""
        if self.ctf is None:
            return None
        params = {k: v[rows].to(device) for k, v in self.ctf.items()}
        return ctf_half_plane(self.box, self.apix, device=device, **params)


T = TypeVar("T")
_PASS_BAR: ContextVar = ContextVar("cryoposenet_pass_bar", default=None)


class StackImages:
    """The images of a :class:`ParticleStack` as an indexable ``(M, N, N)`` float32 source.

    ``images[idx]`` (``idx`` a 1-D integer tensor or array) reads those rows and returns a
    ``(len(idx), N, N)`` tensor; a row holding NaN or Inf is an :class:`InputError` naming it.
    ``box``: Fourier-crop the rows to ``box`` pixels (default: the stack's own box), so ``N`` is
    ``box`` and :attr:`apix` the cropped pixel size; ``invert``: multiply them by −1.
    """

    def __init__(self, stack: ParticleStack, box: int | None = None, invert: bool = False):
        self.stack = stack
        self.box = stack.box if box is None else checked_box(stack, box)
        self.invert = bool(invert)
        self.apix = cropped_apix(stack.apix, stack.box, self.box)
        self.shape = (len(stack), self.box, self.box)

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
        images = fourier_crop(images, self.box)
        return images.neg_() if self.invert else images


def checked_box(stack: ParticleStack, box: int) -> int:
    """``box`` as an int when the particles can be cropped to it, else an :class:`InputError`."""
    if not 0 < box <= stack.box:
        raise InputError(
            f"--box {box} must be between 1 and the particles' box, {stack.box} px", stack.table.source
        )
    return int(box)


def sample_images(images, count: int = SAMPLE_IMAGES, seed: int = 0) -> torch.Tensor:
    """Up to ``count`` images ``(≤count, N, N)``: all of a small set, else a seeded random subset.

    Sets the data scale at the start of training from a bounded read; with a stack source it also
    checks those images (NaN/Inf) before anything is written.
    """
    return images[sample_rows(len(images), count, seed)]


def sample_rows(m: int, count: int = SAMPLE_IMAGES, seed: int = 0) -> torch.Tensor:
    """Sorted rows ``(≤count,)`` of ``m``: all of a small set, else a seeded random subset."""
    if m <= count:
        return torch.arange(m)
    return torch.randperm(m, generator=torch.Generator().manual_seed(seed))[:count].sort().values


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
    images,
    rows: torch.Tensor,
    batch_size: int,
    pin: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(positions, images)`` for consecutive chunks of ``rows`` ``(R,)``: ``positions`` index
    ``rows``, ``images`` are ``images[rows[positions]]``; the next chunk is read in a background
    thread while the caller works on the current one.

    ``on_chunk(count)`` is called once the caller has finished with a chunk of ``count`` images
    (when it asks for the next one); by default that advances the bar of an enclosing
    :func:`pass_progress`, if any.
    """
    if on_chunk is None and (bar := _PASS_BAR.get()) is not None:
        on_chunk = bar.update
    chunks = list(torch.arange(len(rows)).split(batch_size))
    with Prefetcher(lambda k: read_batch(images, rows[chunks[k]], pin)) as loader:
        for k, positions in enumerate(chunks):
            yield positions, loader.get(k, k + 1 if k + 1 < len(chunks) else None)
            if on_chunk is not None:
                on_chunk(len(positions))


@contextmanager
def pass_progress(desc: str, total: int, show: bool = True) -> Iterator:
    """A tqdm bar (images, images/s, time left) that every :func:`read_chunks` loop inside the block
    advances: a pass over all particles shows its progress without its code knowing of the bar."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="img", disable=not show, smoothing=0.1)
    token = _PASS_BAR.set(bar)
    try:
        yield bar
    finally:
        _PASS_BAR.reset(token)
        bar.close()
