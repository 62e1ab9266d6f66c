"""Viewing directions: the convention against a projection, and coverage of uniform and collapsed poses."""

import numpy as np
import torch

from cryoposenet.analysis.views import direction_coverage, sphere_cells, viewing_directions
from cryoposenet.physics.projection import project_real_space
from cryoposenet.physics.rotations import random_rotations


def test_a_rod_seen_along_its_viewing_direction_projects_to_its_smallest_spot():
    """A thin rod along u: of many poses, the one whose viewing direction is closest to ±u gives
    the most compact image (the rod seen end-on)."""
    n = 16
    c = torch.arange(n, dtype=torch.float64) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    r = torch.stack([x, y, z], dim=-1)
    u = torch.nn.functional.normalize(torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64), dim=0)
    along = r @ u
    off = (r - along[..., None] * u).norm(dim=-1)
    rod = torch.exp(-(off**2) / 1.5) * (along.abs() < 6)
    rots = random_rotations(300, torch.Generator().manual_seed(0))
    images = project_real_space(rod, rots)
    pix = torch.stack(torch.meshgrid(c, c, indexing="ij"), dim=-1)  # (N, N, 2)
    weights = images.clamp_min(0) / images.clamp_min(0).sum(dim=(1, 2), keepdim=True)
    centre = (weights[..., None] * pix).sum(dim=(1, 2))
    spread = (weights * (pix[None] - centre[:, None, None]).square().sum(-1)).sum(dim=(1, 2))
    d = viewing_directions(rots.numpy())
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
    end_on = int(np.argmax(np.abs(d @ u.numpy())))
    assert int(spread.argmin()) == end_on


def test_sphere_cells_are_unit_and_near_equal_area():
    centres = sphere_cells(200)
    assert np.allclose(np.linalg.norm(centres, axis=1), 1.0)
    g = np.random.default_rng(1).standard_normal((200_000, 3))
    counts = np.bincount(np.argmax(g @ centres.T, axis=1), minlength=200)
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_uniform_poses_cover_the_sphere_and_collapsed_ones_do_not():
    uniform = direction_coverage(viewing_directions(random_rotations(4500).numpy()))
    assert uniform.cells == 225
    assert uniform.top_share < 1.25 * uniform.uniform_share  # measured 0.072 against 0.072
    rng = np.random.default_rng(2)
    axes = np.eye(3)[rng.integers(0, 3, 4500)]  # every view within ~10° of one of three axes
    collapsed = axes + 0.15 * rng.standard_normal((4500, 3))
    collapsed /= np.linalg.norm(collapsed, axis=1, keepdims=True)
    assert direction_coverage(collapsed).top_share > 3 * uniform.uniform_share
    assert abs(uniform.min_moment - 1 / 3) < 0.03  # three axes equally: no plane either
    assert abs(direction_coverage(collapsed).min_moment - 1 / 3) < 0.05


def test_views_on_one_great_circle_have_no_second_moment_across_it():
    angle = np.random.default_rng(5).uniform(0, 2 * np.pi, 3000)
    ring = np.stack([np.cos(angle), np.zeros_like(angle), np.sin(angle)], axis=1)
    tilted = ring + 0.05 * np.random.default_rng(6).standard_normal(ring.shape)
    tilted /= np.linalg.norm(tilted, axis=1, keepdims=True)
    assert direction_coverage(ring).min_moment < 1e-12
    assert direction_coverage(tilted).min_moment < 0.01


def test_training_warns_when_learned_poses_crowd_into_a_few_views(caplog):
    from cryoposenet.physics.rotations import axis_angle_to_matrix
    from cryoposenet.runs.runner import _log_views

    spread = random_rotations(2000, torch.Generator().manual_seed(3))
    angles = torch.rand(2000, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2 * np.pi
    # turns about y only: every view on the great circle perpendicular to y, as the collapsed run's
    ring = axis_angle_to_matrix(torch.stack([0 * angles, angles, 0 * angles], dim=1))
    with caplog.at_level("INFO", logger="cryoposenet.runs.runner"):
        _log_views(spread, learned=True)
        _log_views(ring, learned=False)  # known poses: stated, never warned about
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
        _log_views(ring, learned=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "another --seed" in warnings[0]
