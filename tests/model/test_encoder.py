import pytest
import torch

from cryoposenet.model import PoseEncoder, standardise


@pytest.mark.parametrize("rotation", ["s2s2", "quat", "euler"])
@pytest.mark.parametrize("heads", [1, 3])
def test_encoder_outputs_rotations(rotation, heads):
    torch.manual_seed(0)
    enc = PoseEncoder(16, rotation=rotation, heads=heads)
    rots = enc(torch.randn(5, 16, 16))
    assert rots.shape == (5, heads, 3, 3)
    eye = torch.eye(3).expand_as(rots)
    assert torch.allclose(rots @ rots.transpose(-1, -2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rots), torch.ones(5, heads), atol=1e-5)


def test_encoder_batchnorm_and_scale_invariance():
    torch.manual_seed(0)
    enc = PoseEncoder(16, batchnorm=True).eval()
    x = torch.randn(4, 16, 16)
    # Per-image standardisation: the pose does not depend on the image's scale or offset.
    assert torch.allclose(enc(x), enc(3 * x + 2), atol=1e-4)


def test_standardise():
    x = standardise(torch.randn(3, 8, 8) * 5 + 1)
    assert torch.allclose(x.mean(dim=(-2, -1)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(-2, -1)), torch.ones(3), atol=1e-4)
