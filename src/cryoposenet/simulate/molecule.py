"""An embedded, procedurally built protein-like molecule: no file, no network, fixed seed.

Two domains of different shape and fold, joined by a linker, plus one long helix sticking out:

* domain 1, a bundle of 8 α-helices (ideal geometry: 1.5 Å rise, 100° per residue, 2.3 Å
  radius) along x, packed 10 Å apart in an ellipsoid, axes tilted at random by up to ~9°;
* domain 2, two 5-stranded β-sheets (strands 3.3 Å per residue along y, 4.8 Å apart, sheets
  10 Å apart) beside domain 1;
* an 18-residue helix pointing away from both.

Consecutive elements are joined by loops (Cα 3.0–3.8 Å apart along a bulged path). Each Cα gets
backbone N, C, O, a CB (except glycines) and a side chain of 0–4 further atoms (C, N, O, S)
pointing outwards; a few hundred relaxation steps keep Cα 3.8 Å apart along the chain and
≥ 4.2 Å from the rest. The result has ~1,600 non-hydrogen atoms (~280 residues), no symmetry,
and fits :data:`MOLECULE_BOX_A` (a 64-pixel box of 1.6 Å, or 32 pixels of 3.2 Å, ...).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .potential import AtomSet, potential_from_atoms

__all__ = ["MOLECULE_BOX", "MOLECULE_APIX", "MOLECULE_BOX_A", "default_molecule", "molecule_volume"]

MOLECULE_BOX = 64
MOLECULE_APIX = 1.6
MOLECULE_BOX_A = MOLECULE_BOX * MOLECULE_APIX  # 102.4 Å, as 4AKE in the paper
_SEED = 20230611


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _helix(centre: np.ndarray, axis: np.ndarray, n_res: int) -> np.ndarray:
    """Cα ``(n_res, 3)`` of an ideal α-helix centred on ``centre`` along unit ``axis``."""
    e1 = _unit(np.cross(axis, [0.3, 0.5, 0.8]))
    e2 = np.cross(axis, e1)
    k = np.arange(n_res) - (n_res - 1) / 2
    phi = np.deg2rad(100.0) * k
    return centre + np.outer(1.5 * k, axis) + 2.3 * (np.outer(np.cos(phi), e1) + np.outer(np.sin(phi), e2))


def _strand(centre: np.ndarray, axis: np.ndarray, pleat: np.ndarray, n_res: int) -> np.ndarray:
    """Cα ``(n_res, 3)`` of a β-strand: 3.3 Å per residue along ``axis``, ±0.9 Å along ``pleat``."""
    k = np.arange(n_res) - (n_res - 1) / 2
    return centre + np.outer(3.3 * k, axis) + np.outer(0.9 * (-1.0) ** np.arange(n_res), pleat)


def _loop(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cα strictly between ``a`` and ``b``, 3.0–3.8 Å apart along a path bulged sideways by 2–5 Å."""
    d = b - a
    side = _unit(np.cross(d, rng.normal(size=3)))
    t = np.linspace(0, 1, 200)
    curve = a + np.outer(t, d) + np.outer(rng.uniform(2.0, 5.0) * np.sin(np.pi * t), side)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    n_steps = max(2, int(np.ceil(arc[-1] / 3.8)))
    at = np.linspace(0, arc[-1], n_steps + 1)[1:-1]
    return np.stack([np.interp(at, arc, curve[:, k]) for k in range(3)], axis=1)


def _tilted(axis: np.ndarray, rng: np.random.Generator, max_deg: float) -> np.ndarray:
    return _unit(axis + np.tan(np.deg2rad(max_deg)) * rng.uniform(-1, 1, size=3))


