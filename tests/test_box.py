"""Any box size: the encoder takes odd and non-multiple-of-8 sizes; train/predict/backproject run on them."""

import pytest
import torch

from cryoposenet.model import PoseEncoder, standardise
from cryoposenet.physics.fourier import centre_pad
from cryoposenet.physics.rotations import params_to_matrix


@pytest.mark.parametrize("n", [15, 20, 30, 31, 33])
def test_encoder_takes_any_image_size(n):
    torch.manual_seed(0)
    enc = PoseEncoder(n, heads=2)
    rots = enc(torch.randn(3, n, n))
    assert rots.shape == (3, 2, 3, 3)
    assert torch.allclose(rots @ rots.transpose(-1, -2), torch.eye(3).expand_as(rots), atol=1e-5)
    assert enc.padded == -(-n // 8) * 8 and enc.padded - n < 8


@pytest.mark.parametrize("n", [16, 24, 64])
def test_multiples_of_8_keep_the_paper_architecture(n):
    enc = PoseEncoder(n)
    assert enc.padded == n
    assert enc.mlp[1].in_features == 128 * (n // 8) ** 2  # as before any-size support


def test_a_30_px_encoder_is_the_32_px_network_on_the_standardised_image_padded_with_zeros():
    torch.manual_seed(0)
    enc = PoseEncoder(30)
    PoseEncoder(32).load_state_dict(enc.state_dict())  # the same layers and shapes
    x = torch.randn(4, 30, 30)
    padded = centre_pad(standardise(x), 32, ndim=2)[:, None].contiguous(memory_format=torch.channels_last)
    params = enc.head(enc.mlp(enc.features(padded))).reshape(4, 1, -1)
    assert torch.allclose(enc(x), params_to_matrix("s2s2", params), atol=1e-6)
