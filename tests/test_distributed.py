"""``torchrun -m cryoposenet train`` on 2 CPU processes (gloo) takes the steps one process takes."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from cryoposenet.io import read_map, read_star
from cryoposenet.physics.rotations import geodesic_distance, relion_angles_to_matrix
from cryoposenet.runs.runner import make_config, run_training
from cryoposenet.training.distributed import DataParallel
from datasets import write_dataset


def test_shards_of_a_batch_cover_it_once_in_order():
    rows = torch.arange(9) * 7
    shards = [DataParallel(rank, 2, "cpu").shard(rows) for rank in range(2)]
    assert [len(s) for s in shards] == [5, 4]
    assert torch.equal(torch.cat(shards), rows)


def _torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*cmd, "-m", "cryoposenet", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_two_processes_match_one_and_their_checkpoint_resumes_on_one(tmp_path):
    write_dataset(tmp_path, n=16, m=72, snr=4.0)
    star = tmp_path / "p.star"
    # as the command line makes it (shares of 5 and 4); the encoder's own poses are compared: local
    # refinement against a 4-step map turns float-level map differences into tenths of a degree.
    # The band's ramp is fitted to the run's length: the 2-step torchrun run ramps over 1 step, so
    # the 4-step runs here are given that ramp too (kmax_steps=1) to take the same steps
    config = make_config(4, batch_size=9, seed=3, refine_steps=0, kmax_steps=1)
    run_training(star, tmp_path / "one", config, progress=False)

    two = _torchrun("train", str(star), "-o", "two", "--steps", "2", "--batch-size", "9", "--seed", "3",
                    "--device", "cpu", cwd=tmp_path)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote") == 1, two.stdout  # rank 0 alone reports (and writes)
    refined = read_star(tmp_path / "two" / "poses.star").angles_deg()  # each rank refined its share
    assert refined.shape == (72, 3) and np.isfinite(refined).all()
    # the run was made with 2 processes; it continues here in one, as after moving machines
    two_config = make_config(4, batch_size=9, seed=3, refine_steps=0, kmax_steps=1)
    run_training(star, tmp_path / "two", two_config, resume=True, progress=False)

    one_rows = pd.read_csv(tmp_path / "one" / "metrics.csv")
    two_rows = pd.read_csv(tmp_path / "two" / "metrics.csv")
    assert list(two_rows["step"]) == [1, 2, 3, 4]
    # float32 sums over the batch in another order (two shards, then gloo's all-reduce) differ in the
    # last digits, and 4 Adam steps grow them (most where a gradient is ~0, as the encoder's biases):
    # the encoder's poses differ by ≤ 0.004° (measured, with its views of the map: map_views.py) and
    # map.mrc, backprojected at those poses, by 1.9e-4 of its L2 norm (before the views, ≤ 4e-6); the
    # losses not at the CSV's 6 digits. Map gradients left unaveraged over the ranks: 2e-2 of the
    # norm, 7e-3 in the loss, poses 100°+ apart.
    np.testing.assert_allclose(two_rows["loss"], one_rows["loss"], rtol=1e-5)
    one_map, two_map = read_map(tmp_path / "one" / "map.mrc")[0], read_map(tmp_path / "two" / "map.mrc")[0]
    assert np.linalg.norm(one_map - two_map) < 1e-3 * np.linalg.norm(one_map)
    one_rot, two_rot = (
        relion_angles_to_matrix(read_star(tmp_path / name / "poses.star").angles_deg())
        for name in ("one", "two")
    )
    # as rotations: Euler angles jump by 360° at ±180° and are ill-defined near tilt 0
    assert len(two_rot) == 72 and torch.rad2deg(geodesic_distance(one_rot, two_rot)).max().item() < 0.05
