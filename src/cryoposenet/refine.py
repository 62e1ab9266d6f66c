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
search's best (:mod:`cryoposenet.pose_search`, on the same band): the encoder's few gross errors
(another basin, tens of degrees off) are replaced, which local steps cannot do. Cost: the grid's
slices once per chunk of images, and 81 slices per image for the search's local levels.
"""

from __future__ import annotations

import math

import torch

from .data import read_chunks
from .model.losses import band_weights, candidate_spectra, wta_loss
from .physics.projection import slice_volume
from .physics.rotations import axis_angle_to_matrix
from .pose_search import SearchTargets, cached_grid, candidate_misfits, global_search
from .train import ParticleData, TrainState, batch_targets, eval_mode

__all__ = ["refine_poses", "REFINE_STEPS", "REFINE_LR"]

REFINE_STEPS = 40
REFINE_LR = 0.02  # radians per step at the start (Adam), cosine-decayed to a tenth


def _misfit(fvol, rotations, target, ctf, shifts, weights) -> torch.Tensor:
    """Per-image L2 misfit ``(B,)`` of the slices at ``rotations`` ``(B, 3, 3)``."""
    slices = slice_volume(fvol, rotations)[:, None]
    return wta_loss(target, candidate_spectra(slices, False, ctf, shifts), weights)[1]


def _refine_chunk(fvol, start, target, ctf, shifts, weights, steps: int, lr: float) -> torch.Tensor:
    """Rotations ``(B, 3, 3)`` refined from ``start`` for one chunk of images."""
    omega = torch.zeros(len(start), 3, dtype=start.dtype, device=start.device, requires_grad=True)
    opt = torch.optim.Adam([omega], lr=lr)
    best, best_err = start.clone(), torch.full((len(start),), math.inf, device=start.device)
    for k in range(steps + 1):
        rot = axis_angle_to_matrix(omega) @ start
        err = _misfit(fvol, rot, target, ctf, shifts, weights)
        better = err.detach() < best_err
        best = torch.where(better[:, None, None], rot.detach(), best)
        best_err = torch.where(better, err.detach(), best_err)
        if k == steps:
            break
        for group in opt.param_groups:
            group["lr"] = lr * (0.55 + 0.45 * math.cos(math.pi * k / steps))
        opt.zero_grad(set_to_none=True)
        err.sum().backward()
        opt.step()
    return best


@torch.no_grad()
def _better_of_search(fvol, start: torch.Tensor, targets: SearchTargets, grid: torch.Tensor) -> torch.Tensor:
    """Per image ``(B, 3, 3)``: ``start`` or the global search's best pose, whichever fits better."""
    found, found_err = global_search(fvol, targets, grid, top=1, levels=3)
    start_err = candidate_misfits(fvol, start[:, None], targets)[:, 0]
    return torch.where((found_err[:, 0] < start_err)[:, None, None], found[:, 0], start)


def refine_poses(
    state: TrainState,
    data: ParticleData,
    rotations: torch.Tensor,
    rows: torch.Tensor | None = None,
    steps: int = REFINE_STEPS,
    lr: float = REFINE_LR,
    batch_size: int = 256,
    k_max: float | None = None,
    search: bool = True,
) -> torch.Tensor:
    """Rotations ``(R, 3, 3)`` for the images ``rows`` (default all) of ``data``, refined from
    ``rotations`` ``(R, 3, 3)`` (e.g. :func:`cryoposenet.train.predict_poses`) against the map,
    on the band ``|k| ≤ k_max`` cycles per box (default ``N/4``, half of Nyquist).

    With ``search`` (and ``steps`` > 0) each image starts from the better fit of its given pose and
    a global search's (:func:`cryoposenet.pose_search.global_search`, same band): an encoder answer
    in the wrong basin is replaced rather than polished."""
    dev = state.config.device
    rows = torch.arange(len(data)) if rows is None else rows
    with torch.no_grad(), eval_mode(state.volume):
        fvol = state.volume()
    band = data.box / 4 if k_max is None else k_max
    weights = band_weights(data.box, band, device=dev)
    grid = cached_grid(state.config.search_grid, device=dev) if search and steps > 0 else None
    out = torch.empty(len(rows), 3, 3)  # filled in place: per-chunk outputs fragment the heap
    for positions, images in read_chunks(data.images, rows, batch_size, dev.startswith("cuda")):
        _, target, ctf, shifts = batch_targets(state, data, rows[positions], images)
        start = rotations[positions].to(dev, torch.float32)
        if grid is not None:
            targets = SearchTargets.from_half_planes(target, ctf, shifts, weights, band)
            start = _better_of_search(fvol, start, targets, grid)
        out[positions] = _refine_chunk(fvol, start, target, ctf, shifts, weights, steps, lr).cpu()
    return out
