import pytest
import torch

from cryoposenet.physics.projection import project_real_space
from cryoposenet.physics.rotations import random_rotations
from cryoposenet.training.train import ParticleData


def blobs(n: int, seed: int = 0, count: int = 6) -> torch.Tensor:
    """An asymmetric toy molecule ``(n, n, n)``: Gaussian blobs of different sizes near the centre."""
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(count, 3, generator=g) - 0.5) * n * 0.45
    sigmas = 0.6 + torch.rand(count, generator=g) * n / 16
    c = torch.arange(n, dtype=torch.float32) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    vol = torch.zeros(n, n, n)
    for (cx, cy, cz), s in zip(centres, sigmas, strict=True):
        vol += torch.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s**2))
    return vol


@pytest.fixture(scope="session")
def toy() -> tuple[torch.Tensor, ParticleData]:
    """A 16-px toy map and 400 noiseless real-space projections at uniform random poses."""
    torch.set_num_threads(1)
    vol = blobs(16)
    rots = random_rotations(400, generator=torch.Generator().manual_seed(1)).float()
    images = project_real_space(vol, rots)
    return vol, ParticleData(images, apix=4.0, rotations=rots)
