"""The run's final map: backprojected after the final poses, once per round, and carried by the
checkpoint beside the trained map."""

import dataclasses

import torch

from cryoposenet.physics.projection import project
from cryoposenet.physics.rotations import random_rotations
from cryoposenet.runs.final_map import final_map, final_poses_and_map, final_rotations, holding_map, misfit
from cryoposenet.training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from cryoposenet.training.refine import refine_fits
from cryoposenet.training.train import ParticleData, TrainConfig, init_state
from datasets import blob_map


def _map(state) -> torch.Tensor:
    return state.volume.volume().detach() / state.scale


def test_final_map_serves_new_images_while_training_resumes_from_the_trained_map(tmp_path):
    torch.manual_seed(0)
    data = ParticleData(3.0 * torch.randn(12, 16, 16), 2.0)
    state = init_state(data, TrainConfig(steps=1))
    trained = _map(state).clone()
    final = torch.randn(16, 16, 16)
    save_checkpoint(tmp_path / "c.pt", state, final_map=final)
    payload = read_checkpoint(tmp_path / "c.pt")
    torch.testing.assert_close(_map(load_checkpoint(payload, data, final_map=True)), final)
    torch.testing.assert_close(_map(load_checkpoint(payload, data)), trained)
    with holding_map(state, final) as held:  # set inside the block, restored after
        torch.testing.assert_close(_map(held), final)
    torch.testing.assert_close(_map(state), trained)
    save_checkpoint(tmp_path / "c.pt", state)  # a checkpoint mid-run has none: the trained map serves
    torch.testing.assert_close(
        _map(load_checkpoint(read_checkpoint(tmp_path / "c.pt"), data, final_map=True)), trained
    )


def test_each_final_round_refines_against_the_last_map_and_backprojects_again():
    torch.manual_seed(0)
    data = ParticleData(3.0 * torch.randn(24, 16, 16), 2.0)
    state = init_state(data, TrainConfig(steps=1, refine_steps=2, final_rounds=1))
    rot1, tr1, map1 = final_poses_and_map(state, data, show=False)
    torch.testing.assert_close(map1, final_map(data, *final_rotations(state, data, False), show=False))
    state.config = dataclasses.replace(state.config, final_rounds=2)
    rot2, _, map2 = final_poses_and_map(state, data, show=False)
    with holding_map(state, map1) as held:  # round 2: refined against round 1's map
        again = refine_fits(held, data, rot1, steps=2, translations=tr1)[0]
    torch.testing.assert_close(rot2, again)
    torch.testing.assert_close(map2, final_map(data, again, None, show=False))
    assert not torch.allclose(rot2, rot1)
    torch.testing.assert_close(_map(state), _map(init_state(data, state.config)))  # trained map kept


def test_the_trained_map_is_kept_when_it_explains_the_images_better():
    """Images made by the decoder from a map, at known poses: that map fits them exactly, their
    backprojection does not (interpolation), so the run's final map is the trained one."""
    truth = blob_map(16).float()
    rots = random_rotations(200, torch.Generator().manual_seed(1)).float()
    data = ParticleData(project(truth, rots), 2.0, rotations=rots)
    state = init_state(data, TrainConfig(steps=1, poses="known"))
    with torch.no_grad():
        state.volume.data.copy_(truth * state.scale)
    backprojected = final_map(data, rots, None, show=False)
    rows = torch.arange(200)
    with holding_map(state, backprojected) as held:
        worse = misfit(held, data, rots, None, rows)
    assert misfit(state, data, rots, None, rows) < worse
    torch.testing.assert_close(final_poses_and_map(state, data, show=False)[2], truth)


def test_a_support_mask_is_applied_once_where_the_final_map_is_used():
    """The final map is kept unmasked (as the trained map's ``data``); loading it, or holding it,
    masks it once. Before, the backprojection was masked and then masked again on use."""
    torch.manual_seed(0)
    data = ParticleData(3.0 * torch.randn(24, 16, 16), 2.0)
    state = init_state(data, TrainConfig(steps=1, refine_steps=0, mask_radius=5.0))
    mask = state.volume.mask
    assert mask.min() < 1e-3 < 0.999 < mask.max()  # a real soft mask
    volume = final_poses_and_map(state, data, show=False)[2]
    assert volume[mask < 1e-3].abs().max() > 0  # unmasked: density outside the mask is still there
    with holding_map(state, volume) as held:
        torch.testing.assert_close(_map(held), volume * mask)
