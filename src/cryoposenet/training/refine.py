"""Local refinement of poses against a trained map: a few gradient steps on each image's rotation.

The encoder's poses are already close (a few degrees); what is left is regression error that the
map itself can correct. Each image's rotation ``R₀`` is perturbed as ``R = exp(ω) · R₀`` with its
own axis-angle vector ``ω`` (radians, in the map's frame), and ``ω`` follows Adam on that image's L2
misfit (same loss, CTF and shifts as training, map fixed) within half of Nyquist: the full band
makes the landscape rugged (held-out error on 4AKE at 0 dB, 64 px: 2.2° at full band, 1.5° at
half band; docs/training.md). Images are independent, so a
chunk of images is one batched problem; each image keeps the rotation of its lowest misfit seen, so
refinement never makes an image's fit worse. Cost: ``steps`` slice-and-backward passes per image,
about ``steps`` times a forward pass, and still independent of how many particles there are.

Before the local steps each image's start is the better fit of the given pose and a global pose
search's best (:mod:`cryoposenet.training.pose_search`, on the same band): the encoder's few gross errors
(another basin, tens of degrees off) are replaced, which local steps cannot do. Cost: the grid's
slices once per chunk of images, and 81 slices per image for the search's local levels.

After the local steps each rotation is replaced by the posterior mean around it
(:mod:`cryoposenet.training.pose_average`): at −10 dB the best fit moves with the noise, and the
mean is the estimate of least expected error. Cost: 343 band slices per image.
"""

from __future__ import annotations

import math

import torch

from ..model.losses import band_weights, candidate_spectra, wta_loss
from ..model.modes import eval_mode
from ..physics.projection import slice_volume
from ..physics.rotations import axis_angle_to_matrix
from .data import read_chunks
from .pose_average import posterior_mean_rotations
from .pose_search import SearchTargets, cached_grid, candidate_misfits, global_search
from .shift_search import shift_search_grid
from .train import ParticleData, TrainState, batch_targets

__all__ = ["refine_poses", "refine_fits", "searched_poses", "slice_misfits", "REFINE_STEPS", "REFINE_LR"]

REFINE_STEPS = 40
REFINE_LR = 0.02  # radians per step at the start (Adam), cosine-decayed to a tenth
SHIFT_LR = 0.05  # pixels per step at the start, the same decay


def slice_misfits(fvol, rotations, target, ctf, shifts, weights) -> torch.Tensor:
    """Per-image L2 misfit ``(B,)`` of the slices at ``rotations`` ``(B, 3, 3)``."""
    slices = slice_volume(fvol, rotations)[:, None]
    return wta_loss(target, candidate_spectra(slices, False, ctf, shifts), weights)[1]


def _refine_chunk(fvol, start, shifts, target, ctf, weights, steps: int, lr: float, free_shifts: bool):
    """Rotations ``(B, 3, 3)`` refined from ``start`` for one chunk of images, and their shifts
    ``(B, 2)`` (or None): ``shifts`` as given, or refined from them too with ``free_shifts``."""
    omega = torch.zeros(len(start), 3, dtype=start.dtype, device=start.device, requires_grad=True)
    groups = [{"params": [omega], "lr": lr}]
    if free_shifts:
        delta = torch.zeros_like(shifts, requires_grad=True)
        groups.append({"params": [delta], "lr": SHIFT_LR})
    opt = torch.optim.Adam(groups)
    best, best_err = start.clone(), torch.full((len(start),), math.inf, device=start.device)
    best_shift = shifts
    for k in range(steps + 1):
        rot, moved = axis_angle_to_matrix(omega) @ start, shifts + delta if free_shifts else shifts
        err = slice_misfits(fvol, rot, target, ctf, moved, weights)
        better = err.detach() < best_err
        best = torch.where(better[:, None, None], rot.detach(), best)
        if free_shifts:
            best_shift = torch.where(better[:, None], moved.detach(), best_shift)
        best_err = torch.where(better, err.detach(), best_err)
        if k == steps:
            break
        for group, base_lr in zip(opt.param_groups, (lr, SHIFT_LR), strict=False):
            group["lr"] = base_lr * (0.55 + 0.45 * math.cos(math.pi * k / steps))
        opt.zero_grad(set_to_none=True)
        err.sum().backward()
        opt.step()
    return best, best_shift


def _search_best(fvol, targets: SearchTargets, grid, shift_grid=None):
    """Each image's best pose ``(B, 3, 3)`` from the global search (4 kept through three local
    levels), its misfit ``(B,)`` and its shift ``(B, 2)`` (searched over ``shift_grid``; else None):
    the search of :func:`refine_fits` and :func:`searched_poses`."""
    top = 4  # noisy images' best grid pose is often in another basin; shifts trade off with turns
    found, err, shift = global_search(fvol, targets, grid, top, levels=3, shifts=shift_grid)
    return found[:, 0], err[:, 0], None if shift is None else shift[:, 0]


