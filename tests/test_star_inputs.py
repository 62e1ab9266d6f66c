"""STAR files fresh from extraction (no angles, no origins) train; --shifts search|known|none."""

import numpy as np
import pytest
import torch
import yaml

from cryoposenet.cli import build_parser, main
from cryoposenet.io import load_particles, read_map, read_star, write_star
from cryoposenet.physics.imaging import origin_to_translation
from cryoposenet.training.inputs import origins_out_A, particle_data, resolve_settings
from cryoposenet.training.train import TrainConfig, init_state, predict_fits
from datasets import write_dataset


def _strip(folder, *columns, name="bare"):
    """A copy of ``folder/p.star`` without ``columns``."""
    table = read_star(folder / "p.star")
    parts = table.particles[[c for c in table.original_columns if c not in columns]]
    write_star(folder / f"{name}.star", parts, table.optics)
    return folder / f"{name}.star"


ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
ORIGINS = ("rlnOriginXAngst", "rlnOriginYAngst")


def _train(star, out, *extra):
    args = ["train", str(star), "-o", str(out), "--steps", "2", "--batch-size", "8", "--refine-steps", "1"]
    return main([*args, "--device", "cpu", *extra])


def test_a_star_file_without_angles_or_origins_trains_and_gets_poses_and_origins(tmp_path, caplog):
    write_dataset(tmp_path, n=20, m=40, snr=None)
    star = _strip(tmp_path, *ANGLES, *ORIGINS)
    caplog.set_level("INFO")
    assert _train(star, tmp_path / "run") == 0
    assert "shifts: search" in caplog.text  # SPEC: search when the STAR file has no origins
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["data"]["shifts"] == "search"
    poses = read_star(tmp_path / "run" / "poses.star")
    assert len(poses) == 40 and poses.has_angles and poses.has_origins
    out = tmp_path / "new.star"  # the forward pass at four turns searches each answer's shift
    assert main(["predict", str(tmp_path / "run"), str(star), "-o", str(out), "--refine-steps", "0"]) == 0
    assert read_star(out).has_origins
    assert _train(star, tmp_path / "known", "--shifts", "known") == 2  # nothing to know


def test_shift_modes_give_known_zero_or_no_translations_in_training_pixels(tmp_path):
    write_dataset(tmp_path, n=24, m=30, snr=None)
    stack = load_particles(tmp_path / "p.star")
    origins = torch.as_tensor(stack.table.origins_A(), dtype=torch.float32)
    assert resolve_settings(stack, invert=False).shifts == "known"  # the STAR file has origins
    known = particle_data(stack, resolve_settings(stack, box=15, shifts="known", invert=False))
    assert torch.allclose(known.translations_px, origin_to_translation(origins, 2.0) * 15 / 24)
    none = particle_data(stack, resolve_settings(stack, shifts="none", invert=False))
    assert torch.equal(none.translations_px, torch.zeros(30, 2))
    assert (
        particle_data(stack, resolve_settings(stack, shifts="search", invert=False)).translations_px is None
    )


def test_shifts_none_writes_centred_origins_and_the_flag_parses(tmp_path):
    write_dataset(tmp_path, n=20, m=30, snr=None)
    assert _train(tmp_path / "p.star", tmp_path / "run", "--shifts", "none") == 0
    poses = read_star(tmp_path / "run" / "poses.star")
    np.testing.assert_array_equal(poses.origins_A(), np.zeros((30, 2)))
    ns = build_parser().parse_args(["train", "p.star", "--shifts", "search", "--box", "64", "--no-invert"])
    assert (ns.shifts, ns.box, ns.invert) == ("search", 64, False)
    assert build_parser().parse_args(["train", "p.star"]).invert is None
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", "p.star", "--invert", "--no-invert"])
    assert exc.value.code == 2


def test_backproject_takes_origins_from_the_poses_file_and_the_contrast_flags(tmp_path, capsys):
    truth = write_dataset(tmp_path, n=21, m=200, snr=None)
    centred = _strip(tmp_path, *ORIGINS, name="centred")  # as extracted: no origins
    args = ["backproject", str(centred), "--poses", str(tmp_path / "p.star")]  # a run's poses.star
    assert main([*args, "-o", str(tmp_path / "with")]) == 0
    assert "contrast: detected bright particles" in capsys.readouterr().out
    assert main(["backproject", str(centred), "-o", str(tmp_path / "without")]) == 0
    assert main([*args, "--invert", "-o", str(tmp_path / "inverted")]) == 0

    def corr(name):
        return np.corrcoef(read_map(tmp_path / name / "map.mrc")[0].ravel(), truth.ravel())[0, 1]

    assert corr("with") > 0.95 and corr("with") > corr("without") + 0.02  # the shifts are ±3 Å
    assert corr("inverted") == pytest.approx(-corr("with"), abs=1e-6)


def test_searched_shifts_come_back_as_the_star_files_origins_with_relions_sign(tmp_path):
    vol = write_dataset(tmp_path, n=20, m=30, snr=None)  # origins up to ±3 Å (±1.5 px)
    stack = load_particles(tmp_path / "p.star")
    settings = resolve_settings(stack, shifts="search", invert=False)
    data = particle_data(stack, settings)
    state = init_state(data, TrainConfig(steps=1, poses="known", shift_range=3.0))
    with torch.no_grad():  # the true map and the true rotations: only the shifts are unknown
        state.volume.data.copy_(torch.as_tensor(vol, dtype=torch.float32) * state.scale)
    _, shifts = predict_fits(state, data)
    found = origins_out_A(stack.table, settings, shifts)
    truth = stack.table.origins_A()
    assert np.abs(truth).max() > 2.0  # not trivially centred
    # whole pixels, then ½ and ¼ px grids: within ⅛ px (0.25 Å) per axis, noiseless
    np.testing.assert_allclose(found, truth, atol=0.26)
