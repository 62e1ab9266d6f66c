"""Viewing directions: how evenly a set of poses covers the sphere, with no reference needed.

The image at pose ``A`` is the map rotated by ``A`` projected along z, so it views the map along
``Aᵀ e_z``: the third row of ``A`` (:mod:`cryoposenet.physics.rotations`). An ab initio run whose
poses collapsed onto a few views makes a streaky map and piles its particles into a small part of
the sphere (4AKE chain A, seed 1, docs/training.md: 25 % of the particles in 5 % of the
directions, against 7 % for its true poses and for uniform views). Real particles may prefer
some views too, so the figure is a check to read, not a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["viewing_directions", "sphere_cells", "Coverage", "direction_coverage", "CONCENTRATED"]

TOP_SHARE = 0.05  # the fraction of the sphere whose particle share is reported
CONCENTRATED = 2.0  # top share over the uniform one beyond which views are called concentrated


def viewing_directions(rotations: np.ndarray) -> np.ndarray:
    """Unit viewing directions ``(M, 3)`` (map frame) of rotations ``(M, 3, 3)``: row 3 of each."""
    return np.asarray(rotations, dtype=np.float64)[:, 2, :]


def sphere_cells(count: int) -> np.ndarray:
    """Centres ``(count, 3)`` of ``count`` near-equal-area cells: a Fibonacci sphere."""
    i = np.arange(count) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / count)
    azimuth = math.pi * (1.0 + math.sqrt(5.0)) * i
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


@dataclass(frozen=True)
class Coverage:
    """``top_share``: fraction of the particles in the most populated 5 % of the sphere's cells;
    ``uniform_share``: the same for as many uniformly random directions (what no preference gives
    at this count); ``cells``: how many cells (about 20 particles each, 24 to 600);
    ``min_moment``: the smallest eigenvalue of the directions' second moment ``Σ d dᵀ / M`` (⅓ for
    uniform views, 0 for views on one great circle; ``±d`` count alike)."""

    top_share: float
    uniform_share: float
    cells: int
    min_moment: float

    @property
    def concentrated(self) -> bool:
        """Whether the top share is over :data:`CONCENTRATED` times the uniform one (a converged
        run on uniform views: 0.97–1.02×; the collapsed run above: 3.5×)."""
        return self.top_share > CONCENTRATED * self.uniform_share

    def describe(self) -> str:
        """One line for a log or a report."""
        return (
            f"{self.top_share:.0%} of the particles view the map from the most populated 5 % of "
            f"directions ({self.uniform_share:.0%} for uniform views)"
        )


def _top_share(directions: np.ndarray, centres: np.ndarray) -> float:
    counts = np.bincount(np.argmax(directions @ centres.T, axis=1), minlength=len(centres))
    top = max(1, round(TOP_SHARE * len(centres)))
    return float(np.sort(counts)[::-1][:top].sum() / max(1, counts.sum()))


def direction_coverage(directions: np.ndarray, seed: int = 0) -> Coverage:
    """How evenly unit ``directions`` ``(M, 3)`` cover the sphere (see :class:`Coverage`)."""
    m = len(directions)
    cells = int(min(600, max(24, m // 20)))
    centres = sphere_cells(cells)
    rng = np.random.default_rng(seed)
    uniform = rng.standard_normal((m, 3))
    uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
    moment = float(np.linalg.eigvalsh(directions.T @ directions / max(1, m))[0])
    return Coverage(_top_share(directions, centres), _top_share(uniform, centres), cells, moment)
