"""Odd box sizes through the physics: transforms, projection, CTF, backprojection, alignment, FSC."""

import numpy as np
import pytest
import torch

from cryoposenet.analysis.map_alignment import align_maps
from cryoposenet.analysis.metrics import align_map, fsc, resolution_at
from cryoposenet.analysis.reconstruct import FourierAccumulator
from cryoposenet.physics import projection
from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.physics.fourier import fourier_to_image, image_to_fourier, shift_phase
from cryoposenet.physics.rotations import random_rotations

F64 = torch.float64


@pytest.mark.parametrize("n", [15, 21])
def test_transforms_keep_the_centre_and_shift_by_whole_pixels(n):
    img = torch.randn(2, n, n, dtype=F64, generator=torch.Generator().manual_seed(n))
    assert torch.allclose(fourier_to_image(image_to_fourier(img), n), img, atol=1e-12)
    delta = torch.zeros(n, n, dtype=F64)
    delta[n // 2, n // 2] = 1.0
    spec = image_to_fourier(delta)
    assert torch.allclose(spec, torch.ones_like(spec))  # the centre pixel is the phase origin
    moved = fourier_to_image(image_to_fourier(img) * shift_phase(torch.tensor([2.0, -3.0], dtype=F64), n), n)
    assert torch.allclose(moved, torch.roll(img, shifts=(-3, 2), dims=(-2, -1)), atol=1e-12)


@pytest.mark.parametrize("n", [31, 33])
def test_projection_equals_real_space_rotate_and_sum_on_an_odd_box(n, blob_map, corr, relerr):
    bm = blob_map(n, seed=0)
    vol, rots = bm.volume(), random_rotations(8, torch.Generator().manual_seed(0), dtype=F64)
    ours = projection.project(vol, rots)
    assert ours.shape == (8, n, n)
    assert corr(ours, projection.project_real_space(vol, rots)).min() >= 0.999
    # as at even sizes: this map gives 0.0206 at 30, 31, 32 and 33 px alike
    assert relerr(ours, bm.projections(rots)) < 0.025


def test_ctf_on_an_odd_grid_is_centrosymmetric():
    n = 25
    ctf = ctf_half_plane(
        n,
        1.5,
        dtype=F64,
        defocus_u_A=9000.0,
        defocus_v_A=8000.0,
        defocus_angle_deg=30.0,
        voltage_kv=300.0,
        cs_mm=2.7,
        amplitude_contrast=0.1,
    )[0]
    # kx = 0 column: ky and -ky (rows k and n-k) see the same |s| and angle θ+π
    assert torch.allclose(ctf[1:, 0], ctf[1:, 0].flip(0))
    assert ctf[0, 0] == pytest.approx(0.1)


@pytest.mark.parametrize("n", [21, 23])
def test_backprojection_round_trip_on_an_odd_box(n, blob_map):
    bm = blob_map(n, seed=1)
    vol = bm.volume()
    rots = random_rotations(1500, torch.Generator().manual_seed(2), dtype=F64)
    acc = FourierAccumulator(n, 2.0)
    for part in rots.split(500):
        acc.insert(projection.project_real_space(vol, part), part)
    rec = acc.volume(wiener=1e-3)
    assert rec.shape == (n, n, n)
    c = np.corrcoef(rec.numpy().ravel(), vol.numpy().ravel())[0, 1]
    assert c > 0.999  # measured 0.9996 at 21, 22 and 23 px alike
    assert float(rec.sum() / vol.sum()) == pytest.approx(1.0, rel=0.05)  # 1.03 at all three


def test_map_alignment_and_fsc_on_an_odd_box(blob_map):
    n = 25
    ref = blob_map(n, seed=4).volume().numpy()
    truth = random_rotations(1, torch.Generator().manual_seed(5), dtype=F64)[0].numpy()
    from cryoposenet.analysis.metrics import Alignment

    moved = align_map(ref, Alignment(truth, False, np.array([])))  # ref seen in another frame
    alignment, score = align_maps(moved, ref, n_rotations=2000, coarse_size=15, fine_size=25)
    back = align_map(moved, alignment)
    assert score > 0.98
    curve = fsc(back, ref)
    assert len(curve) == n // 2 + 1 and curve[0] == pytest.approx(1.0)
    assert np.all(fsc(ref, ref) == pytest.approx(1.0))
    assert resolution_at(curve, 0.5, n, 2.0) < 3 * 2.0 * 2  # well inside the band
