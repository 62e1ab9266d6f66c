"""Shared fixtures (helpers live in datasets.py)."""

import pytest

from datasets import write_dataset


@pytest.fixture
def tiny_dataset(tmp_path):
    """``(folder, truth_map)`` of a 20-px, 300-image noisy data set with CTF and shifts."""
    truth = write_dataset(tmp_path, snr=2.0)
    return tmp_path, truth
