"""Image formation for simulation, as the paper does it (no inverse crime).

1. rotate the map in real space (trilinear) and sum along z (:mod:`.projector`);
2. zero-pad the ``N``-pixel projection to ``2N``, Fourier transform, multiply by the CTF computed
   on the ``2N`` grid (RELION's formula, :func:`cryoposenet.physics.ctf.ctf_half_plane`);
3. shift by a Fourier phase on the same ``2N`` grid (content moves by ``t`` pixels,
   ``t = −origin / apix`` for a RELION origin, :func:`cryoposenet.physics.imaging.origin_to_translation`);
4. inverse transform and crop back to ``N``. Noise is added by the caller.

Images are plain sums along z of the map's voxels (as the project's decoder renders them), so a
map in volts gives images in V·pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..physics.ctf import ctf_half_plane
from ..physics.fourier import centre_crop, centre_pad, fourier_to_image, image_to_fourier, shift_phase
from ..physics.imaging import origin_to_translation
from .projector import project_rotated

__all__ = ["CTFParams", "apply_ctf_and_shift", "form_images"]


@dataclass(frozen=True)
class CTFParams:
    """Per-image CTF parameters in RELION units: defocus U/V ``(B,)`` Å, angle ``(B,)`` degrees."""

    defocus_u_A: np.ndarray
    defocus_v_A: np.ndarray
    defocus_angle_deg: np.ndarray
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1

    def subset(self, sl: slice) -> CTFParams:
        return CTFParams(
            self.defocus_u_A[sl],
            self.defocus_v_A[sl],
            self.defocus_angle_deg[sl],
            self.voltage_kv,
            self.cs_mm,
            self.amplitude_contrast,
        )

    def half_plane(self, n: int, apix: float, dtype=torch.float32) -> torch.Tensor:
        """CTF ``(B, n, n//2+1)`` on the half-plane grid of an ``n``-pixel image."""
        return ctf_half_plane(
            n,
            apix,
            dtype=dtype,
            defocus_u_A=torch.as_tensor(self.defocus_u_A, dtype=dtype),
            defocus_v_A=torch.as_tensor(self.defocus_v_A, dtype=dtype),
            defocus_angle_deg=torch.as_tensor(self.defocus_angle_deg, dtype=dtype),
            voltage_kv=self.voltage_kv,
            cs_mm=self.cs_mm,
            amplitude_contrast=self.amplitude_contrast,
            phase_shift_deg=0.0,
        )


def apply_ctf_and_shift(
    images: torch.Tensor,
    apix: float,
    ctf: CTFParams | None = None,
    origins_A: np.ndarray | None = None,
) -> torch.Tensor:
    """Images ``(B, N, N)`` → CTF-corrupted, shifted images ``(B, N, N)`` via a ``2N`` padded grid.

    ``origins_A`` ``(B, 2)`` are RELION origins (x, y) in Å: the particle's centre ends up at the
    box centre minus the origin. Returns ``images`` unchanged when both are None.
    """
    if ctf is None and origins_A is None:
        return images
    n = images.shape[-1]
    big = 2 * n
    spec = image_to_fourier(centre_pad(images, big, ndim=2))
    if ctf is not None:
        spec = spec * ctf.half_plane(big, apix, dtype=images.dtype)
    if origins_A is not None:
        t_px = origin_to_translation(torch.as_tensor(origins_A, dtype=images.dtype), apix)
        spec = spec * shift_phase(t_px, big)
    return centre_crop(fourier_to_image(spec, big), n, ndim=2).contiguous()


def form_images(
    volume: torch.Tensor,
    rotations: torch.Tensor,
    apix: float,
    ctf: CTFParams | None = None,
    origins_A: np.ndarray | None = None,
    radius_px: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise-free images of ``volume`` ``(N, N, N)`` at RELION matrices ``(B, 3, 3)``.

    Returns ``(projections, signal)``, each ``(B, N, N)``: the bare real-space projections and the
    CTF-corrupted, shifted signal.
    """
    proj = project_rotated(volume, rotations, radius_px=radius_px)
    return proj, apply_ctf_and_shift(proj, apix, ctf, origins_A)
