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


def _sink_hidden_units(enc: PoseEncoder) -> None:
    """Every hidden unit of the MLP below zero for any image: what a run's dead ReLU encoder looked like."""
    with torch.no_grad():
        for layer in enc.mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.bias.fill_(-20.0)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_only_leaky_units_keep_the_pose_tied_to_the_image_when_every_unit_is_below_zero(activation):
    torch.manual_seed(0)
    enc = PoseEncoder(16, heads=2, activation=activation)
    _sink_hidden_units(enc)
    rots = enc(torch.randn(6, 16, 16))
    rots.square().sum().backward()  # any loss of the poses
    conv_grad = enc.features[0].weight.grad.abs().max().item()
    spread = rots.std(dim=0).max().item()  # across images
    if activation == "relu":  # dead: one rotation for every image, no gradient to the convolutions
        assert spread == 0.0 and conv_grad == 0.0
    else:
        assert spread > 0.0 and conv_grad > 0.0  # leaky units still pass (scaled) signal and gradient


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation"):
        PoseEncoder(16, activation="tanh")
