"""Global pose search against the current map: an exhaustive grid over SO(3), then local grids.

Each image is compared with the map's central slices at every rotation of a near-uniform grid
(:func:`so3_grid`), within a low-pass band; the best few rotations per image are then refined on
local grids of halving spacing (:func:`local_offsets`), as in cryoDRGN's and cryoSPARC's
branch-and-bound searches. The base grid's slices are shared by all images, so its misfits are two
matrix products (:func:`grid_misfits`): the search costs a few slices and GEMMs per step, whatever
the number of particles.

Misfit: ``Σ_k w_k |Y_k − c_k S_k|²`` over the band, ``Y`` an image's spectrum (phase-shifted by its
known translation), ``c`` its CTF, ``S`` a slice, ``w`` the Parseval weights of
:func:`cryoposenet.model.losses.band_weights`, so it is the training loss of that one pose.
Rotations are composed as in :mod:`cryoposenet.training.refine`: ``exp(ω)·R``, ``ω`` in the map's frame.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ..model.losses import band_weights
from ..physics.fourier import power, shift_phase
from ..physics.projection import FourierVolume, band_indices, slice_band
from ..physics.rotations import axis_angle_to_matrix, quaternion_to_matrix
from .shift_search import phases_at, refine_shifts

__all__ = [
    "SearchTargets",
    "so3_grid",
    "grid_spacing_rad",
    "local_offsets",
    "grid_misfits",
    "candidate_misfits",
    "global_search",
    "cached_grid",
    "marginal_misfit",
]

MAX_SHIFTED_ROWS = 2048  # (image, shift) rows scored at once against the grid: a training batch of 32 × 49
SO3_VOLUME = 8 * math.pi**2  # volume of SO(3) under the metric whose distance is the rotation angle


@dataclass(frozen=True)
class SearchTargets:
    """What the images bring to a search, restricted to the band's half-plane indices ``keep``
    ``(Q,)`` of an ``n``-pixel image: ``spectra`` ``(B, Q)`` complex (known translations already
    undone), ``ctf`` ``(B, Q)`` or None, ``weights`` ``(Q,)`` (Parseval weights; zero outside the band)."""

    keep: torch.Tensor
    spectra: torch.Tensor
    ctf: torch.Tensor | None
    weights: torch.Tensor
    n: int

    @classmethod
    def from_half_planes(cls, spectra, ctf, shifts_px, weights, k_max: float) -> SearchTargets:
        """From half-plane ``spectra`` ``(B, N, N//2+1)``, ``ctf`` (same or None), ``shifts_px``
        ``(B, 2)`` or None and ``weights`` ``(N, N//2+1)``, keeping ``|k| ≤ k_max``."""
        n = spectra.shape[-2]
        keep = band_indices(n, k_max, spectra.device)
        if shifts_px is not None:  # |Y − c·p·S| = |p̄·Y − c·S| for a unit phase p
            spectra = spectra * shift_phase(shifts_px.to(spectra.real.dtype), n).conj()
        flat = spectra.reshape(len(spectra), -1)[:, keep]
        c = ctf.reshape(len(ctf), -1)[:, keep] if ctf is not None else None
        return cls(keep, flat, c, weights.reshape(-1)[keep], n)

    def inside(self, k_max: float) -> torch.Tensor:
        """Which of the ``Q`` kept frequencies ``(Q,)`` bool lie within ``|k| ≤ k_max``."""
        return band_weights(self.n, k_max, device=self.keep.device).reshape(-1)[self.keep] > 0

    def within(self, k_max: float) -> SearchTargets:
        """The same targets restricted to the narrower band ``|k| ≤ k_max``."""
        mask = self.inside(k_max)
        ctf = None if self.ctf is None else self.ctf[:, mask]
        return SearchTargets(self.keep[mask], self.spectra[:, mask], ctf, self.weights[mask], self.n)

    def rows(self, part: slice) -> SearchTargets:
        """The targets of the images ``part``."""
        ctf = None if self.ctf is None else self.ctf[part]
        return SearchTargets(self.keep, self.spectra[part], ctf, self.weights, self.n)

    def shifted(self, shifts_px: torch.Tensor) -> SearchTargets:
        """Targets ``(B·T, Q)``, row ``b·T + j`` image b with shift ``shifts_px[j]`` ``(T, 2)``
        undone: a model shifted by ``t`` fits ``Y`` as the unshifted one fits ``p̄_t·Y``."""
        phases = phases_at(shifts_px, self.n, self.keep).conj()  # (T, Q)
        spectra = (self.spectra[:, None] * phases).flatten(0, 1)
        ctf = None if self.ctf is None else self.ctf.repeat_interleave(len(shifts_px), dim=0)
        return SearchTargets(self.keep, spectra, ctf, self.weights, self.n)


def so3_grid(count: int, dtype=torch.float32) -> torch.Tensor:
    """``count`` near-uniform rotations ``(count, 3, 3)``: super-Fibonacci spirals (Alexa, CVPR 2022).

    Deterministic, any count; spacing about :func:`grid_spacing_rad` (``count`` 4608: ~15°).
    """
    phi, psi = math.sqrt(2.0), 1.533751168755204288118041
    i = torch.arange(count, dtype=torch.float64)
    s = i + 0.5
    r = torch.sqrt(s / count)
    big_r = torch.sqrt(1.0 - s / count)
    alpha, beta = 2 * math.pi * s / phi, 2 * math.pi * s / psi
    q = torch.stack([r * alpha.sin(), r * alpha.cos(), big_r * beta.sin(), big_r * beta.cos()])
    return quaternion_to_matrix(q.T.contiguous()).to(dtype)


def grid_spacing_rad(count: int) -> float:
    """Typical distance (radians) between neighbours of a uniform grid of ``count`` rotations."""
    return (SO3_VOLUME / count) ** (1 / 3)


def local_offsets(spacing_rad: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Rotations ``exp(ω)`` ``(27, 3, 3)`` for ``ω`` on the cube ``{−½, 0, ½}³ · spacing`` (the
    identity first): a grid of half the spacing over the cell around a grid point."""
    steps = torch.tensor([0.0, -0.5, 0.5], dtype=torch.float64) * spacing_rad
    omega = torch.cartesian_prod(steps, steps, steps)  # (27, 3), (0, 0, 0) first
    return axis_angle_to_matrix(omega).to(dtype=dtype, device=device)


def grid_misfits(fvol: FourierVolume, rotations: torch.Tensor, t: SearchTargets, chunk: int = 2048):
    """Misfits ``(B, G)`` of every image against the slices at ``rotations`` ``(G, 3, 3)`` (shared).

    ``Σ w|Y − cS|² = Σ w|Y|² − 2 Σ w·c·Re(Ȳ S) + Σ w·c²|S|²``: two matrix products per chunk of
    the grid.
    """
    c = t.ctf if t.ctf is not None else torch.ones_like(t.spectra.real)
    wy = t.weights * c * t.spectra  # (B, Q)
    cross_rows = torch.view_as_real(wy).flatten(1)  # (B, 2Q): Re(conj(Y)·S) = Yr·Sr + Yi·Si
    power_rows = t.weights * c.square()
    base = (t.weights * power(t.spectra)).sum(dim=1, keepdim=True)
    out = []
    for rots in rotations.split(chunk):
        s = slice_band(fvol, rots, t.keep)  # (g, Q)
        cross = cross_rows @ torch.view_as_real(s).flatten(1).T
        out.append(base - 2 * cross + power_rows @ power(s).T)
    return torch.cat(out, dim=1)


def _models(fvol: FourierVolume, rotations: torch.Tensor, t: SearchTargets, shifts=None) -> torch.Tensor:
    """Model spectra ``(B, C, Q)`` at each image's own rotations ``(B, C, 3, 3)``: slice × CTF,
    shifted by ``shifts`` ``(B, C, 2)`` when given."""
    b, c = rotations.shape[:2]
    model = slice_band(fvol, rotations.reshape(b * c, 3, 3), t.keep).reshape(b, c, -1)
    if t.ctf is not None:
        model = model * t.ctf[:, None]
    return model if shifts is None else model * phases_at(shifts, t.n, t.keep)


def _misfits(models: torch.Tensor, t: SearchTargets) -> torch.Tensor:
    """Misfits ``(B, C)`` of each image against its own model spectra ``(B, C, Q)``."""
    return (t.weights * power(t.spectra[:, None] - models)).sum(dim=-1)


def candidate_misfits(fvol: FourierVolume, rotations: torch.Tensor, t: SearchTargets, shifts=None):
    """Misfits ``(B, C)`` of each image against its own candidate rotations ``(B, C, 3, 3)``, each
    with its own shift ``(B, C, 2)`` when given."""
    return _misfits(_models(fvol, rotations, t, shifts), t)


def _best(misfits: torch.Tensor, rotations: torch.Tensor, top: int):
    """The ``top`` lowest misfits per image ``(B, top)`` and their rotations ``(B, top, 3, 3)``."""
    err, idx = misfits.topk(min(top, misfits.shape[1]), dim=1, largest=False)
    return err, torch.gather(rotations, 1, idx[..., None, None].expand(*idx.shape, 3, 3))


def _grid_best(fvol: FourierVolume, grid: torch.Tensor, t: SearchTargets, top: int, shifts=None):
    """Each image's ``top`` best misfits ``(B, top)`` over the shared ``grid`` and their rotations
    ``(B, top, 3, 3)``; with a shift grid ``shifts`` ``(T, 2)``, over every (rotation, shift) pair,
    and also their shifts ``(B, top, 2)`` (else None). The grid is scored a chunk at a time and
    only each image's best are kept: memory ``B·T × chunk``, whatever the grid."""
    if shifts is None:
        err, rots = _best(grid_misfits(fvol, grid, t), grid.expand(len(t.spectra), *grid.shape), top)
        return err, rots, None
    b, n_shift, chunk = len(t.spectra), len(shifts), 1024
    if b > 1 and b * n_shift > MAX_SHIFTED_ROWS:  # a few images at a time: memory B·T × chunk
        step = max(1, MAX_SHIFTED_ROWS // n_shift)
        parts = [_grid_best(fvol, grid, t.rows(slice(i, i + step)), top, shifts) for i in range(0, b, step)]
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))
    rows = t.shifted(shifts)
    err = torch.empty(b, 0, device=grid.device)
    idx = torch.empty(b, 0, dtype=torch.long, device=grid.device)  # shift index · G + rotation index
    for start in range(0, len(grid), chunk):
        part = grid_misfits(fvol, grid[start : start + chunk], rows).reshape(b, n_shift, -1)
        rot_idx = torch.arange(part.shape[-1], device=grid.device) + start
        pos = rot_idx + len(grid) * torch.arange(n_shift, device=grid.device)[:, None]  # (T, g)
        err = torch.cat([err, part.flatten(1)], dim=1)
        idx = torch.cat([idx, pos.flatten().expand(b, -1)], dim=1)
        err, keep = err.topk(min(top, err.shape[1]), dim=1, largest=False)
        idx = torch.gather(idx, 1, keep)
    return err, grid[idx % len(grid)], shifts[idx // len(grid)]


def polish_shifts(models: torch.Tensor, shifts, t: SearchTargets, step_px: float = 0.5):
    """Shifts ``(B, C, 2)`` refined on two local grids from ``step_px``
    (:func:`cryoposenet.training.shift_search.refine_shifts`) for each image's unshifted model spectra
    ``(B, C, Q)`` (:func:`_models` without shifts)."""
    with torch.no_grad():
        a = t.weights * t.spectra.conj()[:, None] * models.detach()
        return refine_shifts(a, shifts, t.n, t.keep, step_px)


def _descend(
    fvol, rots, found, t: SearchTargets, spacing: float, levels: int, keep: int, last: int | None = None
):
    """Local levels from each image's rotations ``rots`` ``(B, C, 3, 3)`` (their shifts ``found``
    ``(B, C, 2)`` or None): per level, every rotation's :func:`local_offsets` at ``spacing``
    (halving each level) are scored and the ``keep`` best of all kept (``last`` at the last
    level, default ``keep``); shifts follow each level, polished to ¼ pixel.

    Returns the rotations, their misfits (best first; before the last polish of shifts; None
    when ``levels`` is 0), their shifts (or None) and their unshifted models ``(B, ·, Q)``
    (:func:`_models`), rendered for the shifts' polish (None without shifts or levels).
    """
    b, models, err = len(t.spectra), None, None
    for level in range(levels):
        count = last if last is not None and level == levels - 1 else keep
        offsets = local_offsets(spacing, rots.dtype, rots.device)
        cands = (offsets[None, None] @ rots[:, :, None]).reshape(b, -1, 3, 3)  # (B, C·27, 3, 3)
        moved = None if found is None else found.repeat_interleave(len(offsets), dim=1)
        misfits = candidate_misfits(fvol, cands, t, moved)
        err, kept = misfits.topk(min(count, misfits.shape[1]), dim=1, largest=False)
        rots = torch.gather(cands, 1, kept[..., None, None].expand(*kept.shape, 3, 3))
        if moved is not None:  # a turn moves the projection's centre: the shifts follow each level
            found = torch.gather(moved, 1, kept[..., None].expand(*kept.shape, 2))
            models = _models(fvol, rots, t)
            found = polish_shifts(models, found, t, 0.25)
        spacing /= 2
    return rots, err, found, models


def levels_for_band(k_max: float, grid_size: int) -> int:
    """Local levels after a grid of ``grid_size`` rotations for a band of radius ``k_max`` px:
    the last spacing about one radian over ``k_max`` (a slice point at radius ``k`` moves ``k·θ``
    pixels when turned by ``θ``): 0 up to ``k_max`` ≈ 5, 2 at 16, 3 at 32 for the ~15° grid."""
    return max(0, round(math.log2(grid_spacing_rad(grid_size) * k_max)))


@torch.no_grad()
def global_search(
    fvol: FourierVolume, t: SearchTargets, grid: torch.Tensor, top: int = 8, levels: int = 2, shifts=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Best rotations ``(B, top, 3, 3)`` per image, best first, their misfits ``(B, top)`` and,
    with a shift grid ``shifts`` ``(T, 2)`` searched jointly, their shifts ``(B, top, 2)`` (else None).

    The whole ``grid`` ``(G, 3, 3)`` is scored, then each of the ``top`` best is refined ``levels``
    times on :func:`local_offsets` of halving spacing (each level keeps the ``top`` best of all the
    neighbours, the current ones included; shifts are polished after the grid and at each level).
    """
    err, rots, found = _grid_best(fvol, grid, t, top, shifts)
    if found is not None:  # whole pixels are coarse at the band's edge: polish before turning
        found = polish_shifts(_models(fvol, rots, t), found, t)
    rots, level_err, found, models = _descend(fvol, rots, found, t, grid_spacing_rad(len(grid)), levels, top)
    if found is None:
        return rots, err if level_err is None else level_err, None
    models = _models(fvol, rots, t) if models is None else models  # the polished shifts' misfits
    err, order = _misfits(models * phases_at(found, t.n, t.keep), t).sort(dim=1)
    rots = torch.gather(rots, 1, order[..., None, None].expand(*order.shape, 3, 3))
    return rots, err, torch.gather(found, 1, order[..., None].expand(*order.shape, 2))


@functools.lru_cache(maxsize=4)
def cached_grid(count: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """:func:`so3_grid` on ``device``, made once per (count, dtype, device)."""
    return so3_grid(count, dtype).to(device)


@torch.no_grad()
def _posterior_poses(
    fvol, grid, targets: SearchTargets, coarse: SearchTargets, top: int, shifts, levels: int, seeds: int
):
    """Each image's ``top`` poses ``(B, top, 3, 3)`` for the posterior and their shifts (or None):
    the grid's best on the ``coarse`` band, or, with ``levels``, its ``seeds`` best refined on
    :func:`_descend`'s local levels on the ``targets``' band (``top`` kept at the last level)."""
    _, poses, found = _grid_best(fvol, grid, coarse, top if levels == 0 else seeds, shifts)
    if levels == 0:
        return poses, found
    if found is not None:
        found = polish_shifts(_models(fvol, poses, targets), found, targets)
    poses, _, found, _ = _descend(
        fvol, poses, found, targets, grid_spacing_rad(len(grid)), levels, seeds, top
    )
    return poses, found


def marginal_misfit(
    fvol: FourierVolume,
    spectra,
    ctf,
    shifts_px,
    k_max: float,
    grid_size: int = 4608,
    anneal: float = 1.0,
    top: int = 16,
    shift_grid_px: torch.Tensor | None = None,
    grid_band: float | None = None,
    levels: int = 0,
    seeds: int = 2,
    map_band: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Soft-min misfit ``(B,)`` over each image's ``top`` best poses, differentiable in the
    map, each image's best rotation ``(B, 3, 3)`` and, with a shift grid ``shift_grid_px``
    ``(T, 2)`` searched jointly with the rotations (``shifts_px`` then None), its best shift
    ``(B, 2)`` (else None): ``−T log mean_k exp(−E_k / T)``,
    between the best and the mean of those misfits, whose gradient is the misfits' gradients
    weighted by the pose posterior ``softmax(−E / T)`` (expectation over the significant poses, as
    in cryoSPARC's and RELION's marginalisation, rather than one hard assignment).

    ``T = anneal · E_min / Q``: Gaussian noise whose variance is the best pose's residual, ``Q``
    the band's half-plane frequencies (each two real degrees of freedom); ``anneal`` > 1 inflates
    the noise and flattens the posterior (annealing: start soft, end near 1). The whole grid is
    scored without gradient, on ``|k| ≤ grid_band`` (default ``k_max``); with ``levels`` > 0 its
    ``seeds`` best per image are refined on local grids (:func:`_descend`) on the band ``k_max``
    and the posterior's ``top`` poses are the best of the last level (branch and bound: coarse
    band for the coarse grid). Only the ``top`` poses are rendered again with gradient (searched
    shifts polished to ¼ pixel first). With ``map_band`` > ``k_max`` the map also learns the ring
    ``k_max < |k| ≤ map_band``: its misfits, weighted by the posterior of the band ``k_max`` (poses
    from the low band, the map at every frequency, as cryoSPARC's and RELION's refinements).
    """
    widest = k_max if map_band is None else max(k_max, map_band)
    weights = band_weights(spectra.shape[-2], widest, device=spectra.device)
    full = SearchTargets.from_half_planes(spectra, ctf, shifts_px, weights, widest)
    targets = full.within(k_max) if widest > k_max else full
    coarse = targets.within(grid_band) if grid_band is not None and grid_band < k_max else targets
    grid = cached_grid(grid_size, fvol.data.dtype, fvol.data.device)
    fixed = FourierVolume(fvol.data.detach(), fvol.n, fvol.oversample)
    poses, found = _posterior_poses(fixed, grid, targets, coarse, top, shift_grid_px, levels, seeds)
    models = _models(fvol, poses, full)  # (B, top, Q), rendered once, with gradient
    if found is not None:
        found = polish_shifts(models, found, full) if levels == 0 else found
        models = models * phases_at(found, full.n, full.keep)
    residual = full.weights * power(full.spectra[:, None] - models)  # (B, top, Q)
    inner = full.inside(k_max)
    err = residual[..., inner].sum(dim=-1)  # (B, top): the posterior's band
    best = err.detach().argmin(dim=1)
    temp = anneal * err.detach().min(dim=1, keepdim=True).values.clamp_min(1e-12) / len(targets.keep)
    soft = -temp * (torch.logsumexp(-err / temp, dim=1, keepdim=True) - math.log(err.shape[1]))
    if full is not targets:  # the map's outer ring, weighted by the posterior of the inner band
        posterior = torch.softmax(-err.detach() / temp, dim=1)
        soft = soft + (posterior * residual[..., ~inner].sum(dim=-1)).sum(dim=1, keepdim=True)
    rows = torch.arange(len(err), device=err.device)
    return soft.squeeze(1), poses[rows, best], None if found is None else found[rows, best]
