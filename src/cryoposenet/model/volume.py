"""The learnable 3D map: a real-space voxel grid, transformed to a FourierVolume each step."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..physics.projection import FourierVolume, volume_to_fourier

__all__ = ["LearnableVolume", "initial_amplitude", "soft_sphere"]

INITS = ("uniform", "sphere", "zeros")


def _radius(n: int, device=None) -> torch.Tensor:
    """Distance ``(N, N, N)`` of each voxel from the centre pixel ``N//2``, in pixels."""
    c = torch.arange(n, device=device, dtype=torch.float32) - n // 2
    return torch.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)


def soft_sphere(n: int, radius: float, width: float = 2.0) -> torch.Tensor:
    """A ball of ``radius`` pixels with a cosine edge ``width`` pixels wide, ``(N, N, N)`` in [0, 1]."""
    r = _radius(n)
    t = ((r - radius) / width).clamp(0, 1)
    return 0.5 * (1 + torch.cos(torch.pi * t))


def initial_amplitude(images: torch.Tensor, init: str) -> float:
    """A map height for ``init`` (``uniform`` or ``sphere``) whose projections carry the total mass
    of ``images`` ``(B, N, N)`` (their mean image's sum)."""
    n = images.shape[-1]
    mass = images.mean().item() * n * n
    if init == "sphere":
        return mass / (4 / 3 * math.pi * (n / 4) ** 3)
    return 2 * mass / n**3


class LearnableVolume(nn.Module):
    """A map ``(N, N, N)`` ``[z, y, x]`` trained by gradient descent.

    ``init``: ``uniform`` (the paper: i.i.d. uniform in ``[0, amplitude)``), ``sphere`` (a soft
    ball of radius ``N/4`` with height ``amplitude``) or ``zeros``. With ``mask_radius`` (pixels)
    the map is multiplied by a soft spherical mask, so nothing outside the particle's support is
    learned.
    """

    def __init__(
        self,
        n: int,
        init: str = "uniform",
        amplitude: float = 1.0,
        mask_radius: float | None = None,
        oversample: int = 2,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown map init {init!r}; expected one of {INITS}")
        self.n, self.oversample = n, oversample
        if init == "uniform":
            data = amplitude * torch.rand(n, n, n, generator=generator)
        elif init == "sphere":
            data = amplitude * soft_sphere(n, n / 4)
        else:
            data = torch.zeros(n, n, n)
        self.data = nn.Parameter(data)
        mask = soft_sphere(n, mask_radius) if mask_radius is not None else torch.ones(n, n, n)
        self.register_buffer("mask", mask)

    def volume(self) -> torch.Tensor:
        """The current map ``(N, N, N)`` (masked)."""
        return self.data * self.mask

    def forward(self) -> FourierVolume:
        """The map's padded transform, ready for :func:`cryoposenet.physics.imaging.render_spectra`."""
        return volume_to_fourier(self.volume(), oversample=self.oversample)
