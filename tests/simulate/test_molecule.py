"""The embedded molecule: protein-sized, deterministic, fits its box, and has no symmetry."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cryoposenet.physics.rotations import geodesic_distance, random_rotations
from cryoposenet.simulate import (
    MOLECULE_APIX,
    MOLECULE_BOX,
    MOLECULE_BOX_A,
    default_molecule,
    molecule_volume,
    project_rotated,
    required_box,
)


def test_size_and_determinism():
    a, b = default_molecule(), default_molecule()
    assert 1500 <= len(a) <= 3500
    assert set(a.elements) <= {"C", "N", "O", "S"}
    np.testing.assert_array_equal(a.xyz_A, b.xyz_A)
    d = np.linalg.norm(a.xyz_A[:, None] - a.xyz_A[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert d.min() > 1.0  # no overlapping atoms


def test_fits_default_box_at_any_size():
    atoms = default_molecule()
    assert required_box(atoms, MOLECULE_APIX) <= MOLECULE_BOX
    for box in (32, 48, 128):
        assert required_box(atoms, MOLECULE_BOX_A / box) <= box
    vol, apix = molecule_volume(32)
    assert vol.shape == (32, 32, 32) and apix == MOLECULE_BOX_A / 32


def _rotated_maps(vol: torch.Tensor, rots: torch.Tensor) -> torch.Tensor:
    """``V(Aᵀ r)`` for each rotation, trilinear, ``(B, N, N, N)``."""
    n = vol.shape[-1]
    c = torch.arange(n, dtype=vol.dtype) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    src = torch.einsum("zyxi,bij->bzyxj", torch.stack([x, y, z], -1), rots.to(vol.dtype))
    grid = 2 * (src + n // 2) / (n - 1) - 1
    return F.grid_sample(vol[None, None].expand(len(rots), 1, n, n, n), grid, align_corners=True)[:, 0]


def test_no_symmetry():
    vol = torch.from_numpy(molecule_volume(32)[0])
    rots = random_rotations(300, torch.Generator().manual_seed(1))
    far = geodesic_distance(rots, torch.eye(3, dtype=rots.dtype).expand_as(rots)) > np.deg2rad(30)
    maps = torch.cat([_rotated_maps(vol, r) for r in rots[far].split(50)]).flatten(1)
    a = maps - maps.mean(1, keepdim=True)
    b = (vol - vol.mean()).flatten()
    corr = (a @ b) / (a.norm(dim=1) * b.norm())
    assert corr.max() < 0.85  # no rotation > 30° maps the molecule onto itself
    # Its principal axes differ: no two-fold-like degeneracy of the shape.
    xyz = default_molecule().xyz_A
    ev = np.linalg.eigvalsh(np.cov(xyz.T))
    assert np.diff(ev).min() > 0.1 * ev.max()


def test_projections_at_different_poses_differ():
    vol = torch.from_numpy(molecule_volume(32)[0])
    rots = random_rotations(24, torch.Generator().manual_seed(2))
    p = project_rotated(vol, rots).flatten(1)
    p = p - p.mean(1, keepdim=True)
    c = (p @ p.T) / (p.norm(dim=1)[:, None] * p.norm(dim=1)[None])
    off = c[~torch.eye(24, dtype=torch.bool)]
    gap = geodesic_distance(rots[:, None], rots[None])[~torch.eye(24, dtype=torch.bool)]
    assert off[gap > np.deg2rad(30)].max() < 0.97
    assert off.median() < 0.9
