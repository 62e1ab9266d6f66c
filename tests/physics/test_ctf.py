"""RELION's CTF: SPEC.md's formula typed out independently, in numpy, at reference points."""

import math

import numpy as np
import pytest
import torch
from scipy import constants

from cryoposenet.physics.ctf import ctf_2d, ctf_half_plane, electron_wavelength_angstrom

F64 = torch.float64


def wavelength_A(kv: float) -> float:
    """Relativistic wavelength from CODATA constants: h c / sqrt(eV (2 m c² + eV))."""
    ev = constants.e * kv * 1e3
    mc2 = constants.m_e * constants.c**2
    return constants.h * constants.c / math.sqrt(ev * (2 * mc2 + ev)) * 1e10


def spec_ctf(sx, sy, u, v, angle_deg, kv, cs_mm, w, phase_deg=0.0):
    """SPEC.md: sqrt(1-w²) sin χ + w cos χ, χ = π λ Δf s² − (π/2) Cs λ³ s⁴ + phase."""
    lam = wavelength_A(kv)
    cs = cs_mm * 1e7  # mm -> Å
    s2 = sx**2 + sy**2
    theta = np.arctan2(sy, sx)
    df = 0.5 * (u + v) + 0.5 * (u - v) * np.cos(2 * (theta - np.deg2rad(angle_deg)))
    chi = np.pi * lam * df * s2 - 0.5 * np.pi * cs * lam**3 * s2**2 + np.deg2rad(phase_deg)
    return np.sqrt(1 - w**2) * np.sin(chi) + w * np.cos(chi)


PARAMS = [
    dict(u=15000.0, v=12000.0, angle_deg=30.0, kv=300.0, cs_mm=2.7, w=0.1),
    dict(u=8000.0, v=9500.0, angle_deg=-65.0, kv=200.0, cs_mm=1.4, w=0.07, phase_deg=90.0),
    dict(u=25000.0, v=25000.0, angle_deg=0.0, kv=300.0, cs_mm=0.01, w=0.15, phase_deg=35.0),
]


def ctf_kwargs(p):
    """A ``PARAMS`` row as the keyword arguments of ``ctf_2d`` / ``ctf_half_plane``."""
    return dict(
        defocus_u_A=p["u"],
        defocus_v_A=p["v"],
        defocus_angle_deg=p["angle_deg"],
        voltage_kv=p["kv"],
        cs_mm=p["cs_mm"],
        amplitude_contrast=p["w"],
        phase_shift_deg=p.get("phase_deg", 0.0),
    )


def ours(sx, sy, p):
    sx_t, sy_t = torch.as_tensor(sx, dtype=F64), torch.as_tensor(sy, dtype=F64)
    return ctf_2d(sx_t, sy_t, **ctf_kwargs(p)).numpy().reshape(np.shape(sx))


def test_wavelength():
    assert wavelength_A(300) == pytest.approx(0.0197, abs=5e-5)
    for kv in (100.0, 200.0, 300.0):
        assert electron_wavelength_angstrom(kv) == pytest.approx(wavelength_A(kv), rel=2e-5)
        assert electron_wavelength_angstrom(torch.tensor(kv, dtype=F64)).item() == pytest.approx(
            wavelength_A(kv), rel=2e-5
        )


@pytest.mark.parametrize("p", PARAMS)
def test_ctf_matches_spec_at_reference_points(p):
    # Points at several radii (1/Å) and directions, including along and across the astigmatism.
    r = np.array([0.0, 0.01, 0.04, 0.1, 0.2, 0.33, 0.02, 0.15])
    t = np.deg2rad([0.0, 30.0, 120.0, -65.0, 25.0, 200.0, 90.0, -150.0])
    sx, sy = r * np.cos(t), r * np.sin(t)
    expected = spec_ctf(sx, sy, **p)
    # The CTF oscillates fast at high s; 1e-4 allows the wavelength formulae's 1e-5 difference.
    np.testing.assert_allclose(ours(sx, sy, p), expected, atol=1e-4, rtol=0)
    assert np.abs(expected).max() <= 1.0
    assert np.ptp(expected) > 0.5  # the points do sample the oscillation


