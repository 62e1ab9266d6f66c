import torch

from cryoposenet.model import band_weights, candidate_spectra, flip_rotations, wta_loss
from cryoposenet.model.losses import expand_hypotheses, octahedral_group
from cryoposenet.physics.fourier import fourier_to_image, image_to_fourier
from cryoposenet.physics.projection import slice_volume, volume_to_fourier
from cryoposenet.physics.rotations import random_rotations

from .conftest import blobs


def test_full_band_loss_is_pixel_mse():
    torch.manual_seed(0)
    a, b = torch.randn(4, 16, 16), torch.randn(4, 16, 16)
    w = band_weights(16)
    loss, per_image, winner = wta_loss(image_to_fourier(a), image_to_fourier(b)[:, None], w)
    assert torch.allclose(per_image, ((a - b) ** 2).mean(dim=(-2, -1)), rtol=1e-4)
    assert torch.all(winner == 0)


def test_low_pass_band_ignores_high_frequencies():
    img = torch.randn(2, 16, 16)
    spec = image_to_fourier(img)
    w = band_weights(16, k_max=3)
    noisy = spec + (w == 0) * torch.randn_like(spec)  # change only frequencies outside the disc
    _, per_image, _ = wta_loss(spec, noisy[:, None], w)
    assert torch.allclose(per_image, torch.zeros(2), atol=1e-6)


def test_flipped_slice_is_image_turned_by_180_degrees():
    fvol = volume_to_fourier(blobs(16))
    rots = random_rotations(3, generator=torch.Generator().manual_seed(2)).float()
    direct = fourier_to_image(slice_volume(fvol, flip_rotations(rots)), 16)
    cands = candidate_spectra(slice_volume(fvol, rots)[:, None], symmetric=True)
    assert cands.shape == (3, 2, 16, 9)
    via_conj = fourier_to_image(cands[:, 1], 16)
    assert torch.allclose(direct, via_conj, atol=1e-4 * direct.abs().max())
    # and it really is the image rotated about pixel N//2 (rows/cols 1.. reversed)
    plain = fourier_to_image(cands[:, 0], 16)
    turned = torch.flip(plain[:, 1:, 1:], dims=(-2, -1))
    assert torch.allclose(via_conj[:, 1:, 1:], turned, atol=1e-4 * plain.abs().max())


def test_winner_takes_the_best_candidate():
    target = torch.zeros(2, 16, 9, dtype=torch.complex64)
    cands = torch.ones(2, 3, 16, 9, dtype=torch.complex64) * torch.tensor([3.0, 1.0, 2.0])[:, None, None]
    _, _, winner = wta_loss(target, cands, band_weights(16))
    assert winner.tolist() == [1, 1]


def test_octahedral_group_and_expansion():
    g = octahedral_group()
    assert g.shape == (24, 3, 3)
    assert torch.allclose(torch.linalg.det(g), torch.ones(24))
    assert len({tuple(m.flatten().tolist()) for m in g}) == 24
    # closed under products: every product is again one of the 24
    prods = (g[:, None] @ g[None]).reshape(-1, 9)
    assert torch.cdist(prods, g.reshape(24, 9)).min(dim=1).values.max() < 1e-6
    rots = random_rotations(2, generator=torch.Generator().manual_seed(3)).float()[:, None]
    cands = expand_hypotheses(rots, g)
    assert cands.shape == (2, 24, 3, 3)
    assert torch.allclose(cands[1, 5], g[5] @ rots[1, 0])
    assert expand_hypotheses(rots, None) is rots
