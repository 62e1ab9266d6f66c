"""Fourier grids and transforms shared by projection, CTF and metrics.

Image spectra are kept as **rfft half-planes in FFT order**: ``(..., N, N//2 + 1)`` complex, rows
``ky = fftfreq(N)·N`` and columns ``kx = 0..N//2`` (index units, cycles per box). Real-space
images and volumes have their centre at pixel ``N//2`` (RELION's and MRC's convention);
:func:`image_to_fourier` and :func:`fourier_to_image` move that centre to index 0 and back, so
phases carry no stray ramps.
"""

from __future__ import annotations

import torch

__all__ = [
    "half_plane_freqs",
    "half_plane_freqs_angstrom",
    "image_to_fourier",
    "fourier_to_image",
    "shift_phase",
    "nyquist_mask",
    "centre_pad",
    "centre_crop",
    "power",
]


def half_plane_freqs(n: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kx, ky)`` each ``(n, n//2 + 1)``, in cycles per box (index units) for an ``n``-pixel image."""
    ky = torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype)
    kx = torch.fft.rfftfreq(n, d=1.0 / n, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ky, kx, indexing="ij")
    return gx, gy


def half_plane_freqs_angstrom(
    n: int, apix: float, device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sx, sy)`` each ``(n, n//2 + 1)`` in 1/Å for an ``n``-pixel image of pixel size ``apix`` Å."""
    kx, ky = half_plane_freqs(n, device=device, dtype=dtype)
    return kx / (n * apix), ky / (n * apix)


def nyquist_mask(n: int, device=None) -> torch.Tensor:
    """Boolean ``(n, n//2 + 1)``: True inside the circle of radius ``n/2`` (Nyquist)."""
    kx, ky = half_plane_freqs(n, device=device)
    return kx**2 + ky**2 <= (n / 2) ** 2


def power(z: torch.Tensor) -> torch.Tensor:
    """``|z|²`` of a complex tensor, real, same shape: ``Re² + Im²`` without ``abs``'s square root
    (cheaper, and its gradient is ``2z`` even at ``z = 0``)."""
    return torch.view_as_real(z).square().sum(dim=-1)


def image_to_fourier(images: torch.Tensor) -> torch.Tensor:
    """Real images ``(..., N, N)`` centred at ``N//2`` to half-plane spectra ``(..., N, N//2+1)``."""
    return torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1)))


def fourier_to_image(spectra: torch.Tensor, n: int) -> torch.Tensor:
    """Half-plane spectra ``(..., N, N//2+1)`` to real images ``(..., N, N)`` centred at ``N//2``."""
    return torch.fft.fftshift(torch.fft.irfft2(spectra, s=(n, n)), dim=(-2, -1))


def shift_phase(shifts_px: torch.Tensor, n: int) -> torch.Tensor:
    """Phase factors ``(..., N, N//2+1)`` that translate images by ``shifts_px`` ``(..., 2)`` as (x, y).

    Multiplying a spectrum by them gives the image ``g(r) = f(r - t)``: content moves by ``+t``.
    """
    kx, ky = half_plane_freqs(n, device=shifts_px.device, dtype=shifts_px.dtype)
    phase = kx * shifts_px[..., 0, None, None] + ky * shifts_px[..., 1, None, None]
    return torch.polar(torch.ones_like(phase), -2 * torch.pi * phase / n)


def centre_pad(x: torch.Tensor, size: int, ndim: int) -> torch.Tensor:
    """Zero-pad the last ``ndim`` axes of ``x`` to ``size`` keeping pixel ``n//2`` at ``size//2``."""
    n = x.shape[-1]
    before = size // 2 - n // 2
    after = size - n - before
    return torch.nn.functional.pad(x, [before, after] * ndim)


def centre_crop(x: torch.Tensor, size: int, ndim: int) -> torch.Tensor:
    """Inverse of :func:`centre_pad`: keep ``size`` pixels of the last ``ndim`` axes around the centre."""
    n = x.shape[-1]
    start = n // 2 - size // 2
    sl = (Ellipsis,) + (slice(start, start + size),) * ndim
    return x[sl]
