"""Pose error of a trained run with and without local refinement, for several refinement bands.

    python benchmarks/refine.py runs/encA runs/simA                    # default band (N/4)
    python benchmarks/refine.py runs/encD runs/simD --bands 8 12 16 32 --steps 40

RUN is a ``cryoposenet train`` folder (encoder mode), SIM the ``cryoposenet simulate`` folder it
was trained on (``train.star`` with the true angles, ``heldout.star``, ``map.mrc``). Poses of
``--train-images`` training images and of all held-out images come from the encoder (one forward
pass), then from :func:`cryoposenet.training.refine.refine_poses` at each band (cycles per box). The global
rotation is fitted on the training images; errors are reported blind and, when the reference has
a (pseudo-)symmetry (4AKE's 2-fold), to the nearest branch. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cryoposenet.analysis.evaluation import detect_symmetry
from cryoposenet.analysis.metrics import align_rotations, apply_alignment
from cryoposenet.io.mrc import read_map
from cryoposenet.io.particles import load_particles
from cryoposenet.training.checkpoint import load_checkpoint, read_checkpoint
from cryoposenet.training.inputs import particle_data
from cryoposenet.training.refine import REFINE_STEPS, refine_poses
from cryoposenet.training.train import predict_poses


def _errors(est_train, true_train, est_held, true_held, symmetry) -> str:
    """``mean / median`` held-out error under the rotation fitted on the training poses."""
    fit = align_rotations(est_train.numpy(), true_train, symmetry=symmetry)
    err = apply_alignment(fit, est_held.numpy(), true_held)
    return f"{err.mean():.2f}° / {np.median(err):.2f}°"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("sim", type=Path)
    p.add_argument("--bands", type=float, nargs="+", default=[None], help="k_max, cycles per box")
    p.add_argument("--steps", type=int, default=REFINE_STEPS)
    p.add_argument("--train-images", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = particle_data(load_particles(a.sim / "train.star"))
    held = particle_data(load_particles(a.sim / "heldout.star"))
    state = load_checkpoint(read_checkpoint(a.run / "checkpoint.pt"), data, "cpu")
    symmetry = detect_symmetry(read_map(a.sim / "map.mrc")[0])[0]
    rows = torch.linspace(0, len(data) - 1, min(a.train_images, len(data))).long()
    truth = data.rotations[rows].numpy(), held.rotations.numpy()
    rough = predict_poses(state, data, rows=rows), predict_poses(state, held)
    label = "2-fold aware" if symmetry is not None else "blind"
    print(f"| poses | held-out error ({label}), mean / median | s per 1000 images |\n|---|---|---|")
    print(f"| encoder | {_errors(rough[0], truth[0], rough[1], truth[1], symmetry)} | – |")
    for band in a.bands:
        t0 = time.perf_counter()
        est = refine_poses(state, data, rough[0], rows=rows, steps=a.steps, k_max=band)
        est_held = refine_poses(state, held, rough[1], steps=a.steps, k_max=band)
        per_1000 = 1000 * (time.perf_counter() - t0) / (len(rows) + len(held))
        name = f"refined, band {band:g}" if band is not None else f"refined, band N/4 = {data.box / 4:g}"
        print(f"| {name} | {_errors(est, truth[0], est_held, truth[1], symmetry)} | {per_1000:.0f} |")


if __name__ == "__main__":
    main()
