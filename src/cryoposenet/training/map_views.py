"""The encoder also learns from noisy projections of the map at random poses (issue #12).

While the pose search runs, the encoder is pulled onto each training image's searched pose, and a
CNN regressed onto a few thousand fixed noisy images learns them by heart: on 2cay_A its own
poses came within 2° of the truth on the training images and 53° (mean) on held-out ones
(docs/training.md). The map is a generator of unlimited examples with exact labels: its
projection at a rotation drawn uniformly on SO(3), plus fresh Gaussian noise at the data's
level, is an image of that pose that the encoder has never seen. Each step the encoder also
regresses onto a batch of such views (rendered on the step's loss band, from the map without
gradient: the views teach the encoder, never the map).

The noise level is the images' background: the standard deviation of the pixels beyond
``0.45·N`` from the centre (particles picked centred, with a margin), measured once on the sample
that sets the data's scale, in training units. When the images carry a CTF, each view carries the
CTF of a row drawn at random (:func:`view_ctf`), so views and images differ only in pose and noise.
"""

from __future__ import annotations

import torch

from ..model.losses import nearest_rotation_loss
from ..physics.fourier import fourier_to_image
from ..physics.projection import FourierVolume, slice_volume
from ..physics.rotations import random_rotations
from .data import ParticleData

__all__ = ["background_sigma", "view_count", "view_generator", "view_ctf", "render_views", "split_views"]


def background_sigma(images: torch.Tensor, radius: float = 0.45) -> torch.Tensor:
    """Each image's standard deviation ``(M,)`` over its pixels beyond ``radius``·N from the centre
    pixel ``N//2`` of ``images`` ``(M, N, N)`` (the noise, where the particles leave a margin)."""
    n = images.shape[-1]
    c = torch.arange(n, dtype=torch.float32) - n // 2
    outside = (c[:, None] ** 2 + c[None, :] ** 2).sqrt() > radius * n
    return images[:, outside].float().std(dim=1)


def view_count(share: float, batch_size: int) -> int:
    """A step's views over all ranks: ``round(share · batch_size)`` (``share``: views per image)."""
    return round(share * batch_size)


def view_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s views: one stream per (seed, step), so a resumed run draws
    what the uninterrupted one would, and every torchrun rank the same views (each keeps its share)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) + 7)


def view_ctf(data: ParticleData, count: int, gen: torch.Generator, device=None) -> torch.Tensor | None:
    """The CTFs ``(count, N, N//2+1)`` of ``count`` rows of ``data`` drawn uniformly (from ``gen``);
    None when the data have none (and then nothing is drawn from ``gen``)."""
    if data.ctf is None:
        return None
    return data.ctf_of(torch.randint(len(data), (count,), generator=gen), device)


def render_views(
    fvol: FourierVolume,
    count: int,
    sigma: float,
    k_max: float | None,
    gen: torch.Generator,
    ctf: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` noisy views ``(count, N, N)`` of the map and their rotations ``(count, 3, 3)``.

    Rotations uniform on SO(3) from ``gen``; each view is the map's central slice on ``|k| ≤ k_max``
    (None: to Nyquist), times ``ctf`` ``(count, N, N//2+1)`` if given, plus white Gaussian noise of
    standard deviation ``sigma`` per pixel. No gradient reaches the map.
    """
    device = fvol.data.device
    rotations = random_rotations(count, generator=gen, dtype=torch.float32).to(device)
    detached = FourierVolume(data=fvol.data.detach(), n=fvol.n, oversample=fvol.oversample)
    with torch.no_grad():
        slices = slice_volume(detached, rotations, radius=k_max)
        if ctf is not None:
            slices = slices * ctf
        images = fourier_to_image(slices, fvol.n)
        noise = torch.randn(images.shape, generator=gen, dtype=images.dtype).to(device)
    return images + sigma * noise, rotations


def split_views(rotations: torch.Tensor, penalty: torch.Tensor | None, view_rotations: torch.Tensor | None):
    """The encoder's answers for a batch of images followed by its views, taken apart.

    ``rotations`` ``(B + V, H, 3, 3)`` and ``penalty`` ``(B + V,)`` or None; ``view_rotations``
    ``(V, 3, 3)`` the views' true poses (None: no views, returned as given). Returns the images'
    ``(B, H, 3, 3)`` and ``(B,)``, and the views' pull ``(V,)``: the nearest head's chordal loss
    to each view's pose plus its length penalty.
    """
    if view_rotations is None:
        return rotations, penalty, None
    b = len(rotations) - len(view_rotations)
    pull = nearest_rotation_loss(rotations[b:], view_rotations)
    if penalty is None:
        return rotations[:b], None, pull
    return rotations[:b], penalty[:b], pull + penalty[b:]
