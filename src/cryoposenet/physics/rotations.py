"""Rotations: the one convention of the project, stated once.

Convention
----------
A rotation is a ``(..., 3, 3)`` matrix ``R`` acting on **xyz column vectors**: ``r' = R @ r``.
Volumes are stored ``[z, y, x]``; the vector ``(x, y, z)`` indexes them in that reversed order.

A particle's pose is RELION's matrix ``A`` (see :func:`euler_to_matrix`): the image is the
projection along z of the map rotated by ``A``, ``V_rot(r) = V(Aᵀ r)``, and in Fourier space the
image's transform at ``(kx, ky)`` is the map's transform at ``Aᵀ (kx, ky, 0)``.

Network parameterisations (paper section 3), each a differentiable map to ``(..., 3, 3)``:

* ``euler``: 3 numbers, read as RELION (rot, tilt, psi) in radians.
* ``quat``: 3 numbers ``v`` mapped to a unit quaternion by the exponential map
  ``q = (cos|v|, sin|v| v/|v|)``, i.e. a rotation by ``2|v|`` about ``v`` (the paper's
  "rotates by 2 cos⁻¹ q1 around (q2, q3, q4)").
* ``s2s2``: 6 numbers, two 3-vectors orthonormalised by Gram–Schmidt into ``w1, w2``,
  ``w3 = w1 × w2``; the matrix has columns ``(w1, w2, w3)``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "s2s2_to_matrix",
    "matrix_to_s2s2",
    "expmap_to_quaternion",
    "quaternion_to_expmap",
    "axis_angle_to_matrix",
    "random_rotations",
    "geodesic_distance",
    "PARAMETERISATIONS",
    "pose_dim",
    "params_to_matrix",
    "relion_angles_to_matrix",
    "matrix_to_relion_angles",
]


def euler_to_matrix(rot: torch.Tensor, tilt: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """RELION ZYZ Euler angles (radians, each ``(...)``) to RELION's matrix ``A`` ``(..., 3, 3)``.

    ``A = Rz(psi) @ Ry(tilt) @ Rz(rot)`` written out as in RELION's ``Euler_angles2matrix``.
    """
    ca, sa = torch.cos(rot), torch.sin(rot)
    cb, sb = torch.cos(tilt), torch.sin(tilt)
    cg, sg = torch.cos(psi), torch.sin(psi)
    rows = [
        [cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
        [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
        [sb * ca, sb * sa, cb],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_euler(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RELION's matrix ``(..., 3, 3)`` to ZYZ angles (rot, tilt, psi) in radians.

    Tilt lies in [0, π]; at tilt 0 or π the split between rot and psi is arbitrary and psi is 0.
    """
    m = matrix
    tilt = torch.atan2(torch.hypot(m[..., 2, 0], m[..., 2, 1]), m[..., 2, 2])
    rot = torch.atan2(m[..., 2, 1], m[..., 2, 0])
    psi = torch.atan2(m[..., 1, 2], -m[..., 0, 2])
    gimbal = torch.hypot(m[..., 2, 0], m[..., 2, 1]) < 1e-6
    if gimbal.any():
        # A = Rz(psi) Ry(0 or pi) Rz(rot): only rot ± psi is defined; put it all in rot.
        # tilt 0: A[0,0] = cos(rot + psi), A[0,1] = sin(rot + psi);
        # tilt π: A[0,0] = -cos(rot - psi), A[0,1] = -sin(rot - psi).
        flip = m[..., 2, 2] < 0
        rot_g = torch.where(
            flip, torch.atan2(-m[..., 0, 1], -m[..., 0, 0]), torch.atan2(m[..., 0, 1], m[..., 0, 0])
        )
        rot = torch.where(gimbal, rot_g, rot)
        psi = torch.where(gimbal, torch.zeros_like(psi), psi)
    return rot, tilt, psi


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Quaternion ``(..., 4)`` as (w, x, y, z), normalised here, to a rotation ``(..., 3, 3)``."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation ``(..., 3, 3)`` to a unit quaternion (w, x, y, z) ``(..., 4)`` with w ≥ 0."""
    m = matrix
    # Shepperd's method: pick the best-conditioned of four candidate formulas per rotation.
    diag = torch.stack([m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], dim=-1)
    trace = diag.sum(-1)
    cands = torch.stack(
        [
            torch.stack(
                [
                    1 + trace,
                    m[..., 2, 1] - m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    1 + 2 * diag[..., 0] - trace,
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    1 + 2 * diag[..., 1] - trace,
                    m[..., 1, 2] + m[..., 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1 + 2 * diag[..., 2] - trace,
                ],
                -1,
            ),
        ],
        dim=-2,
    )
    choice = torch.cat([trace[..., None], diag], dim=-1).argmax(-1)
    q = torch.gather(cands, -2, choice[..., None, None].expand(*choice.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def expmap_to_quaternion(v: torch.Tensor) -> torch.Tensor:
    """The paper's fixed map from 3 numbers to a unit quaternion: ``(cos|v|, sin|v| v/|v|)``.

    ``v`` is ``(..., 3)``; smooth at ``v = 0`` (uses sin(t)/t = sinc).
    """
    theta = v.norm(dim=-1, keepdim=True)
    scale = torch.sinc(theta / math.pi)  # sin(theta)/theta, 1 at 0
    return torch.cat([torch.cos(theta), scale * v], dim=-1)


def quaternion_to_expmap(q: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`expmap_to_quaternion` for unit quaternions with w ≥ 0 ``(..., 4) -> (..., 3)``."""
    q = torch.where(q[..., :1] < 0, -q, q)
    theta = torch.acos(q[..., :1].clamp(-1.0, 1.0))
    return q[..., 1:] / torch.sinc(theta / math.pi)


def axis_angle_to_matrix(omega: torch.Tensor) -> torch.Tensor:
    """The rotation by ``|ω|`` radians about ``ω/|ω|``, ``(..., 3) -> (..., 3, 3)``; identity at 0.

    (:func:`expmap_to_quaternion` takes the half angle, hence ``ω / 2``.)
    """
    return quaternion_to_matrix(expmap_to_quaternion(omega / 2))


def s2s2_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """Six numbers ``(..., 6)`` to a rotation ``(..., 3, 3)`` by Gram–Schmidt (columns w1, w2, w3)."""
    a, b = x[..., :3], x[..., 3:]
    w1 = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b = b - (w1 * b).sum(-1, keepdim=True) * w1
    w2 = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    w3 = torch.linalg.cross(w1, w2, dim=-1)
    return torch.stack([w1, w2, w3], dim=-1)


def matrix_to_s2s2(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation ``(..., 3, 3)`` to the six numbers (first two columns) that give it back."""
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def random_rotations(
    n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``n`` rotations uniform on SO(3) (Haar measure), ``(n, 3, 3)``, from normal quaternions."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    return quaternion_to_matrix(q)


def geodesic_distance(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Angle in radians of ``r1ᵀ r2`` for rotations ``(..., 3, 3)``; result ``(...)``, in [0, π]."""
    rel = r1.transpose(-1, -2) @ r2
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    # atan2 of the axis length is accurate near 0 and π, where acos loses digits.
    skew = torch.stack(
        [rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]],
        dim=-1,
    )
    return torch.atan2(skew.norm(dim=-1) / 2, cos)


def _euler_params(x: torch.Tensor) -> torch.Tensor:
    return euler_to_matrix(x[..., 0], x[..., 1], x[..., 2])


def _quat_params(x: torch.Tensor) -> torch.Tensor:
    return quaternion_to_matrix(expmap_to_quaternion(x))


PARAMETERISATIONS = {"euler": (3, _euler_params), "quat": (3, _quat_params), "s2s2": (6, s2s2_to_matrix)}


def pose_dim(name: str) -> int:
    """How many network outputs the parameterisation ``name`` takes."""
    return PARAMETERISATIONS[name][0]


def params_to_matrix(name: str, x: torch.Tensor) -> torch.Tensor:
    """Network outputs ``(..., pose_dim(name))`` to rotations ``(..., 3, 3)``."""
    return PARAMETERISATIONS[name][1](x)


def relion_angles_to_matrix(angles_deg, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """RELION (rot, tilt, psi) in degrees, array-like ``(..., 3)``, to matrices ``(..., 3, 3)``."""
    a = torch.deg2rad(torch.as_tensor(angles_deg, dtype=dtype))
    return euler_to_matrix(a[..., 0], a[..., 1], a[..., 2])


def matrix_to_relion_angles(matrix: torch.Tensor) -> torch.Tensor:
    """Matrices ``(..., 3, 3)`` to RELION (rot, tilt, psi) in degrees ``(..., 3)``."""
    return torch.rad2deg(torch.stack(matrix_to_euler(matrix), dim=-1))
