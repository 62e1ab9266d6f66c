"""Per-image ground truth of a simulated data set: poses, origins, CTF; and its STAR table.

Random streams are independent children of one ``numpy.random.SeedSequence(seed)`` (poses,
shifts, CTF, noise), so turning CTF or shifts on does not change the poses of a given seed.
Angles and origins are rounded to the 6 decimals the STAR file keeps, and images are formed from
the rounded values, so the file describes the images exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..physics.rotations import euler_to_matrix, matrix_to_euler, random_rotations
from .forward import CTFParams

__all__ = ["ImageParams", "sample_params", "rotations_from_angles", "particle_table", "ASTIGMATISM_MAX_A"]

ASTIGMATISM_MAX_A = 300.0  # largest |rlnDefocusU − rlnDefocusV| drawn, Å
STACK_NAME = "particles.mrcs"


@dataclass(frozen=True)
class ImageParams:
    """``angles_deg`` ``(n, 3)`` RELION (rot, tilt, psi); ``origins_A`` ``(n, 2)`` (x, y) Å or None;
    ``ctf`` per-image CTF or None."""

    angles_deg: np.ndarray
    origins_A: np.ndarray | None
    ctf: CTFParams | None

    def __len__(self) -> int:
        return len(self.angles_deg)


def _streams(seed: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(seed).spawn(4)  # poses, shifts, ctf, noise


def noise_generator(seed: int) -> torch.Generator:
    """The torch generator for the noise stream of ``seed``."""
    return torch.Generator().manual_seed(int(_streams(seed)[3].generate_state(1)[0]))


def sample_params(
    n: int,
    seed: int,
    shift_max_A: float = 0.0,
    defocus_um: tuple[float, float] | None = None,
    astigmatism: bool = True,
) -> ImageParams:
    """Draw ``n`` images' ground truth.

    Poses uniform on SO(3); origins uniform in the disc of radius ``shift_max_A`` Å (None when 0);
    with ``defocus_um = (min, max)``: mean defocus uniform in it (µm → Å), and with
    ``astigmatism`` ``U − V`` uniform in [0, 300] Å at an angle uniform in [0°, 180°).
    """
    pose_seed, shift_seed, ctf_seed, _ = _streams(seed)
    gen = torch.Generator().manual_seed(int(pose_seed.generate_state(1)[0]))
    rot, tilt, psi = matrix_to_euler(random_rotations(n, generator=gen, dtype=torch.float64))
    angles = np.round(np.rad2deg(torch.stack([rot, tilt, psi], dim=1).numpy()), 6)
    origins = None
    if shift_max_A > 0:
        rng = np.random.default_rng(shift_seed)
        radius = shift_max_A * np.sqrt(rng.uniform(size=n))
        phi = rng.uniform(0, 2 * np.pi, size=n)
        origins = np.round(np.stack([radius * np.cos(phi), radius * np.sin(phi)], axis=1), 6)
    ctf = None if defocus_um is None else _sample_ctf(n, ctf_seed, defocus_um, astigmatism)
    return ImageParams(angles, origins, ctf)


def _sample_ctf(n: int, seed, defocus_um: tuple[float, float], astigmatism: bool) -> CTFParams:
    rng = np.random.default_rng(seed)
    mean_A = rng.uniform(defocus_um[0], defocus_um[1], size=n) * 1e4
    if astigmatism:
        delta = rng.uniform(0, ASTIGMATISM_MAX_A, size=n)
        angle = rng.uniform(0, 180, size=n)
    else:
        delta, angle = np.zeros(n), np.zeros(n)
    u, v = np.round(mean_A + delta / 2, 6), np.round(mean_A - delta / 2, 6)
    return CTFParams(u, v, np.round(angle, 6))


def rotations_from_angles(angles_deg: np.ndarray) -> torch.Tensor:
    """RELION matrices ``(n, 3, 3)`` float64 of RELION angles ``(n, 3)`` in degrees."""
    a = torch.deg2rad(torch.as_tensor(angles_deg, dtype=torch.float64))
    return euler_to_matrix(a[:, 0], a[:, 1], a[:, 2])


def particle_table(params: ImageParams, rows: slice) -> pd.DataFrame:
    """RELION particle rows for images ``rows`` of ``particles.mrcs`` (image names 1-based)."""
    index = np.arange(len(params))[rows]
    ang = params.angles_deg[rows]
    table = {
        "rlnImageName": [f"{i + 1}@{STACK_NAME}" for i in index],
        "rlnAngleRot": ang[:, 0],
        "rlnAngleTilt": ang[:, 1],
        "rlnAnglePsi": ang[:, 2],
    }
    origins = params.origins_A[rows] if params.origins_A is not None else np.zeros((len(index), 2))
    table["rlnOriginXAngst"], table["rlnOriginYAngst"] = origins[:, 0], origins[:, 1]
    if params.ctf is not None:
        table["rlnDefocusU"] = params.ctf.defocus_u_A[rows]
        table["rlnDefocusV"] = params.ctf.defocus_v_A[rows]
        table["rlnDefocusAngle"] = params.ctf.defocus_angle_deg[rows]
        table["rlnPhaseShift"] = np.zeros(len(index))
    table["rlnOpticsGroup"] = np.ones(len(index), dtype=np.int64)
    return pd.DataFrame(table)
