"""Shared test maps for the physics tests: asymmetric Gaussian blobs with exact projections.

A sum of 3D Gaussians projected along z is a sum of 2D Gaussians, so these maps come with an
analytic reference that owes nothing to the code under test.
"""

import math
from dataclasses import dataclass

import pytest
import torch


@dataclass
class BlobMap:
    """Isotropic Gaussians: centres ``pos`` (K, 3) as xyz pixels from the box centre, widths
    ``sigma`` (K,) pixels, heights ``height`` (K,)."""

    n: int
    pos: torch.Tensor
    sigma: torch.Tensor
    height: torch.Tensor

    def volume(self) -> torch.Tensor:
        """The map ``(n, n, n)`` indexed ``[z, y, x]``, centre at pixel ``n//2``."""
        c = torch.arange(self.n, dtype=torch.float64) - self.n // 2
        z, y, x = torch.meshgrid(c, c, c, indexing="ij")
        v = torch.zeros(self.n, self.n, self.n, dtype=torch.float64)
        for p, s, h in zip(self.pos, self.sigma, self.height, strict=True):
            v += h * torch.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * s**2))
        return v

    def projections(self, rotations: torch.Tensor) -> torch.Tensor:
        """Exact projections ``(B, n, n)`` along z of the map rotated by each ``A``: blob at ``A p``."""
        c = torch.arange(self.n, dtype=torch.float64) - self.n // 2
        y, x = torch.meshgrid(c, c, indexing="ij")
        centres = torch.einsum("bij,kj->bki", rotations.to(torch.float64), self.pos)
        out = torch.zeros(len(rotations), self.n, self.n, dtype=torch.float64)
        for k in range(len(self.sigma)):
            s, cx, cy = self.sigma[k], centres[:, k, 0, None, None], centres[:, k, 1, None, None]
            out += (
                self.height[k]
                * s
                * math.sqrt(2 * math.pi)
                * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s**2))
            )
        return out


def make_blob_map(n: int, seed: int = 0, k: int = 6) -> BlobMap:
    """``k`` blobs of different widths (4–10 % of the box) and heights, off-centre, no symmetry."""
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(k, 3, generator=g, dtype=torch.float64) - 0.5) * 0.4 * n
    sigma = (0.04 + 0.06 * torch.rand(k, generator=g, dtype=torch.float64)) * n
    height = 0.5 + torch.rand(k, generator=g, dtype=torch.float64)
    return BlobMap(n, pos, sigma, height)


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per image of ``(..., H, W)`` stacks."""
    a = a - a.mean(dim=(-2, -1), keepdim=True)
    b = b - b.mean(dim=(-2, -1), keepdim=True)
    return (a * b).sum(dim=(-2, -1)) / (a.norm(dim=(-2, -1)) * b.norm(dim=(-2, -1)))


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` over the whole stack."""
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def blob_map():
    """Factory: ``blob_map(n, seed=0)`` -> :class:`BlobMap`."""
    return make_blob_map


@pytest.fixture
def blob_cls():
    """The :class:`BlobMap` class, for hand-placed blobs."""
    return BlobMap


@pytest.fixture
def corr():
    return correlation


@pytest.fixture
def relerr():
    return rel_error
