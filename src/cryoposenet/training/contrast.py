"""The contrast sign of a particle stack: bright particles (RELION's convention) or dark ones.

RELION's extraction inverts micrographs so particles come out bright (the density's sign, CTF
positive at low frequency; SPEC.md); a stack extracted without it has dark particles on a light
background, and a map trained on it comes out negative (hollow or inverted in a viewer).

The test: each image's mean inside a central disc (radius ``n/4``) minus its mean over an outer
annulus (``3n/8 ≤ r < n/2``), averaged over a sample of images. A particle denser than the solvent
makes it positive. With a CTF the images are phase-flipped first (spectrum × sign(CTF)), which
undoes the CTF's sign reversals and keeps the particle's blur inside the disc; the mean over many
images then cancels the noise, and the sign is reported with its z-score (mean over the images'
standard error). ``|z|`` below :data:`Z_MIN` is "undetermined". Reliability measured on simulated
stacks with CTF down to −20 dB: docs/particles.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..physics.ctf import ctf_half_plane
from ..physics.fourier import fourier_to_image, image_to_fourier

__all__ = ["Contrast", "detect_contrast", "disc_minus_annulus", "phase_flip", "Z_MIN"]

Z_MIN = 5.0  # |z| needed to call the sign; simulated stacks gave |z| ≥ 30 with 200 images at −20 dB
_CHUNK = 256


@dataclass(frozen=True)
class Contrast:
    """``sign``: +1 particles bright, −1 dark, 0 undetermined; ``z``: the z-score of the disc-minus-
    annulus mean; ``images``: how many were looked at; ``phase_flipped``: whether a CTF was undone."""

    sign: int
    z: float
    images: int
    phase_flipped: bool

    @property
    def dark(self) -> bool:
        return self.sign < 0

    def describe(self) -> str:
        how = "phase-flipped " if self.phase_flipped else ""
        kind = {1: "bright particles", -1: "dark particles", 0: "contrast undetermined"}[self.sign]
        return f"{kind} (centre minus background of {self.images} {how}images, z = {self.z:+.1f})"


def phase_flip(images: torch.Tensor, ctf: torch.Tensor) -> torch.Tensor:
    """Images ``(B, N, N)`` with their spectra multiplied by ``sign(ctf)`` ``(B, N, N//2+1)``."""
    spec = image_to_fourier(images) * torch.sign(ctf)
    return fourier_to_image(spec, images.shape[-1])


def _zones(n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``(n, n)`` masks: the central disc ``r < n/4`` and the annulus ``3n/8 ≤ r < n/2``."""
    c = torch.arange(n, device=device, dtype=torch.float32) - n // 2
    r = torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2)
    return r < n / 4, (r >= 3 * n / 8) & (r < n / 2)


def disc_minus_annulus(images: torch.Tensor) -> torch.Tensor:
    """Per image ``(B,)``: mean over the central disc minus mean over the outer annulus."""
    disc, ring = _zones(images.shape[-1], images.device)
    return images[:, disc].mean(dim=1) - images[:, ring].mean(dim=1)


def detect_contrast(images, rows: torch.Tensor, apix: float, ctf: dict | None = None) -> Contrast:
    """The contrast sign of the images ``rows`` of ``images`` (a tensor or a row source, e.g.
    :class:`~cryoposenet.training.data.StackImages`) of pixel size ``apix`` Å; ``ctf``: per-particle
    parameters (:class:`~cryoposenet.training.train.ParticleData`'s ``(M,)`` tensors) or None."""
    n = images.shape[-1]
    scores = []
    for part in rows.split(_CHUNK):
        batch = images[part].double()
        if ctf is not None:
            params = {k: v[part] for k, v in ctf.items()}
            batch = phase_flip(batch, ctf_half_plane(n, apix, dtype=batch.dtype, **params))
        scores.append(disc_minus_annulus(batch))
    s = torch.cat(scores)
    spread = s.std().item() if len(s) > 1 else 0.0
    z = s.mean().item() / (spread / math.sqrt(len(s))) if spread > 0 else 0.0
    sign = 0 if abs(z) < Z_MIN or not math.isfinite(z) else (1 if z > 0 else -1)
    return Contrast(sign, z, len(s), ctf is not None)
