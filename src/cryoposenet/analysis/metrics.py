"""Metrics: Fourier shell correlation, resolution, and pose error after global alignment.

A reconstruction from unknown poses is defined only up to a global rotation and a mirror. With the
convention of :mod:`cryoposenet.physics.rotations`, if the estimated map is the true map rotated
by ``Gᵀ`` then the estimated poses are ``R_est = R_true · G`` (right-multiplication). A mirrored
map (``z → −z``, ``M = diag(1, 1, −1)``) renders like the true map at poses ``M R_est M``; so the
mirrored hypothesis aligns ``M R_est M`` instead. :func:`align_rotations` tries both and
:func:`align_map` brings the estimated map into the reference frame by the winning transform.

A (pseudo-)symmetric reference, ``V(S r) = V(r)`` for every ``S`` of a group (4AKE's two chains are
related by a 2-fold), renders the same image at poses ``R`` and ``R·S``: no method can tell them
apart, so with ``symmetry`` (the group, ``(K, 3, 3)``) each image is scored against its nearest
branch ``R_ref·S`` and the global rotation is fitted on those branches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..physics.rotations import geodesic_distance

__all__ = [
    "fsc",
    "resolution_at",
    "Alignment",
    "align_rotations",
    "align_map",
    "apply_alignment",
    "pose_errors_deg",
    "rotation_angle_deg",
    "symmetry_group",
    "MIRROR",
]

MIRROR = np.diag([1.0, 1.0, -1.0])


def fsc(map1: np.ndarray, map2: np.ndarray) -> np.ndarray:
    """Fourier shell correlation of two ``(N, N, N)`` maps over shells ``0..N//2`` (index units).

    Shell ``k`` holds frequencies with ``round(|k|) == k``; the result has ``N//2 + 1`` values.
    """
    n = map1.shape[-1]
    f1 = np.fft.fftn(np.asarray(map1, dtype=np.float64))
    f2 = np.fft.fftn(np.asarray(map2, dtype=np.float64))
    k = np.fft.fftfreq(n, d=1.0 / n)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    shell = np.rint(np.sqrt(kx**2 + ky**2 + kz**2)).astype(np.int64).ravel()
    keep = shell <= n // 2
    shell = shell[keep]
    cross = np.bincount(shell, (f1 * np.conj(f2)).real.ravel()[keep], minlength=n // 2 + 1)
    p1 = np.bincount(shell, (np.abs(f1) ** 2).ravel()[keep], minlength=n // 2 + 1)
    p2 = np.bincount(shell, (np.abs(f2) ** 2).ravel()[keep], minlength=n // 2 + 1)
    denom = np.sqrt(p1 * p2)
    return np.divide(cross, denom, out=np.zeros_like(cross), where=denom > 0)


def resolution_at(curve: np.ndarray, threshold: float, n: int, apix: float) -> float:
    """Resolution in Å where ``curve`` (from :func:`fsc`) first drops below ``threshold``.

    The crossing is interpolated linearly between shells; a curve that never drops gives the
    Nyquist limit ``2·apix``.
    """
    below = np.nonzero(curve[1:] < threshold)[0]
    if len(below) == 0:
        return 2.0 * apix
    i = below[0] + 1
    c0, c1 = curve[i - 1], curve[i]
    frac = (c0 - threshold) / (c0 - c1) if c0 != c1 else 0.0
    shell = (i - 1) + frac
    return float(n * apix / shell) if shell > 0 else float("inf")


@dataclass(frozen=True)
class Alignment:
    """A global transform taking estimated poses (and map) to the reference frame.

    ``rotation``: ``G`` ``(3, 3)`` with ``R_est' ≈ R_ref · G``; ``mirrored``: True when
    ``R_est' = M R_est M`` (the estimated map has the other handedness); ``errors_deg``: ``(M,)``
    geodesic angles between aligned estimates and references; ``symmetry``: the group ``(K, 3, 3)``
    the errors were taken modulo (None: no symmetry).
    """

    rotation: np.ndarray
    mirrored: bool
    errors_deg: np.ndarray
    symmetry: np.ndarray | None = None

    @property
    def mean_deg(self) -> float:
        return float(np.mean(self.errors_deg))

    @property
    def median_deg(self) -> float:
        return float(np.median(self.errors_deg))


def _procrustes(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
    """Rotation ``G`` minimising ``Σ ||est_i − ref_i G||²`` over ``(M, 3, 3)`` stacks."""
    m = np.einsum("nji,njk->ik", ref, est)  # Σ ref_iᵀ est_i
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def pose_errors_deg(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Geodesic angles in degrees between two rotation stacks ``(..., 3, 3)`` (broadcast)."""
    return np.rad2deg(geodesic_distance(torch.as_tensor(est), torch.as_tensor(ref)).numpy())


def rotation_angle_deg(t: np.ndarray) -> np.ndarray:
    """Angles in degrees ``(...)`` of rotations ``(..., 3, 3)`` (their distance to the identity)."""
    return pose_errors_deg(np.asarray(t, dtype=np.float64), np.eye(3))


