import json

import numpy as np
import pytest
import torch

from cryoposenet.analysis.map_alignment import align_maps, centre_on, downsample
from cryoposenet.analysis.metrics import MIRROR, align_map, pose_errors_deg
from cryoposenet.cli import main
from cryoposenet.io import write_map
from cryoposenet.physics.rotations import random_rotations
from datasets import blob_map as _blob_map
from datasets import resample
from model.conftest import blobs


def blob_map(n):
    return _blob_map(n).numpy()


# the searches' cost goes with the voxels scored (coarse ≤ 24 px, fine ≤ 40 px): 16 px is 3.4× cheaper
# than 24 and still aligns to 0.4–0.5° (24 px: 0.05–0.16°), correlation 0.9999 after alignment
N = 16


def test_downsample_keeps_low_frequencies_and_mean():
    vol = torch.as_tensor(blob_map(24))
    small = downsample(vol, 12)
    assert small.shape == (12, 12, 12)
    assert small.sum().item() == pytest.approx(vol.sum().item() / 8, rel=1e-6)


@pytest.mark.parametrize("mirrored", [False, True])
def test_maps_align_without_poses_incl_mirror(mirrored):
    vol = blob_map(N)
    g = random_rotations(1, torch.Generator().manual_seed(11)).numpy()[0]
    est = resample(vol, g @ MIRROR if mirrored else g)
    al, score = align_maps(est, vol, n_rotations=1500)
    assert al.mirrored == mirrored
    assert pose_errors_deg(al.rotation[None], g[None])[0] < 2.0
    assert np.corrcoef(align_map(est, al).ravel(), vol.ravel())[0, 1] > 0.99 and score > 0.99


def test_evaluate_maps_only_reports_resolution_and_handedness(tmp_path, capsys):
    vol = blob_map(N)
    g = random_rotations(1, torch.Generator().manual_seed(3)).numpy()[0]
    write_map(tmp_path / "ref.mrc", vol.astype(np.float32), 2.0)
    write_map(tmp_path / "est.mrc", resample(vol, g @ MIRROR).astype(np.float32), 2.0)
    out = tmp_path / "e.json"
    assert (
        main(
            [
                "evaluate",
                "--map",
                str(tmp_path / "est.mrc"),
                "--ref",
                str(tmp_path / "ref.mrc"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == doc
    assert set(doc) == {"fsc05_A", "fsc0143_A", "pose_mae_deg", "pose_median_deg", "handedness", "n_images"}
    assert doc["handedness"] == "flipped" and doc["pose_mae_deg"] is None and doc["n_images"] is None
    assert doc["fsc05_A"] < 8.0  # aligned: high correlation to well past a few pixels


def test_centre_on_finds_a_planted_subvoxel_translation():
    ref = blobs(32, seed=3).double()
    freqs = torch.meshgrid(*(torch.fft.fftfreq(32, dtype=torch.float64) for _ in range(3)), indexing="ij")
    planted = (2.3, -1.6, 0.7)  # voxels (z, y, x)
    ramp = torch.exp(-2j * torch.pi * sum(f * t for f, t in zip(freqs, planted, strict=True)))
    moved = torch.fft.ifftn(torch.fft.fftn(ref) * ramp).real.numpy()
    back, shift = centre_on(moved, ref.numpy())
    # the parabolic peak is good to about a tenth of a voxel on smooth maps (measured ≤ 0.06)
    np.testing.assert_allclose(shift, -np.array(planted), atol=0.15)
    assert np.abs(back - ref.numpy()).max() < 0.1 * np.abs(ref.numpy()).max()
    _, zero = centre_on(ref.numpy(), ref.numpy())
    np.testing.assert_allclose(zero, 0.0, atol=1e-9)


def test_a_rotated_and_translated_map_aligns_and_scores_as_the_centred_one(tmp_path):
    vol = blob_map(N)
    g = random_rotations(1, torch.Generator().manual_seed(11)).numpy()[0]
    est = np.roll(resample(vol, g), (2, -3, 1), axis=(0, 1, 2))  # the map elsewhere in its box
    al, _ = align_maps(est, vol, n_rotations=1500)
    # the rotation search runs on mass-centred copies: without that this case was 115.8° off
    assert not al.mirrored and pose_errors_deg(al.rotation[None], g[None])[0] < 2.0
    back, _ = centre_on(align_map(est, al), vol)
    assert np.corrcoef(back.ravel(), vol.ravel())[0, 1] > 0.99
