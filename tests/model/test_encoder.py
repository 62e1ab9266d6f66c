import pytest
import torch

from cryoposenet.model import PoseEncoder, standardise
from cryoposenet.model.encoder import length_penalty
from cryoposenet.model.losses import nearest_rotation_loss
from cryoposenet.physics.rotations import params_to_matrix, random_rotations


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


def test_he_init_passes_each_images_variation_to_the_last_hidden_layer():
    """With PyTorch's default init the paper's network gave every image nearly the same hidden
    state (spread across images ~2 % of the units' size at 32 px, ~0.1 % at 64 px); He init keeps
    it at ~20 %, so the pull onto poses starts from image-dependent outputs."""
    torch.manual_seed(0)
    enc = PoseEncoder(32)
    with torch.no_grad():
        hidden = enc.mlp(enc.features(enc.prepare(torch.randn(16, 32, 32))))
    assert hidden.std(dim=0).mean() / hidden.abs().mean() > 0.1


def test_length_penalty_measures_the_s2s2_lengths_and_its_gradient_never_turns_a_rotation():
    torch.manual_seed(0)
    vectors = torch.randn(5, 3, 2, 3)
    unit = (vectors / vectors.norm(dim=-1, keepdim=True)).flatten(-2)  # (B=5, H=3, 6)
    assert torch.allclose(length_penalty("s2s2", unit), torch.zeros(5), atol=1e-6)
    assert torch.allclose(length_penalty("s2s2", 3 * unit), torch.full((5,), 8.0), atol=1e-5)  # 2·(3−1)²
    assert torch.equal(length_penalty("quat", torch.randn(5, 3, 3)), torch.zeros(5))  # exp-map: no scale
    params = (2.5 * vectors.flatten(-2)).requires_grad_()
    length_penalty("s2s2", params).sum().backward()
    stepped = params.detach() - 0.1 * params.grad  # a step on the penalty alone: radial, lengths only
    before = params_to_matrix("s2s2", params.detach())
    assert torch.allclose(params_to_matrix("s2s2", stepped), before, atol=1e-5)
    assert length_penalty("s2s2", stepped).sum() < length_penalty("s2s2", params.detach()).sum()


def _head_lengths_after_regression(penalty: float) -> float:
    """Mean length of the s2s2 3-vectors after 60 Adam steps (2e-3) pulling 2 heads onto random poses."""
    torch.manual_seed(0)
    enc = PoseEncoder(16, heads=2)
    images, targets = torch.randn(64, 16, 16), random_rotations(64, dtype=torch.float32)
    opt = torch.optim.Adam(enc.parameters(), lr=2e-3)
    for _ in range(60):
        rows = torch.randint(64, (16,))
        rots, lengths = enc(images[rows], with_penalty=True)
        loss = (nearest_rotation_loss(rots, targets[rows]) + penalty * lengths).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        params = enc.head(enc.mlp(enc.features(enc.prepare(images))))
    return params.unflatten(-1, (-1, 3)).norm(dim=-1).mean().item()


def test_the_length_penalty_holds_the_s2s2_lengths_that_adam_lets_grow():
    # The rotations are scale-invariant, so nothing but the penalty bounds the lengths; grown
    # lengths shrink every image-dependent change of the poses (docs/training.md).
    assert _head_lengths_after_regression(0.0) > 5.0
    assert 0.5 < _head_lengths_after_regression(1.0) < 2.0
