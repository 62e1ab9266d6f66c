"""Held-out pose error of a run's predicted poses and of their posterior means, for several cubes
and temperatures (:mod:`cryoposenet.training.pose_average`).

    python benchmarks/pose_average.py RUN SIM                       # the defaults
    python benchmarks/pose_average.py RUN SIM --cubes 2.5:2 2:3 1.5:4 --betas 0.25 0.5 1

RUN is a ``cryoposenet train`` folder with ``heldout_poses.star`` (``cryoposenet predict RUN
SIM/heldout.star -o RUN/heldout_poses.star``), SIM its ``cryoposenet simulate`` folder. Each
held-out image's misfits are scored once per cube (``SPACING:STEPS``, degrees and steps either
side) around its predicted rotation on the band N/4, then averaged at each ``--betas``. Errors
are taken under the rotation fitted on the training poses (``RUN/poses.star``), blind; use it on
asymmetric molecules. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cryoposenet.analysis.evaluation import matched_rotations
from cryoposenet.analysis.metrics import align_rotations, apply_alignment
from cryoposenet.io.particles import load_particles
from cryoposenet.io.star import read_star
from cryoposenet.model.losses import band_weights
from cryoposenet.model.modes import eval_mode
from cryoposenet.physics.rotations import axis_angle_to_matrix, relion_angles_to_matrix
from cryoposenet.runs.prediction import predict_settings
from cryoposenet.training.checkpoint import load_checkpoint, read_checkpoint
from cryoposenet.training.inputs import particle_data
from cryoposenet.training.pose_average import band_coefficients, cube_misfits, likelihood_weights
from cryoposenet.training.pose_search import SearchTargets
from cryoposenet.training.train import batch_targets


def _misfits(state, data, start, spacing, steps, chunk=16):
    """Misfits ``(R, C)`` of the cube's rotations around ``start`` ``(R, 3, 3)``, its ``ω`` and
    the band's coefficient count (:mod:`cryoposenet.training.pose_average`)."""
    n = data.box
    weights = band_weights(n, n / 4)
    with torch.no_grad(), eval_mode(state.volume):
        fvol = state.volume()
        out = []
        for i in range(0, len(data), chunk):
            rows = torch.arange(i, min(i + chunk, len(data)))
            _, target, ctf, shifts = batch_targets(state, data, rows, data.images[rows])
            t = SearchTargets.from_half_planes(target, ctf, shifts, weights, n / 4)
            misfits, omega = cube_misfits(fvol, start[rows], t, spacing, steps)
            out.append(misfits)
    return torch.cat(out), omega, band_coefficients(t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("sim", type=Path)
    p.add_argument("--cubes", nargs="+", default=["2:3"], help="SPACING_DEG:STEPS")
    p.add_argument("--betas", nargs="+", type=float, default=[0.5, 1.0])
    a = p.parse_args()
    torch.set_num_threads(1)
    stack = load_particles(a.sim / "heldout.star")
    data = particle_data(stack, predict_settings(a.run, stack))
    state = load_checkpoint(read_checkpoint(a.run / "checkpoint.pt"), data, "cpu")
    predicted = read_star(a.run / "heldout_poses.star")
    start = relion_angles_to_matrix(predicted.angles_deg()).float()
    train = matched_rotations(read_star(a.run / "poses.star"), read_star(a.sim / "train.star"))
    fit = align_rotations(*train)
    _, truth = matched_rotations(predicted, read_star(a.sim / "heldout.star"))

    def row(name, rotations, seconds=""):
        err = apply_alignment(fit, rotations.double().numpy(), truth)
        print(f"| {name} | {err.mean():.2f} | {np.median(err):.2f} | {(err > 15).mean():.1%} | {seconds} |")

    print("| poses | mean ° | median ° | > 15° | scoring s |\n|---|---|---|---|---|")
    row("predicted", start)
    for cube in a.cubes:
        spacing, steps = float(cube.split(":")[0]), int(cube.split(":")[1])
        t0 = time.perf_counter()
        misfits, omega, n_coef = _misfits(state, data, start, spacing, steps)
        seconds = f"{time.perf_counter() - t0:.0f}"
        for beta in a.betas:
            mean = likelihood_weights(misfits, n_coef, beta) @ omega
            name = f"mean, {len(omega)} at {spacing:g}°, β {beta:g}"
            row(name, axis_angle_to_matrix(mean) @ start, seconds)


if __name__ == "__main__":
    main()
