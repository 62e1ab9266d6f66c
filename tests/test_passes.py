"""Passes over all particles: read_chunks reports each finished chunk; pass_progress shows a bar."""

import torch

from cryoposenet.training.data import pass_progress, read_chunks
from cryoposenet.training.refine import refine_poses
from cryoposenet.training.train import ParticleData, TrainConfig, init_state, predict_poses


def test_on_chunk_is_called_after_the_caller_has_finished_each_chunk():
    images = torch.arange(10 * 4 * 4, dtype=torch.float32).reshape(10, 4, 4)
    seen, events = [], []
    for positions, batch in read_chunks(
        images, torch.arange(10), 4, on_chunk=lambda k: events.append(("done", k))
    ):
        events.append(("got", len(positions)))
        seen.append(batch)
    assert events == [("got", 4), ("done", 4), ("got", 4), ("done", 4), ("got", 2), ("done", 2)]
    assert torch.equal(torch.cat(seen), images)


def test_a_pass_progress_bar_counts_the_images_of_passes_that_do_not_know_of_it():
    torch.manual_seed(0)
    data = ParticleData(torch.randn(40, 16, 16), 2.0)
    state = init_state(data, TrainConfig(steps=1, heads=2, refine_steps=1))
    with pass_progress("final poses", 40, show=True) as bar:
        rotations = predict_poses(state, data, batch_size=16)
    assert bar.n == 40 and rotations.shape == (40, 3, 3)
    with pass_progress("refine", 40, show=True) as bar:
        refine_poses(state, data, rotations, steps=1, batch_size=16)
    assert bar.n == 40
    predict_poses(state, data, rows=torch.arange(8))  # outside a block: no bar, no error
    assert bar.n == 40