def _helix_bundle(rng: np.random.Generator) -> list[np.ndarray]:
    """Domain 1: helices along x on a 10 Å lattice in the ellipsoid of semi-axes (21, 18, 15) Å."""
    centre, semi = np.array([-7.0, -2.0, 0.0]), np.array([21.0, 18.0, 15.0])
    elements = []
    for row, y in enumerate(np.arange(-15.0, 16.0, 10.0)):
        zs = np.arange(-10.0, 11.0, 10.0)
        for z in zs if row % 2 == 0 else zs[::-1]:
            frac = 1 - (y / semi[1]) ** 2 - (z / semi[2]) ** 2
            if frac < 0.15:
                continue
            length = 2 * semi[0] * np.sqrt(frac) - 6.0
            n_res = int(length / 1.5)
            axis = _tilted(np.array([1.0, 0.0, 0.0]), rng, 9.0) * (1 if len(elements) % 2 == 0 else -1)
            offset = np.array([rng.uniform(-2, 2), y, z])
            elements.append(_helix(centre + offset, axis, n_res))
    return elements


def _sheets(rng: np.random.Generator) -> list[np.ndarray]:
    """Domain 2: two 5-stranded sheets along y, stacked 10 Å apart in z, beside domain 1."""
    centre = np.array([20.0, 8.0, 3.0])
    elements = []
    for s, z in enumerate((-5.0, 5.0)):
        for k in range(5):
            x = (k - 2) * 4.8 if s == 0 else (2 - k) * 4.8
            n_res = 9 - abs(k - 2)
            axis = _tilted(np.array([0.0, 1.0, 0.0]), rng, 6.0) * (1 if k % 2 == 0 else -1)
            elements.append(_strand(centre + [x, 0.0, z], axis, np.array([0.0, 0.0, 1.0]), n_res))
    return elements


def _relax(ca: np.ndarray, steps: int = 300) -> np.ndarray:
    """Nudge Cα ``(R, 3)`` until bonded neighbours are ~3.8 Å apart and others ≥ 4.2 Å apart."""
    ca = ca.copy()
    for _ in range(steps):
        move = np.zeros_like(ca)
        bond = np.diff(ca, axis=0)
        length = np.linalg.norm(bond, axis=1, keepdims=True)
        fix = 0.25 * (length - 3.8) * bond / length
        move[:-1] += fix
        move[1:] -= fix
        pairs = np.array(sorted(cKDTree(ca).query_pairs(4.2)), dtype=np.int64).reshape(-1, 2)
        pairs = pairs[pairs[:, 1] - pairs[:, 0] > 1]
        if len(pairs) == 0 and np.abs(length - 3.8).max() < 0.05:
            break
        sep = ca[pairs[:, 1]] - ca[pairs[:, 0]]
        dist = np.linalg.norm(sep, axis=1, keepdims=True)
        push = 0.25 * (4.2 - dist) * sep / np.maximum(dist, 1e-6)
        np.add.at(move, pairs[:, 0], -push)
        np.add.at(move, pairs[:, 1], push)
        ca += move
    return ca


def _ca_trace(rng: np.random.Generator) -> np.ndarray:
    """All Cα ``(R, 3)`` in chain order: helix bundle, sheets, then the protruding helix."""
    arm_axis = _unit(np.array([0.3, -0.55, 0.78]))
    elements = [*_helix_bundle(rng), *_sheets(rng), _helix(np.array([5.0, -9.0, 23.0]), arm_axis, 18)]
    chain = [elements[0]]
    for nxt in elements[1:]:
        chain.append(_loop(chain[-1][-1], nxt[0], rng))
        chain.append(nxt)
    ca = np.concatenate(chain)
    return _relax(ca + rng.normal(scale=0.1, size=ca.shape))


