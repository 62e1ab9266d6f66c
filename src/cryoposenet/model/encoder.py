"""The CryoPoseNet encoder: a CNN that maps particle images to rotations.

Backbone (paper, section 3): three blocks ``conv3x3 → ReLU → conv3x3 → ReLU → maxpool2`` with 32,
64 and 128 filters, flattened, then an MLP of two 512-unit ReLU layers, then a linear pose head.
Details the paper leaves open, fixed here: an activation after every conv and hidden layer;
optional BatchNorm after each conv; each image is standardised (zero mean, unit variance) before
the first conv, so the encoder sees the same input range at every SNR.

The activation is a leaky ReLU (slope 0.1 below zero) by default, the paper's ReLU on request
(``activation="relu"``, and for checkpoints from before the choice). Regressed onto poses (the
pull towards the searched poses, :func:`~cryoposenet.model.losses.nearest_rotation_loss`), a
ReLU encoder can shrink its image-dependent outputs while they are still unrelated to the poses
and its units die: in one 64-px run every hidden unit was zero for every image from step ~250
on, the heads output constants (~47° from the poses) and no gradient reached the convolutions
again (another batch order on the same data kept it alive). Leaky units cannot die (docs/training.md,
"The encoder's units: leaky ReLU").

Initialisation: every conv and hidden layer He-normal for its activation (fan-in, zero bias), so
an image's variation reaches the head at its own scale; the head keeps PyTorch's default. With
PyTorch's default (uniform, gain 1/√3, random biases) every layer shrinks the image-dependent part
of its input while the biases add a constant: at init the paper's network at 64 px gave every image
the same output to 0.1 % (hidden units' spread across images 2e-4 against ~1), a constant that
the pull onto poses only refined (docs/training.md, "The encoder's initialisation and scale").

The ``s2s2`` head is scale-invariant (Gram–Schmidt divides by the vectors' lengths): Adam lets
those lengths grow without bound (a head's mean output from norm 3.7 to 974 in 400 steps of a
regression onto 2cay_A's poses), and relative to them every image-dependent change shrinks. ``forward(...,
with_penalty=True)`` also returns each image's :func:`length_penalty`, which training adds to
its objective; it is orthogonal to the rotation's gradient, so it holds the lengths near 1
without pulling the poses.

With ``heads > 1`` the head outputs several rotation hypotheses per image; training keeps the one
that explains the image best (winner-take-all, see :mod:`.losses`).

Any image size: the three max-pools halve the image three times, so a standardised image whose
size ``n`` is not a multiple of 8 is zero-padded around its centre to the next multiple of 8
(``ceil(n/8)·8``, at most 7 pixels more) before the first conv. Zero is the standardised image's
mean, every pixel is kept at its own scale, and for multiples of 8 nothing changes (same layers,
same weights, same outputs). Adaptive pooling to a fixed grid would also take any size, but it
pools unequal areas into each cell when ``n/8`` is not whole (and changes the network for
multiples of 8 unless the grid is ``n/8``); a Fourier crop/pad of the input to a fixed size would
resample the image. See docs/particles.md.
"""

from __future__ import annotations

import torch
from torch import nn

from ..physics.fourier import centre_pad
from ..physics.rotations import params_to_matrix, pose_dim

__all__ = ["ACTIVATIONS", "PoseEncoder", "length_penalty", "standardise"]


def standardise(images: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image zero mean and unit standard deviation, ``(B, N, N) -> (B, N, N)``."""
    mean = images.mean(dim=(-2, -1), keepdim=True)
    std = images.std(dim=(-2, -1), keepdim=True)
    return (images - mean) / (std + eps)


ACTIVATIONS = ("leaky_relu", "relu")
LEAKY_SLOPE = 0.1


def activation_layer(name: str) -> nn.Module:
    """The encoder's nonlinearity: ``leaky_relu`` (slope :data:`LEAKY_SLOPE`) or ``relu``."""
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def length_penalty(rotation: str, params: torch.Tensor) -> torch.Tensor:
    """Per-image ``(B,)`` mean over heads of ``Σ (|v| − 1)²`` over the 3-vectors of s2s2 outputs
    ``(B, H, 6)``; zero for parameterisations that are not scale-invariant (euler, quat's exp-map)."""
    if rotation != "s2s2":
        return params.new_zeros(len(params))
    lengths = params.unflatten(-1, (2, 3)).norm(dim=-1)
    return (lengths - 1).square().sum(-1).mean(-1)


def _he_init(module: nn.Module, activation: str) -> None:
    """He-normal weights (fan-in, the activation's gain) and zero biases for a conv or linear layer."""
    slope = LEAKY_SLOPE if activation == "leaky_relu" else 0.0
    nn.init.kaiming_normal_(module.weight, a=slope, nonlinearity="leaky_relu")
    nn.init.zeros_(module.bias)


def _block(c_in: int, c_out: int, batchnorm: bool, activation: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for c in (c_in, c_out):
        layers.append(nn.Conv2d(c, c_out, 3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(activation_layer(activation))
    layers.append(nn.MaxPool2d(2))
    return layers


class PoseEncoder(nn.Module):
    """Images ``(B, N, N)`` to rotations ``(B, heads, 3, 3)`` in the project's convention.

    ``rotation`` is a parameterisation of :mod:`cryoposenet.physics.rotations` (s2s2, quat,
    euler); ``n`` the image size (any; padded to :attr:`padded` pixels, the next multiple of 8);
    ``activation`` one of :data:`ACTIVATIONS`.
    """

    def __init__(
        self,
        n: int,
        rotation: str = "s2s2",
        heads: int = 1,
        channels: tuple[int, ...] = (32, 64, 128),
        hidden: int = 512,
        batchnorm: bool = False,
        activation: str = "leaky_relu",
    ):
        super().__init__()
        if n < 1:
            raise ValueError(f"image size must be positive, got {n}")
        step = 2 ** len(channels)
        self.n, self.padded = n, -(-n // step) * step
        self.rotation, self.heads = rotation, heads
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += _block(c_in, c, batchnorm, activation)
            c_in = c
        self.features = nn.Sequential(*layers)
        flat = c_in * (self.padded // step) ** 2
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden),
            activation_layer(activation),
            nn.Linear(hidden, hidden),
            activation_layer(activation),
        )
        for m in [*self.features, *self.mlp]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                _he_init(m, activation)
        self.head = nn.Linear(hidden, heads * pose_dim(rotation))
        self.to(memory_format=torch.channels_last)  # conv weights; ~1.25× faster fwd+bwd on CPU

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The first conv's input ``(B, 1, P, P)``: images ``(B, N, N)`` standardised and padded."""
        x = standardise(images)
        if self.padded != self.n:
            x = centre_pad(x, self.padded, ndim=2)
        return x[:, None].contiguous(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor, with_penalty: bool = False):
        """Rotations ``(B, heads, 3, 3)`` for images ``(B, N, N)``; with ``with_penalty`` also
        each image's :func:`length_penalty` ``(B,)``."""
        x = self.features(self.prepare(images))
        params = self.head(self.mlp(x)).reshape(len(images), self.heads, -1)
        rotations = params_to_matrix(self.rotation, params)
        return (rotations, length_penalty(self.rotation, params)) if with_penalty else rotations
