"""Aligning two maps without poses: rotational search with the mirror considered.

A coarse search scores many uniform random rotations (and their mirrors) on low-passed,
downsampled maps by correlation; the best candidates are refined locally at a finer sampling.
The result is a :class:`~cryoposenet.analysis.metrics.Alignment`, so
:func:`~cryoposenet.analysis.metrics.align_map` brings the estimate into the reference frame exactly
as after a pose-based alignment.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from ..physics.fourier import centre_crop
from ..physics.rotations import axis_angle_to_matrix, random_rotations
from .metrics import MIRROR, Alignment, rotation_angle_deg

__all__ = ["downsample", "align_maps", "self_symmetry", "self_correlations", "centre_on"]


def downsample(volume: torch.Tensor, size: int) -> torch.Tensor:
    """Fourier-crop a map ``(N, N, N)`` to ``(size, size, size)`` (a low-pass at the new Nyquist)."""
    n = volume.shape[-1]
    if size >= n:
        return volume
    spec = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(volume)))
    spec = centre_crop(spec, size, ndim=3)
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(spec))).real * (size / n) ** 3


@functools.lru_cache(maxsize=4)
def _grid_points(n: int) -> torch.Tensor:
    """``(n³, 3)`` xyz offsets from pixel ``n//2``, scaled to grid_sample's [-1, 1] units."""
    c = (torch.arange(n, dtype=torch.float32) - n // 2) * (2 / (n - 1))
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([x, y, z], dim=-1).reshape(-1, 3)


def _resample(volume: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Maps ``(K, n, n, n)`` with ``out_k(r) = volume(t_k r)`` (trilinear) for ``t`` ``(K, 3, 3)``."""
    n = volume.shape[-1]
    centre = (n // 2) * (2 / (n - 1)) - 1
    grid = (_grid_points(n) @ t.float().transpose(1, 2) + centre).reshape(len(t), n, n, n, 3)
    vol = volume[None, None].expand(len(t), 1, n, n, n)
    return F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]


def _scores(volume: torch.Tensor, reference: torch.Tensor, t: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    ref = (reference - reference.mean()).flatten()
    ref = ref / ref.norm()
    out = []
    for part in t.split(chunk):
        moved = _resample(volume, part).flatten(1)
        moved = moved - moved.mean(1, keepdim=True)
        out.append((moved @ ref) / moved.norm(dim=1).clamp_min(1e-12))
    return torch.cat(out)


def _to_alignment(t: np.ndarray, mirrored: bool) -> Alignment:
    g = t.T @ MIRROR if mirrored else t.T  # align_map uses T = Gᵀ, or M Gᵀ when mirrored
    return Alignment(rotation=g, mirrored=mirrored, errors_deg=np.array([]))


def align_maps(
    volume: np.ndarray,
    reference: np.ndarray,
    n_rotations: int = 5000,
    coarse_size: int = 24,
    fine_size: int = 40,
    seed: int = 0,
) -> tuple[Alignment, float]:
    """Best rotation (and mirror) taking ``volume`` onto ``reference``; returns it and its correlation.

    Both maps are searched with their centres of mass moved to the box centre, so a map that sits
    elsewhere in its box (searched shifts leave that free) is still aligned; the rotation is the
    same about any centre, and :func:`centre_on` finds the translation afterwards.
    """
    vol = _mass_centred(torch.as_tensor(volume, dtype=torch.float64))
    ref = _mass_centred(torch.as_tensor(reference, dtype=torch.float64))
    coarse_v, coarse_r = (downsample(x, coarse_size).float() for x in (vol, ref))
    rots = random_rotations(n_rotations, torch.Generator().manual_seed(seed), dtype=torch.float32)
    mirror = torch.as_tensor(MIRROR, dtype=torch.float32)
    cands = torch.cat([rots.transpose(1, 2), mirror @ rots.transpose(1, 2)])
    scores = _scores(coarse_v, coarse_r, cands)
    fine_v, fine_r = (downsample(x, fine_size).float() for x in (vol, ref))
    best = (-2.0, None, False)
    for k in scores.topk(2).indices.tolist():
        score, t = _refine(fine_v, fine_r, cands[k].double())
        if score > best[0]:
            best = (score, t, k >= n_rotations)
    score, t, mirrored = best
    return _to_alignment(t, mirrored), float(score)


def _refine(volume: torch.Tensor, reference: torch.Tensor, t0: torch.Tensor) -> tuple[float, np.ndarray]:
    """Local search around ``t0`` ``(3, 3)``: the best correlation and its ``t`` (Powell on expmap)."""

    def rotation(w) -> torch.Tensor:
        return t0 @ axis_angle_to_matrix(torch.as_tensor(w, dtype=torch.float64))

    def loss(w) -> float:
        return -_scores(volume, reference, rotation(w)[None])[0].item()

    res = minimize(loss, np.zeros(3), method="Powell", options={"xtol": 1e-3, "ftol": 1e-6, "maxfev": 200})
    return -float(res.fun), rotation(res.x).numpy()


def self_symmetry(
    reference: np.ndarray,
    min_angle_deg: float = 50.0,
    n_rotations: int = 5000,
    coarse_size: int = 24,
    fine_size: int = 40,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """The rotation ``T`` ``(3, 3)``, at least ``min_angle_deg`` from the identity, that best maps
    ``reference`` onto itself (``V(T r) ≈ V(r)``), and that correlation.

    A correlation near 1 means a (pseudo-)symmetry: poses ``R`` and ``R·T`` render the same image.
    """
    ref = torch.as_tensor(reference, dtype=torch.float64)
    coarse = downsample(ref, coarse_size).float()
    rots = random_rotations(n_rotations, torch.Generator().manual_seed(seed), dtype=torch.float32)
    rots = rots[torch.from_numpy(rotation_angle_deg(rots.numpy()) >= min_angle_deg)]
    scores = _scores(coarse, coarse, rots)
    fine = downsample(ref, fine_size).float()
    best = (-2.0, None)
    for k in scores.topk(3).indices.tolist():
        score, t = _refine(fine, fine, rots[k].double())
        if rotation_angle_deg(t) < min_angle_deg:  # refinement slid back towards the identity
            t = rots[k].double().numpy()
            score = _scores(fine, fine, rots[k][None])[0].item()
        if score > best[0]:
            best = (score, t)
    return best[1], best[0]


def self_correlations(reference: np.ndarray, rotations: np.ndarray, size: int = 40) -> np.ndarray:
    """Correlations ``(K,)`` of ``reference`` (low-passed to ``size`` px) with itself moved by each
    of ``rotations`` ``(K, 3, 3)``, i.e. of ``V(T_k r)`` with ``V(r)``."""
    ref = downsample(torch.as_tensor(reference, dtype=torch.float64), size).float()
    return _scores(ref, ref, torch.as_tensor(np.asarray(rotations), dtype=torch.float32)).numpy()


def centre_on(volume: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` translated onto ``reference`` and the translation ``(3,)`` voxels (z, y, x).

    A map learned with searched shifts may sit anywhere in its box (shifting the map and every
    image's origin together changes nothing): the peak of the maps' cross-correlation (FFT),
    refined to a tenth of a voxel by a parabola through its neighbours on each axis, then applied
    as a Fourier phase ramp.
    """
    vol = torch.as_tensor(volume, dtype=torch.float64)
    ref = torch.as_tensor(reference, dtype=torch.float64)
    fv, fr = torch.fft.fftn(vol), torch.fft.fftn(ref)
    cc = torch.fft.ifftn(fr * fv.conj()).real
    peak = np.array(np.unravel_index(int(cc.argmax()), cc.shape))
    shift = peak.astype(np.float64)
    for axis, n in enumerate(cc.shape):
        idx = [list(peak) for _ in range(3)]
        idx[0][axis], idx[2][axis] = (peak[axis] - 1) % n, (peak[axis] + 1) % n
        lo, mid, hi = (float(cc[tuple(i)]) for i in idx)
        denom = lo - 2 * mid + hi
        if denom < 0:
            shift[axis] += float(np.clip(0.5 * (lo - hi) / denom, -0.5, 0.5))
    half = np.array(cc.shape) / 2
    shift = (shift + half) % (2 * half) - half  # to (−n/2, n/2]
    moved = _translate(vol, shift)
    return moved.numpy().astype(np.asarray(volume).dtype), shift


def _translate(volume: torch.Tensor, shift) -> torch.Tensor:
    """``volume`` moved by ``shift`` ``(3,)`` voxels (z, y, x), by a Fourier phase ramp (periodic)."""
    freqs = torch.meshgrid(*(torch.fft.fftfreq(n, dtype=torch.float64) for n in volume.shape), indexing="ij")
    ramp = torch.exp(-2j * torch.pi * sum(f * float(t) for f, t in zip(freqs, shift, strict=True)))
    return torch.fft.ifftn(torch.fft.fftn(volume) * ramp).real


def _mass_centred(volume: torch.Tensor) -> torch.Tensor:
    """``volume`` moved so the centre of mass of its positive part sits at voxel ``n//2``."""
    weights = volume.clamp_min(0)
    total = weights.sum()
    if total <= 0:
        return volume
    axes = [torch.arange(n, dtype=torch.float64) for n in volume.shape]
    com = [
        float((weights.sum(dim=tuple(d for d in range(3) if d != a)) * axes[a]).sum() / total)
        for a in range(3)
    ]
    return _translate(volume, [n // 2 - c for n, c in zip(volume.shape, com, strict=True)])
