"""Translation search: the grid, the phases, and planted shifts recovered on a known map (alone,
jointly with the rotation, and through training's refinement of unknown shifts)."""

import pytest
import torch

from cryoposenet.model.losses import band_weights
from cryoposenet.physics.fourier import image_to_fourier, shift_phase
from cryoposenet.physics.projection import band_indices, project_real_space, slice_volume, volume_to_fourier
from cryoposenet.physics.rotations import geodesic_distance, random_rotations
from cryoposenet.training import pose_search
from cryoposenet.training.pose_search import SearchTargets, global_search, marginal_misfit, so3_grid
from cryoposenet.training.refine import refine_fits
from cryoposenet.training.shift_search import candidate_shifts, phases_at, shift_grid, shift_search_grid
from cryoposenet.training.train import ParticleData, TrainConfig, init_state
from model.conftest import blobs
from test_pose_search import _ctf

N = 24


def test_grid_is_a_disc_of_whole_pixels_centre_first():
    grid = shift_grid(3.0)
    assert len(grid) == 29 and torch.equal(grid[0], torch.zeros(2))
    assert grid.norm(dim=1).max() <= 3.0 and torch.equal(grid, grid.round())
    assert len(torch.unique(grid, dim=0)) == 29
    assert len(shift_grid(2.0, step_px=0.5)) == len(shift_grid(4.0))  # the same lattice, scaled


def test_phases_at_band_indices_are_shift_phase():
    keep = band_indices(N, 7.0)
    shifts = torch.tensor([[1.3, -0.4], [-2.0, 2.5]])
    full = shift_phase(shifts, N).reshape(2, -1)[:, keep]
    assert torch.allclose(phases_at(shifts, N, keep), full, atol=1e-6)


@pytest.fixture(scope="module")
def planted():
    vol = blobs(N, seed=2)
    rots = random_rotations(16, generator=torch.Generator().manual_seed(5)).float()
    shifts = (torch.rand(16, 2, generator=torch.Generator().manual_seed(6)) - 0.5) * 5  # ±2.5 px
    ctf = _ctf(16, 9000.0, 8000.0)
    images = image_to_fourier(project_real_space(vol, rots)) * ctf * shift_phase(shifts, N)
    return vol, rots, shifts, ctf, images


def test_planted_subpixel_shifts_are_found_at_the_true_rotation(planted):
    vol, rots, shifts, ctf, images = planted
    models = (slice_volume(volume_to_fourier(vol), rots) * ctf)[:, None]  # (B, 1, N, N//2+1)
    found = candidate_shifts(images, models, band_weights(N, 10.0), shift_grid(3.0))[:, 0]
    # a whole-pixel grid, then ½ and ¼ px local grids: each axis within ⅛ px of the truth (noiseless)
    assert (found - shifts).abs().max() <= 0.125 + 1e-4
    assert (torch.zeros_like(shifts) - shifts).abs().max() > 1.0  # the planted shifts are not trivial


def test_joint_search_finds_rotation_and_shift(planted):
    vol, rots, shifts, ctf, images = planted
    t = SearchTargets.from_half_planes(images, ctf, None, band_weights(N, 8.0), 8.0)
    found, err, moved = global_search(volume_to_fourier(vol), t, so3_grid(4608), 8, 3, shift_grid(3.0))
    assert moved.shape == (16, 8, 2) and bool((err[:, :-1] <= err[:, 1:]).all())
    angle = torch.rad2deg(geodesic_distance(found[:, 0], rots))
    # three levels from a 14.8° grid end at 1.85° spacing; a turn and a shift trade off on this
    # 24-px map, so a few images stop a cell or two away; a wrong basin is tens of degrees off
    assert angle.median() < 3.2 and angle.max() < 15.0
    # a few degrees of rotation error move the projection's centre by a fraction of a pixel
    err_px = (moved[:, 0] - shifts).norm(dim=1)
    assert err_px.median() < 0.2 and err_px.max() < 0.75


def test_refinement_recovers_unknown_shifts_against_a_known_map(planted):
    vol, rots, shifts, ctf, images = planted
    real = torch.fft.fftshift(torch.fft.irfft2(images, s=(N, N)), dim=(-2, -1))
    params = {"defocus_u_A": torch.full((16,), 9000.0), "defocus_v_A": torch.full((16,), 8000.0),
              "defocus_angle_deg": torch.zeros(16), "voltage_kv": torch.full((16,), 300.0),
              "cs_mm": torch.full((16,), 2.7), "amplitude_contrast": torch.full((16,), 0.1)}  # fmt: skip
    data = ParticleData(real, 4.0, ctf=params, rotations=rots)
    state = init_state(data, TrainConfig(steps=1, poses="known", shift_range=3.0))
    assert shift_search_grid(state.config, data) is not None
    with torch.no_grad():  # the true map, in training's units
        state.volume.data.copy_(vol * state.scale)
    start = random_rotations(16, generator=torch.Generator().manual_seed(9)).float()  # lost poses
    refined, moved = refine_fits(state, data, start, steps=30, k_max=10.0)
    assert moved is not None and moved.shape == (16, 2)
    # joint search, then Adam on (ω, t) for 30 steps: measured 0.02 px median, 0.13 px max
    err_px = (moved - shifts).norm(dim=1)
    assert err_px.median() < 0.1 and err_px.max() < 0.5
    assert torch.rad2deg(geodesic_distance(refined, rots)).median() < 1.5  # measured 0.84°


def test_training_search_posterior_carries_each_images_shift(planted):
    vol, rots, shifts, ctf, images = planted
    data = vol.clone().requires_grad_(True)
    soft, best, moved = marginal_misfit(
        volume_to_fourier(data), images, ctf, None, 6.0, 4608, 1.0, 16, shift_grid(3.0)
    )
    assert moved.shape == (16, 2)
    # the best of the 16 kept (rotation, shift) pairs: within about a grid spacing (14.8°), and the
    # shift, polished to ¼ px at that coarse rotation, within a pixel; a failed search is ~120° off
    angle = torch.rad2deg(geodesic_distance(best, rots))
    assert angle.median() < 10.0
    assert (moved - shifts).norm(dim=1).median() < 1.0
    soft.sum().backward()
    assert data.grad is not None and data.grad.abs().sum() > 0


def test_joint_search_in_parts_equals_it_whole(planted, monkeypatch):
    vol, _, _, ctf, images = planted
    t = SearchTargets.from_half_planes(images, ctf, None, band_weights(N, 6.0), 6.0)
    fvol, grid = volume_to_fourier(vol), so3_grid(4608)
    whole = global_search(fvol, t, grid, 2, 1, shift_grid(3.0))
    monkeypatch.setattr(pose_search, "MAX_SHIFTED_ROWS", 100)  # 29 shifts: 3 images at a time
    parts = global_search(fvol, t, grid, 2, 1, shift_grid(3.0))
    for a, b in zip(whole, parts, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
