"""Atomic model → electrostatic potential map on an ``N³`` grid ``[z, y, x]``.

Each atom contributes the real-space transform of its 5-Gaussian electron scattering factor
(Peng et al. 1996, International Tables C 4.3.2.2, as tabulated by gemmi's ``c4322``):

``V(r) = K · Σ_i a_i (4π / b'_i)^{3/2} exp(−4π² r² / b'_i)``, ``b'_i = b_i + B``,

with ``a_i`` in Å, ``b_i`` in Å², ``K = h² / (2π m₀ e) = 47.878 V·Å²``, so maps are in volts.

Choices, stated once:

* **B-factors**: the file's B-factors are ignored (they describe crystal disorder); every atom
  gets the same blur ``B`` Å² (``bfactor``, ``simulate --bfactor``). The default is
  ``B = 32·apix²``, which brings each Gaussian to ≤ e⁻² of its value at Nyquist, so the
  point-sampled map is nearly band-limited (B = 20.5 Å² at 0.8 Å/pixel, 81.9 Å² at 1.6 Å/pixel).
* **Sampling**: when every blurred Gaussian is at least :data:`POINT_SAMPLE_MIN_SIGMA_PX` pixels
  wide (σ² = b'/8π²; always so at the default B, whose narrowest σ is 0.64 pixel), the map holds
  point samples: their sum is the atom's integral to 0.5 %. A sharper blur (B of a few Å² at
  coarse pixels: σ of 0.2 pixel) would make point samples miss or hit each atom by chance, so
  the map then holds each voxel's **average** of the potential instead (exact, a product of erf
  differences per axis): every atom keeps its mass wherever it sits. The voxel's box filter
  (variance apix²/12 per axis, a B of ``(2π²/3)·apix²`` = 6.6·apix²) is counted as part of the
  blur: the Gaussians averaged are ``b' − 6.6·apix²`` wide, so each keeps its variance ``b'/8π²``
  down to the voxel's own (σ = 0.29 pixel; narrower atoms fall into their voxel whole). So the
  map's sharpness does not jump where the sampling changes; B = 5 Å² at 1.6 Å/pixel gives
  Gaussians as narrow as the voxel allows (about B = 17 Å²) where the default is 81.9 Å².
* **Hydrogens** (H, D) are dropped (their potential is small and most models lack them);
  **waters** are dropped (vitreous ice is the solvent); **ligands** and other HETATM residues are
  kept; only the first model and the first alternative conformation are used; atoms of unknown
  element are dropped.
* **Centre**: the atoms are moved so that their scattering-weighted centre (weights ``Σ_i a_i``,
  the map's own mass) sits at voxel ``N//2`` on every axis.
* **Cut-off**: each atom is summed out to ``4σ`` of its widest Gaussian (99.9 % of its mass;
  voxel averages: voxels whose cube reaches that sphere); beyond that the map is exactly zero.
  The model fits the box when every atom lies within ``(N//2 − 1)·apix − cutoff`` Å of the
  centre, so no rotation moves density out of the box.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np
from scipy.special import erf

from ..errors import InputError

__all__ = [
    "AtomSet",
    "read_atoms",
    "blur_A2",
    "check_bfactor",
    "voxel_averaged",
    "cutoff_radius_A",
    "required_box",
    "potential_from_atoms",
    "POTENTIAL_CONSTANT_V_A2",
]

POTENTIAL_CONSTANT_V_A2 = 47.878  # h² / (2π m₀ e) in V·Å²
POINT_SAMPLE_MIN_SIGMA_PX = 0.6  # narrower Gaussians are averaged over the voxel, not point-sampled
VOXEL_BOX_B_PER_APIX2 = 2 * math.pi**2 / 3  # the voxel's box filter (variance apix²/12) as a B: 6.58·apix²


@dataclass(frozen=True)
class AtomSet:
    """Atoms of one model: ``xyz_A`` ``(M, 3)`` float64 positions in Å, ``elements`` ``(M,)`` symbols."""

    xyz_A: np.ndarray
    elements: np.ndarray
    source: str = "<atoms>"

    def __len__(self) -> int:
        return len(self.xyz_A)


def read_atoms(path: str | os.PathLike, keep_waters: bool = False) -> AtomSet:
    """Atoms of a PDB or mmCIF file (first model; no hydrogens; no waters unless ``keep_waters``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", p)
    try:
        st = gemmi.read_structure(str(p))
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"not a readable PDB/mmCIF file ({reason})", p) from None
    if len(st) == 0:
        raise InputError("the model file holds no atoms", p)
    st.remove_alternative_conformations()
    st.remove_hydrogens()
    if not keep_waters:
        st.remove_waters()
    xyz, elements = [], []
    for chain in st[0]:
        for res in chain:
            for atom in res:
                if atom.element.atomic_number == 0 or atom.element.is_hydrogen:
                    continue
                xyz.append((atom.pos.x, atom.pos.y, atom.pos.z))
                elements.append(atom.element.name)
    if not xyz:
        raise InputError("the model holds no atoms (after dropping hydrogens and waters)", p)
    return AtomSet(np.asarray(xyz, dtype=np.float64), np.asarray(elements), str(p))


