"""Evaluation of a reconstruction against a reference: maps and poses after global alignment.

Produces the SPEC.md keys: ``fsc05_A``, ``fsc0143_A``, ``pose_mae_deg``, ``pose_median_deg``,
``handedness`` (``same`` / ``flipped``), ``n_images``; a key that cannot be computed is None.

Beyond SPEC.md: when the reference map is (pseudo-)symmetric (a self-rotation correlating
≥ ``SYMMETRY_THRESHOLD``, e.g. 4AKE's 2-fold), poses ``R`` and ``R·S`` give the same image and the
SPEC pose error reads ~90° for a perfect reconstruction. ``pseudo_symmetry`` then describes the
symmetry and ``pose_mae_sym_deg`` / ``pose_median_sym_deg`` are the errors to each image's
nearest branch; the map is aligned by that symmetry-aware fit before its FSC.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..io.mrc import read_map
from ..io.star import ParticleTable, read_star
from ..physics.fourier_crop import fourier_crop
from ..physics.rotations import relion_angles_to_matrix
from .map_alignment import align_maps, centre_on, self_correlations, self_symmetry
from .metrics import (
    Alignment,
    align_map,
    align_rotations,
    apply_alignment,
    fsc,
    resolution_at,
    rotation_angle_deg,
    symmetry_group,
)

__all__ = [
    "EvaluationResult",
    "matched_rotations",
    "matched_rows",
    "heldout_figures",
    "evaluate_maps",
    "evaluate_files",
    "detect_symmetry",
    "SYMMETRY_THRESHOLD",
]

# Self-rotation correlation (map low-passed to ≤ 40 px) that every element of a candidate group must
# reach for the map to count as symmetric: 4AKE's 2-fold scores 0.95; smooth asymmetric test maps
# reach 0.91 for one rotation but not for its powers.
SYMMETRY_THRESHOLD = 0.92


@dataclass
class EvaluationResult:
    """Figures of one evaluation; ``fsc_curve`` is the aligned map's FSC against the reference."""

    fsc05_A: float | None = None
    fsc0143_A: float | None = None
    pose_mae_deg: float | None = None
    pose_median_deg: float | None = None
    handedness: str | None = None
    n_images: int | None = None
    pose_mae_sym_deg: float | None = None
    pose_median_sym_deg: float | None = None
    pseudo_symmetry: dict | None = None
    symmetry: np.ndarray | None = None  # the reference's group (K, 3, 3) when one was found
    fsc_curve: np.ndarray | None = None

    def to_json(self) -> dict:
        keys = ("fsc05_A", "fsc0143_A", "pose_mae_deg", "pose_median_deg", "handedness", "n_images")
        out = {k: getattr(self, k) for k in keys}
        if self.pseudo_symmetry is not None:
            out.update(
                pseudo_symmetry=self.pseudo_symmetry,
                pose_mae_sym_deg=self.pose_mae_sym_deg,
                pose_median_sym_deg=self.pose_median_sym_deg,
            )
        return out


def detect_symmetry(
    reference: np.ndarray, threshold: float = SYMMETRY_THRESHOLD
) -> tuple[np.ndarray | None, dict]:
    """The reference's (pseudo-)symmetry group ``(K, 3, 3)`` or None, and a description of it."""
    t, corr = self_symmetry(reference)
    info = {"correlation": round(corr, 4), "angle_deg": round(float(rotation_angle_deg(t)), 2)}
    group = symmetry_group(t)
    if corr < threshold or self_correlations(reference, group[1:]).min() < threshold:
        return None, info
    return group, {**info, "order": len(group)}


def matched_rotations(est: ParticleTable, ref: ParticleTable) -> tuple[np.ndarray, np.ndarray]:
    """Rotation stacks ``(M, 3, 3)`` of the particles both tables hold, matched on ``rlnImageName``."""
    for t in (est, ref):
        if not t.has_angles:
            raise InputError("no rlnAngleRot/Tilt/Psi columns", t.source)
    i, j = matched_rows(est, ref)
    r_est = relion_angles_to_matrix(est.angles_deg()[i]).numpy()
    r_ref = relion_angles_to_matrix(ref.angles_deg()[j]).numpy()
    return r_est, r_ref


