"""Posterior-mean poses: the offset grid, the likelihood weights, and a planted noisy case where
the posterior mean is closer to the truth than the best fit of the same candidates."""

import math

import pytest
import torch

from cryoposenet.model.losses import band_weights
from cryoposenet.physics.fourier import fourier_to_image, image_to_fourier
from cryoposenet.physics.projection import slice_volume, volume_to_fourier
from cryoposenet.physics.rotations import geodesic_distance, random_rotations
from cryoposenet.training.pose_average import likelihood_weights, offset_grid, posterior_mean_rotations
from cryoposenet.training.pose_search import SearchTargets, global_search, so3_grid
from model.conftest import blobs

N = 24


def _deg(a, b):
    return torch.rad2deg(geodesic_distance(a, b))


def test_offset_grid_is_a_cube_centred_on_the_identity():
    omega, rots = offset_grid(2.0, 3)
    assert omega.shape == (343, 3) and rots.shape == (343, 3, 3)
    assert torch.equal(omega[171], torch.zeros(3)) and torch.allclose(rots[171], torch.eye(3))
    assert torch.allclose(rots @ rots.transpose(-1, -2), torch.eye(3).expand(343, 3, 3), atol=1e-6)
    angles = _deg(rots, torch.eye(3).expand(343, 3, 3))
    assert angles.max() == pytest.approx(6.0 * math.sqrt(3), rel=1e-4)  # the cube's corner


def test_likelihood_weights_are_a_softmax_of_the_relative_misfit():
    m = torch.tensor([[2.0, 2.0, 2.0], [1.0, 1.01, 1.02], [1.0, 2.0, 3.0]])
    p = likelihood_weights(m, n_coefficients=200.0, beta=1.0)
    assert torch.allclose(p.sum(dim=1), torch.ones(3))
    assert torch.allclose(p[0], torch.full((3,), 1 / 3))  # equal fits: no preference
    # 1 % more misfit over 200 coefficients is a factor e^{-1} in likelihood
    assert p[1, 1] / p[1, 0] == pytest.approx(math.exp(-1.0), rel=1e-4)
    assert p[2, 0] > 0.999  # a clearly better fit takes all the weight
    flat = likelihood_weights(m, n_coefficients=200.0, beta=0.5)
    assert flat[1, 1] / flat[1, 0] == pytest.approx(math.exp(-0.5), rel=1e-4)  # tempered


@pytest.fixture(scope="module")
def planted():
    """A 24-px map, 64 poses, their exact Fourier slices as images, and the same with white noise
    at SNR 3 (the model is exact, so the likelihood is the true one)."""
    vol = blobs(N, seed=2, count=20)
    fvol = volume_to_fourier(vol)
    rots = random_rotations(64, generator=torch.Generator().manual_seed(7)).float()
    clean = fourier_to_image(slice_volume(fvol, rots), N)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(8))
    noisy = clean + noise * clean.std() / math.sqrt(3.0)
    return fvol, rots, image_to_fourier(clean), image_to_fourier(noisy)


def _targets(spectra, k_max=9.0):
    return SearchTargets.from_half_planes(spectra, None, None, band_weights(N, k_max), k_max)


def test_clean_images_keep_their_pose(planted):
    fvol, rots, clean, _ = planted
    mean = posterior_mean_rotations(fvol, rots, _targets(clean))
    assert _deg(mean, rots).max() < 0.1  # exact fit at the truth: all weight on the centre


def test_the_posterior_mean_is_closer_to_the_truth_than_the_searched_best_fit(planted):
    fvol, rots, _, noisy = planted
    t = _targets(noisy)
    found, _, _ = global_search(fvol, t, so3_grid(4608), top=4, levels=3)  # no knowledge of the truth
    best = found[:, 0]
    mean = posterior_mean_rotations(fvol, best, t, beta=1.0)
    err_best, err_mean = _deg(best, rots), _deg(mean, rots)
    near = err_best < 20.0  # the images whose search found the true basin (all but one here)
    assert near.sum() >= 60 and err_best[near].mean() > 2.0  # the noise moves the best fit
    # the posterior mean minimises the expected squared error; the best fit does not
    assert err_mean[near].square().mean() < err_best[near].square().mean()
    assert err_mean[near].mean() < err_best[near].mean()
