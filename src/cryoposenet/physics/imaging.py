"""The image-formation operator ``H_φ = C_d * S_t * P_θ`` of the paper (eq. 1), batched.

RELION stores a particle's offset as ``rlnOriginX/YAngst``: the particle's centre sits at the box
centre **minus** the origin. The rendered image therefore carries the centred projection moved by
``-origin``; :func:`origin_to_translation` states that once.
"""

from __future__ import annotations

import torch

from .fourier import fourier_to_image, shift_phase
from .projection import FourierVolume, slice_volume

__all__ = ["origin_to_translation", "render_spectra", "render"]


def origin_to_translation(origin_A: torch.Tensor, apix: float) -> torch.Tensor:
    """RELION origins ``(..., 2)`` (x, y) in Å to the image translation in pixels that H_φ applies."""
    return -origin_A / apix


def render_spectra(
    fvol: FourierVolume,
    rotations: torch.Tensor,
    ctf: torch.Tensor | None = None,
    translations_px: torch.Tensor | None = None,
) -> torch.Tensor:
    """Half-plane spectra ``(B, N, N//2+1)`` of ``H_φ x`` for rotations ``(B, 3, 3)``.

    ``ctf`` is ``(B, N, N//2+1)`` real (see :func:`.ctf.ctf_half_plane`) or None;
    ``translations_px`` ``(B, 2)`` moves image content by +t (x, y) pixels, or None.
    """
    spec = slice_volume(fvol, rotations)
    if translations_px is not None:
        spec = spec * shift_phase(translations_px.to(fvol.data.dtype), fvol.n)
    if ctf is not None:
        spec = spec * ctf
    return spec


def render(
    fvol: FourierVolume,
    rotations: torch.Tensor,
    ctf: torch.Tensor | None = None,
    translations_px: torch.Tensor | None = None,
) -> torch.Tensor:
    """Real images ``(B, N, N)`` of ``H_φ x``; arguments as :func:`render_spectra`."""
    return fourier_to_image(render_spectra(fvol, rotations, ctf, translations_px), fvol.n)
