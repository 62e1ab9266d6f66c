"""``simulate_dataset`` end to end at 16–24 px: files, SNR, conventions, reconstruction, presets."""

from __future__ import annotations

import math

import mrcfile
import numpy as np
import pytest
import torch

from cryoposenet.errors import InputError
from cryoposenet.io.mrc import read_map, write_map
from cryoposenet.io.particles import load_particles
from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.physics.imaging import origin_to_translation, render
from cryoposenet.physics.projection import volume_to_fourier
from cryoposenet.physics.rotations import euler_to_matrix
from cryoposenet.simulate import (
    PRESETS,
    default_molecule,
    potential_from_atoms,
    preset_params,
    simulate_dataset,
)
from cryoposenet.simulate import dataset as dataset_module

BOX, APIX = 24, 2.0


_VOLUMES: dict = {}


def _sim(out, atoms, **kw):
    """Simulate from ``atoms`` at BOX × APIX (the potential computed once per atom set)."""
    kw = {"box": BOX, "apix": APIX, "n_images": 240, "progress": False, **kw}
    if id(atoms) not in _VOLUMES:
        _VOLUMES[id(atoms)] = potential_from_atoms(atoms, BOX, APIX)
    if kw["box"] != BOX or kw["apix"] != APIX:
        return simulate_dataset(out, atoms=atoms, **kw)
    return simulate_dataset(out, volume=_VOLUMES[id(atoms)], **kw)


@pytest.fixture(scope="module")
def clean_ctf(tmp_path_factory, small_atoms):
    """Noiseless, CTF and shifts: the ground truth the other tests compare with."""
    return _sim(tmp_path_factory.mktemp("clean"), small_atoms, ctf=True, shift_max_A=6.0, seed=5)


def _stack(result) -> torch.Tensor:
    with mrcfile.open(result.particles) as mrc:
        return torch.from_numpy(np.array(mrc.data, dtype=np.float64))


def _snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    return 10 * math.log10(float(clean.var()) / float((noisy - clean).var()))


def test_files_and_star_tables(clean_ctf, small_atoms):
    r = clean_ctf
    assert (r.n_images, r.n_train, r.n_heldout) == (240, 216, 24)
    for p in (r.particles, r.train_star, r.heldout_star, r.map, r.montage):
        assert p.is_file()
    assert r.montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with mrcfile.open(r.particles) as mrc:
        assert mrc.data.shape == (240, BOX, BOX) and mrc.data.dtype == np.float32
        assert float(mrc.voxel_size.x) == pytest.approx(APIX)
        d, h = mrc.data.astype(np.float64), mrc.header
        np.testing.assert_allclose(
            [h.dmin, h.dmax, h.dmean, h.rms],
            [d.min(), d.max(), d.mean(), d.std()],
            rtol=1e-5,
            atol=1e-6 * np.abs(d).max(),
        )
    train, held = load_particles(r.train_star), load_particles(r.heldout_star)
    assert (len(train), len(held), train.box, train.apix) == (216, 24, BOX, APIX)
    assert train.table.particles["rlnImageName"].iloc[0] == "1@particles.mrcs"
    assert held.table.particles["rlnImageName"].iloc[0] == "217@particles.mrcs"
    np.testing.assert_array_equal(held[np.arange(24)], _stack(r)[216:].numpy().astype(np.float32))
    cols = held.table.particles.columns
    for c in (
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnOriginXAngst",
        "rlnOriginYAngst",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnPhaseShift",
        "rlnOpticsGroup",
    ):
        assert c in cols
    assert (np.hypot(*train.table.origins_A().T) <= 6.0).all()
    ctf = train.table.ctf_params()
    assert ((ctf["defocus_v_A"] >= 4000 - 150) & (ctf["defocus_u_A"] <= 12000 + 150)).all()
    u, v = ctf["defocus_u_A"], ctf["defocus_v_A"]
    assert (u >= v).all() and (u - v).max() > 100  # astigmatism on by default with CTF
    vol, apix = read_map(r.map)  # the ground truth round-trips with its pixel size
    assert apix == pytest.approx(APIX)
    np.testing.assert_array_equal(vol, potential_from_atoms(small_atoms, BOX, APIX))


@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 10.0])
def test_snr_matches_request(tmp_path, small_atoms, clean_ctf, snr_db):
    noisy = _sim(tmp_path, small_atoms, ctf=True, shift_max_A=6.0, seed=5, snr_db=snr_db)
    measured = _snr_db(_stack(clean_ctf), _stack(noisy))  # same seed: same signal, independent check
    assert measured == pytest.approx(snr_db, abs=0.5)
    assert noisy.snr_db_measured == pytest.approx(snr_db, abs=0.5)