def _fit(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Procrustes on all poses, then refit on the better half (robust to a few wild poses)."""
    best_g, best_err = None, None
    g = _procrustes(ref, est)
    for _ in range(3):
        err = pose_errors_deg(est, ref @ g)
        if best_err is None or err.mean() < best_err.mean():
            best_g, best_err = g, err
        inliers = err <= np.median(err)
        g = _procrustes(ref[inliers], est[inliers])
    return best_g, best_err


def symmetry_group(t: np.ndarray, tol_deg: float = 5.0, max_order: int = 12) -> np.ndarray:
    """The cyclic group ``(K, 3, 3)`` generated by a rotation ``t`` (identity first).

    ``t``'s powers are taken until one comes back within ``tol_deg`` of the identity (order ``K``);
    a ``t`` that does not close by ``max_order`` gives ``{I, t, tᵀ}``.
    """
    t = np.asarray(t, dtype=np.float64)
    powers = [np.eye(3)]
    for _ in range(max_order):
        nxt = powers[-1] @ t
        if rotation_angle_deg(nxt) < tol_deg:
            return np.stack(powers)
        powers.append(nxt)
    return np.stack([np.eye(3), t, t.T])


def _branch_cos(est: np.ndarray, ref: np.ndarray, g: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cosines ``(..., M, K)`` of the angles between ``est_i`` and ``ref_i·S_k·g`` for many ``g``
    ``(..., 3, 3)`` at once (traces only: cheap enough to score every candidate on every image)."""
    y = np.einsum("mji,mjl,klb->mkib", est, ref, group)  # est_iᵀ ref_i S_k
    return (np.einsum("mkab,...ba->...mk", y, g) - 1) / 2


def _branch_errors(est: np.ndarray, ref: np.ndarray, g: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Geodesic angles in degrees ``(M, K)`` between ``est_i`` and ``ref_i·S_k·g``."""
    return pose_errors_deg(est[:, None], ref[:, None] @ group[None] @ g)


def _fit_symmetric(ref: np.ndarray, est: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global rotation modulo ``group``: candidates from single images, then Procrustes on branches."""
    pick = np.random.default_rng(0).choice(len(ref), min(64, len(ref)), replace=False)
    cands = np.einsum("kji,mlj,mlb->mkib", group, ref[pick], est[pick]).reshape(-1, 3, 3)  # (ref S)ᵀ est
    scores = np.median(_branch_cos(est, ref, cands, group).max(-1), axis=-1)  # median nearest-branch cos
    g = cands[np.argmax(scores)]
    best_g, best_err = None, None
    for _ in range(4):
        branch_err = _branch_errors(est, ref, g, group)
        err = branch_err.min(-1)
        if best_err is None or err.mean() < best_err.mean():
            best_g, best_err = g, err
        nearest = ref @ group[branch_err.argmin(-1)]
        inliers = err <= np.median(err)
        g = _procrustes(nearest[inliers], est[inliers])
    return best_g, best_err


def align_rotations(est, ref, allow_mirror: bool = True, symmetry: np.ndarray | None = None) -> Alignment:
    """Best global alignment of estimated rotations to reference ones ``(M, 3, 3)``, mirror considered.

    ``symmetry``: the reference's group ``(K, 3, 3)`` (see :func:`symmetry_group`); errors are then
    taken to each image's nearest symmetry branch.
    """
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    sym = None if symmetry is None else np.asarray(symmetry, dtype=np.float64)

    def fit(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _fit(ref, e) if sym is None else _fit_symmetric(ref, e, sym)

    g, err = fit(est)
    result = Alignment(g, False, err, sym)
    if allow_mirror:
        g_m, err_m = fit(MIRROR @ est @ MIRROR)
        if err_m.mean() < err.mean():
            result = Alignment(g_m, True, err_m, sym)
    return result


def apply_alignment(alignment: Alignment, est, ref) -> np.ndarray:
    """Errors in degrees ``(M,)`` of other estimates ``est`` vs ``ref`` under a fixed alignment.

    For held-out images: the global transform is found on the training poses and only applied here
    (modulo the alignment's symmetry group, when it has one).
    """
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if alignment.mirrored:
        est = MIRROR @ est @ MIRROR
    if alignment.symmetry is not None:
        return _branch_errors(est, ref, alignment.rotation, alignment.symmetry).min(-1)
    return pose_errors_deg(est, ref @ alignment.rotation)


def align_map(volume: np.ndarray, alignment: Alignment, order: int = 3) -> np.ndarray:
    """Resample an estimated map ``(N, N, N)`` ``[z, y, x]`` into the reference frame.

    Output ``x(r) = x̂(T r)`` with ``T = Gᵀ`` (``M Gᵀ`` when mirrored), ``r`` from pixel ``N//2``;
    cubic-spline interpolation by default so the FSC is not blurred by the resampling.
    """
    n = volume.shape[-1]
    t = alignment.rotation.T
    if alignment.mirrored:
        t = MIRROR @ t
    c = np.arange(n, dtype=np.float64) - n // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    src = np.einsum("ij,jzyx->izyx", t, np.stack([x, y, z]))  # (3, N, N, N) as xyz
    coords = src[::-1] + n // 2  # to [z, y, x] indices
    return ndimage.map_coordinates(np.asarray(volume, np.float64), coords, order=order, mode="constant")
