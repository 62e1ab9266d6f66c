import numpy as np
import pandas as pd
import pytest
import torch

from cryoposenet.cli import main
from cryoposenet.io import StackWriter, default_optics, read_map, read_star, write_star
from cryoposenet.metrics import fsc
from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.physics.fourier import fourier_to_image, image_to_fourier, shift_phase
from cryoposenet.physics.projection import project_real_space
from cryoposenet.physics.rotations import matrix_to_relion_angles, random_rotations
from cryoposenet.reconstruct import FourierAccumulator


def blob_map(n, seed=3):
    rng = np.random.default_rng(seed)
    c = np.arange(n) - n // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((n, n, n))
    for k in range(5):
        ctr = rng.uniform(-0.22, 0.22, 3) * n
        s = n * rng.uniform(0.05, 0.09)
        vol += (1 + 0.4 * k) * np.exp(
            -((x - ctr[0]) ** 2 + (y - ctr[1]) ** 2 + (z - ctr[2]) ** 2) / (2 * s * s)
        )
    return torch.as_tensor(vol)


def corr(a, b):
    return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


def test_backprojection_inverts_real_space_projection():
    n = 20
    vol = blob_map(n)
    rots = random_rotations(300, torch.Generator().manual_seed(0))
    acc = FourierAccumulator(n, apix=1.0)
    acc.insert(project_real_space(vol, rots), rots)
    rec = acc.volume()
    assert corr(rec, vol) > 0.995
    assert (rec * vol).sum() / (vol * vol).sum() == pytest.approx(1.0, abs=0.03)  # right scale
    wrong = FourierAccumulator(n, apix=1.0)
    wrong.insert(project_real_space(vol, rots), rots.transpose(-1, -2))
    assert corr(wrong.volume(), vol) < 0.8


def _dataset(tmp_path, n=20, m=300, apix=2.0, snr=None):
    """A RELION data set (stack + STAR with angles, origins, CTF) made with the physics module."""
    g = torch.Generator().manual_seed(1)
    vol = blob_map(n)
    rots = random_rotations(m, g)
    origins = (torch.rand(m, 2, generator=g, dtype=torch.float64) - 0.5) * 6  # Å
    du = 8000 + 6000 * torch.rand(m, generator=g, dtype=torch.float64)
    ctf = ctf_half_plane(
        n,
        apix,
        dtype=torch.float64,
        defocus_u_A=du,
        defocus_v_A=du - 300,
        defocus_angle_deg=20.0,
        voltage_kv=300.0,
        cs_mm=2.7,
        amplitude_contrast=0.1,
    )
    spec = image_to_fourier(project_real_space(vol, rots)) * ctf * shift_phase(-origins / apix, n)
    imgs = fourier_to_image(spec, n)
    if snr is not None:
        imgs = imgs + torch.randn(imgs.shape, generator=g, dtype=torch.float64) * imgs.std() / np.sqrt(snr)
    with StackWriter(tmp_path / "p.mrcs", m, n, apix) as w:
        w[:] = imgs.numpy().astype(np.float32)
    ang = matrix_to_relion_angles(rots).numpy()
    parts = pd.DataFrame(
        {
            "rlnImageName": [f"{i + 1}@p.mrcs" for i in range(m)],
            "rlnAngleRot": ang[:, 0],
            "rlnAngleTilt": ang[:, 1],
            "rlnAnglePsi": ang[:, 2],
            "rlnOriginXAngst": origins[:, 0].numpy(),
            "rlnOriginYAngst": origins[:, 1].numpy(),
            "rlnDefocusU": du.numpy(),
            "rlnDefocusV": du.numpy() - 300,
            "rlnDefocusAngle": 20.0,
        }
    )
    write_star(tmp_path / "p.star", parts, default_optics(apix, n))
    return vol.numpy()


def test_backproject_command_writes_half_maps_and_fsc(tmp_path):
    truth = _dataset(tmp_path, snr=2.0)
    out = tmp_path / "bp"
    assert main(["backproject", str(tmp_path / "p.star"), "-o", str(out)]) == 0
    full, apix = read_map(out / "map.mrc")
    h1, _ = read_map(out / "half1.mrc")
    h2, _ = read_map(out / "half2.mrc")
    assert apix == pytest.approx(2.0)
    assert corr(full, truth) > 0.95
    assert corr(h1, h2) > 0.8
    table = pd.read_csv(out / "fsc.csv")
    assert list(table.columns) == ["shell", "frequency_per_A", "resolution_A", "fsc"]
    np.testing.assert_allclose(table["fsc"], fsc(h1, h2), atol=1e-5)
    assert table["fsc"].iloc[1] > 0.9


def test_backproject_with_poses_file_uses_those_angles(tmp_path):
    truth = _dataset(tmp_path, m=120)
    t = read_star(tmp_path / "p.star")
    bad = t.particles.copy()
    perm = np.random.default_rng(0).permutation(len(bad))  # every particle gets another's pose
    for col in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"):
        bad[col] = bad[col].to_numpy()[perm]
    write_star(tmp_path / "bad.star", bad, t.optics)
    good_out, bad_out = tmp_path / "g", tmp_path / "b"
    assert main(["backproject", str(tmp_path / "p.star"), "-o", str(good_out)]) == 0
    args = [
        "backproject",
        str(tmp_path / "p.star"),
        "--poses",
        str(tmp_path / "bad.star"),
        "-o",
        str(bad_out),
    ]
    assert main(args) == 0
    good, _ = read_map(good_out / "map.mrc")
    wrong, _ = read_map(bad_out / "map.mrc")
    assert corr(good, truth) > 0.95
    assert corr(wrong, truth) < 0.7
