"""The encoder's quarter-turn augmentation (training/augment.py) on planted cases."""

import torch

from cryoposenet.physics.projection import project
from cryoposenet.physics.quarter_turns import turn_images, turn_rotations
from cryoposenet.physics.rotations import geodesic_distance, random_rotations
from cryoposenet.training.augment import draw_turns, every_turn_hypotheses, turned_hypotheses
from cryoposenet.training.train import ParticleData, TrainConfig, init_state, predict_fits, train


def test_each_image_turn_depends_on_its_row_seed_and_step_only():
    rows = torch.arange(4000)
    turns = draw_turns(rows, seed=1, step=5)
    assert torch.equal(draw_turns(rows[1000:1032], seed=1, step=5), turns[1000:1032])  # any batch, any rank
    assert torch.equal(draw_turns(rows.flip(0), seed=1, step=5), turns.flip(0))
    assert (draw_turns(rows, seed=1, step=6) != turns).float().mean() > 0.6  # 3/4 expected
    assert (draw_turns(rows, seed=2, step=5) != turns).float().mean() > 0.6
    share = torch.bincount(turns, minlength=4) / len(rows)
    assert share.min() > 0.2 and share.max() < 0.3  # ~1/4 each (binomial sd 0.007)


class _Oracle(torch.nn.Module):
    """An encoder that knows the map: each image's pose is the best-matching candidate's."""

    def __init__(self, vol, candidates):
        super().__init__()
        self.candidates, self.images = candidates, project(vol, candidates)

    def forward(self, images, with_penalty=False):
        err = (images[:, None] - self.images[None]).square().sum(dim=(-2, -1))
        rots = self.candidates[err.argmin(dim=1)][:, None]  # (B, 1, 3, 3)
        return rots, torch.zeros(len(images))


def test_an_oracle_shown_turned_images_gives_back_the_poses_of_the_images_as_given(toy):
    vol, _ = toy
    poses = random_rotations(6, generator=torch.Generator().manual_seed(9), dtype=torch.float32)
    turns = torch.tensor([0, 1, 2, 3, 3, 1])
    # the oracle knows every turned pose, but not which image was turned how
    candidates = torch.cat([turn_rotations(poses, k) for k in range(4)])
    oracle = _Oracle(vol, candidates)
    rots, _ = turned_hypotheses(oracle, project(vol, poses), turns)
    assert torch.rad2deg(geodesic_distance(rots[:, 0], poses)).max() < 1e-3
    shown = oracle(project(vol, poses))[0][:, 0]  # without turns the oracle answers the same
    assert torch.rad2deg(geodesic_distance(shown, poses)).max() < 1e-3


def test_while_the_search_runs_the_turns_change_the_encoder_and_never_the_map(toy):
    _, data = toy
    small = ParticleData(data.images[:32], data.apix)
    runs = {
        turns: train(small, TrainConfig(steps=3, batch_size=8, heads=2, refine_steps=0, encoder_turns=turns))
        for turns in (False, True)
    }
    plain, turned = runs[False].state, runs[True].state
    assert torch.equal(plain.volume.data, turned.volume.data)
    assert not torch.equal(plain.encoder.head.weight, turned.encoder.head.weight)


def test_prediction_with_every_turn_turns_with_the_image(toy):
    """Shown each image at its four quarter turns, the prediction of a turned image is the turned
    prediction of the image (exactly, for any encoder and map); the encoder alone is not."""
    _, data = toy
    small = ParticleData(data.images[:24], data.apix)
    state = init_state(small, TrainConfig(steps=1, heads=2, refine_steps=0))
    turned = ParticleData(turn_images(small.images, torch.ones(24, dtype=torch.int64)), data.apix)
    poses = {t: [predict_fits(state, d, every_turn=t)[0] for d in (small, turned)] for t in (False, True)}
    given, of_turned = poses[True]
    assert torch.rad2deg(geodesic_distance(of_turned, turn_rotations(given, 1))).max() < 0.01
    given, of_turned = poses[False]  # a random encoder is not equivariant by itself
    assert torch.rad2deg(geodesic_distance(of_turned, turn_rotations(given, 1))).median() > 5


def test_every_turn_holds_each_turns_heads_in_order(toy):
    """Turn ``k``'s ``H`` answers sit at ``[:, kH:(k+1)H]``, equal to what turn ``k`` alone gives."""
    _, data = toy
    images = data.images[:6]
    state = init_state(ParticleData(images, data.apix), TrainConfig(steps=1, heads=3))
    state.encoder.eval()
    with torch.no_grad():
        every = every_turn_hypotheses(state.encoder, images)
        assert every.shape == (6, 12, 3, 3)
        for k in range(4):
            alone = turned_hypotheses(state.encoder, images, torch.full((6,), k))[0]
            torch.testing.assert_close(every[:, 3 * k : 3 * (k + 1)], alone, atol=1e-5, rtol=1e-5)
