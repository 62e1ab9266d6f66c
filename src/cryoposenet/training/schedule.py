"""Schedules of a training run: what each step does, as pure functions of the config and the step.

The loss band (coarse-to-fine), the learning-rate drop, each step's batch, and the pose search's
window and annealing; a resumed run recomputes them from its step counter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .train import TrainConfig

from .pose_search import levels_for_band

__all__ = ["k_max_at", "lr_scale_at", "batch_rows", "searching_at", "search_anneal_at", "search_bands"]


def k_max_at(config: TrainConfig, n: int, step: int) -> float:
    """Radius (pixels of frequency) of the loss band at ``step``: grows linearly to ``n/2``."""
    if config.kmax_start is None:
        return n / 2
    frac = min(1.0, step / max(1, config.kmax_steps))
    return config.kmax_start + (n / 2 - config.kmax_start) * frac


def lr_scale_at(config: TrainConfig, step: int) -> float:
    """Factor on the learning rates at ``step``: 1, then ``lr_decay`` for the last steps of the run."""
    if config.lr_decay_at is None or step < config.lr_decay_at * config.steps:
        return 1.0
    return config.lr_decay


def batch_rows(config: TrainConfig, m: int, step: int) -> torch.Tensor:
    """The global batch ``(B,)`` of ``step``, seeded by (seed, step): a resumed run repeats it."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    return torch.randint(m, (config.batch_size,), generator=gen)


def searching_at(config: TrainConfig, step: int) -> bool:
    """Whether the map learns from the global pose search at ``step`` (encoder runs only)."""
    until = config.search_steps
    return config.poses == "encoder" and until is not None and step < until


def search_anneal_at(config: TrainConfig, step: int) -> float:
    """Noise inflation of the search's pose posterior: ``search_anneal`` at step 0, geometrically
    to 1 when the search ends or (with ``search_local``) after the band's ramp (``kmax_steps``)."""
    until = config.search_steps or 1
    if config.search_local is not None:
        until = min(until, config.kmax_steps)
    return config.search_anneal ** max(0.0, 1 - step / max(1, until))


def search_bands(config: TrainConfig, n: int, k_max: float) -> dict:
    """:func:`~cryoposenet.training.pose_search.marginal_misfit`'s bands under the loss band ``k_max``:
    ``k_max`` (the posterior's), ``grid_band``, ``levels`` and ``map_band``. While the band grows
    (and without ``search_local``) both bands are ``min(k_max, search_band·N)`` and the map learns
    only those; once it reaches Nyquist, with ``search_local``, the posterior's band is
    ``min(k_max, search_local·N)``, reached by :func:`~cryoposenet.training.pose_search.levels_for_band`
    local levels, and the map learns the whole loss band under that posterior."""
    grid_band = min(k_max, config.search_band * n)
    if config.search_local is None or k_max < n / 2:
        return {"k_max": grid_band, "grid_band": grid_band, "levels": 0, "map_band": None}
    band = min(k_max, config.search_local * n)
    return {
        "k_max": band,
        "grid_band": grid_band,
        "levels": levels_for_band(band, config.search_grid),
        "map_band": k_max,
    }
