"""Global pose search: the grid covers SO(3), its misfits are the training loss, and planted poses
are found on a known map (with CTF and shifts too)."""

import math

import pytest
import torch

from cryoposenet.model.losses import band_weights, candidate_spectra, wta_loss
from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.physics.fourier import image_to_fourier, shift_phase
from cryoposenet.physics.projection import project_real_space, slice_volume, volume_to_fourier
from cryoposenet.physics.rotations import geodesic_distance, random_rotations
from cryoposenet.training.pose_search import (
    SearchTargets,
    candidate_misfits,
    global_search,
    grid_misfits,
    grid_spacing_rad,
    levels_for_band,
    local_offsets,
    marginal_misfit,
    so3_grid,
)
from model.conftest import blobs

N = 24


def _deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(geodesic_distance(a, b))


def _ctf(b: int, defocus_u_A: float, defocus_v_A: float) -> torch.Tensor:
    """``(b, N, N//2+1)`` CTFs of one astigmatic defocus at 300 kV, 4 Å/pixel."""
    return ctf_half_plane(
        N, 4.0, defocus_u_A=torch.full((b,), defocus_u_A), defocus_v_A=torch.full((b,), defocus_v_A),
        defocus_angle_deg=torch.zeros(b), voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1,
    )  # fmt: skip


def test_grid_covers_so3_within_its_spacing():
    grid = so3_grid(4608)
    assert torch.allclose(grid @ grid.transpose(-1, -2), torch.eye(3).expand(4608, 3, 3), atol=1e-5)
    assert math.degrees(grid_spacing_rad(4608)) == pytest.approx(14.8, abs=0.1)
    probes = random_rotations(1000, generator=torch.Generator().manual_seed(0)).float()
    nearest = _deg(probes[:, None], grid[None]).min(dim=1).values
    # a uniform grid's covering radius is below its spacing; clumps or holes would break this
    assert nearest.max() < math.degrees(grid_spacing_rad(4608))
    assert nearest.mean() < 0.6 * math.degrees(grid_spacing_rad(4608))


def test_local_offsets_start_at_identity_and_span_half_the_spacing():
    off = local_offsets(0.2)
    assert off.shape == (27, 3, 3) and torch.allclose(off[0], torch.eye(3))
    angles = torch.rad2deg(geodesic_distance(off, torch.eye(3).expand(27, 3, 3)))
    assert angles.max() == pytest.approx(math.degrees(0.1 * math.sqrt(3)), rel=1e-4)


@pytest.fixture(scope="module")
def planted():
    torch.manual_seed(0)
    vol = blobs(N, seed=2)
    rots = random_rotations(24, generator=torch.Generator().manual_seed(5)).float()
    return vol, rots, image_to_fourier(project_real_space(vol, rots))


