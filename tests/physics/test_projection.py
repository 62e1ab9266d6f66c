"""The Fourier-slice projector and image formation against real-space and analytic references."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryoposenet.physics import imaging, projection
from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.physics.fourier import (
    fourier_to_image,
    half_plane_freqs,
    image_to_fourier,
    nyquist_mask,
    power,
    shift_phase,
)
from cryoposenet.physics.rotations import geodesic_distance, random_rotations, relion_angles_to_matrix

F64 = torch.float64


def relion_poses(n: int, seed: int) -> torch.Tensor:
    """``n`` random RELION (rot, tilt, psi) triples in degrees, as matrices."""
    g = np.random.default_rng(seed)
    angles = np.stack(
        [g.uniform(-180, 180, n), np.degrees(np.arccos(g.uniform(-1, 1, n))), g.uniform(-180, 180, n)], -1
    )
    return relion_angles_to_matrix(angles)


@pytest.mark.parametrize("n", [32, 64])
def test_fourier_projection_matches_real_space(n, blob_map, corr, relerr):
    bm = blob_map(n, seed=n)
    vol = bm.volume()
    rots = relion_poses(8, seed=n)
    ours = projection.project(vol, rots, oversample=2)
    real = projection.project_real_space(vol, rots)
    assert corr(ours, real).min() >= 0.999  # measured 0.9998 at 32 and 64 px
    exact = bm.projections(rots)
    assert corr(real, exact).min() >= 0.9995  # the two references agree with each other
    assert corr(ours, exact).min() >= 0.999
    assert relerr(ours, exact) < 0.03  # measured 0.021 at oversample 2 with gridding correction
    # The same poses read with the transposed matrix (the other convention) are clearly wrong
    # wherever Aᵀ is not close to A.
    wrong = corr(projection.project(vol, rots.transpose(-1, -2), oversample=2), real)
    far = geodesic_distance(rots, rots.transpose(-1, -2)) > math.radians(30)
    assert far.sum() >= 4
    assert (wrong[far] < 0.9).all() and wrong[far].mean() < 0.8


def test_oversampling_and_gridding_reduce_error(blob_map, relerr):
    bm = blob_map(32, seed=3)
    vol, rots = bm.volume(), random_rotations(8, torch.Generator().manual_seed(3))
    exact = bm.projections(rots)

    def err(p, gc):
        fvol = projection.volume_to_fourier(vol, oversample=p, gridding_correction=gc)
        return relerr(fourier_to_image(projection.slice_volume(fvol, rots), 32), exact)

    e1, e1g, e2, e2g = err(1, False), err(1, True), err(2, False), err(2, True)
    assert e2g < e2 < e1 and e1g < e1
    assert e2g < 0.5 * e1g


def test_gridding_correction_restores_off_centre_density(blob_cls):
    # Trilinear interpolation in Fourier space weights real space by sinc²(r / 2n) per axis; a
    # blob at (10, -8, 6) px in a 32 px box loses 15 % of its peak without the correction.
    bm = blob_cls(
        32,
        torch.tensor([[10.0, -8.0, 6.0]], dtype=F64),
        torch.tensor([1.5], dtype=F64),
        torch.tensor([1.0], dtype=F64),
    )
    vol, rots = bm.volume(), random_rotations(6, torch.Generator().manual_seed(0))
    peak = bm.projections(rots).amax(dim=(-2, -1))

    def ratio(gc):
        fvol = projection.volume_to_fourier(vol, oversample=2, gridding_correction=gc)
        return fourier_to_image(projection.slice_volume(fvol, rots), 32).amax(dim=(-2, -1)) / peak

    torch.testing.assert_close(ratio(True), torch.ones(6, dtype=F64), atol=0.01, rtol=0)  # measured ≤ 1.006
    assert (ratio(False) < 0.9).all()  # measured 0.85


def test_single_blob_lands_where_the_convention_says():
    # A blob at map position p appears in the image at (A p)_xy (pixels from the centre).
    n, d = 32, 7.0
    cases = {
        (0.0, 90.0, 0.0): ((0.0, 0.0, d), (-d, 0.0)),  # tilt 90°: +z goes to -x
        (90.0, 0.0, 0.0): ((d, 0.0, 0.0), (0.0, -d)),  # rot 90°: +x goes to -y
        (0.0, 90.0, 90.0): ((0.0, 0.0, d), (0.0, d)),  # then psi 90°: -x goes to +y
    }
    c = torch.arange(n, dtype=F64) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    for angles, (p, expected) in cases.items():
        vol = torch.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * 1.5**2))
        img = projection.project(vol, relion_angles_to_matrix(list(angles))[None])[0]
        iy, ix = np.unravel_index(int(img.argmax()), img.shape)
        assert (ix - n // 2, iy - n // 2) == expected, angles


def test_identity_pose_is_the_sum_along_z(blob_map, relerr):
    vol = blob_map(32, seed=5).volume()
    eye = torch.eye(3, dtype=F64)[None]
    # Without gridding correction the identity slice lies on grid points: exact to rounding.
    fvol = projection.volume_to_fourier(vol, oversample=2, gridding_correction=False)
    img = fourier_to_image(projection.slice_volume(fvol, eye), 32)[0]
    # (The projector keeps frequencies inside the Nyquist circle; so does the reference here.)
    band_limited = fourier_to_image(image_to_fourier(vol.sum(dim=0)) * nyquist_mask(32), 32)
    torch.testing.assert_close(img, band_limited, atol=1e-10, rtol=0)
    # With the default gridding correction the identity is the worst case: its samples lie on
    # grid points, where trilinear interpolation is exact, so dividing by sinc² overshoots the
    # periphery (by 1/sinc²(r / 2n) per axis). Measured 0.026 for this map.
    assert relerr(projection.project(vol, eye)[0], vol.sum(dim=0)) < 0.035
    assert relerr(projection.project_real_space(vol, eye)[0], vol.sum(dim=0)) < 1e-12


def test_fourier_round_trip_and_centre():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(3, 16, 16, generator=g, dtype=F64)
    torch.testing.assert_close(fourier_to_image(image_to_fourier(img), 16), img)
    # A delta at the centre pixel has a flat, real spectrum (no stray phase ramp).
    delta = torch.zeros(16, 16, dtype=F64)
    delta[8, 8] = 1
    torch.testing.assert_close(image_to_fourier(delta), torch.ones(16, 9, dtype=torch.complex128))


@pytest.fixture
def centred(blob_map):
    bm = blob_map(32, seed=11)
    fvol = projection.volume_to_fourier(bm.volume())
    rots = random_rotations(3, torch.Generator().manual_seed(11))
    return fvol, rots, imaging.render(fvol, rots)


def test_integer_shift_is_a_roll(centred):
    fvol, rots, base = centred
    t = torch.tensor([[3.0, -2.0], [-5.0, 4.0], [0.0, 7.0]], dtype=F64)
    shifted = imaging.render(fvol, rots, translations_px=t)
    for i in range(3):
        dx, dy = int(t[i, 0]), int(t[i, 1])
        ref = torch.roll(base[i], shifts=(dy, dx), dims=(-2, -1))
        torch.testing.assert_close(shifted[i], ref, atol=1e-10, rtol=0)


def test_subpixel_shift_matches_scipy_and_shift_theorem(centred):
    fvol, rots, base = centred
    t = torch.tensor([[0.4, -1.3], [2.75, 0.5], [-0.5, 0.25]], dtype=F64)
    shifted = imaging.render(fvol, rots, translations_px=t)
    n = base.shape[-1]
    ky, kx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")

    def lowpass(img):
        return np.fft.ifft2(np.fft.fft2(img) * (kx**2 + ky**2 < 0.45**2)).real

    for i in range(3):
        tx, ty = t[i].tolist()
        b = base[i].numpy()
        # Shift theorem on the full plane, typed independently: g(r) = f(r - t). A subpixel shift
        # is ambiguous at Nyquist for even n, so both sides are compared below 0.45 cycles/pixel.
        spec = np.fft.fft2(np.fft.ifftshift(b)) * np.exp(-2j * np.pi * (kx * tx + ky * ty))
        ref = np.fft.fftshift(np.fft.ifft2(spec).real)
        np.testing.assert_allclose(lowpass(shifted[i].numpy()), lowpass(ref), atol=1e-9 * np.abs(b).max())
        # scipy moves content by +shift (given as (y, x)); cubic splines, so a looser tolerance.
        ref2 = ndimage.shift(b, (ty, tx), order=3, mode="grid-wrap")
        assert np.abs(shifted[i].numpy() - ref2).max() < 1e-2 * np.abs(b).max()


def test_relion_origin_sign(centred):
    # SPEC: the particle's centre lies at the box centre minus the origin; translating the
    # image by +origin re-centres it.
    fvol, rots, base = centred
    apix = 1.5
    origin_A = torch.tensor([[4.5, -3.0], [-6.0, 7.5], [0.0, 1.5]], dtype=F64)
    t = imaging.origin_to_translation(origin_A, apix)
    torch.testing.assert_close(t, -origin_A / apix)
    images = imaging.render(fvol, rots, translations_px=t)
    for i in range(3):
        ox, oy = (origin_A[i] / apix).round().long().tolist()
        recentred = torch.roll(images[i], shifts=(oy, ox), dims=(-2, -1))
        torch.testing.assert_close(recentred, base[i], atol=1e-10, rtol=0)
        # The particle itself sits at centre - origin.
        moved = torch.roll(base[i], shifts=(-oy, -ox), dims=(-2, -1))
        torch.testing.assert_close(images[i], moved, atol=1e-10, rtol=0)


def test_ctf_multiplies_the_spectrum(centred):
    fvol, rots, _ = centred
    ctf = ctf_half_plane(
        32,
        1.2,
        dtype=F64,
        defocus_u_A=torch.tensor([9000.0, 12000.0, 15000.0]),
        defocus_v_A=8000.0,
        defocus_angle_deg=25.0,
        voltage_kv=300.0,
        cs_mm=2.7,
        amplitude_contrast=0.1,
    )
    t = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    spec = imaging.render_spectra(fvol, rots, ctf=ctf, translations_px=t)
    expected = projection.slice_volume(fvol, rots) * shift_phase(t, 32) * ctf
    torch.testing.assert_close(spec, expected)
    # The real image carries that spectrum (away from the Nyquist row and column, which a real
    # image cannot hold with a subpixel phase).
    img = imaging.render(fvol, rots, ctf=ctf, translations_px=t)
    kx, ky = half_plane_freqs(32, dtype=F64)
    inner = kx**2 + ky**2 < 15**2
    torch.testing.assert_close(image_to_fourier(img)[:, inner], spec[:, inner], atol=1e-9, rtol=0)
    assert (ctf < 0).any() and (ctf > 0).any()


def test_projection_preserves_mass(blob_map):
    # The DC term is the integral: every pose keeps the total density.
    vol = blob_map(32, seed=2).volume()
    rots = random_rotations(5, torch.Generator().manual_seed(2))
    fvol = projection.volume_to_fourier(vol, gridding_correction=False)
    img = fourier_to_image(projection.slice_volume(fvol, rots), 32)
    torch.testing.assert_close(img.sum(dim=(-2, -1)), vol.sum().expand(5), rtol=1e-10, atol=0)
    assert math.isfinite(img.abs().max().item())


def _slice_and_grad(vol, rots, weights, radius):
    spec = projection.slice_volume(projection.volume_to_fourier(vol), rots, radius=radius)
    (weights * spec.abs().square()).sum().backward()
    grad, vol.grad = vol.grad.clone(), None
    return spec.detach(), grad


@pytest.mark.parametrize("radius", [3.0, 7.5, 100.0])
def test_band_limited_slice_samples_only_the_band_and_keeps_its_values_and_gradient(radius):
    n = 16
    vol = torch.rand(n, n, n, dtype=F64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    rots = random_rotations(5, torch.Generator().manual_seed(1))
    kx, ky = half_plane_freqs(n, dtype=F64)
    band = kx**2 + ky**2 <= radius**2
    weights = torch.rand(n, n // 2 + 1, dtype=F64, generator=torch.Generator().manual_seed(2)) * band
    full, full_grad = _slice_and_grad(vol, rots, weights, None)
    limited, limited_grad = _slice_and_grad(vol, rots, weights, radius)
    assert (limited[:, ~band] == 0).all()
    assert (limited[:, band] == full[:, band]).all()
    torch.testing.assert_close(limited_grad, full_grad, rtol=1e-10, atol=1e-12)


def test_power_is_the_squared_modulus_with_gradient_two_z_even_at_zero():
    z = torch.tensor([3 + 4j, 0j, -1e-3 + 2j], dtype=torch.complex128, requires_grad=True)
    p = power(z)
    assert p.dtype == F64
    torch.testing.assert_close(p, z.detach().abs() ** 2, rtol=1e-14, atol=0)
    p.sum().backward()
    # PyTorch's gradient of a real loss in a complex z is dL/d(Re z) + i dL/d(Im z) = 2z here.
    torch.testing.assert_close(z.grad, 2 * z.detach(), rtol=1e-14, atol=0)