def test_pilot_estimate_and_streaming(tmp_path, small_atoms, monkeypatch):
    """Many small batches and a 32-image pilot: same signal as one batch, SNR still within 0.5 dB."""
    whole = _sim(tmp_path / "whole", small_atoms, n_images=200, ctf=True, seed=8)
    monkeypatch.setattr(dataset_module, "PILOT_IMAGES", 32)
    monkeypatch.setattr(dataset_module, "_batch_size", lambda box: 16)
    clean = _sim(tmp_path / "clean", small_atoms, n_images=200, ctf=True, seed=8)
    noisy = _sim(tmp_path / "noisy", small_atoms, n_images=200, ctf=True, seed=8, snr_db=-3.0)
    np.testing.assert_allclose(_stack(clean), _stack(whole), atol=1e-5 * float(_stack(whole).abs().max()))
    assert _snr_db(_stack(clean), _stack(noisy)) == pytest.approx(-3.0, abs=0.5)


def _render_from_star(result, transpose=False, negate_shift=False) -> torch.Tensor:
    """Images predicted by the project's decoder from the STAR file's poses, origins and CTF."""
    table = load_particles(result.train_star).table
    box, apix = result.box, result.apix
    ang = torch.deg2rad(torch.as_tensor(table.angles_deg()))
    rots = euler_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2])
    rots = rots.transpose(-1, -2) if transpose else rots
    origins = torch.as_tensor(table.origins_A()) * (-1 if negate_shift else 1)
    ctf = ctf_half_plane(
        box, apix, dtype=torch.float64, **{k: torch.as_tensor(v) for k, v in table.ctf_params().items()}
    )
    vol = torch.from_numpy(read_map(result.map)[0]).double()
    return render(volume_to_fourier(vol), rots, ctf, origin_to_translation(origins, apix))


def test_star_ground_truth_reproduces_images(tmp_path, corr):
    """The embedded molecule at 32 px, CTF and shifts up to 8 Å: the decoder at the STAR values
    matches the stack; a transposed rotation or a negated origin does not."""
    r = simulate_dataset(
        tmp_path,
        atoms=default_molecule(),
        box=32,
        apix=3.6,  # 4AKE fits 32 px at 3.6 Å
        n_images=150,
        ctf=True,
        shift_max_A=8.0,
        seed=2,
        progress=False,
    )
    images = _stack(r)[: r.n_train]
    right = corr(_render_from_star(r), images)
    transposed = corr(_render_from_star(r, transpose=True), images)
    negated = corr(_render_from_star(r, negate_shift=True), images)
    print(
        f"correlation: STAR convention {right.mean():.4f} (min {right.min():.4f}), "
        f"transposed {transposed.mean():.4f}, negated shift {negated.mean():.4f}"
    )
    assert right.mean() > 0.98 and right.min() > 0.95
    assert transposed.mean() < right.mean() - 0.2 and negated.mean() < right.mean() - 0.2
    assert (right > transposed).all() and (right > negated).all()


def test_backprojection_recovers_the_map(tmp_path, small_atoms):
    """Least squares (conjugate gradients) through the decoder with STAR poses and CTF → map.mrc."""
    box, apix = 20, 2.6
    r = simulate_dataset(
        tmp_path,
        atoms=small_atoms,
        box=box,
        apix=apix,
        n_images=300,
        heldout=0,
        ctf=True,
        snr_db=10.0,
        seed=11,
        progress=False,
    )
    table = load_particles(r.train_star).table
    ang = torch.deg2rad(torch.as_tensor(table.angles_deg()))
    rots = euler_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2])
    ctf = ctf_half_plane(
        box, apix, dtype=torch.float64, **{k: torch.as_tensor(v) for k, v in table.ctf_params().items()}
    )
    images = _stack(r)

    def forward(x):
        return render(volume_to_fourier(x), rots, ctf)

    def normal(x):  # Aᵀ A x by autograd (the operator is linear)
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(0.5 * forward(x).pow(2).sum(), x)[0]

    zero = torch.zeros(box, box, box, dtype=torch.float64, requires_grad=True)
    rhs = torch.autograd.grad((forward(zero) * images).sum(), zero)[0]  # Aᵀ b
    x, res = torch.zeros_like(rhs), rhs.clone()
    d, rr = res.clone(), (res * res).sum()
    for _ in range(25):
        q = normal(d)
        alpha = rr / (d * q).sum()
        x, res = x + alpha * d, res - alpha * q
        rr_new = (res * res).sum()
        d, rr = res + (rr_new / rr) * d, rr_new
    truth = torch.from_numpy(read_map(r.map)[0]).double()
    c = float(torch.corrcoef(torch.stack([x.flatten(), truth.flatten()]))[0, 1])
    print(f"backprojection correlation with map.mrc: {c:.4f}")
    assert c > 0.9


