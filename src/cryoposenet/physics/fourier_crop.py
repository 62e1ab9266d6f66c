"""Fourier cropping: an image or a map resampled to a smaller box by keeping its low frequencies.

Cropping the centred spectrum of an ``n``-pixel image to ``size`` pixels keeps every frequency
``|k| < size/2`` cycles per box and nothing above, so the result is the band-limited image at the
pixel size ``apix · n / size`` (:func:`cropped_apix`): frequency ``k`` of the crop is frequency
``k`` of the original, the same spatial frequency ``k / (n · apix)`` in 1/Å. Hence a CTF evaluated
on the cropped grid at the cropped pixel size equals the original CTF's low frequencies, and a
translation of ``t`` original pixels is ``t · size / n`` cropped pixels.

Scaling: the values are samples of the same band-limited function (the spectrum is multiplied by
``(size / n)^ndim`` before the smaller inverse transform), so a constant image stays constant and
a map keeps its voxel values. A projection (a sum of voxels along z) of a cropped map is then
``size / n`` times the crop of the original projection: each voxel is ``n / size`` times longer.

Even ``size``: the kept band includes ``k = -size/2``, which has no partner ``+size/2`` in the
crop; it gets the mean of the original's ``±size/2`` coefficients (the Hermitian-symmetric choice,
what the real part of the complex crop gives), along every axis. This rule is separable, so a
projection along an axis commutes with cropping exactly (see ``tests/test_fourier_crop.py``).
"""

from __future__ import annotations

import torch

__all__ = ["fourier_crop", "cropped_apix", "DEFAULT_BOX", "default_box"]

DEFAULT_BOX = 128  # training box of a larger particle set when --box is not given
_CHUNK_PIXELS = 2**24  # images transformed at a time (complex64 scratch of ~128 MB at most)


def cropped_apix(apix: float, n: int, size: int) -> float:
    """Pixel size in Å of an ``n``-pixel image of ``apix`` Å Fourier-cropped to ``size`` pixels."""
    return apix * n / size


def default_box(n: int) -> int:
    """The training box for ``n``-pixel particles: their own box up to :data:`DEFAULT_BOX`, else that."""
    return min(n, DEFAULT_BOX)


def _axis_rows(n: int, size: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices along a full FFT axis of length ``n`` for the ``size`` kept frequencies (FFT order),
    and for even ``size`` the index of ``+size/2`` whose coefficient is averaged into ``-size/2``."""
    k = torch.fft.fftfreq(size, d=1.0 / size, device=device).round().long()
    mate = torch.tensor(size // 2, device=device) if size % 2 == 0 else None
    return k % n, mate


def _crop_axis(spec: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Keep ``size`` frequencies of a full (FFT-order) axis ``dim`` of ``spec``."""
    n = spec.shape[dim]
    rows, mate = _axis_rows(n, size, spec.device)
    out = spec.index_select(dim, rows)
    if mate is not None:  # rows[size//2] is -size/2: mean with +size/2
        nyq = out.narrow(dim, size // 2, 1)
        nyq.copy_(0.5 * (nyq + spec.narrow(dim, int(mate), 1)))
    return out


def _crop_spectrum(x: torch.Tensor, size: int, ndim: int) -> torch.Tensor:
    """``fourier_crop`` of one chunk: rfft over the last ``ndim`` axes, crop, inverse at ``size``."""
    n = x.shape[-1]
    dims = tuple(range(-ndim, 0))
    spec = torch.fft.rfftn(torch.fft.ifftshift(x, dim=dims), dim=dims)
    for dim in dims[:-1]:
        spec = _crop_axis(spec, dim, size)
    spec = spec[..., : size // 2 + 1]  # kx = 0..size//2 from the half-plane; irfft pairs ±size/2
    out = torch.fft.irfftn(spec, s=(size,) * ndim, dim=dims)
    return torch.fft.fftshift(out, dim=dims) * (size / n) ** ndim


def fourier_crop(x: torch.Tensor, size: int, ndim: int = 2) -> torch.Tensor:
    """The last ``ndim`` axes of ``x`` (``(..., n, n)`` images or an ``(n, n, n)`` map, centred at
    pixel ``n//2``, real) Fourier-cropped to ``size`` (≤ n) pixels, centred at ``size//2``.

    Images are transformed a few at a time so the complex scratch stays bounded.
    """
    n = x.shape[-1]
    if size > n:
        raise ValueError(f"cannot Fourier-crop {n} pixels to a larger box of {size}")
    if size == n:
        return x
    if ndim != 2 or x.dim() < 3:
        return _crop_spectrum(x, size, ndim)
    flat = x.reshape(-1, n, n)
    per = max(1, _CHUNK_PIXELS // (n * n))
    out = torch.cat([_crop_spectrum(part, size, 2) for part in flat.split(per)])
    return out.reshape(*x.shape[:-2], size, size)
