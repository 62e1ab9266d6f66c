"""The in-run evaluation (``train --ref --eval-every``): FSC against a reference map and pose
errors against the STAR file's angles, on a fixed subset of the training images."""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..analysis.evaluation import detect_symmetry, evaluate_maps
from ..analysis.map_alignment import align_maps
from ..analysis.metrics import Alignment, align_rotations
from ..analysis.views import direction_coverage, viewing_directions
from ..io.mrc import read_map
from ..training.inputs import DataSettings, reference_at
from ..training.refine import searched_poses
from ..training.schedule import searching_at
from ..training.train import ParticleData, TrainState, predict_poses

__all__ = ["make_evaluator", "EVAL_IMAGES"]

EVAL_IMAGES = 512  # images whose predicted poses are scored at each evaluation


def _subset(data: ParticleData, idx: torch.Tensor) -> ParticleData:
    pick = lambda x: None if x is None else x[idx]  # noqa: E731
    ctf = {k: v[idx] for k, v in data.ctf.items()} if data.ctf is not None else None
    return ParticleData(data.images[idx], data.apix, ctf, pick(data.translations_px), pick(data.rotations))


def make_evaluator(data: ParticleData, ref_path, settings: DataSettings):
    """A function ``state -> dict`` of FSC resolution and pose error against ground truth.

    The reference is taken at the training box (Fourier-cropped from the particles' box). With a
    (pseudo-)symmetric reference the symmetry-aware errors are logged too and the map is aligned
    by them (see :mod:`cryoposenet.analysis.evaluation`). The map is also aligned to the reference on its own
    (:func:`~cryoposenet.analysis.map_alignment.align_maps`) and the better FSC kept: while the poses
    are still far off, aligning by them would understate the map.

    The poses scored are those the map learns from: while the run searches, each image's best pose
    from a global search on the current map (:func:`~cryoposenet.training.refine.searched_poses`),
    with the encoder's own error beside them (``encoder_pose_*``); otherwise the encoder's.
    ``views_top5_share`` and ``views_min_moment``: how those poses' viewing directions cover the
    sphere (:mod:`~cryoposenet.analysis.views`; no reference needed: a run collapsing onto a great
    circle of views shows it in the second, from step ~300 on 4AKE chain A).
    """
    reference = reference_at(read_map(ref_path)[0], settings, ref_path)
    apix = settings.apix
    # Detected at the first evaluation: ranks other than 0 under torchrun build this evaluator
    # (it checks --ref) but never call it.
    symmetry = functools.cache(lambda: detect_symmetry(reference)[0])
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:EVAL_IMAGES]
    sub = _subset(data, idx)
    truth = sub.rotations.double().numpy()

    def evaluate(state: TrainState) -> dict:
        encoder = predict_poses(state, sub).double().numpy()
        searched = searching_at(state.config, max(state.step - 1, 0))
        est = searched_poses(state, sub).double().numpy() if searched else encoder
        row, alignment = _pose_figures(est, truth, symmetry())
        views = direction_coverage(viewing_directions(est))
        row.update(views_top5_share=views.top_share, views_min_moment=views.min_moment)
        if searched:
            enc = _pose_figures(encoder, truth, symmetry())[0]
            row.update({f"encoder_{k}": v for k, v in enc.items()})
        with torch.no_grad():
            vol = (state.volume.volume().detach().cpu().double() / state.scale).numpy()
        maps = evaluate_maps(vol, reference, apix, alignment)
        by_map = evaluate_maps(vol, reference, apix, align_maps(vol, reference)[0])
        maps = by_map if by_map.fsc05_A < maps.fsc05_A else maps  # poses far off misalign the map
        return {"fsc05_A": maps.fsc05_A, "fsc0143_A": maps.fsc0143_A, **row}

    return evaluate


def _pose_figures(est: np.ndarray, truth: np.ndarray, group) -> tuple[dict, Alignment]:
    """``pose_mae_deg`` / ``pose_median_deg`` of rotations ``est`` ``(M, 3, 3)`` against ``truth``
    (with a detected symmetry ``group``, also the ``_sym`` ones, to the nearest branch), and the
    alignment to align the map by (the symmetry-aware one where there is a symmetry)."""
    alignment = align_rotations(est, truth)
    row = {"pose_mae_deg": alignment.mean_deg, "pose_median_deg": alignment.median_deg}
    if group is not None:
        alignment = align_rotations(est, truth, symmetry=group)
        row.update(pose_mae_sym_deg=alignment.mean_deg, pose_median_sym_deg=alignment.median_deg)
    return row, alignment
