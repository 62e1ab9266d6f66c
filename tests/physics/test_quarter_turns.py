"""Quarter turns: a turned image is the exact image of the pose ``Rz(−k·90°) · A``."""

import torch

from cryoposenet.model.losses import flip_rotations
from cryoposenet.physics.projection import project
from cryoposenet.physics.quarter_turns import turn_images, turn_rotations
from cryoposenet.physics.rotations import random_rotations

TURNS = torch.tensor([0, 1, 2, 3, 1, 3])


def test_a_turned_analytic_projection_is_the_projection_at_the_turned_pose(blob_map, relerr):
    blobs = blob_map(24, seed=3)
    rots = random_rotations(len(TURNS), generator=torch.Generator().manual_seed(4))
    turned = turn_images(blobs.projections(rots), TURNS)[:, 1:, 1:]  # row and column 0 wrap around
    assert relerr(turned, blobs.projections(turn_rotations(rots, TURNS))[:, 1:, 1:]) < 1e-12  # exact
    # the other sense of turn is another image: the test can tell the two conventions apart
    wrong = blobs.projections(turn_rotations(rots, -TURNS))[:, 1:, 1:]
    odd = TURNS % 2 == 1
    assert relerr(turned[odd], wrong[odd]) > 0.1


def test_the_fourier_slice_decoder_agrees(blob_map, relerr):
    blobs = blob_map(24, seed=5)
    vol = blobs.volume().float()
    rots = random_rotations(len(TURNS), generator=torch.Generator().manual_seed(6), dtype=torch.float32)
    assert relerr(turn_images(project(vol, rots), TURNS), project(vol, turn_rotations(rots, TURNS))) < 1e-5


def test_turns_compose_and_two_of_them_are_the_in_plane_flip():
    images = torch.randn(len(TURNS), 16, 16, generator=torch.Generator().manual_seed(7))
    rots = random_rotations(len(TURNS), generator=torch.Generator().manual_seed(8))
    assert torch.equal(turn_images(turn_images(images, TURNS), -TURNS), images)
    assert torch.equal(turn_images(images, 4), images)
    assert torch.allclose(turn_rotations(turn_rotations(rots, TURNS), -TURNS), rots)
    assert torch.allclose(turn_rotations(rots, 2), flip_rotations(rots))
    # the centre pixel (N/2, N/2) stays put
    spot = torch.zeros(1, 16, 16)
    spot[0, 8, 8] = 1
    assert all(torch.equal(turn_images(spot, k), spot) for k in range(4))
    # one rotation per image also turns a stack of hypotheses (B, H, 3, 3)
    heads = torch.stack([rots, rots.flip(0)], dim=1)
    assert torch.allclose(turn_rotations(heads, TURNS)[:, 1], turn_rotations(rots.flip(0), TURNS))