def test_grid_and_candidate_misfits_are_the_training_loss(planted):
    vol, rots, spectra = planted
    fvol = volume_to_fourier(vol)
    shifts = torch.randn(len(rots), 2)
    ctf = _ctf(len(rots), 8000.0, 7000.0)
    k_max = 8.0
    weights = band_weights(N, k_max)
    t = SearchTargets.from_half_planes(spectra, ctf, shifts, weights, k_max)
    probe = so3_grid(40)
    grid_err = grid_misfits(fvol, probe, t, chunk=16)  # several chunks
    cand_err = candidate_misfits(fvol, probe.expand(len(rots), 40, 3, 3), t)
    slices = slice_volume(fvol, probe).expand(len(rots), 40, N, N // 2 + 1)
    loss_err = torch.stack([
        wta_loss(spectra, candidate_spectra(slices[:, g : g + 1], False, ctf, shifts), weights)[1]
        for g in range(40)
    ], dim=1)  # fmt: skip
    scale = loss_err.abs().max()
    # float32 sums of ~100 terms, the GEMM form cancelling |Y|² and |S|²: ~1e-6 of the total
    assert (grid_err - loss_err).abs().max() < 1e-4 * scale
    assert (cand_err - loss_err).abs().max() < 1e-4 * scale
    assert shift_phase(shifts, N).abs().sub(1).abs().max() < 1e-5


def test_search_finds_planted_poses_on_a_known_map(planted):
    vol, rots, spectra = planted
    fvol = volume_to_fourier(vol)
    t = SearchTargets.from_half_planes(spectra, None, None, band_weights(N, 8.0), 8.0)
    best, err, _ = global_search(fvol, t, so3_grid(4608), top=4, levels=2)
    assert best.shape == (24, 4, 3, 3) and bool((err[:, :-1] <= err[:, 1:]).all())
    found = _deg(best[:, 0], rots)
    # two levels of halving from a 14.8° grid: a final spacing of 3.7°, so a cell's half-diagonal
    # (3.2°) bounds the error of a well-posed image; a wrong basin would cost tens of degrees
    assert found.max() < 5.0 and found.median() < 3.2
    grid = so3_grid(4608)
    coarse = _deg(grid[grid_misfits(fvol, grid, t).argmin(dim=1)], rots)
    assert found.mean() < coarse.mean()  # the local levels improve on the base grid


def test_search_with_ctf_and_shifts(planted):
    vol, rots, spectra = planted
    b = len(rots)
    shifts = torch.linspace(-2, 2, b)[:, None].expand(b, 2).contiguous()
    ctf = _ctf(b, 9000.0, 9000.0)
    observed = spectra * shift_phase(shifts, N) * ctf
    t = SearchTargets.from_half_planes(observed, ctf, shifts, band_weights(N, 8.0), 8.0)
    found, _, _ = global_search(volume_to_fourier(vol), t, so3_grid(4608), top=2, levels=2)
    assert _deg(found[:, 0], rots).median() < 3.2


def test_marginal_misfit_is_a_soft_minimum_whose_best_pose_is_the_truth(planted):
    vol, rots, spectra = planted
    data = vol.clone().requires_grad_(True)
    soft, best, _ = marginal_misfit(volume_to_fourier(data), spectra, None, None, 6.0, 4608, anneal=1.0)
    t = SearchTargets.from_half_planes(spectra, None, None, band_weights(N, 6.0), 6.0)
    err = grid_misfits(volume_to_fourier(vol), so3_grid(4608), t)
    tol = 1e-5 * err.abs().max()  # float32 sums
    # −T log mean exp(−E/T) lies between the best and the mean misfit
    assert bool((soft >= err.min(dim=1).values - tol).all() and (soft <= err.mean(dim=1) + tol).all())
    # the best grid point is within about one spacing (14.8°) of the truth: the misfit's minimum on
    # a 24-px map at band 6 need not be the nearest grid point; a failed search is off by ~120°
    found = _deg(best, rots)
    assert found.max() < 20.0 and found.median() < 10.0
    soft.sum().backward()
    assert data.grad is not None and data.grad.abs().sum() > 0
    hot, _, _ = marginal_misfit(volume_to_fourier(vol), spectra, None, None, 6.0, 4608, anneal=100.0)
    assert bool((hot > soft.detach()).all())  # a hotter posterior weighs more poor poses: nearer the mean


def test_marginal_misfit_on_local_levels_finds_the_pose_finer(planted):
    vol, rots, spectra = planted
    data = vol.clone().requires_grad_(True)
    assert [levels_for_band(k, 4608) for k in (4.0, 8.0, 16.0, 32.0)] == [0, 1, 2, 3]
    # the grid scored on band 6, then two local levels (final spacing 3.7°) on band 10
    soft, best, _ = marginal_misfit(
        volume_to_fourier(data), spectra, None, None, 10.0, 4608, grid_band=6.0, levels=2
    )
    coarse = marginal_misfit(volume_to_fourier(vol), spectra, None, None, 10.0, 4608, grid_band=6.0)[1]
    found, grid_only = _deg(best, rots), _deg(coarse, rots)
    # a cell's half-diagonal after two halvings bounds a well-posed image's error (3.2°); every
    # image within two final cells (7.4°), where a wrong basin costs tens of degrees
    assert found.median() < 3.2 and found.max() < 7.4
    assert found.mean() < 0.6 * grid_only.mean()  # the grid alone is off by up to its spacing
    soft.sum().backward()
    assert data.grad is not None and data.grad.abs().sum() > 0


def test_marginal_misfit_map_band_teaches_the_outer_ring_under_the_inner_posterior(planted):
    vol, rots, spectra = planted
    k = torch.fft.fftfreq(N) * N
    kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
    high = (kx**2 + ky**2 + kz**2).sqrt() > 9  # a corruption of the map beyond |k| = 9 only
    noise = torch.randn(N, N, N, generator=torch.Generator().manual_seed(1))
    h = torch.fft.ifftn(torch.fft.fftn(noise) * high).real
    corrupted = vol + h * vol.std() / h.std()

    def fit(v, map_band):
        return marginal_misfit(volume_to_fourier(v), spectra, None, None, 6.0, 4608, map_band=map_band)

    plain, same = fit(vol, None), fit(vol, 6.0)
    assert torch.equal(plain[0], same[0]) and torch.equal(plain[1], same[1])
    inner, outer = fit(corrupted, None), fit(corrupted, 11.0)
    assert torch.equal(inner[1], outer[1])  # the poses come from the band |k| ≤ 6 alone
    # interpolation leaks a little of the corruption into the inner band; the ring sees all of it
    assert inner[0].mean() < 1.2 * plain[0].mean()
    assert outer[0].mean() > 3 * fit(vol, 11.0)[0].mean()


def test_targets_within_a_narrower_band_equal_targets_made_at_it(planted):
    _, rots, spectra = planted
    shifts, ctf = torch.randn(len(rots), 2), _ctf(len(rots), 8000.0, 7000.0)
    wide = SearchTargets.from_half_planes(spectra, ctf, shifts, band_weights(N, 10.0), 10.0)
    made = SearchTargets.from_half_planes(spectra, ctf, shifts, band_weights(N, 6.0), 6.0)
    narrow = wide.within(6.0)
    assert torch.equal(narrow.keep, made.keep) and torch.equal(narrow.weights, made.weights)
    assert torch.equal(narrow.spectra, made.spectra) and torch.equal(narrow.ctf, made.ctf)
    assert int(wide.inside(6.0).sum()) == len(made.keep)
