import dataclasses

import pytest
import torch

from cryoposenet.model import PoseEncoder
from cryoposenet.model.losses import chordal_to_deg, flip_rotations
from cryoposenet.physics.rotations import geodesic_distance
from cryoposenet.training.checkpoint import load_checkpoint, restore, state_payload
from cryoposenet.training.train import (
    ParticleData,
    TrainConfig,
    _batch_loss,
    init_state,
    lr_scale_at,
    predict_poses,
    train,
)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_gradients_reach_map_and_encoder(toy):
    _, data = toy
    state = init_state(data, TrainConfig(heads=2, symmetric=True))
    loss = _batch_loss(state, data, torch.arange(8), 8.0)[0]
    loss.backward()
    assert state.volume.data.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in state.encoder.head.parameters())
    assert state.encoder.features[0].weight.grad.abs().sum() > 0


def test_known_poses_recover_the_map(toy):
    vol, data = toy
    cfg = TrainConfig(steps=300, poses="known", lr_map=5e-3, batch_size=16, kmax_start=None)
    result = train(data, cfg)
    assert _corr(result.volume, vol) > 0.95
    assert geodesic_distance(result.rotations, data.rotations).max() < 1e-5


def test_encoder_training_lowers_the_loss(toy):
    _, data = toy
    losses = []
    small = ParticleData(data.images[:64], data.apix)
    # the global search for the first 40 % of the steps, as runner.make_config fits it (searching all
    # 120 steps doubles the test's time); last/first loss measured 0.12 (0.18 searching throughout)
    cfg = TrainConfig(
        steps=120,
        lr=1e-3,
        lr_map=5e-3,
        batch_size=8,
        symmetric=True,
        heads=2,
        kmax_start=2.0,
        kmax_steps=60,
        search_steps=48,
    )
    evals = []
    result = train(
        small,
        cfg,
        on_step=lambda info, _: losses.append(info.loss),
        on_eval=lambda st: evals.append(st.step),
        eval_every=50,
    )
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:10]) / 10
    assert evals == [50, 100, 120]
    assert result.rotations.shape == (64, 3, 3)


def test_free_poses_and_heldout_prediction(toy):
    _, data = toy
    result = train(data, TrainConfig(steps=5, poses="free", batch_size=8))
    assert result.rotations.shape == (400, 3, 3)
    enc = train(data, TrainConfig(steps=2, batch_size=8, pose_grid=True, heads=2)).state
    held = ParticleData(data.images[:7], data.apix)
    assert predict_poses(enc, held).shape == (7, 3, 3)


def test_bad_settings_are_refused(toy):
    _, data = toy
    with pytest.raises(ValueError, match="needs data.rotations"):
        init_state(ParticleData(data.images, data.apix), TrainConfig(poses="known"))
    with pytest.raises(ValueError, match="poses mode"):
        init_state(data, TrainConfig(poses="nope"))


class _Interrupted(Exception):
    pass


def _interrupt_at(step: int):
    def on_step(info, state):
        if info.step == step:
            raise _Interrupted

    return on_step


def test_resume_repeats_the_uninterrupted_run(toy):
    _, data = toy
    small = ParticleData(data.images[:32], data.apix)
    cfg = TrainConfig(steps=6, batch_size=4, heads=2, kmax_steps=4)
    straight = train(small, cfg)
    first = init_state(small, cfg)
    with pytest.raises(_Interrupted):  # a kill after step 3 of the same run (search and decay as scheduled)
        train(small, cfg, on_step=_interrupt_at(3), state=first)
    state = restore(small, cfg, state_payload(first))
    resumed = train(small, cfg, state=state)
    assert resumed.state.step == 6
    assert torch.allclose(resumed.volume, straight.volume, atol=1e-6)
    assert torch.allclose(resumed.rotations, straight.rotations, atol=1e-5)


