"""RELION's contrast transfer function, in RELION's units.

``CTF(s) = sqrt(1 - w²)·sin χ + w·cos χ`` with
``χ = π·λ·Δf·s² − (π/2)·Cs·λ³·s⁴ + phase_shift`` and
``Δf(θ) = ½(U + V) + ½(U − V)·cos 2(θ − defocus_angle)``; s in 1/Å, defocus positive for
underfocus, so the CTF is positive at low frequency and images keep the density's sign.
"""

from __future__ import annotations

import math

import torch

from .fourier import half_plane_freqs_angstrom

__all__ = ["electron_wavelength_angstrom", "ctf_2d", "ctf_half_plane"]


def electron_wavelength_angstrom(voltage_kv: float | torch.Tensor) -> float | torch.Tensor:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV (0.0197 Å at 300 kV)."""
    v = voltage_kv * 1e3
    if isinstance(v, torch.Tensor):
        return 12.2642598 / torch.sqrt(v * (1 + 0.978476e-6 * v))
    return 12.2642598 / math.sqrt(v * (1 + 0.978476e-6 * v))


def _col(x, like: torch.Tensor) -> torch.Tensor:
    """A scalar or ``(B,)`` parameter as ``(B or 1, 1, 1)`` on ``like``'s device and dtype."""
    return torch.as_tensor(x, dtype=like.dtype, device=like.device).reshape(-1, 1, 1)


def ctf_2d(
    sx: torch.Tensor,
    sy: torch.Tensor,
    defocus_u_A,
    defocus_v_A,
    defocus_angle_deg,
    voltage_kv,
    cs_mm,
    amplitude_contrast,
    phase_shift_deg=0.0,
) -> torch.Tensor:
    """CTF values ``(B, H, W)`` at spatial frequencies ``sx, sy`` ``(H, W)`` in 1/Å.

    Each parameter is a scalar or a ``(B,)`` tensor (one value per image).
    """
    lam = electron_wavelength_angstrom(_col(voltage_kv, sx))
    cs_A = _col(cs_mm, sx) * 1e7
    s2 = sx**2 + sy**2
    theta = torch.atan2(sy, sx)
    u, v = _col(defocus_u_A, sx), _col(defocus_v_A, sx)
    ang = torch.deg2rad(_col(defocus_angle_deg, sx))
    df = 0.5 * (u + v) + 0.5 * (u - v) * torch.cos(2 * (theta - ang))
    chi = math.pi * lam * df * s2 - 0.5 * math.pi * cs_A * lam**3 * s2**2
    chi = chi + torch.deg2rad(_col(phase_shift_deg, sx))
    w = _col(amplitude_contrast, sx)
    return torch.sqrt(1 - w**2) * torch.sin(chi) + w * torch.cos(chi)


def ctf_half_plane(n: int, apix: float, device=None, dtype=torch.float32, **params) -> torch.Tensor:
    """CTF ``(B, n, n//2+1)`` on the half-plane grid of :mod:`.fourier` for ``n``-pixel images.

    ``params`` are :func:`ctf_2d`'s keyword parameters.
    """
    sx, sy = half_plane_freqs_angstrom(n, apix, device=device, dtype=dtype)
    return ctf_2d(sx, sy, **params)
