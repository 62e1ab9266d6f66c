"""Particle images behind a STAR file: stacks opened (memory-mapped) and checked once, read by row.

Rows are read with positional reads (``os.pread``) at the offsets of the memory-mapped data block
rather than through the map itself: pages touched through a map count in the process's resident
memory (``ru_maxrss``) and stay there, so a pass over a 10⁶-image stack would grow the process by
the stack's size; file reads go through the page cache only, so memory stays flat in the number of
particles. Reads are thread-safe (no shared file position), for a background loader.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import pandas as pd

from ..errors import InputError
from .mrc import open_stack, stack_shape
from .star import ParticleTable, default_optics, read_star

__all__ = ["ParticleStack", "load_particles", "optics_for"]

log = logging.getLogger(__name__)


class ParticleStack:
    """Images of a :class:`ParticleTable`, read on demand from memory-mapped MRC stacks.

    Checks at opening: every stack exists and is readable, holds the images the STAR file names,
    and all images are square and of one size. ``stack[rows]`` returns float32 ``(len(rows), N, N)``.
    """

    def __init__(self, table: ParticleTable):
        self.table = table
        index, paths = table.image_refs()
        uniq = list(dict.fromkeys(paths))
        self._file_of_row = pd.Index(uniq).get_indexer(paths)
        self._index = index
        self._paths = uniq
        self._mrcs: list = [None] * len(uniq)
        self._fds: list[int | None] = [None] * len(uniq)
        self._lock = threading.Lock()
        self.box, header_apix = self._validate()
        self.apix = self._choose_apix(header_apix)

    def _validate(self) -> tuple[int, float | None]:
        sizes, apix = set(), None
        for k, path in enumerate(self._paths):
            if not path.is_file():
                raise InputError("image stack not found (named in rlnImageName)", path)
            mrc = self._open(k)
            n, ny, nx = stack_shape(mrc)
            if ny != nx:
                raise InputError(f"images are not square ({ny} × {nx})", path)
            wanted = self._index[self._file_of_row == k].max() + 1
            if wanted > n:
                raise InputError(f"stack holds {n} images but the STAR file references image {wanted}", path)
            sizes.add(nx)
            vs = float(mrc.voxel_size.x)
            apix = apix or (vs if vs > 0 else None)
        if len(sizes) != 1:
            raise InputError(f"stacks have different image sizes {sorted(sizes)}", self.table.source)
        return sizes.pop(), apix

    def _choose_apix(self, header_apix: float | None) -> float:
        star = self.table.apix
        if star is None and header_apix is None:
            raise InputError("pixel size is in neither the STAR file nor the MRC header", self.table.source)
        if star is None:
            return header_apix
        if header_apix is not None and abs(header_apix - star) > 1e-3 * star:
            log.warning(
                "%s: pixel size %.4f Å in the STAR file differs from %.4f Å in the MRC header; "
                "using the STAR value, as RELION does",
                self.table.source,
                star,
                header_apix,
            )
        return star

    def _open(self, k: int):
        if self._mrcs[k] is None:
            self._mrcs[k] = open_stack(self._paths[k])
        return self._mrcs[k]

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        out = np.empty((len(rows), self.box, self.box), dtype=np.float32)
        files = self._file_of_row[rows]
        for k in np.unique(files):
            sel = np.nonzero(files == k)[0]
            data = self._open(k).data
            if data.ndim == 2:
                out[sel] = data
            elif hasattr(os, "pread"):
                out[sel] = self._read_rows(k, self._index[rows[sel]])
            else:  # no positional reads (Windows): through the map
                idx = self._index[rows[sel]]
                order = np.argsort(idx)
                out[sel[order]] = data[idx[order]]
        return out

    def _read_rows(self, k: int, idx: np.ndarray) -> np.ndarray:
        """Images ``idx`` (0-based, any order, repeats allowed) of stack ``k`` as ``(len(idx), N, N)``.

        Sorted unique images are read in runs of consecutive ones, one ``pread`` per run.
        """
        data = self._mrcs[k].data
        dtype, image_bytes = data.dtype, data[0].nbytes
        offset = self._mrcs[k].header.nbytes + int(self._mrcs[k].header.nsymbt)
        uniq, inverse = np.unique(idx, return_inverse=True)
        runs = np.split(uniq, np.nonzero(np.diff(uniq) != 1)[0] + 1)
        fd, blocks = self._fd(k), []
        for run in runs:
            size = len(run) * image_bytes
            buf = os.pread(fd, size, offset + int(run[0]) * image_bytes)
            if len(buf) != size:
                raise InputError("stack is shorter than its header says (truncated?)", self._paths[k])
            blocks.append(np.frombuffer(buf, dtype=dtype).reshape(len(run), *data.shape[1:]))
        return np.concatenate(blocks)[inverse]

    def _fd(self, k: int) -> int:
        with self._lock:
            if self._fds[k] is None:
                self._fds[k] = os.open(self._paths[k], os.O_RDONLY)
            return self._fds[k]

    def close(self) -> None:
        for m in self._mrcs:
            if m is not None:
                m.close()
        self._mrcs = [None] * len(self._paths)
        for fd in self._fds:
            if fd is not None:
                os.close(fd)
        self._fds = [None] * len(self._paths)

    def __enter__(self) -> ParticleStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):  # worker processes reopen the maps themselves
        state = self.__dict__.copy()
        state["_mrcs"] = [None] * len(self._paths)
        state["_fds"] = [None] * len(self._paths)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def load_particles(star: str | os.PathLike, datadir: str | os.PathLike | None = None) -> ParticleStack:
    """Read a STAR file and open (and check) the stacks it names."""
    return ParticleStack(read_star(star, datadir=datadir))


def optics_for(table: ParticleTable, apix: float, box: int) -> pd.DataFrame:
    """The ``data_optics`` block to write this table back as RELION 3.1 (built for 3.0 input)."""
    if table.optics is not None:
        return table.optics
    optics = default_optics(apix, box)
    for col in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"):
        if col in table.particles:
            values = table.particles[col].unique()
            if len(values) > 1:
                raise InputError(
                    f"3.0 file with several {col} values cannot be written as one optics group", table.source
                )
            optics[col] = values[0]
    return optics
