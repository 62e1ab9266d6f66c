"""The encoder shown each training image at a random quarter turn (issue #12).

While the pose search runs, the encoder learns by regression onto each training image's searched
pose, and a CNN regressed onto a few thousand fixed images can learn them by heart: on 2cay_A
(docs/training.md) the encoder's own poses came within 2.3° of the truth on the training
images and 53° (mean; 22° median) on held-out ones. A quarter turn of an image is the image of a
known other pose (:mod:`cryoposenet.physics.quarter_turns`), exactly, so each turn is a new
training example with a known target: the encoder sees the turned image, and its answer is turned
back before anything compares it with a pose. The map never sees a turned image.
"""

from __future__ import annotations

import torch

from ..physics.quarter_turns import turn_images, turn_rotations

__all__ = ["draw_turns", "turned_hypotheses", "every_turn_hypotheses"]


def draw_turns(rows: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """Quarter turns ``(B,)`` in 0..3 for the data set's images ``rows`` ``(B,)``: a hash of
    ``(row, seed, step)``, so each image's turn is the same whichever batch or rank holds it (one
    process and two under torchrun train alike) and a resumed run draws what the uninterrupted
    one would."""
    x = rows.to("cpu", torch.int64) * 0x9E3779B1 + int(step) * 0x85EBCA77 + int(seed) * 0xC2B2AE3D
    for mult in (0x2C1B3C6D, 0x297A2D39):  # integer mixing (murmur-style finaliser, 32 bits)
        x = ((x ^ (x >> 15)) * mult) & 0xFFFFFFFF
    return (x >> 13) & 3


def turned_hypotheses(encoder, images: torch.Tensor, turns: torch.Tensor):
    """The encoder's rotations ``(B, H, 3, 3)`` and length penalty ``(B,)`` for images
    ``(B, N, N)``, each image shown turned ``turns`` ``(B,)`` quarter turns and each answer turned
    back: ``Rz(+k·90°) · encoder(turned image)``, the pose of the image as given."""
    turns = turns.to(images.device)
    rotations, penalty = encoder(turn_images(images, turns), with_penalty=True)
    return turn_rotations(rotations, -turns), penalty


def every_turn_hypotheses(encoder, images: torch.Tensor) -> torch.Tensor:
    """The encoder's rotations ``(B, 4H, 3, 3)`` for images ``(B, N, N)`` shown at each of the four
    quarter turns, each answer turned back (turn ``k``'s ``H`` heads at ``[:, kH:(k+1)H]``): at
    prediction, four answers per head for the map to choose from."""
    every = []
    for k in range(4):
        turns = torch.full((len(images),), k, dtype=torch.int64, device=images.device)
        every.append(turned_hypotheses(encoder, images, turns)[0])
    return torch.cat(every, dim=1)
