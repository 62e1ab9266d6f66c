"""The encoder's views of the map (training/map_views.py) on planted cases."""

import dataclasses

import torch

from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.physics.fourier import image_to_fourier
from cryoposenet.physics.projection import project, slice_volume, volume_to_fourier
from cryoposenet.physics.rotations import geodesic_distance, random_rotations
from cryoposenet.training.checkpoint import load_checkpoint, state_payload
from cryoposenet.training.map_views import (
    background_sigma,
    render_views,
    split_views,
    view_ctf,
    view_generator,
)
from cryoposenet.training.train import ParticleData, TrainConfig, _views, init_state, train


def test_the_background_sigma_of_noise_is_its_sigma_and_ignores_a_centred_particle():
    g = torch.Generator().manual_seed(0)
    images = 2.5 * torch.randn(64, 32, 32, generator=g)
    # 64 images × 373 pixels beyond 0.45·32: the estimate's relative sd is ~0.5 %
    assert abs(background_sigma(images).mean() - 2.5) < 0.05
    c = torch.arange(32.0) - 16
    particle = 50 * torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * 3.0**2))  # negligible at r > 14
    assert abs(background_sigma(images + particle).mean() - 2.5) < 0.05


def test_noiseless_views_are_the_maps_projections_at_the_drawn_rotations(toy):
    vol, _ = toy
    views, rots = render_views(volume_to_fourier(vol), 5, 0.0, None, view_generator(3, 7))
    assert torch.allclose(views, project(vol, rots), atol=1e-4 * vol.abs().max().item())
    again, same = render_views(volume_to_fourier(vol), 5, 0.0, None, view_generator(3, 7))
    assert torch.equal(rots, same) and torch.equal(views, again)  # (seed, step) decides
    _, other = render_views(volume_to_fourier(vol), 5, 0.0, None, view_generator(3, 8))
    assert torch.rad2deg(geodesic_distance(rots, other)).min() > 1.0
    _, seed4 = render_views(volume_to_fourier(vol), 5, 0.0, None, view_generator(4, 7))
    assert torch.rad2deg(geodesic_distance(rots, seed4)).min() > 1.0


def test_views_carry_white_noise_of_the_given_sigma_and_no_gradient_to_the_map(toy):
    vol, _ = toy
    vol = vol.clone().requires_grad_(True)
    fvol = volume_to_fourier(vol)
    clean, _ = render_views(fvol, 200, 0.0, None, view_generator(0, 0))
    noisy, _ = render_views(fvol, 200, 0.7, None, view_generator(0, 0))
    assert not noisy.requires_grad
    noise = noisy - clean  # 200 × 256 pixels: the sample sd is within 1 % of 0.7 (3 sd)
    assert abs(noise.std().item() - 0.7) < 0.01 and abs(noise.mean().item()) < 0.01


