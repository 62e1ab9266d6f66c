"""Reconstruction from known poses by direct Fourier inversion (backprojection with CTF weighting).

Each image is zero-padded to ``oversample·N``, transformed, divided of its translation, and its
spectrum inserted at ``Aᵀ (kx, ky, 0)`` (the transpose of the decoder's slice) by trilinear
splatting into a half-volume: ``num += CTF·F``, ``den += CTF²``. The map's spectrum is
``num / (den + λ)`` (Wiener-style; λ = ``wiener`` × the mean of ``den`` over occupied voxels),
followed by the inverse transform and the ``sinc²`` gridding correction of trilinear splatting.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from ..io.atomic import write_text_atomic
from ..io.mrc import write_map
from ..io.particles import load_particles
from ..io.star import read_star
from ..physics.ctf import ctf_half_plane
from ..physics.fourier import centre_crop, centre_pad, half_plane_freqs, image_to_fourier, shift_phase
from ..physics.imaging import origin_to_translation
from ..physics.rotations import relion_angles_to_matrix
from ..training.data import StackImages, pass_progress, read_chunks
from ..training.inputs import contrast_setting
from .metrics import fsc, resolution_at

__all__ = [
    "FourierAccumulator",
    "split_halves",
    "backproject",
    "backproject_halves",
    "write_half_maps",
    "poses_for_table",
    "origins_for_table",
    "write_fsc_csv",
    "run_backprojection",
]


class FourierAccumulator:
    """Streaming Fourier backprojection into an ``(P, P, P//2+1)`` half-volume, ``P = oversample·n``."""

    def __init__(
        self,
        n: int,
        apix: float,
        oversample: int = 2,
        dtype=torch.float64,
        device=None,
        pad_images: bool = True,
    ):
        """``pad_images``: images are zero-padded to ``P`` before their transform (finer sampling
        of each slice); False: transformed at their own size ``n``, CTF and shift applied on that
        grid, each frequency ``k`` inserted at ``oversample·k``: the adjoint of
        :func:`~cryoposenet.physics.projection.slice_volume` with the decoder's CTF, so images
        formed by that model (CTF applied on the image grid) are inverted exactly."""
        self.n, self.apix, self.p, self.pad_images = n, apix, oversample, pad_images
        size = oversample * n
        self.shape = (size, size, size // 2 + 1)
        self.num = torch.zeros(
            self.shape, dtype=torch.complex128 if dtype == torch.float64 else torch.complex64, device=device
        )
        self.den = torch.zeros(self.shape, dtype=dtype, device=device)
        grid = size if pad_images else n
        kx, ky = half_plane_freqs(grid, device=device, dtype=dtype)
        self._k2 = torch.stack([kx, ky], dim=-1) * (size // grid)  # (G, G//2+1, 2) in padded index units
        self._inside = (self._k2**2).sum(-1) <= (size / 2 - 1) ** 2
        self.count = 0

    def insert(
        self,
        images: torch.Tensor,
        rotations: torch.Tensor,
        ctf_params: dict | None = None,
        translations_px: torch.Tensor | None = None,
    ) -> None:
        """Add images ``(B, n, n)`` at rotations ``(B, 3, 3)``.

        ``ctf_params``: keyword arguments of :func:`cryoposenet.physics.ctf.ctf_2d`, one value per
        image, or None for no CTF; ``translations_px`` ``(B, 2)``: the translation the image formation
        applied (content moved by +t), undone here.
        """
        size = self.p * self.n if self.pad_images else self.n
        dtype = self.den.dtype
        spec = image_to_fourier(centre_pad(images.to(dtype), size, ndim=2))
        if translations_px is not None:
            spec = spec * shift_phase(-translations_px.to(dtype) * 1.0, size)
        weight = torch.ones_like(spec.real)
        if ctf_params is not None:
            ctf = ctf_half_plane(size, self.apix, device=spec.device, dtype=dtype, **ctf_params)
            spec, weight = spec * ctf, ctf**2
        k3 = torch.einsum("hwi,bij->bhwj", self._k2, rotations[:, :2, :].to(dtype))
        sel = self._inside.expand(len(images), -1, -1)
        self._splat(k3[sel], spec[sel], weight[sel])
        self.count += len(images)

    def _splat(self, k3: torch.Tensor, values: torch.Tensor, weight: torch.Tensor) -> None:
        """Trilinear scatter of values ``(K,)`` at frequencies ``k3`` ``(K, 3)`` (xyz, index units)."""
        conj = k3[:, 0] < 0
        k3 = torch.where(conj[:, None], -k3, k3)
        values = torch.where(conj, values.conj(), values)
        size = self.shape[0]
        pos = torch.stack([k3[:, 2] + size // 2, k3[:, 1] + size // 2, k3[:, 0]], dim=-1)  # z, y, x
        base = pos.floor()
        frac = pos - base
        base = base.long()
        # inserted points lie within radius P/2 - 1, so only zero-weight corners fall outside: clamp
        hi = torch.tensor(self.shape, device=pos.device) - 1
        vals = torch.view_as_real(values.to(self.num.dtype))  # (K, 2)
        num = torch.view_as_real(self.num).view(-1, 2)
        den = self.den.view(-1)
        for corner in range(8):
            offs = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], device=pos.device)
            idx = torch.minimum(base + offs, hi)
            w = torch.prod(torch.where(offs.bool(), frac, 1 - frac), dim=-1)
            flat = (idx[:, 0] * self.shape[1] + idx[:, 1]) * self.shape[2] + idx[:, 2]
            num.index_add_(0, flat, vals * w[:, None])
            den.index_add_(0, flat, weight * w)

    def absorb(self, other: FourierAccumulator) -> None:
        """Add ``other``'s insertions into this accumulator, in place."""
        self.num += other.num
        self.den += other.den
        self.count += other.count

    def __add__(self, other: FourierAccumulator) -> FourierAccumulator:
        """The accumulator of both image sets (e.g. two half sets into the full map)."""
        both = copy.copy(self)
        both.num, both.den, both.count = self.num + other.num, self.den + other.den, self.count + other.count
        return both

    def _hermitian_plane(self, x: torch.Tensor) -> torch.Tensor:
        """Fold the kx = 0 plane with its Friedel mate so both halves carry all insertions."""
        plane = x[:, :, 0]
        mate = torch.roll(torch.flip(plane, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))
        out = x.clone()
        out[:, :, 0] = plane + (mate.conj() if plane.is_complex() else mate)
        return out

    def volume(self, wiener: float = 1e-3) -> torch.Tensor:
        """The reconstructed real map ``(n, n, n)`` ``[z, y, x]``."""
        num, den = self._hermitian_plane(self.num), self._hermitian_plane(self.den)
        occupied = den > 0
        lam = wiener * (den[occupied].mean() if occupied.any() else 1.0)
        spec = num / (den + lam)
        size = self.shape[0]
        spec = torch.fft.ifftshift(spec, dim=(0, 1))
        vol = torch.fft.fftshift(torch.fft.irfftn(spec, s=(size,) * 3), dim=(0, 1, 2))
        vol = centre_crop(vol, self.n, ndim=3)
        r = torch.arange(self.n, dtype=vol.dtype, device=vol.device) - self.n // 2
        w = torch.sinc(r / size) ** 2
        return vol / (w[:, None, None] * w[None, :, None] * w[None, None, :])


def split_halves(m: int, seed: int = 0) -> list[np.ndarray]:
    """Two random, disjoint, sorted halves of ``range(m)`` (gold-standard half sets), seeded."""
    order = np.random.default_rng(seed).permutation(m)
    return [np.sort(order[: m // 2]), np.sort(order[m // 2 :])]


def _insert_rows(acc: FourierAccumulator, images, rows, rotations, translations_px, ctf, batch_size):
    """Insert ``images[rows]`` into ``acc`` in chunks read a chunk ahead (per-row poses, shifts, CTF)."""
    for positions, batch in read_chunks(images, rows, batch_size):
        r = rows[positions]
        params = {k: torch.as_tensor(v)[r] for k, v in ctf.items()} if ctf is not None else None
        shifts = None if translations_px is None else torch.as_tensor(translations_px)[r]
        acc.insert(batch, torch.as_tensor(rotations)[r], params, shifts)


def backproject(
    images,
    rotations: torch.Tensor,
    translations_px: torch.Tensor | None,
    ctf: dict | None,
    apix: float,
    batch_size: int = 64,
    dtype=torch.float64,
    desc: str = "backproject",
    show: bool = True,
    pad_images: bool = True,
) -> FourierAccumulator:
    """The accumulator of every row of ``images``, with one progress bar; arguments as
    :func:`backproject_halves`', ``pad_images`` as :class:`FourierAccumulator`'s."""
    acc = FourierAccumulator(images.shape[-1], apix, dtype=dtype, pad_images=pad_images)
    with pass_progress(desc, len(images), show):
        _insert_rows(acc, images, torch.arange(len(images)), rotations, translations_px, ctf, batch_size)
    return acc


def backproject_halves(
    images,
    rotations: torch.Tensor,
    translations_px: torch.Tensor | None,
    ctf: dict | None,
    apix: float,
    seed: int = 0,
    batch_size: int = 64,
    dtype=torch.float64,
    desc: str = "backproject",
    show: bool = True,
) -> list[FourierAccumulator]:
    """Accumulators of two random half sets of ``images`` (a tensor or a row source such as
    :class:`~cryoposenet.training.data.StackImages`), read in chunks a chunk ahead with one progress bar.

    ``rotations`` ``(M, 3, 3)``, ``translations_px`` ``(M, 2)`` (image pixels, or None) and ``ctf``
    (``(M,)`` arrays per :func:`~cryoposenet.physics.ctf.ctf_2d` parameter, or None) are per row.
    """
    accs = []
    with pass_progress(desc, len(images), show):
        for half in split_halves(len(images), seed):
            acc = FourierAccumulator(images.shape[-1], apix, dtype=dtype)
            _insert_rows(acc, images, torch.from_numpy(half), rotations, translations_px, ctf, batch_size)
            accs.append(acc)
    return accs


def write_half_maps(out_dir, accs: list[FourierAccumulator], wiener: float = 1e-2) -> dict:
    """``half1.mrc``, ``half2.mrc``, ``map.mrc`` (both halves) and ``fsc.csv`` into ``out_dir``;
    returns ``{"fsc0143_A", "fsc05_A", "n_images"}`` (half-map FSC). The second accumulator is
    folded into the first (memory: two accumulators at a time)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first, second = accs
    n, apix, count = first.n, first.apix, first.count + second.count
    maps = [a.volume(wiener).numpy() for a in accs]
    first.absorb(second)
    full = first.volume(wiener).numpy()
    for name, vol in (("half1.mrc", maps[0]), ("half2.mrc", maps[1]), ("map.mrc", full)):
        write_map(out / name, vol.astype(np.float32), apix)
    curve = fsc(maps[0], maps[1])
    write_fsc_csv(out / "fsc.csv", curve, n, apix)
    return {
        "fsc0143_A": resolution_at(curve, 0.143, n, apix),
        "fsc05_A": resolution_at(curve, 0.5, n, apix),
        "n_images": count,
    }


def poses_for_table(table, poses_table) -> np.ndarray:
    """RELION angles ``(M, 3)`` in degrees for ``table``'s rows, from ``poses_table`` (by rlnImageName)."""
    if not poses_table.has_angles:
        raise InputError("no rlnAngleRot/Tilt/Psi columns", poses_table.source)
    cols = ["rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
    joined = table.particles[["rlnImageName"]].merge(
        poses_table.particles[cols].drop_duplicates("rlnImageName"), on="rlnImageName", how="left"
    )
    if joined["rlnAngleRot"].isna().any():
        missing = joined.loc[joined["rlnAngleRot"].isna(), "rlnImageName"].iloc[0]
        raise InputError(f"no pose for particle {missing}", poses_table.source)
    return joined[cols[1:]].to_numpy(dtype=np.float64)


def write_fsc_csv(path, curve: np.ndarray, n: int, apix: float) -> None:
    """``shell,frequency_per_A,resolution_A,fsc`` rows, atomically."""
    lines = ["shell,frequency_per_A,resolution_A,fsc"]
    for k, value in enumerate(curve):
        freq = k / (n * apix)
        res = f"{1 / freq:.4f}" if k > 0 else "inf"
        lines.append(f"{k},{freq:.6f},{res},{value:.6f}")
    write_text_atomic(path, "\n".join(lines) + "\n")


def origins_for_table(table, poses_table) -> np.ndarray:
    """RELION origins ``(M, 2)`` in Å for ``table``'s rows: ``poses_table``'s (by rlnImageName)
    when it has origin columns (a run's learned shifts), else ``table``'s own."""
    if not poses_table.has_origins:
        return table.origins_A()
    found = pd.DataFrame(poses_table.origins_A(), columns=["x", "y"])
    found["rlnImageName"] = poses_table.particles["rlnImageName"].to_numpy()
    joined = table.particles[["rlnImageName"]].merge(found.drop_duplicates("rlnImageName"), how="left")
    return joined[["x", "y"]].fillna(0.0).to_numpy(dtype=np.float64, copy=True)


def run_backprojection(
    star,
    out_dir,
    poses=None,
    datadir=None,
    seed: int = 0,
    wiener: float = 1e-2,
    progress: bool = True,
    invert: bool | None = None,
) -> dict:
    """Half maps, full map and half-map FSC of a particle set; writes SPEC.md's backproject files.

    Angles (and origins, when it has them) come from ``poses`` if given, else from ``star``.
    ``invert``: images × −1 (None: detected, as ``train`` does; a dark stack is inverted).
    Returns ``{"fsc0143_A", "fsc05_A", "n_images", "contrast"}`` (gold-standard: half-map FSC).
    """
    stack = load_particles(star, datadir=datadir)
    table = stack.table
    poses_table = read_star(poses) if poses is not None else None
    angles = poses_for_table(table, poses_table) if poses_table is not None else None
    if angles is None:
        if not table.has_angles:
            raise InputError("no angles: give --poses or a STAR file with rlnAngleRot/Tilt/Psi", star)
        angles = table.angles_deg()
    origins = origins_for_table(table, poses_table) if poses_table is not None else table.origins_A()
    invert, contrast = contrast_setting(stack, stack.box, invert)
    images = StackImages(stack, invert=invert)
    translations = origin_to_translation(torch.as_tensor(origins), stack.apix)
    rotations = relion_angles_to_matrix(angles)
    ctf = table.ctf_params() if table.has_ctf else None
    accs = backproject_halves(images, rotations, translations, ctf, stack.apix, seed, show=progress)
    figures = write_half_maps(out_dir, accs, wiener)
    return {**figures, "contrast": f"{contrast}; images {'inverted' if invert else 'as stored'}"}
