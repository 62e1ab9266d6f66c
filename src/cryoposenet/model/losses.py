"""The L2 loss in Fourier space, band-limited, with winner-take-all over pose hypotheses.

Images are compared as rfft half-planes (see :mod:`cryoposenet.physics.fourier`). With the
Parseval weights of :func:`band_weights` the full-band loss equals the real-space mean squared
error per pixel; a radius ``k_max`` < N/2 restricts it to a low-pass disc (coarse-to-fine).

Each image may come with several candidate renderings (one per encoder head, and with
``symmetric`` each also rotated in-plane by 180°, cryoAI's symmetric loss); the loss of an image
is the smallest over its candidates, and only the winner receives gradient.
"""

from __future__ import annotations

import torch

from ..physics.fourier import half_plane_freqs, shift_phase

__all__ = [
    "band_weights",
    "candidate_spectra",
    "wta_loss",
    "flip_rotations",
    "octahedral_group",
    "expand_hypotheses",
    "nearest_rotation_loss",
    "chordal_to_deg",
]


def band_weights(n: int, k_max: float | None = None, device=None) -> torch.Tensor:
    """Weights ``(N, N//2+1)``: Parseval's half-plane counts / N⁴, zero outside radius ``k_max``.

    ``sum(w · |Y - Ŷ|²)`` is the mean squared pixel error of the real images (full band).
    """
    kx, ky = half_plane_freqs(n, device=device)
    w = torch.full_like(kx, 2.0)
    w[:, 0] = 1.0
    if n % 2 == 0:
        w[:, -1] = 1.0
    if k_max is not None:
        w = w * (kx**2 + ky**2 <= k_max**2)
    return w / n**4


def flip_rotations(rotations: torch.Tensor) -> torch.Tensor:
    """``Rz(π) · R`` for rotations ``(..., 3, 3)``: the pose whose image is R's turned by 180°."""
    return (
        rotations * torch.tensor([-1.0, -1.0, 1.0], dtype=rotations.dtype, device=rotations.device)[:, None]
    )


def octahedral_group(dtype=torch.float32, device=None) -> torch.Tensor:
    """The 24 rotations of the cube ``(24, 3, 3)`` (signed permutation matrices of determinant +1)."""
    eye = torch.eye(3, dtype=dtype, device=device)
    perms = [eye[list(p)] for p in ((0, 1, 2), (1, 2, 0), (2, 0, 1), (1, 0, 2), (0, 2, 1), (2, 1, 0))]
    signs = torch.tensor(
        [[a, b, c] for a in (1, -1) for b in (1, -1) for c in (1, -1)], dtype=dtype, device=device
    )
    mats = torch.stack([s[:, None] * p for p in perms for s in signs])
    return mats[torch.linalg.det(mats) > 0]


def expand_hypotheses(rotations: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
    """Candidate poses ``G_k · R_h`` ``(B, H·K, 3, 3)`` from ``(B, H, 3, 3)`` and a group ``(K, 3, 3)``.

    The group's 180° turn about z makes the symmetric loss redundant when the group is used.
    """
    if group is None:
        return rotations
    b, h = rotations.shape[:2]
    return (group[None, None] @ rotations[:, :, None]).reshape(b, h * len(group), 3, 3)


def candidate_spectra(
    slices: torch.Tensor,
    symmetric: bool,
    ctf: torch.Tensor | None = None,
    translations_px: torch.Tensor | None = None,
) -> torch.Tensor:
    """Candidate image spectra ``(B, C, N, N//2+1)`` from central slices ``(B, H, N, N//2+1)``.

    ``C = 2H`` with ``symmetric`` (the slice at ``Rz(π)·R`` is the complex conjugate of the slice
    at ``R`` for a real map), else ``H``. ``ctf`` ``(B, N, N//2+1)``, ``translations_px`` ``(B, 2)``.
    """
    if symmetric:
        slices = torch.cat([slices, slices.conj()], dim=1)
    n = slices.shape[-2]
    if translations_px is not None:
        slices = slices * shift_phase(translations_px.to(slices.real.dtype), n)[:, None]
    if ctf is not None:
        slices = slices * ctf[:, None]
    return slices


def wta_loss(
    target: torch.Tensor, candidates: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winner-take-all L2: ``(loss, per_image (B,), winner (B,))``.

    ``target`` ``(B, N, N//2+1)`` spectra, ``candidates`` ``(B, C, N, N//2+1)``; ``loss`` is the
    batch mean of the per-image minimum over candidates.
    """
    diff = torch.view_as_real(candidates - target[:, None])  # |z|² as re² + im²: no sqrt, no sgn
    err = (weights * diff.square().sum(dim=-1)).sum(dim=(-2, -1))
    per_image, winner = err.min(dim=1)
    return per_image.mean(), per_image, winner


def nearest_rotation_loss(hypotheses: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image ``(B,)`` squared chordal distance ``‖R_h − T‖²_F`` from ``target`` ``(B, 3, 3)``
    (or its in-plane flip ``Rz(π)·T``, which gives the same image up to a 180° turn) to the nearest
    of the ``hypotheses`` ``(B, H, 3, 3)``: pulls the closest head onto a pose found by search."""
    targets = torch.stack([target, flip_rotations(target)], dim=1)  # (B, 2, 3, 3)
    dist = (hypotheses[:, :, None] - targets[:, None]).square().sum(dim=(-2, -1))  # (B, H, 2)
    return dist.flatten(1).min(dim=1).values


def chordal_to_deg(squared_chordal: torch.Tensor) -> torch.Tensor:
    """Rotation angle (degrees) from the squared chordal distance ``‖R₁ − R₂‖²_F = 4 (1 − cos θ)``."""
    return torch.rad2deg(torch.acos((1 - squared_chordal / 4).clamp(-1.0, 1.0)))