def _ctf_params(m: int) -> dict[str, torch.Tensor]:
    """``m`` rows of CTF parameters with distinct defoci (0.8–3.0 µm, astigmatic)."""
    du = torch.linspace(8000.0, 30000.0, m)
    const = {"defocus_angle_deg": 30.0, "voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1}
    return {
        "defocus_u_A": du,
        "defocus_v_A": du - 500.0,
        **{k: torch.full((m,), v) for k, v in const.items()},
    }


def test_the_views_ctfs_are_rows_of_the_data_and_none_draws_nothing():
    params, gen = _ctf_params(7), torch.Generator().manual_seed(5)
    every = ctf_half_plane(16, 4.0, **params)  # (7, 16, 9)
    blank = torch.zeros(7, 16, 16)
    drawn = view_ctf(ParticleData(blank, 4.0, ctf=params), 40, gen)
    gap = (drawn[:, None] - every[None]).abs().amax(dim=(-1, -2))  # (40, 7)
    assert gap.min(dim=1).values.max() < 1e-6  # each view's CTF is one row's
    assert len(set(gap.argmin(dim=1).tolist())) >= 5  # and the rows vary (40 draws of 7: P(< 5) < 1e-9)
    state = gen.get_state()
    assert view_ctf(ParticleData(blank, 4.0), 40, gen) is None and torch.equal(gen.get_state(), state)


def test_a_run_on_ctf_data_shows_the_encoder_views_with_the_datas_ctf(toy):
    vol, data = toy
    params = _ctf_params(len(data))
    ctf_data = ParticleData(data.images, data.apix, ctf=params)
    state = init_state(ctf_data, TrainConfig(steps=1, batch_size=8, heads=2, map_views=1.0))
    state.extra["view_sigma"] = 0.0
    fvol = volume_to_fourier(vol)
    views, rots = _views(state, ctf_data, fvol, None, training=True)
    every = ctf_half_plane(16, data.apix, **params)  # (M, 16, 9)
    ky, kx = torch.fft.fftfreq(16, 1 / 16), torch.arange(9.0)
    inside = (ky[:, None] ** 2 + kx[None] ** 2) < 7**2  # within the band, away from Nyquist's folding
    ratio = (image_to_fourier(views) / slice_volume(fvol, rots))[:, inside]  # each view's CTF there
    gap = (ratio[:, None] - every[:, inside][None]).abs().amax(dim=-1)  # (8, M)
    assert gap.min(dim=1).values.max() < 1e-3
    plain, _ = _views(state, ParticleData(data.images, data.apix), fvol, None, training=True)
    assert not torch.allclose(plain, views, atol=1e-3)


def test_split_views_pulls_the_nearest_head_onto_each_views_pose():
    g = torch.Generator().manual_seed(2)
    heads = random_rotations(5 * 3, generator=g, dtype=torch.float32).reshape(5, 3, 3, 3)
    view_poses = heads[3:, 1]  # the last two rows are views, and their head 1 is right
    penalty = torch.arange(5.0)
    rots, pen, pull = split_views(heads, penalty, view_poses)
    assert torch.equal(rots, heads[:3]) and torch.equal(pen, penalty[:3])
    assert torch.allclose(pull, penalty[3:], atol=1e-5)  # zero distance plus each view's own penalty
    assert split_views(heads, None, None)[0] is heads


def test_views_train_the_encoder_and_never_the_map(toy):
    _, data = toy
    small = ParticleData(data.images[:32], data.apix)
    cfg = TrainConfig(steps=3, batch_size=8, heads=2, refine_steps=0)
    runs = {v: train(small, dataclasses.replace(cfg, map_views=v), poses=False).state for v in (0.0, 0.5)}
    assert torch.equal(runs[0.0].volume.data, runs[0.5].volume.data)
    assert not torch.equal(runs[0.0].encoder.head.weight, runs[0.5].encoder.head.weight)
    assert runs[0.5].extra["view_sigma"] == runs[0.0].extra["view_sigma"]


def test_a_run_with_views_resumed_from_its_checkpoint_repeats_the_uninterrupted_run(toy):
    _, data = toy
    small = ParticleData(data.images[:32], data.apix)
    cfg = TrainConfig(steps=4, batch_size=8, heads=2, refine_steps=0, map_views=0.5)
    whole = train(small, cfg, poses=False).state
    half = train(small, dataclasses.replace(cfg, steps=2), poses=False).state
    payload = {**state_payload(half), "config": dataclasses.asdict(cfg)}
    resumed = train(small, cfg, state=load_checkpoint(payload, small), poses=False).state
    assert torch.allclose(resumed.encoder.head.weight, whole.encoder.head.weight, atol=1e-6)


def test_checkpoints_from_before_the_views_train_without_them(toy):
    _, data = toy
    state = init_state(data, TrainConfig(steps=2, heads=2, map_views=0.5))
    payload = {**state_payload(state), "config": dataclasses.asdict(state.config)}
    del payload["config"]["map_views"]
    assert load_checkpoint(payload, data).config.map_views == 0.0
