"""Gradients of the decoder reach the map, the rotation parameters and the shifts."""

import pytest
import torch

from cryoposenet.physics import imaging, projection
from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.physics.rotations import params_to_matrix, pose_dim

F64 = torch.float64
N = 10


def smooth_volume(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.arange(n, dtype=F64) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    v = torch.zeros(n, n, n, dtype=F64)
    for _ in range(3):
        p = (torch.rand(3, generator=g, dtype=F64) - 0.5) * 0.4 * n
        v += torch.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * 1.2**2))
    return v + 0.05 * torch.randn(n, n, n, generator=g, dtype=F64)


def decoder(volume, pose, shifts, ctf, name="s2s2"):
    fvol = projection.volume_to_fourier(volume, oversample=2)
    return imaging.render(fvol, params_to_matrix(name, pose), ctf=ctf, translations_px=shifts)


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(0)
    vol = smooth_volume(N, 0).requires_grad_(True)
    pose = torch.randn(2, 6, generator=g, dtype=F64).requires_grad_(True)
    shifts = (torch.rand(2, 2, generator=g, dtype=F64) * 2 - 1).requires_grad_(True)
    ctf = ctf_half_plane(
        N,
        3.0,
        dtype=F64,
        defocus_u_A=torch.tensor([9000.0, 14000.0]),
        defocus_v_A=torch.tensor([8000.0, 12500.0]),
        defocus_angle_deg=20.0,
        voltage_kv=300.0,
        cs_mm=2.7,
        amplitude_contrast=0.1,
    )
    assert (ctf < 0).any()  # the CTF does flip signs at this size: a real CTF, not a constant
    return vol, pose, shifts, ctf


def test_gradcheck_map_rotation_and_shift(inputs):
    vol, pose, shifts, ctf = inputs
    # Trilinear interpolation is piecewise polynomial in the sample coordinates; with random
    # poses no sample lies within eps of a grid plane, so finite differences are valid.
    # Every element of the pose and shift parameters, with the map held fixed:
    fixed = vol.detach()
    assert torch.autograd.gradcheck(
        lambda p, t: decoder(fixed, p, t, ctf), (pose, shifts), eps=1e-6, atol=1e-6, rtol=1e-4
    )
    # All three together along random directions (the map has 1000 elements; the decoder is
    # linear in it, so random directions are as good a test as every element).
    assert torch.autograd.gradcheck(
        lambda v, p, t: decoder(v, p, t, ctf),
        (vol, pose, shifts),
        eps=1e-6,
        atol=1e-6,
        rtol=1e-4,
        fast_mode=True,
    )


def test_gradients_are_nonzero_and_descend(inputs):
    vol, pose, shifts, ctf = inputs
    target = decoder(vol.detach() * 1.1, pose.detach() + 0.1, shifts.detach() + 0.3, ctf).detach()
    loss = (decoder(vol, pose, shifts, ctf) - target).square().sum()
    loss.backward()
    for name, x in (("map", vol), ("pose", pose), ("shift", shifts)):
        assert x.grad is not None and torch.isfinite(x.grad).all(), name
        assert x.grad.abs().max() > 1e-6, name
        # A small step against the gradient lowers the loss: the sign is right.
        with torch.no_grad():
            step = 1e-4 / x.grad.norm()
            x -= step * x.grad
            lower = (decoder(vol, pose, shifts, ctf) - target).square().sum()
            x += step * x.grad
        assert lower < loss, name


@pytest.mark.parametrize("name", ["euler", "quat", "s2s2"])
def test_gradcheck_parameterisations(name):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, pose_dim(name), generator=g, dtype=F64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda y: params_to_matrix(name, y), (x,))


def test_gradient_reaches_rotation_through_each_parameterisation(inputs):
    vol, _, shifts, ctf = inputs
    for name in ("euler", "quat", "s2s2"):
        g = torch.Generator().manual_seed(2)
        pose = torch.randn(2, pose_dim(name), generator=g, dtype=F64).requires_grad_(True)
        decoder(vol.detach(), pose, shifts.detach(), ctf, name).square().sum().backward()
        assert pose.grad.abs().min() > 0, name
