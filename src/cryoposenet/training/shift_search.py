"""Translation search: each image's in-plane shift on a disc of whole pixels, then finer local grids.

Shifts are ``translations_px`` (x, y) in training pixels, as in
:class:`cryoposenet.training.train.ParticleData`: the shift that moves the centred projection onto the
image, so a model spectrum ``M`` shifted by ``t`` is ``p_t·M`` with ``p_t`` the phases of
:func:`cryoposenet.physics.fourier.shift_phase`. The misfit

    ``Σ_k w_k |Y_k − p_t(k) M_k|² = Σ w|Y|² + Σ w|M|² − 2 Re Σ_k p_t(k) · w_k Ȳ_k M_k``

depends on ``t`` through one inner product, so the misfits of ``C`` models of an image against
``T`` shifts are one complex matrix product ``(C, Q) × (Q, T)`` (``Q`` the band's frequencies),
and a local grid around each model's own best shift ``s`` is another (``p_{s+δ} = p_s·p_δ``: the
offsets ``δ`` are shared). Spectra here are flattened half-planes restricted to band indices
``keep`` (see :func:`cryoposenet.physics.projection.band_indices`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..physics.fourier import half_plane_freqs

if TYPE_CHECKING:
    from .train import ParticleData, TrainConfig

__all__ = [
    "shift_grid",
    "shift_search_grid",
    "default_shift_range",
    "phases_at",
    "best_shifts",
    "refine_shifts",
    "candidate_shifts",
]

LOCAL_LEVELS = 2  # local grids of ½ and ¼ pixel after the whole-pixel grid


def default_shift_range(box: int) -> float:
    """Half-width (training pixels) searched when a STAR file has no origins: 5 % of the box, and
    at least 3 px (±7 Å at 64 px of 2.4 Å; picking errors are a few nanometres at most)."""
    return max(3.0, math.ceil(0.05 * box))


def shift_grid(range_px: float, step_px: float = 1.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """Shifts ``(T, 2)`` on the square lattice of ``step_px`` within the disc ``|t| ≤ range_px``,
    ``(0, 0)`` first (``range_px`` 3: 29 shifts)."""
    k = int(math.floor(range_px / step_px + 1e-9))
    axis = torch.arange(-k, k + 1, dtype=torch.float64) * step_px
    pts = torch.cartesian_prod(axis, axis)
    pts = pts[pts.square().sum(dim=1) <= range_px**2 + 1e-9]
    pts = pts[torch.argsort(pts.square().sum(dim=1), stable=True)]
    return pts.to(dtype=dtype, device=device)


def shift_search_grid(config: TrainConfig, data: ParticleData, device=None) -> torch.Tensor | None:
    """The whole-pixel shifts ``(T, 2)`` a run searches for each image: None when the data carry
    translations (known or none) or ``config.shift_range`` is 0."""
    if data.translations_px is not None or config.shift_range <= 0:
        return None
    return shift_grid(config.shift_range, device=device)


def _offsets(step_px: float, dtype, device) -> torch.Tensor:
    """The 3×3 local grid ``(9, 2)`` of ``step_px`` around a shift, ``(0, 0)`` first."""
    axis = torch.tensor([0.0, -1.0, 1.0], dtype=dtype, device=device) * step_px
    return torch.cartesian_prod(axis, axis)


def phases_at(shifts_px: torch.Tensor, n: int, keep: torch.Tensor) -> torch.Tensor:
    """Phases ``p_t`` ``(..., Q)`` of :func:`~cryoposenet.physics.fourier.shift_phase` for shifts
    ``(..., 2)``, at the flattened half-plane indices ``keep`` ``(Q,)`` of an ``n``-pixel image."""
    kx, ky = half_plane_freqs(n, device=shifts_px.device, dtype=shifts_px.dtype)
    kx, ky = kx.reshape(-1)[keep], ky.reshape(-1)[keep]
    phase = shifts_px[..., 0, None] * kx + shifts_px[..., 1, None] * ky
    return torch.polar(torch.ones_like(phase), -2 * math.pi * phase / n)


def _scores(a: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """``Re Σ_q a_q p_q``: ``a`` ``(B, C, Q)`` against shared phases ``(T, Q)``, as ``(B, C, T)``."""
    return (a @ phases.T).real


@torch.no_grad()
def refine_shifts(
    a: torch.Tensor, start: torch.Tensor, n: int, keep: torch.Tensor, step_px: float = 0.5,
    levels: int = LOCAL_LEVELS,
) -> torch.Tensor:  # fmt: skip
    """Shifts ``(B, C, 2)`` refined from ``start`` on ``levels`` local 3×3 grids of halving
    ``step_px``, maximising ``Re Σ p_t·a`` for ``a = w·Ȳ·M`` ``(B, C, Q)``; each level keeps the
    current shift unless a neighbour scores higher."""
    best = start
    for _ in range(levels):
        offsets = _offsets(step_px, best.dtype, best.device)  # (9, 2)
        scores = _scores(a * phases_at(best, n, keep), phases_at(offsets, n, keep))  # (B, C, 9)
        best = best + offsets[scores.argmax(dim=-1)]
        step_px /= 2
    return best


@torch.no_grad()
def best_shifts(
    target: torch.Tensor, models: torch.Tensor, weights: torch.Tensor, grid: torch.Tensor,
    n: int, keep: torch.Tensor, levels: int = LOCAL_LEVELS,
) -> torch.Tensor:  # fmt: skip
    """Each model's best shift ``(B, C, 2)``: the lowest misfit of ``target`` ``(B, Q)`` against
    ``p_t·models`` ``(B, C, Q)`` (CTF applied, unshifted) over the shifts ``grid`` ``(T, 2)``, then
    :func:`refine_shifts` from its step/2 (``weights`` ``(Q,)``: the loss's, at ``keep``)."""
    a = weights * target.conj()[:, None] * models  # (B, C, Q)
    best = grid[_scores(a, phases_at(grid, n, keep)).argmax(dim=-1)]  # (B, C, 2)
    step = float((grid[1] - grid[0]).abs().max()) if len(grid) > 1 else 1.0
    return refine_shifts(a, best, n, keep, step / 2, levels)


def candidate_shifts(target: torch.Tensor, models: torch.Tensor, weights: torch.Tensor, grid: torch.Tensor):
    """:func:`best_shifts` for half-plane spectra: ``target`` ``(B, N, N//2+1)``, ``models``
    ``(B, C, N, N//2+1)`` (CTF applied), ``weights`` ``(N, N//2+1)``, restricted to where the
    weights are nonzero; shifts ``(B, C, 2)``."""
    n = target.shape[-2]
    keep = torch.nonzero(weights.reshape(-1) > 0).squeeze(1)
    y, m = target.reshape(len(target), -1)[:, keep], models.reshape(*models.shape[:2], -1)[..., keep]
    return best_shifts(y, m, weights.reshape(-1)[keep], grid.to(target.real.dtype), n, keep)
