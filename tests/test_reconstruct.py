import numpy as np
import pandas as pd
import pytest
import torch

from cryoposenet.analysis.metrics import fsc
from cryoposenet.analysis.reconstruct import FourierAccumulator, backproject
from cryoposenet.cli import main
from cryoposenet.io import read_map, read_star, write_star
from cryoposenet.io.particles import load_particles
from cryoposenet.physics.imaging import origin_to_translation
from cryoposenet.physics.projection import project_real_space
from cryoposenet.physics.rotations import random_rotations, relion_angles_to_matrix
from cryoposenet.training.data import StackImages
from datasets import blob_map, write_dataset


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


def test_unpadded_backprojection_inverts_the_decoders_ctf_images(tmp_path):
    """Images whose CTF and shift were applied on their own grid (the decoder's model, and
    write_dataset's) are inverted by the accumulator that transforms them unpadded; padding them
    first blurs that periodic CTF (measured: 0.996 unpadded, 0.88 padded, 96 images)."""
    truth = write_dataset(tmp_path, n=16, m=96)
    stack = load_particles(tmp_path / "p.star")
    table = stack.table
    rots = relion_angles_to_matrix(torch.as_tensor(table.angles_deg()))
    shifts = origin_to_translation(torch.as_tensor(table.origins_A()), stack.apix)
    images = StackImages(stack)
    fits = {}
    for pad in (False, True):
        acc = backproject(images, rots, shifts, table.ctf_params(), stack.apix, show=False, pad_images=pad)
        fits[pad] = corr(acc.volume(1e-2), truth)
    assert fits[False] > 0.99
    assert fits[False] > fits[True]


def test_backproject_command_writes_half_maps_and_fsc(tiny_dataset):
    tmp_path, truth = tiny_dataset
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
    truth = write_dataset(tmp_path, m=120)
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
