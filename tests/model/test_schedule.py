"""The pose search's schedules: its bands and its posterior's annealing, as functions of the step."""

import pytest

from cryoposenet.training.schedule import k_max_at, search_anneal_at, search_bands
from cryoposenet.training.train import TrainConfig


def test_search_bands_without_local_levels_cap_everything_at_the_grid_band():
    cfg = TrainConfig(steps=1000, kmax_steps=400, search_steps=400, search_local=None)
    assert search_bands(cfg, 64, 10.0) == {"k_max": 10.0, "grid_band": 10.0, "levels": 0, "map_band": None}
    assert search_bands(cfg, 64, 32.0) == {"k_max": 16.0, "grid_band": 16.0, "levels": 0, "map_band": None}


def test_search_bands_with_local_levels_let_the_map_learn_the_whole_band_once_at_nyquist():
    cfg = TrainConfig(steps=1000, kmax_steps=400, search_steps=1000, search_local=0.375)
    early = search_bands(cfg, 64, 20.0)  # while the band grows: the grid alone, as without local levels
    assert early == {"k_max": 16.0, "grid_band": 16.0, "levels": 0, "map_band": None}
    late = search_bands(cfg, 64, k_max_at(cfg, 64, 400))  # the band at Nyquist
    assert late == {"k_max": 24.0, "grid_band": 16.0, "levels": 3, "map_band": 32.0}


def test_posterior_anneals_to_one_by_the_end_of_the_band_ramp_with_local_levels():
    cfg = TrainConfig(steps=1000, kmax_steps=400, search_steps=1000, search_anneal=10.0, search_local=0.375)
    assert search_anneal_at(cfg, 0) == pytest.approx(10.0)
    assert search_anneal_at(cfg, 200) == pytest.approx(10**0.5)
    assert search_anneal_at(cfg, 400) == search_anneal_at(cfg, 900) == 1.0
    grid_only = TrainConfig(
        steps=1000, kmax_steps=400, search_steps=800, search_anneal=10.0, search_local=None
    )
    assert search_anneal_at(grid_only, 400) == pytest.approx(10**0.5)  # over the search's own steps