def test_learning_rates_drop_for_the_last_steps(toy):
    _, data = toy
    small = ParticleData(data.images[:32], data.apix, rotations=data.rotations[:32])
    cfg = TrainConfig(steps=10, batch_size=4, heads=2, lr=1e-3, lr_map=4e-3, lr_decay_at=0.7, lr_decay=0.1)
    seen = []
    train(small, cfg, on_step=lambda info, st: seen.append([g["lr"] for g in st.optimizer.param_groups]))
    assert seen[:7] == [[4e-3, 1e-3]] * 7  # steps 0..6 at the base rates (step 7 = 0.7 × 10 onwards: decayed)
    assert [lr for pair in seen[7:] for lr in pair] == pytest.approx([4e-4, 1e-4] * 3)
    plain = TrainConfig(steps=10, lr_decay_at=None)
    assert [lr_scale_at(plain, s) for s in (0, 9)] == [1.0, 1.0]


def test_the_map_learns_from_the_search_and_the_encoder_is_pulled_while_the_map_is_young(toy):
    vol, data = toy
    state = init_state(data, TrainConfig(steps=10, heads=2, search_steps=3, batch_size=8))
    with torch.no_grad():
        state.volume.data.copy_(vol * state.scale)  # the true map: the search finds the true poses
    rows = torch.arange(8)
    fit = _batch_loss(state, data, rows, 6.0, training=True)
    loss, winner, rots, pull = fit.loss, fit.winner, fit.hypotheses, fit.pull
    assert winner is None and rots.shape[1] == 2 and pull.shape == (8,)
    # the encoder's length penalty rides along while training, never when predicting
    assert fit.penalty.shape == (8,) and _batch_loss(state, data, rows, 6.0).penalty is None
    (loss + pull.mean()).backward()
    assert state.volume.data.grad.abs().sum() > 0 and state.encoder.head.weight.grad.abs().sum() > 0
    # on the true map the searched pose is the truth, so the pull is the heads' distance to it
    nearest = torch.rad2deg(geodesic_distance(rots.detach(), data.rotations[rows, None].float()))
    flip = flip_rotations(data.rotations[rows].float())[:, None]
    flipped = torch.rad2deg(geodesic_distance(rots.detach(), flip))
    expected = torch.minimum(nearest, flipped).min(dim=1).values
    # the searched pose is a grid point (spacing 14.8°) within ~one spacing of the truth
    assert (chordal_to_deg(pull.detach()) - expected).abs().max() < 20.0
    state.step = 3  # the search's steps are over: winner-take-all over the encoder's heads
    assert _batch_loss(state, data, rows, 6.0, training=True)[4] is None
    state.step = 0
    assert _batch_loss(state, data, rows, 6.0, training=False)[4] is None  # prediction never searches


def test_checkpoints_from_before_the_activation_choice_rebuild_a_relu_encoder_without_penalty(toy):
    _, data = toy
    state = init_state(data, TrainConfig(steps=2, heads=2))
    assert state.config.activation == "leaky_relu"  # the recipe
    payload = {**state_payload(state), "config": dataclasses.asdict(state.config)}
    del payload["config"]["activation"]  # as saved before the fields existed
    del payload["config"]["length_penalty"]
    del payload["config"]["encoder_turns"]
    old = load_checkpoint(payload, data)
    assert old.config.activation == "relu" and old.config.length_penalty == 0.0
    assert not old.config.encoder_turns  # resumed, such a run goes on without quarter turns
    kinds = {type(m) for m in old.encoder.modules()}
    assert torch.nn.ReLU in kinds and torch.nn.LeakyReLU not in kinds
    relu = PoseEncoder(data.box, heads=2, activation="relu")
    relu.load_state_dict(payload["encoder"])
    images = data.images[:4]
    with torch.no_grad():  # the saved weights with the paper's units: the poses such a run predicted
        assert torch.equal(old.encoder(images), relu(images))
        assert not torch.allclose(state.encoder(images), relu(images))