def test_ctf_half_plane_grid_orientation():
    # Astigmatic, at an angle: a swapped or mirrored frequency grid would not match.
    n, apix = 32, 1.3
    p = PARAMS[0]
    got = ctf_half_plane(n, apix, dtype=F64, **ctf_kwargs(p))[0].numpy()
    # Our own grid, built independently: rows ky = fftfreq, columns kx = rfftfreq, in 1/Å.
    sy, sx = np.meshgrid(np.fft.fftfreq(n, d=apix), np.fft.rfftfreq(n, d=apix), indexing="ij")
    np.testing.assert_allclose(got, spec_ctf(sx, sy, **p), atol=1e-4, rtol=0)
    mirrored = spec_ctf(sx, -sy, **p)
    assert np.abs(got - mirrored).max() > 0.5


def test_ctf_at_zero_and_sign():
    zero = torch.zeros(1, 1, dtype=F64)
    kw = dict(defocus_angle_deg=0.0, voltage_kv=300.0, cs_mm=2.7)
    for w in (0.0, 0.07, 0.1):
        c0 = ctf_2d(zero, zero, defocus_u_A=15000.0, defocus_v_A=15000.0, amplitude_contrast=w, **kw)
        assert c0.item() == pytest.approx(w, abs=1e-15)
    c0 = ctf_2d(
        zero, zero, defocus_u_A=1e4, defocus_v_A=1e4, amplitude_contrast=0.1, phase_shift_deg=90.0, **kw
    )
    assert c0.item() == pytest.approx(math.sqrt(1 - 0.01), abs=1e-12)
    # Underfocus (positive defocus): CTF rises above w at low frequency, up to the first peak.
    lam = wavelength_A(300.0)
    df = 15000.0
    s_peak = math.sqrt(0.5 / (lam * df))  # χ = π/2 (Cs negligible there)
    s = torch.linspace(0.002, s_peak, 50, dtype=F64)[None]
    under = ctf_2d(s, 0 * s, defocus_u_A=df, defocus_v_A=df, amplitude_contrast=0.1, **kw)
    assert (under > 0.1).all() and under.max() > 0.99
    assert (under[0, 1:] > under[0, :-1]).all()
    over = ctf_2d(s, 0 * s, defocus_u_A=-df, defocus_v_A=-df, amplitude_contrast=0.1, **kw)
    assert over.max() < 0.1 and over.min() < -0.9


def test_ctf_per_image_parameters():
    s = torch.tensor([[0.05, 0.1]], dtype=F64)
    c = ctf_2d(
        s,
        0 * s,
        defocus_u_A=torch.tensor([10000.0, 20000.0], dtype=F64),
        defocus_v_A=torch.tensor([10000.0, 20000.0], dtype=F64),
        defocus_angle_deg=0.0,
        voltage_kv=300.0,
        cs_mm=2.7,
        amplitude_contrast=0.1,
    )
    assert c.shape == (2, 1, 2)
    for i, df in enumerate((10000.0, 20000.0)):
        np.testing.assert_allclose(
            c[i, 0].numpy(), spec_ctf(s[0].numpy(), 0.0, df, df, 0.0, 300.0, 2.7, 0.1), atol=1e-5
        )


def test_agrees_with_torch_ctf():
    torch_ctf = pytest.importorskip("torch_ctf")
    n, apix = 64, 1.2
    for u, v, ang, ps in [(15000.0, 12000.0, 30.0, 0.0), (15000.0, 12000.0, -50.0, 90.0)]:
        got = ctf_half_plane(
            n,
            apix,
            dtype=F64,
            defocus_u_A=u,
            defocus_v_A=v,
            defocus_angle_deg=ang,
            voltage_kv=300.0,
            cs_mm=2.7,
            amplitude_contrast=0.07,
            phase_shift_deg=ps,
        )[0]
        # torch-ctf: mean defocus and half the difference in µm, angle from x, rfft grid.
        ref = torch_ctf.calculate_ctf_2d(
            defocus=(u + v) / 2e4,
            astigmatism=(u - v) / 2e4,
            astigmatism_angle=ang,
            voltage=300.0,
            spherical_aberration=2.7,
            amplitude_contrast=0.07,
            phase_shift=ps,
            pixel_size=apix,
            image_shape=(n, n),
            rfft=True,
            fftshift=False,
        )
        assert ref.shape == got.shape
        torch.testing.assert_close(ref.to(F64), got, atol=2e-4, rtol=0)
