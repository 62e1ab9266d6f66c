"""The embedded molecule: 4AKE as the paper used it, packaged, fits its box, with its pseudo-2-fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from cryoposenet.physics.rotations import geodesic_distance, random_rotations
from cryoposenet.simulate import (
    MOLECULE_APIX,
    MOLECULE_BOX,
    MOLECULE_BOX_A,
    default_molecule,
    molecule_volume,
    project_rotated,
    read_atoms,
    required_box,
)
from datasets import detect_symmetry_once  # the two tests below (and the demo's) search one map

SHARED_4AKE = Path(__file__).resolve().parents[3] / "shared" / "data" / "4ake.pdb"


def test_size_elements_and_determinism():
    a, b = default_molecule(), default_molecule()
    assert len(a) == 3312  # both chains of 4AKE, no waters, no hydrogens
    assert set(a.elements) <= {"C", "N", "O", "S"}
    np.testing.assert_array_equal(a.xyz_A, b.xyz_A)
    nearest = cKDTree(a.xyz_A).query(a.xyz_A, k=2)[0][:, 1]  # each atom's nearest other atom
    assert nearest.min() > 1.0  # no overlapping atoms


@pytest.mark.skipif(not SHARED_4AKE.is_file(), reason="the project's copy of 4ake.pdb is not here")
def test_same_atoms_as_the_papers_file():
    ours, theirs = default_molecule(), read_atoms(SHARED_4AKE)
    np.testing.assert_array_equal(ours.xyz_A, theirs.xyz_A)
    np.testing.assert_array_equal(ours.elements, theirs.elements)


def test_fits_default_box_and_finer():
    atoms = default_molecule()
    assert required_box(atoms, MOLECULE_APIX) <= MOLECULE_BOX
    assert required_box(atoms, MOLECULE_BOX_A / 128) <= 128
    assert required_box(atoms, 3.2) > 32  # coarse pixels blur atoms wider: a bigger box is needed
    vol, apix = molecule_volume(64)
    assert vol.shape == (64, 64, 64) and apix == MOLECULE_BOX_A / 64


def test_pseudo_two_fold_is_found():
    group, info = detect_symmetry_once(molecule_volume(32, 3.6)[0])
    assert group is not None and len(group) == 2
    assert abs(info["angle_deg"] - 180) < 3


def test_projections_at_different_poses_differ():
    """Images differ unless the poses are close, or close after the 2-fold (R vs R·S)."""
    vol = torch.from_numpy(molecule_volume(32, 3.6)[0])
    two_fold = torch.as_tensor(detect_symmetry_once(vol.numpy())[0][1], dtype=torch.float64)
    rots = random_rotations(24, torch.Generator().manual_seed(2)).double()
    p = project_rotated(vol, rots).flatten(1)
    p = p - p.mean(1, keepdim=True)
    c = (p @ p.T) / (p.norm(dim=1)[:, None] * p.norm(dim=1)[None])
    off = c[~torch.eye(24, dtype=torch.bool)]
    gaps = [
        geodesic_distance(rots[:, None], (r @ s)[None])
        for r, s in ((rots, torch.eye(3, dtype=torch.float64)), (rots, two_fold))
    ]
    gaps += [geodesic_distance(rots[:, None], (two_fold @ rots)[None])]
    gap = torch.stack(gaps).min(0).values[~torch.eye(24, dtype=torch.bool)]
    assert off[gap > np.deg2rad(30)].max() < 0.97
    assert off.median() < 0.9