def _coefficients(elements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Electron form-factor coefficients ``a`` (Å) and ``b`` (Å²), each ``(M, 5)``."""
    table = {}
    for el in np.unique(elements):
        c = gemmi.Element(str(el)).c4322
        table[el] = (np.asarray(c.a, dtype=np.float64), np.asarray(c.b, dtype=np.float64))
    a = np.stack([table[e][0] for e in elements])
    b = np.stack([table[e][1] for e in elements])
    return a, b


def check_bfactor(bfactor: float | None) -> None:
    """Raise :class:`InputError` unless ``bfactor`` is None (the default) or a finite number ≥ 0 Å²."""
    if bfactor is not None and not (math.isfinite(bfactor) and bfactor >= 0):
        raise InputError(f"--bfactor must be a number of Å² >= 0, got {bfactor:g}")


def blur_A2(apix: float, bfactor: float | None = None) -> float:
    """The uniform B-factor (Å²) added to every atom: ``bfactor``, or by default ``32·apix²``."""
    check_bfactor(bfactor)
    return 32.0 * apix**2 if bfactor is None else float(bfactor)


def _sigmas_A(elements: np.ndarray, apix: float, bfactor: float | None) -> tuple[float, float]:
    """Narrowest and widest σ (Å) of the blurred Gaussians of these elements."""
    _, b = _coefficients(np.unique(elements))
    b = b + blur_A2(apix, bfactor)
    return math.sqrt(b.min() / (8 * math.pi**2)), math.sqrt(b.max() / (8 * math.pi**2))


def voxel_averaged(elements: np.ndarray, apix: float, bfactor: float | None = None) -> bool:
    """Whether the map holds voxel averages (some Gaussian narrower than 0.6 pixel), not point samples."""
    return _sigmas_A(elements, apix, bfactor)[0] < POINT_SAMPLE_MIN_SIGMA_PX * apix


def cutoff_radius_A(elements: np.ndarray, apix: float, bfactor: float | None = None) -> float:
    """Radius (Å) out to which atoms are summed: 4σ of the widest blurred Gaussian, ≥ 2 pixels.

    For voxel averages, plus half a voxel's diagonal: voxels whose cube reaches the 4σ sphere.
    """
    reach = 4.0 * _sigmas_A(elements, apix, bfactor)[1]
    if voxel_averaged(elements, apix, bfactor):
        reach += 0.5 * math.sqrt(3) * apix
    return max(reach, 2.0 * apix)


def _centre_A(atoms: AtomSet) -> np.ndarray:
    a, _ = _coefficients(atoms.elements)
    w = a.sum(axis=1)
    return (atoms.xyz_A * w[:, None]).sum(0) / w.sum()


def required_box(atoms: AtomSet, apix: float, bfactor: float | None = None) -> int:
    """The smallest even box (pixels) at ``apix`` that holds the centred model at every rotation."""
    radius = np.linalg.norm(atoms.xyz_A - _centre_A(atoms), axis=1).max()
    half = math.ceil((radius + cutoff_radius_A(atoms.elements, apix, bfactor)) / apix) + 1
    return 2 * half


def _window(half: int) -> np.ndarray:
    """Integer voxel offsets ``(W, 3)`` (x, y, z) of a cube of half-width ``half``."""
    r = np.arange(-half, half + 1)
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    return np.stack([x, y, z], axis=-1).reshape(-1, 3)


def potential_from_atoms(
    atoms: AtomSet, box: int, apix: float, chunk: int = 256, bfactor: float | None = None
) -> np.ndarray:
    """Electrostatic potential (V) ``(box, box, box)`` float32 ``[z, y, x]`` at ``apix`` Å/voxel.

    ``bfactor``: the B (Å²) added to every atom (default ``32·apix²``, :func:`blur_A2`). Raises
    :class:`InputError` (naming the model file and the box it needs) when the model does not fit
    the box at every rotation, when it has no atoms, or for a negative ``bfactor``.
    """
    if len(atoms) == 0:
        raise InputError("the model holds no atoms", atoms.source)
    need = required_box(atoms, apix, bfactor)
    if need > box:
        raise InputError(
            f"model does not fit a {box}-pixel box at {apix:g} Å/pixel; it needs --box {need} or more "
            f"(or a larger --apix)",
            atoms.source,
        )
    a, b = _coefficients(atoms.elements)
    b = b + blur_A2(apix, bfactor)
    pos_px = (atoms.xyz_A - _centre_A(atoms)) / apix + box // 2  # (M, 3) xyz voxel coordinates
    cutoff = cutoff_radius_A(atoms.elements, apix, bfactor)
    if voxel_averaged(atoms.elements, apix, bfactor):
        on_grid, half = _atoms_averaged, math.ceil(cutoff / apix + 0.5)
        weight = POTENTIAL_CONSTANT_V_A2 * a / apix**3  # (M, 5) V: each Gaussian's mass per voxel volume
    else:
        on_grid, half = _atoms_on_grid, math.ceil(cutoff / apix)
        weight = POTENTIAL_CONSTANT_V_A2 * a * (4 * math.pi / b) ** 1.5  # (M, 5) V: peak values
    offsets = _window(half)
    out = np.zeros(box**3, dtype=np.float64)
    for sl in _chunks(len(atoms), chunk):
        out += on_grid(pos_px[sl], weight[sl], b[sl], offsets, apix, cutoff, box)
    return out.reshape(box, box, box).astype(np.float32)


def _chunks(n: int, size: int):
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


def _atoms_on_grid(pos_px, amp, b, offsets, apix, cutoff, box) -> np.ndarray:
    """Atoms ``(m, 3)`` summed onto the flat volume ``(box³,)`` (index z·N² + y·N + x), float64.

    NumPy, single-threaded on purpose: these are many small array operations, which torch's
    thread pool runs far slower on a busy machine.
    """
    vox = np.rint(pos_px).astype(np.int64)[:, None, :] + offsets[None]  # (m, W, 3)
    r2 = (((vox - pos_px[:, None, :]) * apix) ** 2).sum(-1)  # (m, W) Å²
    gauss = np.exp(-4 * math.pi**2 * r2[..., None] / b[:, None, :])  # (m, W, 5)
    val = np.einsum("mwk,mk->mw", gauss, amp) * (r2 <= cutoff**2)
    return _scatter(vox, val, box)


def _atoms_averaged(pos_px, mass, b, offsets, apix, cutoff, box) -> np.ndarray:
    """As :func:`_atoms_on_grid`, but each voxel gets the average over its cube of atoms blurred by
    ``b − B_box`` (:data:`VOXEL_BOX_B_PER_APIX2`), so that the map's blur is still ``b`` where it can be.

    A Gaussian of variance σ² = b''/8π² and integral ``mass·apix³`` averages over the voxel at
    offset ``d`` (Å, per axis) to ``mass · Π_axes ½[erf((d + apix/2)/√2σ) − erf((d − apix/2)/√2σ)]``.
    """
    base = np.rint(pos_px).astype(np.int64)
    r = np.arange(offsets.min(), offsets.max() + 1)  # the window's offsets along one axis
    b_avg = np.maximum(b - VOXEL_BOX_B_PER_APIX2 * apix**2, 1e-6 * apix**2)  # ≥ 0: a point atom
    scale = 1.0 / np.sqrt(2 * b_avg / (8 * math.pi**2))  # (m, 5) 1 / (√2 σ)
    fx, fy, fz = (_voxel_share(base[:, k, None] + r - pos_px[:, k, None], apix, scale) for k in range(3))
    frac = fz[:, :, None, None, :] * fy[:, None, :, None, :] * fx[:, None, None, :, :]  # (m, R, R, R, 5)
    frac = frac.reshape(len(base), -1, frac.shape[-1])  # (m, W, 5) in _window's (z, y, x) order
    vox = base[:, None, :] + offsets[None]  # (m, W, 3)
    r2 = (((vox - pos_px[:, None, :]) * apix) ** 2).sum(-1)
    val = np.einsum("mwk,mk->mw", frac, mass) * (r2 <= cutoff**2)
    return _scatter(vox, val, box)


def _voxel_share(d_px: np.ndarray, apix: float, scale: np.ndarray) -> np.ndarray:
    """Share ``(m, R, 5)`` of each 1D Gaussian in the voxels at offsets ``d_px`` ``(m, R)`` pixels."""
    d = (d_px * apix)[..., None]
    return 0.5 * (erf((d + apix / 2) * scale[:, None, :]) - erf((d - apix / 2) * scale[:, None, :]))


def _scatter(vox: np.ndarray, val: np.ndarray, box: int) -> np.ndarray:
    """Values ``(m, W)`` at voxels ``(m, W, 3)`` (x, y, z) summed into the flat volume ``(box³,)``."""
    inside = ((vox >= 0) & (vox < box)).all(-1)
    flat = (vox[..., 2] * box + vox[..., 1]) * box + vox[..., 0]
    return np.bincount(flat[inside], weights=val[inside], minlength=box**3)