def test_map_input_round_trip_and_resampling(tmp_path, small_atoms, clean_ctf):
    same = simulate_dataset(
        tmp_path / "same", map_path=clean_ctf.map, box=BOX, apix=APIX, n_images=20, progress=False
    )
    np.testing.assert_array_equal(read_map(same.map)[0], read_map(clean_ctf.map)[0])
    coarse = simulate_dataset(
        tmp_path / "coarse", map_path=clean_ctf.map, box=16, apix=3.0, n_images=20, progress=False
    )
    vol, apix = read_map(coarse.map)
    assert vol.shape == (16, 16, 16) and apix == pytest.approx(3.0)
    fine = read_map(clean_ctf.map)[0]
    assert vol.sum() * 3.0**3 == pytest.approx(fine.sum() * APIX**3, rel=0.05)
    idx = np.indices(vol.shape).reshape(3, -1)
    np.testing.assert_allclose((idx * vol.reshape(-1)).sum(1) / vol.sum(), [8, 8, 8], atol=0.15)
    with pytest.raises(InputError, match="--box"):
        simulate_dataset(
            tmp_path / "small", map_path=clean_ctf.map, box=8, apix=2.0, n_images=4, progress=False
        )


def test_seed_determinism(tmp_path, small_atoms):
    a = _sim(tmp_path / "a", small_atoms, n_images=16, snr_db=0.0, ctf=True, seed=3)
    b = _sim(tmp_path / "b", small_atoms, n_images=16, snr_db=0.0, ctf=True, seed=3)
    c = _sim(tmp_path / "c", small_atoms, n_images=16, snr_db=0.0, ctf=True, seed=4)
    assert torch.equal(_stack(a), _stack(b)) and not torch.equal(_stack(a), _stack(c))
    assert a.train_star.read_text().split("\n", 1)[1] == b.train_star.read_text().split("\n", 1)[1]


def test_presets_are_table_1(tmp_path, small_atoms):
    table = {"A": None, "B": 10, "C": 5, "D": 0, "E": -5, "F": -10, "G": 0}
    assert sorted(PRESETS) == sorted(table)
    for letter, snr in table.items():
        p = preset_params(letter.lower())
        assert p["snr_db"] == snr and p["ctf"] == (letter == "G")
    assert (preset_params("G")["defocus_min_um"], preset_params("G")["defocus_max_um"]) == (0.4, 1.2)
    with pytest.raises(InputError, match="preset"):
        preset_params("H")
    r = _sim(tmp_path, small_atoms, n_images=40, preset="G")
    table_g = load_particles(r.train_star).table
    u, v = table_g.column("rlnDefocusU"), table_g.column("rlnDefocusV")
    assert r.snr_db == 0.0 and np.array_equal(u, v) and ((u >= 4000) & (u <= 12000)).all()
    assert _sim(tmp_path / "o", small_atoms, n_images=20, preset="B", snr_db=2.0).snr_db == 2.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"heldout": 40}, "heldout"),
        ({"snr_db": float("nan")}, "snr"),
        ({"ctf": True, "defocus_min_um": 1.5, "defocus_max_um": 1.0}, "defocus"),
        ({"box": 16}, "--box"),
        ({"shift_max_A": -1.0}, "shift"),
    ],
)
def test_bad_arguments_are_input_errors(tmp_path, small_atoms, kwargs, message):
    with pytest.raises(InputError, match=message):
        _sim(tmp_path, small_atoms, **{"n_images": 40, **kwargs})


def test_sources_are_exclusive_and_maps_not_empty(tmp_path, small_atoms):
    with pytest.raises(InputError, match="exactly one"):
        simulate_dataset(tmp_path, atoms=small_atoms, volume=np.zeros((BOX,) * 3), box=BOX, apix=APIX)
    with pytest.raises(InputError, match="exactly one"):
        simulate_dataset(tmp_path, box=BOX, apix=APIX)
    empty = tmp_path / "empty.mrc"
    write_map(empty, np.zeros((BOX,) * 3, dtype=np.float32), APIX)
    with pytest.raises(InputError, match="zero everywhere"):
        simulate_dataset(tmp_path / "o", map_path=empty, box=BOX, apix=APIX, n_images=4, progress=False)
