"""Local pose refinement: poses a few degrees off come back to the truth; exact poses stay put."""

import pytest
import torch

from cryoposenet.physics.rotations import expmap_to_quaternion, geodesic_distance, quaternion_to_matrix
from cryoposenet.training.refine import refine_poses, searched_poses
from cryoposenet.training.train import TrainConfig, train


def _turned(rots: torch.Tensor, deg: float, seed: int) -> torch.Tensor:
    """``rots`` each turned by ``deg`` about its own random axis."""
    gen = torch.Generator().manual_seed(seed)
    axes = torch.nn.functional.normalize(torch.randn(len(rots), 3, generator=gen))
    half = torch.deg2rad(torch.tensor(deg)) / 2  # expmap_to_quaternion takes the half angle
    return quaternion_to_matrix(expmap_to_quaternion(axes * half)) @ rots


@pytest.fixture(scope="module")
def known_state(toy):
    """A map trained with the true poses (the refinement's premise: a good map)."""
    _, data = toy
    cfg = TrainConfig(steps=300, poses="known", lr_map=5e-3, batch_size=16, kmax_start=None, lr_decay_at=None)
    return train(data, cfg, poses=False).state


def test_poses_six_degrees_off_are_pulled_back(toy, known_state):
    _, data = toy
    true = data.rotations[:64].float()
    start = _turned(true, 6.0, seed=3)
    refined = refine_poses(known_state, data, start, rows=torch.arange(64), steps=40)
    before = torch.rad2deg(geodesic_distance(start, true))
    after = torch.rad2deg(geodesic_distance(refined, true))
    assert before.mean() == pytest.approx(6.0, abs=0.01)
    assert after.mean() < 2.0 and after.median() < 1.5


def test_poses_in_another_basin_are_replaced_by_the_search(toy, known_state):
    _, data = toy
    true = data.rotations[:64].float()
    start = _turned(true, 90.0, seed=4)  # far outside the local basin
    local = refine_poses(known_state, data, start, rows=torch.arange(64), steps=40, search=False)
    refined = refine_poses(known_state, data, start, rows=torch.arange(64), steps=40)
    assert torch.rad2deg(geodesic_distance(local, true)).median() > 30.0  # local steps alone stay lost
    after = torch.rad2deg(geodesic_distance(refined, true))
    assert after.mean() < 2.0 and after.median() < 1.5  # as from 6° off: the search found the basin


def test_exact_poses_stay_and_no_steps_is_identity(toy, known_state):
    _, data = toy
    true = data.rotations[:32].float()
    refined = refine_poses(known_state, data, true, rows=torch.arange(32), steps=20)
    assert torch.rad2deg(geodesic_distance(refined, true)).mean() < 1.0
    same = refine_poses(known_state, data, true, rows=torch.arange(32), steps=0)
    assert torch.equal(same, true)


def test_searched_poses_find_the_planted_poses_from_the_map_alone(toy, known_state):
    """The search alone (no start pose), on the known-pose map, finds each image's pose within
    about its last level's spacing (three levels below the ~15° grid: ~2°)."""
    _, data = toy
    rows = torch.arange(64)
    err = torch.rad2deg(geodesic_distance(searched_poses(known_state, data, rows), data.rotations[rows]))
    assert err.median() < 3.0 and (err < 8.0).float().mean() >= 0.95
