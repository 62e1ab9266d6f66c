"""Rotations: RELION's Euler matrix, the network parameterisations, sampling and distances."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from cryoposenet.physics import rotations as R

# (rot, tilt, psi) in degrees: generic, negative, near the gimbal and at it.
ANGLES = [
    (10.0, 20.0, 30.0),
    (-75.0, 130.0, 160.0),
    (179.0, 89.0, -179.0),
    (45.0, 1e-3, -60.0),
    (270.0, 179.9, 15.0),
]


def spec_matrix(rot_deg: float, tilt_deg: float, psi_deg: float) -> np.ndarray:
    """SPEC.md's matrix A, typed out from the spec (a=rot, b=tilt, g=psi)."""
    a, b, g = np.deg2rad([rot_deg, tilt_deg, psi_deg])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    return np.array(
        [
            [cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
            [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
            [sb * ca, sb * sa, cb],
        ]
    )


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' formula, active rotation of xyz column vectors."""
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def assert_rotation(m: torch.Tensor, tol: float = 1e-10) -> None:
    eye = torch.eye(3, dtype=m.dtype).expand_as(m)
    assert torch.allclose(m.transpose(-1, -2) @ m, eye, atol=tol)
    assert torch.allclose(torch.linalg.det(m), torch.ones(m.shape[:-2], dtype=m.dtype), atol=tol)


@pytest.mark.parametrize("angles", ANGLES)
def test_euler_matrix_matches_spec_formula(angles):
    ours = R.relion_angles_to_matrix(torch.tensor(angles, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, spec_matrix(*angles), atol=1e-12)
    rad = torch.deg2rad(torch.tensor(angles, dtype=torch.float64))
    np.testing.assert_allclose(R.euler_to_matrix(*rad).numpy(), spec_matrix(*angles), atol=1e-12)


def test_euler_matrix_hand_checked_cases():
    # rot = 90°: A = Rz(90°)ᵀ; the map's +x axis goes to -y in the image frame.
    a = R.relion_angles_to_matrix(torch.tensor([90.0, 0.0, 0.0], dtype=torch.float64))
    np.testing.assert_allclose(a.numpy(), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-15)
    # tilt = 90°: the map's +z axis goes to -x (A ẑ is the third column).
    a = R.relion_angles_to_matrix(torch.tensor([0.0, 90.0, 0.0], dtype=torch.float64))
    np.testing.assert_allclose(a.numpy(), [[0, 0, -1], [0, 1, 0], [1, 0, 0]], atol=1e-15)
    # psi = 90° after tilt = 90°: A = Rz(psi)ᵀ Ry(tilt)ᵀ.
    a = R.relion_angles_to_matrix(torch.tensor([0.0, 90.0, 90.0], dtype=torch.float64))
    np.testing.assert_allclose(a.numpy(), [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-15)


def test_matrix_to_euler_round_trip_generic():
    g = torch.Generator().manual_seed(1)
    n = 200
    rot = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * 179.0
    tilt = 0.5 + torch.rand(n, generator=g, dtype=torch.float64) * 179.0
    psi = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * 179.0
    angles = torch.stack([rot, tilt, psi], dim=-1)
    back = R.matrix_to_relion_angles(R.relion_angles_to_matrix(angles))
    # Tilt in (0, 180) makes the ZYZ angles unique: the same numbers come back.
    torch.testing.assert_close(back, angles, atol=1e-9, rtol=0)


@pytest.mark.parametrize("tilt", [0.0, 180.0])
@pytest.mark.parametrize(("rot", "psi"), [(30.0, 0.0), (30.0, 20.0), (-120.0, 45.0), (170.0, 170.0)])
def test_matrix_to_euler_round_trip_gimbal(rot, tilt, psi):
    a = R.relion_angles_to_matrix(torch.tensor([rot, tilt, psi], dtype=torch.float64))
    back = R.matrix_to_relion_angles(a)
    assert back[1].item() == pytest.approx(tilt, abs=1e-9)
    assert back[2].item() == 0.0
    # Only rot ± psi is defined at the gimbal: the matrix must come back.
    torch.testing.assert_close(R.relion_angles_to_matrix(back), a, atol=1e-12, rtol=0)
    expected = rot + psi if tilt == 0.0 else rot - psi
    diff = (back[0].item() - expected + 180.0) % 360.0 - 180.0
    assert abs(diff) < 1e-9


def test_quaternion_matrix_hand_checked():
    # 90° about +z, active: x -> y.
    q = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)], dtype=torch.float64)
    m = R.quaternion_to_matrix(q)
    np.testing.assert_allclose(m.numpy(), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)


def test_quaternion_matrix_round_trips():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(500, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    m = R.quaternion_to_matrix(q)
    assert_rotation(m)
    torch.testing.assert_close(R.matrix_to_quaternion(m), q, atol=1e-12, rtol=0)
    # Half turns exercise every branch of Shepperd's method (trace = -1).
    axes = torch.randn(50, 3, generator=g, dtype=torch.float64)
    half = torch.stack([torch.from_numpy(axis_angle_matrix(a.numpy(), math.pi)) for a in axes])
    torch.testing.assert_close(R.quaternion_to_matrix(R.matrix_to_quaternion(half)), half, atol=1e-12, rtol=0)


def test_quaternion_matches_axis_angle():
    axis = np.array([0.3, -0.5, 0.8])
    angle = 1.1
    k = axis / np.linalg.norm(axis)
    q = torch.tensor([math.cos(angle / 2), *(math.sin(angle / 2) * k)], dtype=torch.float64)
    np.testing.assert_allclose(R.quaternion_to_matrix(q).numpy(), axis_angle_matrix(axis, angle), atol=1e-14)


def test_expmap_is_rotation_by_twice_the_norm():
    v = torch.tensor([0.2, -0.4, 0.1], dtype=torch.float64)
    m = R.params_to_matrix("quat", v)
    np.testing.assert_allclose(m.numpy(), axis_angle_matrix(v.numpy(), 2 * v.norm().item()), atol=1e-14)


def test_axis_angle_turns_by_its_length_about_itself():
    g = torch.Generator().manual_seed(4)
    axes = torch.nn.functional.normalize(torch.randn(200, 3, generator=g, dtype=torch.float64), dim=-1)
    omega = axes * torch.rand(200, 1, generator=g, dtype=torch.float64) * 3.0  # angles below π
    m = R.axis_angle_to_matrix(omega)
    eye = torch.eye(3, dtype=torch.float64).expand(200, 3, 3)
    torch.testing.assert_close(R.geodesic_distance(m, eye), omega.norm(dim=-1))
    torch.testing.assert_close((m @ omega[..., None])[..., 0], omega)  # the axis stays put


def test_expmap_quaternion_round_trip():
    g = torch.Generator().manual_seed(3)
    v = torch.randn(300, 3, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=-1, keepdim=True) * torch.rand(300, 1, generator=g, dtype=torch.float64) * 1.5
    q = R.expmap_to_quaternion(v)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(300, dtype=torch.float64))
    torch.testing.assert_close(R.quaternion_to_expmap(q), v, atol=1e-10, rtol=0)
    # And at zero: identity, with a finite gradient.
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    qz = R.expmap_to_quaternion(z)
    torch.testing.assert_close(qz.detach(), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    qz[1].backward()
    assert torch.isfinite(z.grad).all() and z.grad[0].item() == pytest.approx(1.0)


def test_s2s2_round_trip_and_gram_schmidt():
    g = torch.Generator().manual_seed(4)
    m = R.random_rotations(100, generator=g)
    torch.testing.assert_close(R.s2s2_to_matrix(R.matrix_to_s2s2(m)), m, atol=1e-12, rtol=0)
    x = torch.randn(100, 6, generator=g, dtype=torch.float64)
    r = R.s2s2_to_matrix(x)
    # First column is the first vector normalised; second lies in the span of the two inputs.
    torch.testing.assert_close(r[..., :, 0], x[:, :3] / x[:, :3].norm(dim=-1, keepdim=True))
    normal = torch.linalg.cross(x[:, :3], x[:, 3:], dim=-1)
    assert (normal * r[..., :, 1]).sum(-1).abs().max() < 1e-10
    assert ((x[:, 3:] * r[..., :, 1]).sum(-1) > 0).all()


@pytest.mark.parametrize("name", ["euler", "quat", "s2s2"])
def test_parameterisations_give_rotations(name):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(256, R.pose_dim(name), generator=g, dtype=torch.float64) * 3
    assert_rotation(R.params_to_matrix(name, x))


def test_random_rotations_are_uniform():
    g = torch.Generator().manual_seed(6)
    n = 20000
    m = R.random_rotations(n, generator=g)
    assert_rotation(m)
    # Haar measure: E[R] = 0 (each entry has standard deviation 1/sqrt(3 n) ~ 0.004 here).
    assert m.mean(dim=0).abs().max() < 0.02
    # The rotation angle has density (1 - cos θ)/π, CDF (θ - sin θ)/π.
    theta = R.geodesic_distance(torch.eye(3, dtype=torch.float64), m).numpy()
    cdf = lambda t: (t - np.sin(t)) / np.pi  # noqa: E731
    assert stats.kstest(theta, cdf).pvalue > 0.01
    # The same test rejects uniformly drawn Euler angles, which are not uniform on SO(3).
    euler = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [2 * math.pi, math.pi, 2 * math.pi], dtype=torch.float64
    )
    bad = R.geodesic_distance(torch.eye(3, dtype=torch.float64), R.params_to_matrix("euler", euler))
    assert stats.kstest(bad.numpy(), cdf).pvalue < 1e-6


@pytest.mark.parametrize("angle", [1e-5, 0.3, 1.0, 2.5, math.pi - 1e-4])
def test_geodesic_distance_known_angle_and_symmetric(angle):
    g = torch.Generator().manual_seed(7)
    base = R.random_rotations(8, generator=g)
    axes = torch.randn(8, 3, generator=g, dtype=torch.float64)
    turn = torch.stack([torch.from_numpy(axis_angle_matrix(a.numpy(), angle)) for a in axes])
    other = base @ turn
    d = R.geodesic_distance(base, other)
    torch.testing.assert_close(d, torch.full((8,), angle, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(R.geodesic_distance(other, base), d, atol=1e-12, rtol=0)
    torch.testing.assert_close(R.geodesic_distance(base, base), torch.zeros(8, dtype=torch.float64))
