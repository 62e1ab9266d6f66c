"""Contrast sign: detected on a simulated stack with CTF, inverted or not; --invert/--no-invert override."""

import shutil

import mrcfile
import numpy as np
import pytest
import torch
import yaml

from cryoposenet.cli import main
from cryoposenet.io import load_particles, read_map
from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.simulate import default_molecule, simulate_dataset
from cryoposenet.training.contrast import detect_contrast, disc_minus_annulus, phase_flip
from cryoposenet.training.data import StackImages
from cryoposenet.training.inputs import ctf_tensors


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """``(bright, dark)`` folders: 4AKE at 32 px of 3.6 Å, CTF 0.8–2.5 µm, −10 dB, shifts ≤ 6 Å;
    ``dark`` holds the same images × −1 under the same STAR file."""
    root = tmp_path_factory.mktemp("contrast")
    bright, dark = root / "bright", root / "dark"
    simulate_dataset(
        bright, atoms=default_molecule(), box=32, apix=3.6, n_images=300, heldout=0, snr_db=-10.0,
        ctf=True, defocus_min_um=0.8, defocus_max_um=2.5, shift_max_A=6.0, progress=False,
    )  # fmt: skip
    dark.mkdir()
    shutil.copy(bright / "train.star", dark / "train.star")
    with mrcfile.open(bright / "particles.mrcs") as src, mrcfile.new(dark / "particles.mrcs") as dst:
        dst.set_data(-src.data)
        dst.voxel_size = src.voxel_size
    return bright, dark


def _detect(folder, box=None):
    stack = load_particles(folder / "train.star")
    images = StackImages(stack, box=box)
    return detect_contrast(images, torch.arange(len(stack)), images.apix, ctf_tensors(stack.table))


def test_bright_and_dark_stacks_are_told_apart_at_minus_10_db_with_ctf(stacks):
    bright, dark = stacks
    found = _detect(bright)
    assert found.sign == 1 and found.phase_flipped and found.z > 20  # measured +59.9
    inverted = _detect(dark)
    assert inverted.sign == -1 and inverted.dark and inverted.z == pytest.approx(-found.z, rel=1e-4)
    assert _detect(dark, box=20).sign == -1  # also on the cropped images, CTF at the cropped pixel size
    assert "dark particles" in inverted.describe()


def test_pure_noise_is_undetermined():
    images = torch.randn(400, 24, 24, generator=torch.Generator().manual_seed(0))
    found = detect_contrast(images, torch.arange(400), 2.0)
    assert found.sign == 0 and abs(found.z) < 5 and not found.phase_flipped


def test_phase_flip_undoes_the_ctf_sign_and_the_statistic_is_centre_minus_background():
    n = 32
    c = torch.arange(n, dtype=torch.float64) - n // 2
    blob = torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * 3.0**2))[None]
    assert disc_minus_annulus(blob).item() > 0 and disc_minus_annulus(-blob).item() < 0
    ctf = ctf_half_plane(
        n, 2.0, dtype=torch.float64, defocus_u_A=25000.0, defocus_v_A=25000.0, defocus_angle_deg=0.0,
        voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1,
    )  # fmt: skip
    flipped = phase_flip(phase_flip(blob, ctf), ctf)
    assert torch.allclose(flipped, blob, atol=1e-12)  # sign(ctf)² = 1 wherever the CTF is not 0


def _train(star, out, *extra):
    args = ["train", str(star), "-o", str(out), "--steps", "2", "--batch-size", "8", "--refine-steps", "0"]
    return main([*args, "--device", "cpu", "--poses", "known", *extra])


def test_train_inverts_a_dark_stack_says_so_and_the_flags_override(stacks, tmp_path, caplog):
    bright, dark = stacks
    caplog.set_level("INFO")
    assert _train(dark / "train.star", tmp_path / "auto") == 0
    assert "contrast: detected dark particles" in caplog.text and "images inverted" in caplog.text
    data = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["data"]
    assert data["invert"] is True
    assert _train(dark / "train.star", tmp_path / "kept", "--no-invert") == 0
    assert yaml.safe_load((tmp_path / "kept" / "config.yaml").read_text())["data"]["invert"] is False
    truth, _ = read_map(bright / "map.mrc")
    corr = {
        k: np.corrcoef(read_map(tmp_path / k / "map.mrc")[0].ravel(), truth.ravel())[0, 1]
        for k in ("auto", "kept")
    }
    assert (
        corr["auto"] > 0.1 and corr["kept"] < -0.1
    )  # the right way up, or not, already after 2 steps (±0.2)
    assert _train(bright / "train.star", tmp_path / "forced", "--invert") == 0
    data = yaml.safe_load((tmp_path / "forced" / "config.yaml").read_text())["data"]
    assert data["invert"] is True and data["contrast"] == "set by --invert"
