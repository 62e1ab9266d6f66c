"""Simulated particle data sets, as in the paper: atomic model → potential → real-space projections
with CTF, shifts and noise → RELION STAR + MRC stack.

Library API (the ``cryoposenet simulate`` command calls :func:`simulate_dataset`):

* :func:`simulate_dataset` (out_dir, *, pdb | map_path | volume | atoms, box, apix, n_images,
  heldout, snr_db, ctf, defocus_min_um, defocus_max_um, astigmatism, shift_max_A, seed, preset,
  progress, bfactor) → :class:`SimulationResult`
* :func:`preset_params` (letter) → Table 1 row as keyword values
* :func:`read_atoms`, :func:`potential_from_atoms`, :func:`required_box`: atomic model → map
  (``bfactor``: the B in Å² added to every atom, default ``32·apix²``)
* :func:`load_map_volume`: an MRC map on the requested grid
* :func:`default_molecule`, :func:`molecule_volume`: the embedded molecule (for ``demo``)
* :func:`form_images`, :func:`project_rotated`: image formation without noise
"""

from .dataset import SimulationResult, load_ground_truth, simulate_dataset
from .forward import CTFParams, apply_ctf_and_shift, form_images
from .maps import load_map_volume
from .molecule import MOLECULE_APIX, MOLECULE_BOX, MOLECULE_BOX_A, default_molecule, molecule_volume
from .potential import AtomSet, potential_from_atoms, read_atoms, required_box
from .presets import PRESETS, preset_params
from .projector import project_rotated

__all__ = [
    "SimulationResult",
    "simulate_dataset",
    "load_ground_truth",
    "preset_params",
    "PRESETS",
    "AtomSet",
    "read_atoms",
    "potential_from_atoms",
    "required_box",
    "load_map_volume",
    "default_molecule",
    "molecule_volume",
    "MOLECULE_BOX",
    "MOLECULE_APIX",
    "MOLECULE_BOX_A",
    "CTFParams",
    "apply_ctf_and_shift",
    "form_images",
    "project_rotated",
]
