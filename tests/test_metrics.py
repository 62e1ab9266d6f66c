import numpy as np
import pytest
import torch

from cryoposenet.analysis.metrics import (
    MIRROR,
    align_map,
    align_rotations,
    apply_alignment,
    fsc,
    pose_errors_deg,
    resolution_at,
)
from cryoposenet.physics.projection import project
from cryoposenet.physics.rotations import expmap_to_quaternion, quaternion_to_matrix, random_rotations
from datasets import blob_map as _blob_map
from datasets import resample


def blob_map(n=24, seed=3):
    return _blob_map(n, seed).numpy()


def numpy_fsc_loop(a, b):
    n = a.shape[0]
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    out = []
    k = np.fft.fftfreq(n) * n
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    for shell in range(n // 2 + 1):
        m = np.rint(r) == shell
        num = np.sum(fa[m] * np.conj(fb[m])).real
        out.append(num / np.sqrt(np.sum(abs(fa[m]) ** 2) * np.sum(abs(fb[m]) ** 2)))
    return np.array(out)


def test_fsc_of_map_with_itself_is_one():
    vol = blob_map()
    np.testing.assert_allclose(fsc(vol, vol)[1:], 1.0, atol=1e-12)


def test_fsc_matches_straightforward_numpy():
    rng = np.random.default_rng(0)
    a = blob_map() + 0.05 * rng.normal(size=(24,) * 3)
    b = blob_map() + 0.05 * rng.normal(size=(24,) * 3)
    np.testing.assert_allclose(fsc(a, b), numpy_fsc_loop(a, b), atol=1e-10)
    assert fsc(a, b)[-1] < 0.5 < fsc(a, b)[2]


def test_resolution_interpolates_crossing():
    curve = np.array([1.0, 0.9, 0.7, 0.3, 0.1])
    # 0.5 crossed halfway between shell 2 and 3 -> shell 2.5 -> 8 px * 2 Å / 2.5
    assert resolution_at(curve, 0.5, n=8, apix=2.0) == pytest.approx(8 * 2 / 2.5)
    assert resolution_at(np.ones(5), 0.143, n=8, apix=2.0) == 4.0


def test_noise_independent_maps_cross_half_at_known_shell():
    # FSC of two noisy copies falls below 0.143 somewhere; a sanity bound on the number.
    rng = np.random.default_rng(1)
    a = blob_map(32) + 0.3 * rng.normal(size=(32,) * 3)
    b = blob_map(32) + 0.3 * rng.normal(size=(32,) * 3)
    res = resolution_at(fsc(a, b), 0.143, 32, 1.0)
    assert 2.0 < res < 16.0


def _setup(seed):
    ref = random_rotations(40, torch.Generator().manual_seed(seed)).numpy()
    g = random_rotations(1, torch.Generator().manual_seed(seed + 100)).numpy()[0]
    return ref, g


def test_alignment_recovers_global_rotation_and_map():
    ref, g = _setup(1)
    vol = blob_map()
    est_map = resample(vol, g)  # the estimate is the truth rotated by Gᵀ
    est = ref @ g
    # physics check of the stated relation: estimate at est poses renders like truth at ref poses
    p_est = project(torch.as_tensor(est_map), torch.as_tensor(est))
    p_ref = project(torch.as_tensor(vol), torch.as_tensor(ref))
    assert np.corrcoef(p_est.numpy().ravel(), p_ref.numpy().ravel())[0, 1] > 0.99
    al = align_rotations(est, ref)
    assert not al.mirrored
    assert al.mean_deg < 1e-6
    np.testing.assert_allclose(al.rotation, g, atol=1e-8)
    back = align_map(est_map, al)
    assert np.corrcoef(back.ravel(), vol.ravel())[0, 1] > 0.995
    assert np.corrcoef(est_map.ravel(), vol.ravel())[0, 1] < 0.9  # the test is not trivial


def test_alignment_recovers_mirror_and_handedness():
    ref, g = _setup(2)
    vol = blob_map()
    est_map = resample(vol, g @ MIRROR)  # mirrored then rotated
    est = MIRROR @ ref @ g @ MIRROR
    p_est = project(torch.as_tensor(est_map), torch.as_tensor(est))
    p_ref = project(torch.as_tensor(vol), torch.as_tensor(ref))
    assert np.corrcoef(p_est.numpy().ravel(), p_ref.numpy().ravel())[0, 1] > 0.99
    al = align_rotations(est, ref)
    assert al.mirrored
    assert al.mean_deg < 1e-6
    back = align_map(est_map, al)
    assert np.corrcoef(back.ravel(), vol.ravel())[0, 1] > 0.995
    unmirrored = align_rotations(est, ref, allow_mirror=False)
    assert unmirrored.mean_deg > 20


def test_alignment_is_robust_to_noise_and_outliers():
    ref, g = _setup(3)
    noise = random_rotations(40, torch.Generator().manual_seed(9)).numpy()
    axis_angle = torch.as_tensor(np.random.default_rng(4).normal(scale=0.01, size=(40, 3)))
    small = quaternion_to_matrix(expmap_to_quaternion(axis_angle)).numpy()  # ~1° each
    est = ref @ g @ small
    est[:4] = noise[:4]  # four wild poses
    al = align_rotations(est, ref)
    assert np.median(al.errors_deg) < 2.5
    assert pose_errors_deg(al.rotation[None], g[None])[0] < 1.0
    assert (al.errors_deg[:4] > 10).sum() >= 3  # the wild ones stay wild


def test_fixed_alignment_applies_to_other_poses_incl_mirror():
    ref, g = _setup(5)
    est = MIRROR @ ref @ g @ MIRROR
    al = align_rotations(est[:20], ref[:20])
    assert al.mirrored
    np.testing.assert_allclose(apply_alignment(al, est[20:], ref[20:]), 0.0, atol=1e-5)
    # a different global rotation on the 'held-out' half is not hidden by a fresh alignment
    other = random_rotations(1, torch.Generator().manual_seed(77)).numpy()[0]
    assert apply_alignment(al, MIRROR @ ref[20:] @ other @ MIRROR, ref[20:]).mean() > 10
