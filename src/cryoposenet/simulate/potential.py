"""Atomic model → electrostatic potential map on an ``N³`` grid ``[z, y, x]``.

Each atom contributes the real-space transform of its 5-Gaussian electron scattering factor
(Peng et al. 1996, International Tables C 4.3.2.2, as tabulated by gemmi's ``c4322``):

``V(r) = K · Σ_i a_i (4π / b'_i)^{3/2} exp(−4π² r² / b'_i)``, ``b'_i = b_i + B``,

with ``a_i`` in Å, ``b_i`` in Å², ``K = h² / (2π m₀ e) = 47.878 V·Å²``, so maps are in volts.

Choices, stated once:

* **B-factors**: the file's B-factors are ignored (they describe crystal disorder); every atom
  gets the same blur ``B = 32·apix²`` Å², which brings each Gaussian to ≤ e⁻² of its value at
  Nyquist, so the point-sampled map is nearly band-limited (B = 20.5 Å² at 0.8 Å/pixel).
* **Hydrogens** (H, D) are dropped (their potential is small and most models lack them);
  **waters** are dropped (vitreous ice is the solvent); **ligands** and other HETATM residues are
  kept; only the first model and the first alternative conformation are used; atoms of unknown
  element are dropped.
* **Centre**: the atoms are moved so that their scattering-weighted centre (weights ``Σ_i a_i``,
  the map's own mass) sits at voxel ``N//2`` on every axis.
* **Cut-off**: each atom is summed out to ``4σ`` of its widest Gaussian (99.9 % of its mass);
  beyond that the map is exactly zero. The model fits the box when every atom lies within
  ``(N//2 − 1)·apix − cutoff`` Å of the centre, so no rotation moves density out of the box.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np

from ..errors import InputError

__all__ = [
    "AtomSet",
    "read_atoms",
    "blur_A2",
    "cutoff_radius_A",
    "required_box",
    "potential_from_atoms",
    "POTENTIAL_CONSTANT_V_A2",
]

POTENTIAL_CONSTANT_V_A2 = 47.878  # h² / (2π m₀ e) in V·Å²


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


def blur_A2(apix: float) -> float:
    """The uniform B-factor (Å²) added to every atom at pixel size ``apix`` Å."""
    return 32.0 * apix**2


def cutoff_radius_A(elements: np.ndarray, apix: float) -> float:
    """Radius (Å) out to which atoms are summed: 4σ of the widest blurred Gaussian, ≥ 2 pixels."""
    _, b = _coefficients(np.unique(elements))
    sigma = math.sqrt((b.max() + blur_A2(apix)) / (8 * math.pi**2))
    return max(4.0 * sigma, 2.0 * apix)


def _centre_A(atoms: AtomSet) -> np.ndarray:
    a, _ = _coefficients(atoms.elements)
    w = a.sum(axis=1)
    return (atoms.xyz_A * w[:, None]).sum(0) / w.sum()


def required_box(atoms: AtomSet, apix: float) -> int:
    """The smallest even box (pixels) at ``apix`` that holds the centred model at every rotation."""
    radius = np.linalg.norm(atoms.xyz_A - _centre_A(atoms), axis=1).max()
    half = math.ceil((radius + cutoff_radius_A(atoms.elements, apix)) / apix) + 1
    return 2 * half


def _window(half: int) -> np.ndarray:
    """Integer voxel offsets ``(W, 3)`` (x, y, z) of a cube of half-width ``half``."""
    r = np.arange(-half, half + 1)
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    return np.stack([x, y, z], axis=-1).reshape(-1, 3)


def potential_from_atoms(atoms: AtomSet, box: int, apix: float, chunk: int = 256) -> np.ndarray:
    """Electrostatic potential (V) ``(box, box, box)`` float32 ``[z, y, x]`` at ``apix`` Å/voxel.

    Raises :class:`InputError` (naming the model file and the box it needs) when the model does
    not fit the box at every rotation, or when it has no atoms.
    """
    if len(atoms) == 0:
        raise InputError("the model holds no atoms", atoms.source)
    need = required_box(atoms, apix)
    if need > box:
        raise InputError(
            f"model does not fit a {box}-pixel box at {apix:g} Å/pixel; it needs --box {need} or more "
            f"(or a larger --apix)",
            atoms.source,
        )
    a, b = _coefficients(atoms.elements)
    b = b + blur_A2(apix)
    amp = POTENTIAL_CONSTANT_V_A2 * a * (4 * math.pi / b) ** 1.5  # (M, 5) V
    pos_px = (atoms.xyz_A - _centre_A(atoms)) / apix + box // 2  # (M, 3) xyz voxel coordinates
    cutoff = cutoff_radius_A(atoms.elements, apix)
    offsets = _window(math.ceil(cutoff / apix))
    out = np.zeros(box**3, dtype=np.float64)
    for sl in _chunks(len(atoms), chunk):
        out += _atoms_on_grid(pos_px[sl], amp[sl], b[sl], offsets, apix, cutoff, box)
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
    inside = ((vox >= 0) & (vox < box)).all(-1)
    flat = (vox[..., 2] * box + vox[..., 1]) * box + vox[..., 0]
    return np.bincount(flat[inside], weights=val[inside], minlength=box**3)
