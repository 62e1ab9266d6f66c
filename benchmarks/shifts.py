"""Searched shifts against the truth, after removing the map's global translation.

    python benchmarks/shifts.py RUN/poses.star SIM/train.star [HELD.star SIM/heldout.star]

A learned map may sit anywhere in its box: translated by ``d`` (Å, in its own frame), it moves
image i's particle by the in-plane part of ``A_i·d`` (``A_i`` the estimated rotation; SPEC: the
image is the projection along z of the map rotated by A), so every origin differs from the truth
by ``−(A_i·d)_xy``. ``d`` is fitted by least squares on the training images; the remaining
per-image error (Å) is what the search got wrong. Held-out images (``predict``'s STAR) are
measured under the ``d`` fitted on the training images. Pose errors (degrees) are printed with
them, under the global rotation fitted on the training poses.
"""

from __future__ import annotations

import argparse

import numpy as np

from cryoposenet.analysis.evaluation import matched_rows
from cryoposenet.analysis.metrics import align_rotations, apply_alignment
from cryoposenet.io import read_star
from cryoposenet.physics.rotations import relion_angles_to_matrix


def _matched(est_path, ref_path):
    """``(rotations_est (M, 3, 3), origins_est (M, 2), rotations_ref, origins_ref)`` on shared names."""
    est, ref = read_star(est_path), read_star(ref_path)
    i, j = matched_rows(est, ref)

    def rot(t, k):
        return relion_angles_to_matrix(t.angles_deg()[k]).numpy()

    return rot(est, i), est.origins_A()[i], rot(ref, j), ref.origins_A()[j]


def fit_translation(rotations: np.ndarray, delta_A: np.ndarray) -> np.ndarray:
    """The map translation ``d`` ``(3,)`` whose projections ``−(A_i d)_xy`` best explain ``delta_A``."""
    design = -rotations[:, :2, :].reshape(-1, 3)  # (2M, 3)
    d, *_ = np.linalg.lstsq(design, delta_A.reshape(-1), rcond=None)
    return d


def residuals(rotations, delta_A, d) -> np.ndarray:
    """Per-image shift error (Å) ``(M,)`` once the map's translation ``d`` is removed."""
    return np.linalg.norm(delta_A + np.einsum("mij,j->mi", rotations[:, :2, :], d), axis=1)


def _line(name: str, err: np.ndarray, unit: str) -> str:
    figures = f"mean {err.mean():.3g} {unit}, median {np.median(err):.3g} {unit}"
    return f"{name}: {figures}, max {err.max():.3g} {unit}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_poses")
    ap.add_argument("train_truth")
    ap.add_argument("heldout_poses", nargs="?")
    ap.add_argument("heldout_truth", nargs="?")
    a = ap.parse_args(argv)
    rot, org, rot_ref, org_ref = _matched(a.train_poses, a.train_truth)
    delta = org - org_ref
    d = fit_translation(rot, delta)
    alignment = align_rotations(rot, rot_ref)
    print(f"{len(rot)} training images; map translation {np.round(d, 2)} Å; mirrored: {alignment.mirrored}")
    print(_line("  shift error as written", np.linalg.norm(delta, axis=1), "Å"))
    print(_line("  shift error, map translation removed", residuals(rot, delta, d), "Å"))
    print(_line("  pose error", alignment.errors_deg, "°"))
    if a.heldout_poses:
        h_rot, h_org, h_rot_ref, h_org_ref = _matched(a.heldout_poses, a.heldout_truth)
        print(f"{len(h_rot)} held-out images")
        print(_line("  shift error, map translation removed", residuals(h_rot, h_org - h_org_ref, d), "Å"))
        print(_line("  pose error", apply_alignment(alignment, h_rot, h_rot_ref), "°"))


if __name__ == "__main__":
    main()
