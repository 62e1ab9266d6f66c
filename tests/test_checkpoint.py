"""The checkpoint carries the finished run's final map beside the trained one."""

import torch

from cryoposenet.runs.final_map import holding_map
from cryoposenet.training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from cryoposenet.training.train import ParticleData, TrainConfig, init_state


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
