"""The embedded default molecule: adenylate kinase, PDB entry 4AKE, the CryoPoseNet paper's molecule.

Both chains (3,312 non-hydrogen atoms, no waters) ship with the package as ``models/4ake.pdb.gz``
(PDB data are public domain, CC0 1.0), so ``cryoposenet demo`` and ``simulate`` without ``--pdb``
need no file and no network. Its two chains are related by a near-exact 2-fold (178.8°, Cα RMSD
0.6 Å): poses R and R·S give almost the same image, which is why the evaluation reports a
2-fold-aware pose error beside the blind one (docs/evaluation.md).

It fits :data:`MOLECULE_BOX_A` (102.4 Å, the paper's 128 px of 0.8 Å) at 1.6 Å/pixel or finer;
coarser pixels widen the blur of each atom, so a coarse box must be larger (``required_box``).
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from .potential import AtomSet, potential_from_atoms, read_atoms

__all__ = [
    "MOLECULE_BOX",
    "MOLECULE_APIX",
    "MOLECULE_BOX_A",
    "MOLECULE_FILE",
    "default_molecule",
    "molecule_volume",
]

MOLECULE_BOX = 64
MOLECULE_APIX = 1.6
MOLECULE_BOX_A = MOLECULE_BOX * MOLECULE_APIX  # 102.4 Å, as 4AKE in the paper
MOLECULE_FILE = "models/4ake.pdb.gz"


def default_molecule() -> AtomSet:
    """The embedded molecule's atoms (4AKE, chains A and B), coordinates in Å, always the same."""
    with resources.as_file(resources.files(__package__) / MOLECULE_FILE) as path:
        atoms = read_atoms(path)
    return AtomSet(atoms.xyz_A, atoms.elements, "4AKE (embedded)")


def molecule_volume(box: int = MOLECULE_BOX, apix: float | None = None) -> tuple[np.ndarray, float]:
    """The embedded molecule's potential ``(box,)*3`` float32 ``[z, y, x]`` and its pixel size.

    ``apix`` defaults to ``MOLECULE_BOX_A / box`` (the same physical box at any box size).
    """
    apix = MOLECULE_BOX_A / box if apix is None else apix
    return potential_from_atoms(default_molecule(), box, apix), apix
