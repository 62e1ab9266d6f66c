"""Cross-checks against independent libraries, when installed (they are not dependencies).

torch-fourier-slice samples the map's transform at ``M (kx, ky, 0)`` for the matrices it is given
(xyz column vectors), so our pose ``A`` is its ``Aᵀ``. roma's intrinsic ``ZYZ`` Euler matrix for
(rot, tilt, psi) is likewise ``Aᵀ``: RELION's ``A`` is the passive (transposed) form.
"""

import math

import pytest
import torch

from cryoposenet.physics import projection, rotations

F64 = torch.float64


def test_same_projection_as_torch_fourier_slice(blob_map, corr, relerr):
    tfs = pytest.importorskip("torch_fourier_slice")
    bm = blob_map(32, seed=21)
    vol = bm.volume()
    rots = rotations.random_rotations(6, torch.Generator().manual_seed(21))
    ours = projection.project(vol, rots)
    theirs = tfs.project_3d_to_2d(vol.float(), rots.transpose(-1, -2).float()).to(F64)
    assert corr(ours, theirs).min() > 0.999
    assert relerr(ours, theirs) < 0.03
    wrong = tfs.project_3d_to_2d(vol.float(), rots.float()).to(F64)
    far = rotations.geodesic_distance(rots, rots.transpose(-1, -2)) > math.radians(30)
    assert far.any() and (corr(ours, wrong)[far] < 0.9).all()


def test_roma_agrees_on_conventions():
    roma = pytest.importorskip("roma")
    g = torch.Generator().manual_seed(22)
    angles = torch.rand(50, 3, generator=g, dtype=F64) * torch.tensor([360.0, 180.0, 360.0], dtype=F64)
    a = rotations.relion_angles_to_matrix(angles)
    torch.testing.assert_close(roma.euler_to_rotmat("ZYZ", angles, degrees=True), a.transpose(-1, -2))
    # Quaternions: ours (w, x, y, z), roma's (x, y, z, w).
    q = torch.randn(50, 4, generator=g, dtype=F64)
    q = q / q.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(
        roma.unitquat_to_rotmat(roma.quat_wxyz_to_xyzw(q)), rotations.quaternion_to_matrix(q)
    )
    q_roma = roma.quat_xyzw_to_wxyz(roma.rotmat_to_unitquat(a))
    q_ours = rotations.matrix_to_quaternion(a)
    torch.testing.assert_close(q_roma * q_roma[:, :1].sign(), q_ours)
    # Gram–Schmidt on the two 3-vectors (columns).
    x = torch.randn(50, 6, generator=g, dtype=F64)
    torch.testing.assert_close(
        roma.special_gramschmidt(torch.stack([x[:, :3], x[:, 3:]], dim=-1)), rotations.s2s2_to_matrix(x)
    )
    torch.testing.assert_close(
        roma.rotmat_geodesic_distance(a[:-1], a[1:]), rotations.geodesic_distance(a[:-1], a[1:])
    )
