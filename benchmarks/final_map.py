"""A finished run's final map (:mod:`cryoposenet.runs.final_map`) from its own poses, round by
round, scored against the truth.

    python benchmarks/final_map.py RUN SIM                      # round 1 only
    python benchmarks/final_map.py RUN SIM --rounds 2 --out RUN-final

RUN is a finished ``cryoposenet train`` folder (``poses.star``, ``checkpoint.pt``), SIM the
``cryoposenet simulate`` folder it was trained on. Round 1 backprojects the training images at
RUN's poses (what ``train`` writes as ``map.mrc`` since the final map, from a run trained before
it, without training again); each further round refines the poses against the last map, as
``train``'s ``final_rounds`` do, and backprojects again. Prints per round the FSC0.5 against
SIM's map (aligned to it on its own) and the training poses' error (to the nearest branch where
the truth has a (pseudo-)symmetry). With ``--out`` it writes a run folder (RUN's config, the last
round's ``map.mrc`` and ``poses.star``, the checkpoint with that final map) for
``cryoposenet predict`` or ``pipeline.evaluate_run``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from cryoposenet.analysis.evaluation import detect_symmetry, evaluate_maps
from cryoposenet.analysis.map_alignment import align_maps
from cryoposenet.analysis.metrics import align_rotations
from cryoposenet.io.mrc import read_map, write_map
from cryoposenet.io.particles import load_particles
from cryoposenet.io.star import read_star
from cryoposenet.physics.imaging import origin_to_translation
from cryoposenet.physics.rotations import relion_angles_to_matrix
from cryoposenet.runs.final_map import final_map, holding_map
from cryoposenet.runs.prediction import predict_settings
from cryoposenet.runs.run_folder import write_poses_star
from cryoposenet.training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from cryoposenet.training.inputs import origins_out_A, particle_data
from cryoposenet.training.refine import refine_fits


def _poses(run: Path, stack, settings):
    """RUN's rotations ``(M, 3, 3)`` and translations in training pixels (None without origins)."""
    table = read_star(run / "poses.star")
    rotations = relion_angles_to_matrix(torch.as_tensor(table.angles_deg())).float()
    if not table.has_origins or settings.shifts != "search":
        return rotations, None
    apix = stack.apix * stack.box / settings.box  # a training pixel
    return rotations, origin_to_translation(torch.as_tensor(table.origins_A()), apix).float()


def _score(volume, ref, apix, rotations, truth, group) -> str:
    maps = evaluate_maps(volume.double().numpy(), ref, apix, align_maps(volume.double().numpy(), ref)[0])
    fit = align_rotations(rotations.double().numpy(), truth, symmetry=group)
    return f"FSC0.5 {maps.fsc05_A:.2f} Å, training poses {fit.mean_deg:.2f}° / {fit.median_deg:.2f}°"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("sim", type=Path)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", type=Path)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    stack = load_particles(a.sim / "train.star")
    settings = predict_settings(a.run, stack)
    data = particle_data(stack, settings)
    payload = read_checkpoint(a.run / "checkpoint.pt")
    state = load_checkpoint(payload, data, "cpu")
    ref = read_map(a.sim / "map.mrc")[0]
    group = detect_symmetry(ref)[0]
    truth = data.rotations.double().numpy()
    rotations, translations = _poses(a.run, stack, settings)
    mask, volume = state.volume.mask.cpu(), None  # maps are kept unmasked, map.mrc masked
    for k in range(1, a.rounds + 1):
        t0 = time.perf_counter()
        if k > 1:
            with holding_map(state, volume) as held:  # as train's final rounds, on one process
                steps = held.config.refine_steps
                rotations, translations = refine_fits(
                    held, data, rotations, steps=steps, translations=translations
                )
        volume = final_map(data, rotations, translations, show=False)
        took = time.perf_counter() - t0
        print(
            f"round {k}: {_score(volume * mask, ref, settings.apix, rotations, truth, group)} ({took:.0f} s)"
        )
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "metrics.csv"):
            shutil.copy(a.run / name, a.out / name)
        write_map(a.out / "map.mrc", (volume * mask).numpy().astype(np.float32), settings.apix)
        origins = origins_out_A(stack.table, settings, translations)
        write_poses_star(a.out / "poses.star", stack.table, rotations, stack.apix, stack.box, origins)
        save_checkpoint(a.out / "checkpoint.pt", state, payload.get("extra"), final_map=volume)


if __name__ == "__main__":
    main()
