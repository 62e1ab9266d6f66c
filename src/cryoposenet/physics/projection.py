"""Projection of a 3D map: the Fourier-slice decoder and a real-space reference.

Both follow the rotation convention of :mod:`cryoposenet.physics.rotations`: the image for pose
``A`` is the projection along z of the map rotated by ``A``. The Fourier path samples the map's
transform at ``Aᵀ (kx, ky, 0)`` by trilinear interpolation on a zero-padded (``oversample``×)
half-volume (Friedel symmetry supplies ``kx < 0``). Trilinear interpolation in Fourier space
multiplies real space by ``sinc²(r / (oversample·N))`` along each axis; ``gridding_correction``
divides the map by that window before the transform so the slice is unbiased.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fourier import centre_pad, fourier_to_image, half_plane_freqs

__all__ = [
    "FourierVolume",
    "volume_to_fourier",
    "band_indices",
    "slice_band",
    "slice_volume",
    "project",
    "project_real_space",
]


@dataclass(frozen=True)
class FourierVolume:
    """A map's padded rfft, laid out for :func:`torch.nn.functional.grid_sample`.

    ``data`` is ``(1, 2, P, P, P//2 + 1)`` real (channels = real, imaginary part), axes
    ``[kz, ky, kx]`` with kz, ky centred at ``P//2`` and kx from 0; ``n`` is the map's box size and
    ``P = oversample · n``.
    """

    data: torch.Tensor
    n: int
    oversample: int


@functools.lru_cache(maxsize=8)
def _gridding_window(n: int, padded: int, device, dtype) -> torch.Tensor:
    """Separable ``sinc²(r / padded)`` ``(n, n, n)`` with r the offset from pixel ``n//2`` (cached)."""
    r = torch.arange(n, device=device, dtype=dtype) - n // 2
    w = torch.sinc(r / padded) ** 2
    return w[:, None, None] * w[None, :, None] * w[None, None, :]


@functools.lru_cache(maxsize=8)
def _signs(n: int, padded: int, gridding: bool, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(before, after)`` factors of :func:`_centred_rfftn` (cached constants of the sizes).

    ``before`` ``(n, n, n)``: ``(-1)^(z+y)`` at the map's padded positions, over the gridding
    window when ``gridding``; ``after`` ``(P, P, P//2+1)``: ``(-1)^(kz+ky+kx)``.
    """
    offset = padded // 2 - n // 2
    s = 1.0 - 2.0 * ((torch.arange(n, device=device) + offset) % 2).to(dtype)
    before = s[:, None, None] * s[None, :, None] * torch.ones(n, device=device, dtype=dtype)
    if gridding:
        before = before / _gridding_window(n, padded, device, dtype)
    k = 1.0 - 2.0 * (torch.arange(padded, device=device) % 2).to(dtype)
    after = k[:, None, None] * k[None, :, None] * k[: padded // 2 + 1][None, None, :]
    return before, after


def _centred_rfftn(volume: torch.Tensor, padded: int, before: torch.Tensor, after: torch.Tensor):
    """``fftshift_zy(rfftn(ifftshift(centre_pad(volume · before))))`` as (real, imaginary) planes
    ``(2, P, P, P//2+1)``, without shifts.

    For even ``P`` an ifftshift is the factor ``(-1)^k`` on the transform and an fftshift of the
    transform is the factor ``(-1)^r`` on the input, so both become the cached ``before``/``after``
    signs; zero rows are skipped (x rows, then y columns, are transformed before padding the next
    axis): about 40 % fewer FFT operations than the padded 3D transform.
    """
    n = volume.shape[-1]
    lo = padded // 2 - n // 2
    hi = padded - n - lo
    f = torch.fft.rfft(F.pad(volume * before, [lo, hi]), dim=-1)  # (n, n, W)
    f = torch.fft.fft(F.pad(f, [0, 0, lo, hi]), dim=-2)  # (n, P, W)
    f = torch.fft.fft(F.pad(f, [0, 0, 0, 0, lo, hi]), dim=-3)  # (P, P, W)
    return torch.stack([f.real * after, f.imag * after])  # planes written once, as grid_sample wants


def volume_to_fourier(
    volume: torch.Tensor, oversample: int = 2, gridding_correction: bool = True
) -> FourierVolume:
    """Transform a real map ``(N, N, N)`` (``[z, y, x]``) once, for slicing at many poses."""
    n = volume.shape[-1]
    padded = oversample * n
    if padded % 2 == 0:
        signs = _signs(n, padded, gridding_correction, volume.device, volume.dtype)
        data = _centred_rfftn(volume, padded, *signs)[None]
        return FourierVolume(data=data, n=n, oversample=oversample)
    if gridding_correction:
        volume = volume / _gridding_window(n, padded, volume.device, volume.dtype)
    vol = centre_pad(volume, padded, ndim=3)
    spec = torch.fft.rfftn(torch.fft.ifftshift(vol, dim=(-3, -2, -1)), dim=(-3, -2, -1))
    spec = torch.fft.fftshift(spec, dim=(-3, -2))
    data = torch.stack([spec.real, spec.imag], dim=0)[None]
    return FourierVolume(data=data, n=n, oversample=oversample)


@functools.lru_cache(maxsize=8)
def _plane(n: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(k2, r2)``: half-plane frequencies ``(N·(N//2+1), 2)`` as (kx, ky), flattened, and their
    squared radii ``(N·(N//2+1),)``; constants of ``n``, cached so a step does not rebuild them."""
    kx, ky = half_plane_freqs(n, device=device, dtype=dtype)
    k2 = torch.stack([kx, ky], dim=-1).reshape(-1, 2)
    return k2, k2.square().sum(dim=-1)


def band_indices(n: int, radius: float | None = None, device=None) -> torch.Tensor:
    """Flat half-plane indices ``(Q,)`` of an ``n``-pixel image's frequencies with ``|k| ≤ radius``
    (cycles per box; at most Nyquist, ``n/2``)."""
    _, r2 = _plane(n, device, torch.float32)
    limit = n / 2 if radius is None else min(radius, n / 2)
    return torch.nonzero(r2 <= limit**2).squeeze(1)


def slice_band(fvol: FourierVolume, rotations: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Central-slice values ``(B, Q)`` complex at the half-plane indices ``keep`` ``(Q,)`` (see
    :func:`band_indices`) for rotations ``(B, 3, 3)``: the samples :func:`slice_volume` lays out."""
    n, p = fvol.n, fvol.oversample
    dtype, device = fvol.data.dtype, fvol.data.device
    k2, _ = _plane(n, device, dtype)
    # k3 = Aᵀ (kx, ky, 0): contract with the first two rows of A.
    k3 = torch.einsum("qi,bij->bqj", k2[keep], rotations[:, :2, :].to(dtype))  # (B, Q, 3)
    sign = torch.where(k3[..., :1] < 0, -1.0, 1.0).to(dtype)  # (B, Q, 1): kx < 0 from Friedel's mate
    scale, offset = _grid_affine(n, p, fvol.data.shape[-1], device, dtype)
    grid = torch.addcmul(offset, k3 * sign, scale)  # grid_sample's [-1, 1] over (kx, ky, kz)
    out = F.grid_sample(
        fvol.data, grid[None, :, :, None], mode="bilinear", padding_mode="zeros", align_corners=True
    )
    re, im = out[0, 0, :, :, 0], out[0, 1, :, :, 0]  # (B, Q)
    return torch.complex(re, im * sign[..., 0])


@functools.lru_cache(maxsize=8)
def _grid_affine(n: int, oversample: int, width: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, offset)`` ``(3,)`` taking a frequency ``(kx, ky, kz)`` in cycles per box (kx ≥ 0) to
    :func:`torch.nn.functional.grid_sample`'s coordinates on the padded half-volume of ``width``
    kx samples (``align_corners=True``: -1 and 1 are the first and last samples)."""
    padded = n * oversample
    yz = 2 * oversample / (padded - 1)
    scale = torch.tensor([2 * oversample / (width - 1), yz, yz], device=device, dtype=dtype)
    centre = 2 * (padded // 2) / (padded - 1) - 1
    offset = torch.tensor([-1.0, centre, centre], device=device, dtype=dtype)
    return scale, offset


def slice_volume(fvol: FourierVolume, rotations: torch.Tensor, radius: float | None = None) -> torch.Tensor:
    """Central slices ``(B, N, N//2+1)`` complex (half-plane, FFT order) at rotations ``(B, 3, 3)``.

    Frequencies beyond Nyquist (``|k| > N/2``) are zero so every pose sees the same band; with
    ``radius`` (cycles per box) those beyond it are zero too, and only the frequencies kept are
    interpolated (a band-limited loss then costs less: the coarse-to-fine start, and 21 % less at
    full band, the corners beyond Nyquist).
    """
    n = fvol.n
    keep = band_indices(n, radius, fvol.data.device)
    values = torch.view_as_real(slice_band(fvol, rotations, keep))  # (B, Q, 2)
    full = values.new_zeros(len(rotations), n * (n // 2 + 1), 2).index_copy(1, keep, values)
    return torch.view_as_complex(full).reshape(-1, n, n // 2 + 1)


def project(volume: torch.Tensor, rotations: torch.Tensor, oversample: int = 2) -> torch.Tensor:
    """Projections ``(B, N, N)`` of a real map ``(N, N, N)`` at rotations ``(B, 3, 3)``, Fourier path."""
    fvol = volume_to_fourier(volume, oversample=oversample)
    return fourier_to_image(slice_volume(fvol, rotations), volume.shape[-1])


def project_real_space(volume: torch.Tensor, rotations: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Reference projections ``(B, N, N)``: rotate the map in real space (trilinear) and sum along z.

    The map rotated by ``A`` is ``V(Aᵀ r)`` with ``r`` measured from pixel ``N//2``.
    """
    n = volume.shape[-1]
    dtype, device = volume.dtype, volume.device
    c = torch.arange(n, device=device, dtype=dtype) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    r = torch.stack([x, y, z], dim=-1)  # (N, N, N, 3) as xyz, indexed [z, y, x]
    out = []
    for rot in rotations.to(dtype).split(chunk):
        src = torch.einsum("zyxi,bij->bzyxj", r, rot)  # rᵀ A = (Aᵀ r)ᵀ
        grid = 2 * (src + n // 2) / (n - 1) - 1
        vals = F.grid_sample(
            volume[None, None].expand(len(rot), 1, n, n, n),
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        out.append(vals[:, 0].sum(dim=1))
    return torch.cat(out)