@torch.no_grad()
def _better_of_search(fvol, start, start_shifts, targets: SearchTargets, grid, shift_grid=None):
    """Per image: ``start`` ``(B, 3, 3)`` (with ``start_shifts`` ``(B, 2)`` or None) or the global
    search's best pose (and shift, searched over ``shift_grid``), whichever fits better."""
    found, found_err, found_shift = _search_best(fvol, targets, grid, shift_grid)
    given = None if start_shifts is None else start_shifts[:, None]
    better = found_err < candidate_misfits(fvol, start[:, None], targets, given)[:, 0]
    rot = torch.where(better[:, None, None], found, start)
    if found_shift is None:
        return rot, start_shifts
    return rot, torch.where(better[:, None], found_shift, start_shifts)


def refine_fits(
    state: TrainState,
    data: ParticleData,
    rotations: torch.Tensor,
    rows: torch.Tensor | None = None,
    steps: int = REFINE_STEPS,
    lr: float = REFINE_LR,
    batch_size: int = 256,
    k_max: float | None = None,
    search: bool = True,
    translations: torch.Tensor | None = None,
    average: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotations ``(R, 3, 3)`` for the images ``rows`` (default all) of ``data``, refined from
    ``rotations`` ``(R, 3, 3)`` (e.g. :func:`cryoposenet.training.train.predict_poses`) against the map,
    on the band ``|k| ≤ k_max`` cycles per box (default ``N/4``, half of Nyquist), and, when the
    run searches shifts (:func:`cryoposenet.training.shift_search.shift_search_grid`),
    translations ``(R, 2)`` px
    refined with them from ``translations`` (default 0; else None).

    With ``search`` (and ``steps`` > 0) each image starts from the better fit of its given pose and
    a global search's (:func:`cryoposenet.training.pose_search.global_search`, same band, shifts searched
    jointly): an encoder answer in the wrong basin is replaced rather than polished. With
    ``average`` (and ``steps`` > 0) each refined rotation is then replaced by the posterior mean
    around it (:func:`cryoposenet.training.pose_average.posterior_mean_rotations`, same band)."""
    dev = state.config.device
    rows = torch.arange(len(data)) if rows is None else rows
    with torch.no_grad(), eval_mode(state.volume):
        fvol = state.volume()
    band = data.box / 4 if k_max is None else k_max
    weights = band_weights(data.box, band, device=dev)
    shift_grid = shift_search_grid(state.config, data, dev)
    grid = cached_grid(state.config.search_grid, device=dev) if search and steps > 0 else None
    out = torch.empty(len(rows), 3, 3)  # filled in place: per-chunk outputs fragment the heap
    out_shifts = None if shift_grid is None else torch.zeros(len(rows), 2)
    for positions, images in read_chunks(data.images, rows, batch_size, dev.startswith("cuda")):
        _, target, ctf, shifts = batch_targets(state, data, rows[positions], images)
        start = rotations[positions].to(dev, torch.float32)
        if shift_grid is not None:
            given = translations[positions] if translations is not None else torch.zeros(len(positions), 2)
            shifts = given.to(dev, torch.float32)
        if grid is not None:
            known = None if shift_grid is not None else shifts
            targets = SearchTargets.from_half_planes(target, ctf, known, weights, band)
            start, shifts = _better_of_search(fvol, start, shifts, targets, grid, shift_grid)
        free = shift_grid is not None
        rot, moved = _refine_chunk(fvol, start, shifts, target, ctf, weights, steps, lr, free)
        if average and steps > 0:
            final = SearchTargets.from_half_planes(target, ctf, moved, weights, band)
            rot = posterior_mean_rotations(fvol, rot, final)
        out[positions] = rot.cpu()
        if out_shifts is not None:
            out_shifts[positions] = moved.cpu()
    return out, out_shifts


@torch.no_grad()
def searched_poses(state: TrainState, data: ParticleData, rows=None, batch_size: int = 256) -> torch.Tensor:
    """Each image's best rotation ``(R, 3, 3)`` (images ``rows``, default all) from a global search
    alone against the current map: the grid and three local levels on half of Nyquist, shifts
    searched jointly where the run searches them. It is :func:`refine_fits`' global start without
    the encoder, the local steps or the posterior mean: the poses the map is learning from while
    the run searches (cost: one grid's slices per chunk and 324 slices per image)."""
    dev, band = state.config.device, data.box / 4
    rows = torch.arange(len(data)) if rows is None else rows
    with eval_mode(state.volume):
        fvol = state.volume()
    weights = band_weights(data.box, band, device=dev)
    shift_grid = shift_search_grid(state.config, data, dev)
    grid = cached_grid(state.config.search_grid, device=dev)
    out = torch.empty(len(rows), 3, 3)
    for positions, images in read_chunks(data.images, rows, batch_size, dev.startswith("cuda")):
        _, target, ctf, shifts = batch_targets(state, data, rows[positions], images)
        known = None if shift_grid is not None else shifts
        targets = SearchTargets.from_half_planes(target, ctf, known, weights, band)
        out[positions] = _search_best(fvol, targets, grid, shift_grid)[0].cpu()
    return out


def refine_poses(state: TrainState, data: ParticleData, rotations: torch.Tensor, rows=None, **options):
    """The rotations ``(R, 3, 3)`` of :func:`refine_fits` (same ``options``)."""
    return refine_fits(state, data, rotations, rows, **options)[0]