def _backbone(ca: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """N, C, O positions ``(R, 3)`` each from peptide planes, and the outward unit direction per residue.

    Between Cα(i−1) and Cα(i) (unit direction ``d``, in-plane normal ``p``): C(i−1) at
    ``1.40 d + 0.55 p`` from Cα(i−1), N(i) at ``−1.41 d − 0.40 p``
    (along-bond parts scaled by the Cα–Cα distance / 3.8 Å) from Cα(i) (C–N 1.37 Å), O 1.23 Å
    from C along ``p``. The chain ends get N and C extrapolated.
    """
    prev = np.vstack([2 * ca[0] - ca[1], ca[:-1]])
    nxt = np.vstack([ca[1:], 2 * ca[-1] - ca[-2]])
    to_prev, to_next = _unit(prev - ca), _unit(nxt - ca)
    bisector = -(to_prev + to_next)
    straight = np.linalg.norm(bisector, axis=-1, keepdims=True) < 0.1  # ends: collinear neighbours
    out = _unit(np.where(straight, np.cross(to_next, [0.3, 0.5, 0.8]), bisector))
    p_next = _unit(np.cross(to_next, np.cross(out, to_next)))  # ⊥ to the bond, towards ``out``
    p_prev = np.vstack([p_next[:1], p_next[:-1]])
    step = np.linalg.norm(nxt - ca, axis=-1, keepdims=True)  # Cα–Cα, 3.8 Å in a trans peptide
    step_prev = np.vstack([step[:1], step[:-1]])
    c = ca + (1.40 / 3.8) * step * to_next + 0.55 * p_next
    n = ca + (1.41 / 3.8) * step_prev * to_prev - 0.40 * p_prev
    o = c + 1.23 * p_next
    return n, c, o, out


def _side_chains(ca: np.ndarray, out: np.ndarray, backbone: np.ndarray, rng: np.random.Generator):
    """CB and 0–4 further side-chain atoms per residue (glycines have none): positions, elements.

    A side chain stops before an atom that would come within 2.0 Å of a backbone atom
    (other than its own Cα);
    a side-chain atom within 2.0 Å of an earlier residue's side chain is left out.
    """
    tree = cKDTree(backbone)
    lengths = rng.choice([-1, 0, 1, 2, 3, 4], size=len(ca), p=[0.06, 0.08, 0.16, 0.22, 0.24, 0.24])
    ends = rng.choice(["C", "N", "O", "S"], size=len(ca), p=[0.5, 0.25, 0.2, 0.05])
    xyz, elements, residue = [], [], []
    for i in np.nonzero(lengths >= 0)[0]:
        pos, direction = ca[i], out[i]
        for k in range(lengths[i] + 1):
            direction = _unit(direction + 0.4 * rng.normal(size=3))
            pos = pos + 1.53 * direction
            near = tree.query_ball_point(pos, 2.0)
            if any(j != len(ca) + i for j in near):  # backbone = [N, Cα, C, O]; own Cα is bonded
                break
            xyz.append(pos)
            elements.append(ends[i] if k == lengths[i] and k > 0 else "C")
            residue.append(i)
    xyz, residue = np.array(xyz), np.array(residue)
    keep = np.ones(len(xyz), dtype=bool)
    for a, b in cKDTree(xyz).query_pairs(2.0):
        if residue[a] != residue[b]:
            keep[max(a, b)] = False
    return xyz[keep], [e for e, k in zip(elements, keep, strict=True) if k]


def default_molecule() -> AtomSet:
    """The embedded molecule: ~1,600 atoms (C, N, O, S), coordinates in Å, always the same."""
    rng = np.random.default_rng(_SEED)
    ca = _ca_trace(rng)
    n, c, o, out = _backbone(ca)
    side_xyz, side_el = _side_chains(ca, out, np.concatenate([n, ca, c, o]), rng)
    xyz = np.concatenate([n, ca, c, o, side_xyz])
    elements = ["N"] * len(n) + ["C"] * (len(ca) + len(c)) + ["O"] * len(o) + side_el
    return AtomSet(xyz.astype(np.float64), np.asarray(elements), "<embedded molecule>")


def molecule_volume(box: int = MOLECULE_BOX, apix: float | None = None) -> tuple[np.ndarray, float]:
    """The embedded molecule's potential ``(box,)*3`` float32 ``[z, y, x]`` and its pixel size.

    ``apix`` defaults to ``MOLECULE_BOX_A / box`` (the same physical box at any box size).
    """
    apix = MOLECULE_BOX_A / box if apix is None else apix
    return potential_from_atoms(default_molecule(), box, apix), apix
