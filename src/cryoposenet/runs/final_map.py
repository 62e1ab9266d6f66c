"""The run's final poses and map: every training image's pose (refined against the map), then
the training images backprojected at those poses.

Gradient descent leaves the map behind the poses: its last steps saw a few thousand images at
the poses of their time, while the final pass gives every image its best pose under that map.
Backprojecting all training images at those poses (and shifts, with CTF) is the map they imply,
the classical reconstruction step of iterative refinement. On the suite it is as sharp as the
trained map or sharper (docs/training.md, "The map from the final poses"), and ``predict``'s local
refinement against it is as good or better. It is ``map.mrc``, for every pose mode (with
``--poses known``: the known poses' backprojection), and the checkpoint carries it beside the
trained map (``predict`` uses it; ``--resume`` trains on from the trained map, so a run extended
later is the run trained that long). Maps are kept unmasked, like the trained map's own ``data``:
a support mask, if any, is applied once, where the map is used and where ``map.mrc`` is written.

The backprojection is kept only where it explains the training images better than the trained
map at the final poses (:func:`misfit`, full band, 1000 images): on every noisy run of the suite
it does (0 dB and −10 dB), on noiseless images it does not: the trained map fits the decoder's
own images exactly while the backprojection's interpolation leaves a misfit five times larger
(the demo: 0.0041 against 0.0012), and `predict`'s held-out poses with it were 0.38° against
0.17°. Then the trained map is the final map.

``TrainConfig.final_rounds`` (default 2) repeats the step for encoder runs: the poses are refined
against the backprojection (as the final pass refines them against the trained map) and the
images backprojected again. On chain A at −10 dB the second round takes the map from 6.03 Å to
5.79 Å (the true poses' backprojection: 5.01 Å), for one more refinement pass.

Without CTF the images are zero-padded before insertion (each slice sampled four times as
densely; chain A at −10 dB: 6.05 Å, against 6.20 Å unpadded). With CTF they are inserted at their
own size, the adjoint of the decoder, whose CTF acts on the image grid as the simulator's does (a
16-px CTF set backprojects to a correlation of 0.996 with the truth so, 0.88 padded).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from ..analysis.reconstruct import backproject
from ..model.losses import band_weights
from ..model.modes import eval_mode
from ..training import distributed
from ..training.data import pass_progress, read_chunks
from ..training.refine import refine_fits, slice_misfits
from ..training.train import ParticleData, TrainState, batch_targets, final_poses

__all__ = [
    "final_map",
    "final_poses_and_map",
    "final_rotations",
    "holding_map",
    "misfit",
    "WIENER",
    "MISFIT_IMAGES",
]

WIENER = 1e-2  # as `cryoposenet backproject`: λ = 1 % of the mean CTF² weight per voxel
MISFIT_IMAGES = 1000  # training images (evenly spaced) on which the maps' fits are compared

log = logging.getLogger(__name__)


def final_map(
    data: ParticleData,
    rotations: torch.Tensor,
    translations_px: torch.Tensor | None,
    show: bool = True,
) -> torch.Tensor:
    """The map ``(N, N, N)`` (training box, images' units) backprojected from ``data``'s images at
    ``rotations`` ``(M, 3, 3)`` and ``translations_px`` ``(M, 2)`` (training pixels; None: the
    data's own, if any). Unmasked, like the trained map's ``data``: a run with a support mask
    applies it once, where the map is used (``volume()``) and where ``map.mrc`` is written."""
    shifts = translations_px if translations_px is not None else data.translations_px
    acc = backproject(
        data.images,
        rotations,
        shifts,
        data.ctf,
        data.apix,
        dtype=torch.float32,
        desc="final map",
        show=show,
        pad_images=data.ctf is None,  # see the module docstring
    )
    return acc.volume(WIENER).float()


@contextlib.contextmanager
def holding_map(state: TrainState, volume: torch.Tensor) -> Iterator[TrainState]:
    """``state`` with its map set to ``volume`` ``(N, N, N)`` (images' units) inside the block
    (e.g. to evaluate the final map as training evaluates its own), the trained map after."""
    data = state.volume.data
    kept = data.detach().clone()
    with torch.no_grad():
        data.copy_(volume.to(data) * state.scale)
    try:
        yield state
    finally:
        with torch.no_grad():
            data.copy_(kept)


@torch.no_grad()
def misfit(
    state: TrainState,
    data: ParticleData,
    rotations: torch.Tensor,
    translations_px: torch.Tensor | None,
    rows: torch.Tensor,
    batch_size: int = 256,
) -> float:
    """Mean L2 misfit of the images ``rows`` at their ``rotations`` ``(M, 3, 3)`` (and shifts:
    ``translations_px`` ``(M, 2)``, or the data's) under the state's map, full band, as training
    scores them: the decoder's likelihood of that map given those poses."""
    dev = state.config.device
    with eval_mode(state.volume):
        fvol = state.volume()
    weights = band_weights(data.box, device=dev)
    total = 0.0
    for positions, images in read_chunks(data.images, rows, batch_size):
        r = rows[positions]
        _, target, ctf, shifts = batch_targets(state, data, r, images)
        if translations_px is not None:
            shifts = translations_px[r].to(dev)
        start = rotations[r].to(dev, torch.float32)
        total += slice_misfits(fvol, start, target, ctf, shifts, weights).sum().item()
    return total / len(rows)


def _rank_share(state: TrainState, m: int) -> int:
    """How many of ``m`` rows this process handles in a pass split across ranks."""
    return m if state.parallel is None else len(state.parallel.shard(torch.arange(m)))


def final_rotations(state: TrainState, data: ParticleData, show: bool):
    """A rotation ``(M, 3, 3)`` per training image, refined against the map when the encoder made
    them, and the searched translations ``(M, 2)`` in training pixels (None unless searched); each
    pass over the particles shows a progress bar (under torchrun: a share per rank)."""
    with pass_progress("final poses", _rank_share(state, len(data)), show):
        rotations, translations = final_poses(state, data)
    return _refined_poses(state, data, rotations, translations, show)


def _refined_poses(state: TrainState, data: ParticleData, rotations, translations, show: bool):
    """``(rotations, translations)`` refined against the state's map (encoder runs with
    ``refine_steps``; others as given), split across ranks under torchrun."""
    cfg = state.config
    if cfg.poses != "encoder" or cfg.refine_steps <= 0:
        return rotations, translations

    def refine(rows: torch.Tensor):
        start = None if translations is None else translations[rows]
        return refine_fits(state, data, rotations[rows], rows, cfg.refine_steps, translations=start)

    with pass_progress("refine poses", _rank_share(state, len(data)), show):
        return distributed.split_pose_rows(state.parallel, len(data), refine)


def final_poses_and_map(state: TrainState, data: ParticleData, show: bool):
    """``(rotations, translations, map)``: :func:`final_rotations` and the map that explains the
    training images better at those poses (:func:`~cryoposenet.runs.final_map.misfit`): their
    backprojection (:func:`~cryoposenet.runs.final_map.final_map`) or the trained map. When the
    backprojection wins, ``final_rounds - 1`` times more (encoder runs): the poses refined against
    it and backprojected again. Every rank makes each map and the same choice."""
    rotations, translations = final_rotations(state, data, show)
    volume = final_map(data, rotations, translations, show=show)
    rows = torch.linspace(0, len(data) - 1, min(MISFIT_IMAGES, len(data))).round().long()
    trained_fit = misfit(state, data, rotations, translations, rows)
    with holding_map(state, volume) as held:
        backprojected_fit = misfit(held, data, rotations, translations, rows)
    if backprojected_fit >= trained_fit:
        log.info("final map: the trained map (it fits the images better than their backprojection)")
        return rotations, translations, (state.volume.data.detach() / state.scale).cpu()  # unmasked
    cfg = state.config
    rounds = cfg.final_rounds if cfg.poses == "encoder" and cfg.refine_steps > 0 else 1
    for _ in range(rounds - 1):
        with holding_map(state, volume) as held:
            rotations, translations = _refined_poses(held, data, rotations, translations, show)
        volume = final_map(data, rotations, translations, show=show)
    return rotations, translations, volume
