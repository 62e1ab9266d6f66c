"""MRC maps and image stacks through ``mrcfile``: arrays ``[z, y, x]`` / ``[n, y, x]``, pixel size in Å.

Stacks are memory-mapped for reading and written image by image, so no stack is ever held whole.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from ..errors import InputError
from .atomic import atomic_path

__all__ = ["read_map", "write_map", "open_stack", "stack_shape", "header_apix", "StackWriter"]


def _open(path, mmap: bool):
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", p)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mrcfile warns on odd headers; we check what we use
            return (mrcfile.mmap if mmap else mrcfile.open)(p, mode="r", permissive=True)
    except (ValueError, OSError) as exc:
        raise InputError(f"not a readable MRC file ({exc})", p) from None


def _apix_of(mrc) -> float | None:
    vs = float(mrc.voxel_size.x)
    return vs if vs > 0 else None


def read_map(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """A cubic 3D map as float32 ``[z, y, x]`` and its pixel size in Å (None if the header has none)."""
    with _open(path, mmap=False) as mrc:
        if mrc.data is None:
            raise _damaged(mrc, path)
        if mrc.data.ndim != 3:
            raise InputError("expected a 3D map", path)
        data = np.asarray(mrc.data, dtype=np.float32).copy()
        apix = _apix_of(mrc)
    if len(set(data.shape)) != 1:
        raise InputError(f"map is not cubic: shape {data.shape}", path)
    if not np.isfinite(data).all():
        raise InputError("map contains NaN or Inf", path)
    return data, apix


def write_map(path: str | os.PathLike, data: np.ndarray, apix: float, label: str | None = None) -> None:
    """Write a 3D map ``[z, y, x]`` (float32) with its pixel size, atomically.

    ``label``: one line of ASCII (≤ 80 characters) kept in the header, e.g. how the map was made.
    """
    with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data, dtype=np.float32))
        mrc.voxel_size = apix
        if label and mrc.header.nlabl < 10:  # after mrcfile's own "Created by" label
            mrc.header.label[mrc.header.nlabl] = label.encode("ascii", "replace")[:80]
            mrc.header.nlabl += 1
        mrc.update_header_stats()


def _damaged(mrc, path) -> InputError:
    h = mrc.header
    size = Path(path).stat().st_size
    return InputError(
        f"truncated or damaged: the header describes {int(h.nz)} images of {int(h.ny)} × "
        f"{int(h.nx)} pixels but the file has only {size} bytes",
        path,
    )


def open_stack(path: str | os.PathLike):
    """Memory-map an image stack (or a single 2D image) for reading; the caller closes it."""
    mrc = _open(path, mmap=True)
    if mrc.data is None:
        error = _damaged(mrc, path)
        mrc.close()
        raise error
    if mrc.data.ndim not in (2, 3):
        mrc.close()
        raise InputError("expected a 2D image or an image stack", path)
    return mrc


def stack_shape(mrc) -> tuple[int, int, int]:
    """``(n_images, ny, nx)`` of an open stack (a 2D image counts as a stack of one)."""
    shape = mrc.data.shape
    return (1, *shape) if len(shape) == 2 else tuple(shape)


def header_apix(path: str | os.PathLike) -> float | None:
    """Pixel size in Å from an MRC header, or None when the header has none."""
    with _open(path, mmap=True) as mrc:
        return _apix_of(mrc)


class StackWriter:
    """Write an ``n × box × box`` float32 stack image by image (memory-mapped), renamed in on close.

    Use as a context manager; ``writer[i:j] = images`` fills images ``i..j-1``.
    """

    def __init__(self, path: str | os.PathLike, n_images: int, box: int, apix: float):
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._mrc = mrcfile.new_mmap(self._tmp, shape=(n_images, box, box), mrc_mode=2, overwrite=True)
        self._mrc.set_image_stack()
        self._mrc.voxel_size = apix

    def __setitem__(self, index, images: np.ndarray) -> None:
        self._mrc.data[index] = images

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._update_header_stats()
        self._mrc.close()
        self._ctx.__exit__(exc_type, exc, tb)

    def _update_header_stats(self) -> None:
        """dmin/dmax/dmean/rms read back in blocks of ~4 Mpixel.

        ``mrcfile``'s ``update_header_stats`` computes ``data.std()`` on the whole stack, which
        allocates a temporary as large as the stack (1.6 GB for 100,000 images of 64 px).
        """
        data = self._mrc.data
        n, ny, nx = data.shape
        step = max(1, (1 << 22) // (ny * nx))
        lo, hi, total, total_sq = np.inf, -np.inf, 0.0, 0.0
        for i in range(0, n, step):
            block = np.asarray(data[i : i + step], dtype=np.float64)
            lo, hi = min(lo, block.min()), max(hi, block.max())
            total += block.sum()
            total_sq += np.square(block).sum()
        count = max(data.size, 1)
        mean = total / count
        header = self._mrc.header
        header.dmin, header.dmax, header.dmean = np.float32(lo), np.float32(hi), np.float32(mean)
        header.rms = np.float32(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
