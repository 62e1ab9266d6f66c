"""Fourier cropping (train --box): maps and projections agree, the CTF and shifts follow the pixel size."""

import numpy as np
import pandas as pd
import pytest
import torch

from cryoposenet.io import StackWriter, default_optics, load_particles, write_star
from cryoposenet.physics import projection
from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.physics.fourier import (
    fourier_to_image,
    half_plane_freqs,
    image_to_fourier,
    shift_phase,
)
from cryoposenet.physics.fourier_crop import cropped_apix, default_box, fourier_crop
from cryoposenet.physics.rotations import random_rotations
from cryoposenet.training.data import StackImages
from datasets import blob_map

CTF = dict(
    defocus_u_A=torch.tensor([9000.0, 21000.0]),
    defocus_v_A=torch.tensor([8000.0, 20000.0]),
    defocus_angle_deg=torch.tensor([30.0, -60.0]),
    voltage_kv=300.0,
    cs_mm=2.7,
    amplitude_contrast=0.1,
)


def rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize(("n", "size"), [(32, 16), (33, 16), (31, 17), (32, 15)])
def test_project_then_crop_equals_crop_map_then_project_along_each_axis(n, size):
    vol = blob_map(n).float()
    small = fourier_crop(vol, size, ndim=3)
    assert small.shape == (size,) * 3
    for axis in range(3):
        # a cropped voxel is n/size times longer, so the sum along the axis is size/n as large
        expected = fourier_crop(vol.sum(axis), size) * (size / n)
        assert rel(small.sum(axis), expected) < 1e-5  # float32 rounding (measured ~4e-7)


def test_project_then_crop_equals_crop_map_then_project_at_any_pose():
    n, size = 64, 32
    vol = blob_map(n).float()
    rots = random_rotations(8, torch.Generator().manual_seed(0))
    cropped = fourier_crop(projection.project(vol, rots), size) * (size / n)
    assert rel(projection.project(fourier_crop(vol, size, ndim=3), rots), cropped) < 2e-4  # 3e-5


@pytest.mark.parametrize(("n", "size"), [(64, 32), (65, 32), (64, 31)])
def test_a_cropped_image_is_the_band_limited_image_at_the_new_pixel_size(n, size):
    sigma = 3.0  # original pixels: well inside the cropped band
    c = torch.arange(n, dtype=torch.float64) - n // 2
    image = torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma**2))
    cc = (torch.arange(size, dtype=torch.float64) - size // 2) * (n / size)  # new pixel centres
    expected = torch.exp(-(cc[:, None] ** 2 + cc[None, :] ** 2) / (2 * sigma**2))
    assert (fourier_crop(image[None], size)[0] - expected).abs().max() < 2e-5  # measured 6e-6–9e-6
    assert torch.allclose(fourier_crop(torch.ones(2, n, n), size), torch.ones(2, size, size), atol=1e-6)


@pytest.mark.parametrize(("n", "size"), [(64, 32), (63, 24), (48, 25)])
def test_cropped_ctf_equals_the_ctf_at_the_new_pixel_size(n, size):
    apix = 1.3
    full = ctf_half_plane(n, apix, **CTF)
    ky = torch.fft.fftfreq(size, d=1.0 / size).round().long() % n
    kept = full[:, ky, : size // 2 + 1]  # the original grid's values at the cropped frequencies
    small = ctf_half_plane(size, cropped_apix(apix, n, size), **CTF)
    assert small.shape == kept.shape
    assert torch.allclose(small, kept, atol=2e-5)  # same frequencies in 1/Å: float32 rounding


@pytest.mark.parametrize(("n", "size"), [(40, 20), (41, 27)])
def test_a_known_translation_scales_to_cropped_pixels(n, size):
    image = blob_map(n)[n // 2 + 2].float()[None]
    t = torch.tensor([[2.6, -1.7]])
    moved = fourier_to_image(image_to_fourier(image) * shift_phase(t, n), n)
    small = fourier_crop(image, size)
    expected = image_to_fourier(small) * shift_phase(t * size / n, size)
    got = image_to_fourier(fourier_crop(moved, size))
    # exact below the cropped Nyquist; an even box's Nyquist row mixes ±size/2, whose phases differ
    kx, ky = half_plane_freqs(size)
    inside = (kx < size / 2) & (ky.abs() < size / 2)
    assert rel(got[:, inside], expected[:, inside]) < 1e-5


def test_stack_rows_are_cropped_and_inverted_on_the_way(tmp_path):
    m, n = 5, 30
    rng = np.random.default_rng(0)
    images = rng.normal(size=(m, n, n)).astype(np.float32)
    with StackWriter(tmp_path / "s.mrcs", m, n, 1.5) as w:
        w[:] = images
    names = [f"{i + 1}@s.mrcs" for i in range(m)]
    write_star(tmp_path / "p.star", pd.DataFrame({"rlnImageName": names}), default_optics(1.5, n))
    stack = load_particles(tmp_path / "p.star")
    rows = torch.tensor([3, 0, 3])
    source = StackImages(stack, box=21, invert=True)
    assert source.shape == (m, 21, 21) and source.apix == pytest.approx(1.5 * 30 / 21)
    expected = -fourier_crop(torch.from_numpy(images[rows.numpy()]), 21)
    assert torch.allclose(source[rows], expected, atol=1e-6)
    assert torch.equal(StackImages(stack)[rows], torch.from_numpy(images[rows.numpy()]))


def test_default_box_and_limits():
    assert [default_box(n) for n in (30, 128, 129, 256, 400)] == [30, 128, 128, 128, 128]
    with pytest.raises(ValueError, match="larger box"):
        fourier_crop(torch.zeros(2, 16, 16), 20)
