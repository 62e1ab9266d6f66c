"""Atomic model → potential: axis order, centring, mass, file handling, fit check."""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np
import pytest

from cryoposenet.errors import InputError
from cryoposenet.simulate import AtomSet, potential_from_atoms, read_atoms, required_box
from cryoposenet.simulate.potential import POTENTIAL_CONSTANT_V_A2

SHARED_4AKE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "4ake.pdb"


def _expected_mass(elements) -> float:
    """∫V d³r = K · Σ_atoms Σ_i a_i (V·Å³)."""
    return POTENTIAL_CONSTANT_V_A2 * sum(sum(gemmi.Element(str(e)).c4322.a) for e in elements)


def _centroid(vol: np.ndarray) -> np.ndarray:
    idx = np.indices(vol.shape).reshape(3, -1)
    return (idx * vol.reshape(-1)).sum(1) / vol.sum()


def test_axis_order_is_zyx():
    # Atoms strung along x only: the map is long on its last axis, short on the first two.
    xyz = np.stack([np.linspace(-12, 12, 9), np.zeros(9), np.zeros(9)], axis=1)
    vol = potential_from_atoms(AtomSet(xyz, np.array(["C"] * 9)), box=40, apix=1.0)
    extent = [np.count_nonzero(vol.sum(axis=tuple(a for a in range(3) if a != k)) > 1e-3) for k in range(3)]
    assert extent[2] > extent[1] + 15 and extent[2] > extent[0] + 15
    # An atom at +y only: the centroid moves down axis 1 ([z, y, x]) relative to voxel N//2.
    two = AtomSet(np.array([[0.0, 0.0, 0.0], [0.0, 8.0, 0.0]]), np.array(["O", "O"]))
    vol = potential_from_atoms(two, box=32, apix=1.0)
    peaks = np.argwhere(vol > 0.9 * vol.max())
    assert set(map(tuple, peaks)) == {(16, 12, 16), (16, 20, 16)}


def test_centred_with_all_mass(small_atoms):
    box, apix = 24, 2.0
    vol = potential_from_atoms(small_atoms, box, apix)
    assert vol.shape == (box, box, box) and vol.dtype == np.float32
    np.testing.assert_allclose(_centroid(vol), [box // 2] * 3, atol=0.02)
    assert vol.sum() * apix**3 == pytest.approx(_expected_mass(small_atoms.elements), rel=0.01)
    assert vol.min() >= 0


def test_model_too_big_is_input_error(tmp_path, pdb_writer):
    rng = np.random.default_rng(0)
    path = pdb_writer(tmp_path / "big.pdb", rng.normal(size=(50, 3)) * 15, ["C"] * 50)
    atoms = read_atoms(path)
    need = required_box(atoms, 2.0)
    with pytest.raises(InputError, match=rf"big\.pdb.*--box {need}"):
        potential_from_atoms(atoms, box=need - 2, apix=2.0)
    assert potential_from_atoms(atoms, box=need, apix=2.0).any()


def test_hydrogens_waters_dropped_ligands_kept(tmp_path, pdb_writer):
    xyz = np.arange(15, dtype=float).reshape(5, 3)
    residues = ["ALA", "ALA", "HOH", "LIG", "LIG"]
    path = pdb_writer(tmp_path / "m.pdb", xyz, ["C", "H", "O", "N", "FE"], residues)
    atoms = read_atoms(path)
    assert sorted(atoms.elements) == ["C", "Fe", "N"]
    assert len(read_atoms(path, keep_waters=True)) == 4


def test_mmcif_reads_like_pdb(tmp_path, small_atoms, pdb_writer):
    pdb = pdb_writer(tmp_path / "s.pdb", small_atoms.xyz_A, small_atoms.elements)
    st = gemmi.read_structure(str(pdb))
    st.setup_entities()
    cif = tmp_path / "s.cif"
    st.make_mmcif_document().write_file(str(cif))
    a, b = read_atoms(pdb), read_atoms(cif)
    np.testing.assert_allclose(a.xyz_A, b.xyz_A, atol=1e-3)
    np.testing.assert_array_equal(a.elements, b.elements)


WATER_ONLY = "HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O\n"


@pytest.mark.parametrize(
    "content, message",
    [(None, "file not found"), (WATER_ONLY, "no atoms"), ("this is not a structure\x00\x01", "")],
)
def test_bad_model_files(tmp_path, content, message):
    path = tmp_path / "bad.pdb"
    if content is not None:
        path.write_text(content)
    try:
        read_atoms(path)
    except InputError as exc:
        assert "bad.pdb" in str(exc) and message in str(exc)
    else:  # gemmi reads garbage as an empty model: that must still be an InputError
        pytest.fail("no InputError")


def test_empty_atom_set_is_input_error():
    with pytest.raises(InputError, match="no atoms"):
        potential_from_atoms(AtomSet(np.zeros((0, 3)), np.array([], dtype=str)), 16, 1.0)


@pytest.mark.skipif(not SHARED_4AKE.is_file(), reason="4AKE is only in the development checkout")
def test_4ake_potential():
    atoms = read_atoms(SHARED_4AKE)
    assert len(atoms) == 3312  # 3459 sites in the file, less 147 waters
    assert len(read_atoms(SHARED_4AKE, keep_waters=True)) == 3459
    vol = potential_from_atoms(atoms, box=64, apix=1.6)
    assert vol.sum() * 1.6**3 == pytest.approx(_expected_mass(atoms.elements), rel=0.005)
    np.testing.assert_allclose(_centroid(vol), [32, 32, 32], atol=0.01)
    assert required_box(atoms, 1.6) == 64 and required_box(atoms, 0.8) <= 128