def matched_rows(est: ParticleTable, ref: ParticleTable) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(i, j)`` of the particles both tables hold, matched on ``rlnImageName``."""
    a = est.particles[["rlnImageName"]].assign(_i=np.arange(len(est)))
    b = ref.particles[["rlnImageName"]].assign(_j=np.arange(len(ref)))
    both = a.merge(b, on="rlnImageName")
    if len(both) == 0:
        raise InputError(f"no particle in common with {ref.source} (matched on rlnImageName)", est.source)
    return both["_i"].to_numpy(), both["_j"].to_numpy()


def heldout_figures(
    train_poses, train_ref, heldout_poses, heldout_ref, symmetry: np.ndarray | None = None
) -> dict:
    """Held-out pose errors under the global alignment found on the training poses.

    The four arguments are STAR file paths. Returns ``pose_mae_deg``, ``pose_median_deg``,
    ``n_images``; with ``symmetry`` (the reference's group, see :func:`detect_symmetry`) also
    ``pose_mae_sym_deg`` and ``pose_median_sym_deg``, the errors to each image's nearest branch.
    """
    train = matched_rotations(read_star(train_poses), read_star(train_ref))
    est, ref = matched_rotations(read_star(heldout_poses), read_star(heldout_ref))
    errors = apply_alignment(align_rotations(*train), est, ref)
    out = {"pose_mae_deg": float(errors.mean()), "pose_median_deg": float(np.median(errors))}
    out["n_images"] = len(errors)
    if symmetry is not None:
        errors = apply_alignment(align_rotations(*train, symmetry=symmetry), est, ref)
        out.update(pose_mae_sym_deg=float(errors.mean()), pose_median_sym_deg=float(np.median(errors)))
    return out


def evaluate_maps(
    volume: np.ndarray, reference: np.ndarray, apix: float, alignment: Alignment | None
) -> EvaluationResult:
    """FSC resolution of ``volume`` against ``reference`` after resampling it by ``alignment``."""
    if volume.shape != reference.shape:
        raise InputError(f"map shape {volume.shape} differs from the reference's {reference.shape}")
    aligned = align_map(volume, alignment) if alignment is not None else volume
    aligned, _ = centre_on(aligned, reference)  # searched shifts leave the map's origin free
    curve = fsc(aligned, reference)
    n = volume.shape[-1]
    return EvaluationResult(
        fsc05_A=resolution_at(curve, 0.5, n, apix),
        fsc0143_A=resolution_at(curve, 0.143, n, apix),
        fsc_curve=curve,
    )


def evaluate_files(
    map_path: str | os.PathLike | None = None,
    ref_path: str | os.PathLike | None = None,
    poses: str | os.PathLike | None = None,
    ref_poses: str | os.PathLike | None = None,
    apix: float | None = None,
    symmetry: bool = True,
) -> EvaluationResult:
    """Evaluate files: poses (when both STAR files are given) and the map (when both maps are).

    ``symmetry``: look for a (pseudo-)symmetry of the reference map and, when found, add the
    symmetry-aware pose errors and align the map by them.
    """
    if (map_path is None) != (ref_path is None) or (poses is None) != (ref_poses is None):
        raise InputError("give --map with --ref, and --poses with --ref-poses")
    if map_path is None and poses is None:
        raise InputError("nothing to evaluate: give --map/--ref and/or --poses/--ref-poses")
    result, alignment, group = EvaluationResult(), None, None
    if ref_path is not None:
        ref, ref_apix = read_map(ref_path)
        if symmetry:
            group, info = detect_symmetry(ref)
            result.pseudo_symmetry = info if group is not None else None
            result.symmetry = group
    if poses is not None:
        r_est, r_ref = matched_rotations(read_star(poses), read_star(ref_poses))
        alignment = align_rotations(r_est, r_ref)
        result.pose_mae_deg, result.pose_median_deg = alignment.mean_deg, alignment.median_deg
        result.handedness = "flipped" if alignment.mirrored else "same"
        result.n_images = len(r_est)
        if group is not None:
            alignment = align_rotations(r_est, r_ref, symmetry=group)
            result.pose_mae_sym_deg, result.pose_median_sym_deg = alignment.mean_deg, alignment.median_deg
            result.handedness = "flipped" if alignment.mirrored else "same"
    if map_path is not None:
        _evaluate_map_file(result, map_path, ref, ref_apix, apix, alignment)
    return result


def _common_box(vol, vol_apix, ref, ref_apix, path):
    """Both maps at one box: the larger Fourier-cropped to the smaller when they span the same
    field of view (a ``train --box`` map against a full-size reference); else an error."""
    if vol.shape == ref.shape:
        return vol, vol_apix, ref, ref_apix
    n, m = vol.shape[-1], ref.shape[-1]
    same_view = vol_apix and ref_apix and abs(n * vol_apix - m * ref_apix) <= 0.01 * m * ref_apix
    if not same_view or len(set(vol.shape)) != 1 or len(set(ref.shape)) != 1:
        raise InputError(f"map shape {vol.shape} differs from the reference's {ref.shape}", path)
    crop = lambda x, size: fourier_crop(torch.as_tensor(x, dtype=torch.float64), size, ndim=3).numpy()  # noqa: E731
    if n < m:
        return vol, vol_apix, crop(ref, n), vol_apix
    return crop(vol, m), ref_apix, ref, ref_apix


def _evaluate_map_file(result: EvaluationResult, map_path, ref, ref_apix, apix, alignment) -> None:
    vol, vol_apix = read_map(map_path)
    vol, vol_apix, ref, ref_apix = _common_box(vol, vol_apix, ref, ref_apix, map_path)
    if alignment is None:  # no poses: search the rotation (and mirror) between the maps
        alignment, _ = align_maps(vol, ref)
        result.handedness = "flipped" if alignment.mirrored else "same"
    pix = apix or ref_apix or vol_apix
    if pix is None:
        raise InputError("no pixel size in either map header; give --apix", map_path)
    maps = evaluate_maps(vol, ref, pix, alignment)
    result.fsc05_A, result.fsc0143_A, result.fsc_curve = maps.fsc05_A, maps.fsc0143_A, maps.fsc_curve
