"""Quarter turns of an image in its plane, and the poses that render them.

An image turned by a multiple of 90° about its centre pixel ``(N/2, N/2)`` (the centre of
:mod:`cryoposenet.physics.fourier`'s transforms) is exactly the image of another pose: with the
convention of :mod:`cryoposenet.physics.rotations` (the image for pose ``A`` is the projection
along z of the map rotated by ``A``), the image of ``A`` turned ``k`` quarter turns is the image
of ``Rz(−k·90°) · A``. No pixel is interpolated, so a pose encoder can be shown four views of one
particle image whose true poses are all known from one (see
:mod:`cryoposenet.training.augment`). The one row and column on the box's edge that have no
partner inside the box wrap around, as they do under the Fourier transform.
"""

from __future__ import annotations

import torch

__all__ = ["turn_images", "turn_rotations"]


def turn_images(images: torch.Tensor, turns: torch.Tensor | int) -> torch.Tensor:
    """Images ``(B, N, N)`` (even N) each turned ``turns`` ``(B,)`` (or one int) quarter turns
    about pixel ``(N/2, N/2)``, each as ``torch.rot90(..., 1, dims=(-2, -1))`` (counter-clockwise as
    displayed with row 0 on top)."""
    k = torch.as_tensor(turns, device=images.device).expand(len(images)) % 4
    out = turned = images
    for step in range(1, 4):
        turned = torch.roll(torch.rot90(turned, 1, dims=(-2, -1)), 1, dims=-2)  # about pixel N/2
        out = torch.where((k == step)[:, None, None], turned, out)
    return out


def turn_rotations(rotations: torch.Tensor, turns: torch.Tensor | int) -> torch.Tensor:
    """``Rz(−turns · 90°) · A`` for rotations ``A`` ``(B, ..., 3, 3)`` and ``turns`` ``(B,)`` (or one
    int): the poses whose images are ``A``'s turned as :func:`turn_images` turns them."""
    k = torch.as_tensor(turns, device=rotations.device) % 4
    k = k.reshape(k.shape + (1,) * (rotations.dim() - 2 - k.dim()))
    return _RZ_QUARTERS.to(rotations.device, rotations.dtype)[k] @ rotations


# Rz(−k·90°) for k = 0..3: [[cos, −sin, 0], [sin, cos, 0], [0, 0, 1]] with sin(−k·90°) = 0, −1, 0, 1
_RZ_QUARTERS = torch.tensor(
    [
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[0, 1, 0], [-1, 0, 0], [0, 0, 1]],
        [[-1, 0, 0], [0, -1, 0], [0, 0, 1]],
        [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
    ],
    dtype=torch.float64,
)
