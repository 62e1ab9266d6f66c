"""The benchmarks' independent simulator (numpy/scipy, none of the project's code) and the
project's image formation agree on RELION's conventions: angles, CTF sign and astigmatism
azimuth, origin sign. Each wrong convention is shown to lower the agreement."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
independent_sim = pytest.importorskip("independent_sim")

from cryoposenet.io.star import read_star  # noqa: E402
from cryoposenet.physics.ctf import ctf_half_plane  # noqa: E402
from cryoposenet.physics.imaging import origin_to_translation, render  # noqa: E402
from cryoposenet.physics.projection import volume_to_fourier  # noqa: E402
from cryoposenet.physics.rotations import relion_angles_to_matrix  # noqa: E402

N, APIX = 32, 2.0


def blobs(rng: np.random.Generator) -> np.ndarray:
    """An asymmetric map ``(N,)*3`` of smooth Gaussian blobs inside the central sphere."""
    c = np.arange(N) - N // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((N, N, N))
    for centre, width in zip(rng.uniform(-6, 6, (6, 3)), rng.uniform(1.5, 3, 6), strict=True):
        vol += np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / (2 * width**2))
    return vol


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean((1, 2), keepdim=True), b - b.mean((1, 2), keepdim=True)
    return float(((a * b).sum((1, 2)) / (a.norm(dim=(1, 2)) * b.norm(dim=(1, 2)))).mean())


def test_independent_images_match_our_rendering_and_wrong_conventions_do_not(tmp_path):
    rng = np.random.default_rng(0)
    vol = blobs(rng)
    n = 8
    angles = np.column_stack(
        [rng.uniform(-180, 180, n), np.rad2deg(np.arccos(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)]
    )
    rots = independent_sim.Rotation.from_euler("ZYZ", angles, degrees=True)
    shifts = independent_sim.draw_shifts(n, 3.0, seed=1)
    defocus = independent_sim.draw_defocus(n, (1.0, 1.5), seed=1)
    defocus[:, 1] = 0.6 * defocus[:, 0]  # strong astigmatism, so the azimuth matters
    images = independent_sim.form_images(
        independent_sim.project(vol, rots.as_matrix()), APIX, shifts, defocus
    )
    independent_sim.write_stars(tmp_path, n, 0, angles, N, APIX, shifts, defocus)
    table = read_star(tmp_path / "train_truth.star")

    fvol = volume_to_fourier(torch.as_tensor(vol))
    matrices = relion_angles_to_matrix(table.angles_deg())
    params = {k: torch.as_tensor(v) for k, v in table.ctf_params().items()}
    shift_px = origin_to_translation(torch.as_tensor(table.origins_A()), APIX)
    target = torch.as_tensor(images)

    def agreement(params=params, shift_px=shift_px, matrices=matrices) -> float:
        ctf = ctf_half_plane(N, APIX, dtype=torch.float64, **params)
        return corr(render(fvol, matrices, ctf=ctf, translations_px=shift_px), target)

    right = agreement()  # 0.998 (trilinear against Fourier-slice interpolation, CTF padding)
    assert right > 0.99
    azimuth = params["defocus_angle_deg"]
    assert agreement(params={**params, "defocus_angle_deg": -azimuth}) < right - 0.02  # 0.963
    assert agreement(params={**params, "defocus_angle_deg": azimuth + 90}) < right - 0.05  # 0.914
    assert agreement(params={**params, "amplitude_contrast": -params["amplitude_contrast"]}) < right - 0.02
    assert agreement(shift_px=-shift_px) < 0.6  # 0.43
    assert agreement(matrices=matrices.transpose(-1, -2)) < 0.6  # 0.39
    assert not (tmp_path / "train.star").read_text().count("rlnOriginX")  # shifts unknown to train
