"""Projection of a 3D map: the Fourier-slice decoder and a real-space reference.

Both follow the rotation convention of :mod:`cryoposenet.physics.rotations`: the image for pose
``A`` is the projection along z of the map rotated by ``A``. The Fourier path samples the map's
transform at ``Aᵀ (kx, ky, 0)`` by trilinear interpolation on a zero-padded (``oversample``×)
half-volume (Friedel symmetry supplies ``kx < 0``). Trilinear interpolation in Fourier space
multiplies real space by ``sinc²(r / (oversample·N))`` along each axis; ``gridding_correction``
divides the map by that window before the transform so the slice is unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fourier import centre_pad, fourier_to_image, half_plane_freqs, nyquist_mask

__all__ = ["FourierVolume", "volume_to_fourier", "slice_volume", "project", "project_real_space"]


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


def _gridding_window(n: int, padded: int, device, dtype) -> torch.Tensor:
    """Separable ``sinc²(r / padded)`` ``(n, n, n)`` with r the offset from pixel ``n//2``."""
    r = torch.arange(n, device=device, dtype=dtype) - n // 2
    w = torch.sinc(r / padded) ** 2
    return w[:, None, None] * w[None, :, None] * w[None, None, :]


def volume_to_fourier(
    volume: torch.Tensor, oversample: int = 2, gridding_correction: bool = True
) -> FourierVolume:
    """Transform a real map ``(N, N, N)`` (``[z, y, x]``) once, for slicing at many poses."""
    n = volume.shape[-1]
    padded = oversample * n
    if gridding_correction:
        volume = volume / _gridding_window(n, padded, volume.device, volume.dtype)
    vol = centre_pad(volume, padded, ndim=3)
    spec = torch.fft.rfftn(torch.fft.ifftshift(vol, dim=(-3, -2, -1)), dim=(-3, -2, -1))
    spec = torch.fft.fftshift(spec, dim=(-3, -2))
    data = torch.stack([spec.real, spec.imag], dim=0)[None]
    return FourierVolume(data=data, n=n, oversample=oversample)


def slice_volume(fvol: FourierVolume, rotations: torch.Tensor) -> torch.Tensor:
    """Central slices ``(B, N, N//2+1)`` complex (half-plane, FFT order) at rotations ``(B, 3, 3)``.

    Frequencies beyond Nyquist (``|k| > N/2``) are set to zero so every pose sees the same band.
    """
    n, p = fvol.n, fvol.oversample
    padded = n * p
    dtype, device = fvol.data.dtype, fvol.data.device
    kx, ky = half_plane_freqs(n, device=device, dtype=dtype)
    k2 = torch.stack([kx, ky], dim=-1)  # (N, N//2+1, 2)
    # k3 = Aᵀ (kx, ky, 0): contract with the first two rows of A.
    k3 = torch.einsum("hwi,bij->bhwj", k2, rotations[:, :2, :].to(dtype)) * p
    conj = k3[..., 0] < 0
    k3 = torch.where(conj[..., None], -k3, k3)
    half = padded // 2
    width = fvol.data.shape[-1]  # padded//2 + 1 kx samples, from 0
    grid = torch.stack(
        [
            2 * k3[..., 0] / (width - 1) - 1,
            2 * (k3[..., 1] + half) / (padded - 1) - 1,
            2 * (k3[..., 2] + half) / (padded - 1) - 1,
        ],
        dim=-1,
    )
    out = F.grid_sample(fvol.data, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)
    re, im = out[0, 0], out[0, 1]
    im = torch.where(conj, -im, im)
    mask = nyquist_mask(n, device=device)
    return torch.complex(re * mask, im * mask)


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
