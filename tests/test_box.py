"""Any box size: the encoder takes odd and non-multiple-of-8 sizes; train/predict/backproject run on them."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cryoposenet.cli import main
from cryoposenet.io import read_map, read_star, write_map
from cryoposenet.model import PoseEncoder, standardise
from cryoposenet.physics.fourier import centre_pad
from cryoposenet.physics.fourier_crop import fourier_crop
from cryoposenet.physics.rotations import params_to_matrix
from datasets import write_dataset


@pytest.mark.parametrize("n", [15, 20, 30, 31, 33])
def test_encoder_takes_any_image_size(n):
    torch.manual_seed(0)
    enc = PoseEncoder(n, heads=2)
    rots = enc(torch.randn(3, n, n))
    assert rots.shape == (3, 2, 3, 3)
    assert torch.allclose(rots @ rots.transpose(-1, -2), torch.eye(3).expand_as(rots), atol=1e-5)
    assert enc.padded == -(-n // 8) * 8 and enc.padded - n < 8


@pytest.mark.parametrize("n", [16, 24, 64])
def test_multiples_of_8_keep_the_paper_architecture(n):
    enc = PoseEncoder(n)
    assert enc.padded == n
    assert enc.mlp[1].in_features == 128 * (n // 8) ** 2  # as before any-size support


def test_a_30_px_encoder_is_the_32_px_network_on_the_standardised_image_padded_with_zeros():
    torch.manual_seed(0)
    enc = PoseEncoder(30)
    PoseEncoder(32).load_state_dict(enc.state_dict())  # the same layers and shapes
    x = torch.randn(4, 30, 30)
    padded = centre_pad(standardise(x), 32, ndim=2)[:, None].contiguous(memory_format=torch.channels_last)
    params = enc.head(enc.mlp(enc.features(padded))).reshape(4, 1, -1)
    assert torch.allclose(enc(x), params_to_matrix("s2s2", params), atol=1e-6)


def _train(star, out, *extra):
    args = ["train", str(star), "-o", str(out), "--batch-size", "16", "--device", "cpu", *extra]
    return main(args)


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_known_poses_train_on_an_odd_box_and_backproject_agrees(tmp_path):
    truth = write_dataset(tmp_path, n=31, m=200, snr=None)
    run = tmp_path / "run"
    assert _train(tmp_path / "p.star", run, "--poses", "known", "--steps", "150", "--lr", "1e-2") == 0
    vol, apix = read_map(run / "map.mrc")
    assert vol.shape == (31, 31, 31) and apix == pytest.approx(2.0)
    assert _corr(vol, truth) > 0.9  # as at 24 px in test_runner
    assert not (run / "full").exists()  # not cropped: no full-size map
    assert main(["backproject", str(tmp_path / "p.star"), "-o", str(tmp_path / "bp")]) == 0
    assert _corr(read_map(tmp_path / "bp" / "map.mrc")[0], truth) > 0.95


def test_train_box_crops_and_writes_the_full_size_map_and_original_poses(tmp_path, caplog):
    truth = write_dataset(tmp_path, n=32, m=240, snr=None)
    write_map(tmp_path / "truth.mrc", truth.astype(np.float32), 2.0)
    run = tmp_path / "run"
    caplog.set_level("INFO")
    args = ["--poses", "known", "--steps", "150", "--lr", "1e-2", "--box", "17"]
    assert (
        _train(tmp_path / "p.star", run, *args, "--ref", str(tmp_path / "truth.mrc"), "--eval-every", "150")
        == 0
    )
    assert "training box 17 px of 3.765 Å (--box; particles 32 px of 2 Å, Fourier-cropped)" in caplog.text
    small, apix = read_map(run / "map.mrc")
    assert small.shape == (17,) * 3 and apix == pytest.approx(2.0 * 32 / 17)
    cropped = fourier_crop(torch.as_tensor(truth), 17, ndim=3).numpy()
    assert _corr(small, cropped) > 0.9
    # map.mrc's values are those of the cropped truth (a cropped voxel's longer sum is undone)
    assert float((small * cropped).sum() / (cropped**2).sum()) == pytest.approx(1.0, abs=0.25)
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["fsc05_A"].dropna().iloc[-1] < 4 * apix  # the reference was cropped to 17 px too
    full, full_apix = read_map(run / "full" / "map.mrc")
    assert full.shape == (32,) * 3 and full_apix == pytest.approx(2.0)
    assert _corr(full, truth) > 0.95  # the original particles at their own size, known poses, shifts
    for name in ("half1.mrc", "half2.mrc", "fsc.csv"):
        assert (run / "full" / name).is_file()
    poses, source = read_star(run / "poses.star"), read_star(tmp_path / "p.star")
    assert poses.apix == pytest.approx(2.0) and int(poses.optics["rlnImageSize"].iloc[0]) == 32
    np.testing.assert_allclose(poses.origins_A(), source.origins_A(), atol=1e-6)
    config = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert config["box"] == 17 and config["particle_box"] == 32 and config["shifts"] == "known"
    # evaluate: the 17-px map against the 32-px truth (cropped to 17 px, the same field of view)
    poses = ["--poses", str(run / "poses.star"), "--ref-poses", str(tmp_path / "p.star"), "--no-symmetry"]
    args = ["evaluate", "--map", str(run / "map.mrc"), "--ref", str(tmp_path / "truth.mrc"), *poses]
    assert main([*args, "-o", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["fsc05_A"] < 4 * apix


def test_predict_reads_new_particles_at_the_runs_training_box(tmp_path):
    write_dataset(tmp_path, n=30, m=60, snr=None)
    write_dataset(tmp_path, n=30, m=20, snr=None, seed=4, name="new")
    run = tmp_path / "run"
    assert _train(tmp_path / "p.star", run, "--steps", "2", "--box", "21", "--refine-steps", "1") == 0
    assert read_map(run / "map.mrc")[0].shape == (21,) * 3 and (run / "full" / "map.mrc").is_file()
    out = tmp_path / "pred.star"
    assert main(["predict", str(run), str(tmp_path / "new.star"), "-o", str(out), "--refine-steps", "1"]) == 0
    pred = read_star(out)
    assert len(pred) == 20 and pred.has_angles and pred.apix == pytest.approx(2.0)


def test_bad_box_and_resume_with_another_box_are_one_line_errors(tmp_path, capsys):
    write_dataset(tmp_path, n=20, m=40, snr=None)
    assert _train(tmp_path / "p.star", tmp_path / "big", "--box", "24", "--steps", "1") == 2
    assert "--box 24 must be between 1 and the particles' box, 20 px" in capsys.readouterr().err
    assert not (tmp_path / "big").exists()
    run = tmp_path / "run"
    assert _train(tmp_path / "p.star", run, "--box", "16", "--steps", "1", "--refine-steps", "0") == 0
    assert _train(tmp_path / "p.star", run, "--box", "12", "--steps", "2", "--resume") == 2
    assert "--box 12 differs from the run's 16" in capsys.readouterr().err
    assert _train(tmp_path / "p.star", run, "--steps", "2", "--resume", "--refine-steps", "0") == 0
    assert read_map(run / "map.mrc")[0].shape == (16,) * 3  # the resumed run keeps its box
