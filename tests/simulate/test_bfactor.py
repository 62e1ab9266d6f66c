"""``simulate --bfactor B``: the blur reaches the map, the default is unchanged, sharp atoms keep mass."""

from __future__ import annotations

import math

import gemmi
import mrcfile
import numpy as np
import pytest

from cryoposenet.cli import main
from cryoposenet.errors import InputError
from cryoposenet.simulate import AtomSet, potential_from_atoms, required_box, simulate_dataset
from cryoposenet.simulate.potential import (
    POTENTIAL_CONSTANT_V_A2,
    VOXEL_BOX_B_PER_APIX2,
    blur_A2,
    voxel_averaged,
)

BOX, APIX = 24, 2.0


def _point_sampled(atoms: AtomSet, box: int, apix: float, b_add: float) -> np.ndarray:
    """The documented default map, typed out: 5-Gaussian atoms point-sampled, cut at 4σ (≥ 2 px)."""
    coef = {e: gemmi.Element(str(e)).c4322 for e in np.unique(atoms.elements)}
    a = np.array([coef[e].a for e in atoms.elements])
    b = np.array([coef[e].b for e in atoms.elements]) + b_add
    centre = (atoms.xyz_A * a.sum(1)[:, None]).sum(0) / a.sum()
    b_all = np.array([coef[e].b for e in coef]).max() + b_add
    cutoff = max(4 * math.sqrt(b_all / (8 * math.pi**2)), 2 * apix)
    grid = (np.indices((box,) * 3)[::-1].reshape(3, -1).T - box // 2) * apix  # (N³, 3) xyz Å
    vol = np.zeros(box**3)
    for pos, ai, bi in zip(atoms.xyz_A - centre, a, b, strict=True):
        r2 = ((grid - pos) ** 2).sum(1)
        near = r2 <= cutoff**2
        amp = POTENTIAL_CONSTANT_V_A2 * ai * (4 * math.pi / bi) ** 1.5
        vol[near] += (amp * np.exp(-4 * math.pi**2 * r2[near, None] / bi)).sum(1)
    return vol.reshape((box,) * 3)


def _high_fraction(vol: np.ndarray) -> float:
    """Power beyond half Nyquist over the power below it."""
    n = vol.shape[0]
    k = np.fft.fftfreq(n)
    kr = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    power = np.abs(np.fft.fftn(vol)) ** 2
    return float(power[kr > 0.25].sum() / power[kr <= 0.25].sum())


def _mass(atoms: AtomSet) -> float:
    return POTENTIAL_CONSTANT_V_A2 * sum(sum(gemmi.Element(str(e)).c4322.a) for e in atoms.elements)


def test_default_is_the_documented_map(small_atoms):
    default = potential_from_atoms(small_atoms, BOX, APIX)
    assert blur_A2(APIX) == 32 * APIX**2 and not voxel_averaged(small_atoms.elements, APIX)
    np.testing.assert_array_equal(default, potential_from_atoms(small_atoms, BOX, APIX, bfactor=128.0))
    np.testing.assert_allclose(default, _point_sampled(small_atoms, BOX, APIX, 128.0), rtol=1e-5, atol=1e-6)


def test_smaller_b_gives_more_high_frequency_power(small_atoms):
    maps = {b: potential_from_atoms(small_atoms, BOX, APIX, bfactor=b) for b in (5.0, 40.0, None)}
    high = {b: _high_fraction(v) for b, v in maps.items()}
    assert high[5.0] > 2 * high[40.0] > 4 * high[None]
    for v in maps.values():  # every blur keeps the atoms' mass and sign
        assert v.sum() * APIX**3 == pytest.approx(_mass(small_atoms), rel=2e-3) and v.min() >= 0


@pytest.mark.parametrize("shift", [0.0, 0.25, 0.5])
def test_sharp_atom_at_coarse_pixels_keeps_its_mass(shift):
    # B = 5 Å² at 3 Å/pixel: σ ≈ 0.1 pixel. Point samples would miss the atom between voxels (or
    # hit its peak); voxel averages keep its mass wherever it sits.
    atoms = AtomSet(np.array([[shift * 3.0, 0.4, -0.8]]), np.array(["C"]))
    assert voxel_averaged(atoms.elements, 3.0, 5.0)
    vol = potential_from_atoms(atoms, 16, 3.0, bfactor=5.0)
    assert vol.sum() * 27.0 == pytest.approx(_mass(atoms), rel=1e-5) and vol.min() >= 0


def test_voxel_averages_keep_the_requested_blur():
    # At 1.5 Å/pixel, B = 20 Å² is averaged over voxels of atoms blurred by 20 − 6.58·1.5² Å²
    # (the voxel's box supplies the rest): the map equals an 11× finer (odd: voxel centres
    # align), point-sampled map of those atoms averaged over each coarse voxel.
    atoms = AtomSet(np.array([[0.4, -0.3, 0.55], [2.0, 1.1, -1.7]]), np.array(["C", "O"]))
    apix, b = 1.5, 20.0
    assert voxel_averaged(atoms.elements, apix, b)
    vol = potential_from_atoms(atoms, 16, apix, bfactor=b)
    b_fine = b - VOXEL_BOX_B_PER_APIX2 * apix**2
    fine = potential_from_atoms(atoms, 16 * 11, apix / 11, bfactor=b_fine)
    assert not voxel_averaged(atoms.elements, apix / 11, b_fine)
    coarse = np.roll(fine, 5, axis=(0, 1, 2)).reshape(16, 11, 16, 11, 16, 11).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(vol, coarse, atol=0.005 * vol.max())


def test_no_jump_where_the_sampling_changes(small_atoms):
    # B just below the switch (voxel averages) is as sharp as B just above it (point samples).
    switch = 8 * math.pi**2 * (0.6 * APIX) ** 2 - 0.2067  # oxygen's narrowest b is 0.2067 Å²
    below, above = (potential_from_atoms(small_atoms, 28, APIX, bfactor=switch + d) for d in (-1, 1))
    assert voxel_averaged(small_atoms.elements, APIX, switch - 1)
    assert not voxel_averaged(small_atoms.elements, APIX, switch + 1)
    assert _high_fraction(below) == pytest.approx(_high_fraction(above), rel=0.03)


def test_small_b_needs_no_larger_box(small_atoms):
    assert required_box(small_atoms, 3.0, 5.0) <= required_box(small_atoms, 3.0)
    potential_from_atoms(small_atoms, required_box(small_atoms, 3.0, 5.0), 3.0, bfactor=5.0)


def test_result_and_map_header_record_b(tmp_path, small_atoms):
    r = simulate_dataset(
        tmp_path / "s", atoms=small_atoms, box=BOX, apix=APIX, n_images=4, bfactor=5.0, progress=False
    )
    assert r.bfactor_A2 == 5.0
    with mrcfile.open(r.map) as mrc:
        labels = [bytes(x).decode() for x in mrc.header.label[: int(mrc.header.nlabl)]]
    assert any("B-factor 5 A^2" in x for x in labels)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_b_is_input_error(small_atoms, bad):
    with pytest.raises(InputError, match="--bfactor"):
        potential_from_atoms(small_atoms, BOX, APIX, bfactor=bad)


@pytest.fixture
def small_pdb(tmp_path, small_atoms, pdb_writer):
    return pdb_writer(tmp_path / "small.pdb", small_atoms.xyz_A, small_atoms.elements)


def _simulate(out, pdb, *extra) -> int:
    sizes = ["--box", str(BOX), "--apix", str(APIX), "-n", "4"]
    return main(["simulate", "--pdb", str(pdb), *sizes, "-o", str(out), *extra])


def test_cli_prints_the_b_it_uses(tmp_path, small_pdb, capsys):
    assert _simulate(tmp_path / "a", small_pdb) == 0
    assert "B-factor 128 Å² added to every atom (default 32·apix²" in capsys.readouterr().out.splitlines()[0]
    assert _simulate(tmp_path / "b", small_pdb, "--bfactor", "5") == 0
    assert capsys.readouterr().out.startswith("B-factor 5 Å² added to every atom (--bfactor)")
    default = mrcfile.read(tmp_path / "a" / "map.mrc")
    sharp = mrcfile.read(tmp_path / "b" / "map.mrc")
    assert _high_fraction(sharp) > 4 * _high_fraction(default)


@pytest.mark.parametrize("source", ["pdb", "map"])
def test_cli_bad_b_is_one_line_exit_2(tmp_path, small_pdb, capsys, source):
    if source == "pdb":
        code, flags = _simulate(tmp_path / "x", small_pdb, "--bfactor", "-5"), "must be"
    else:  # a map has no atoms to blur
        assert _simulate(tmp_path / "m", small_pdb) == 0
        capsys.readouterr()
        mrc = str(tmp_path / "m" / "map.mrc")
        code = main(["simulate", "--map", mrc, "-n", "4", "--bfactor", "5", "-o", str(tmp_path / "x")])
        flags = "map.mrc"
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--bfactor" in err and flags in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()
