"""``cryoposenet demo``: simulate → train → evaluate → report on the embedded molecule, minutes on a CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..analysis.evaluation import evaluate_files, heldout_figures
from ..analysis.report import write_report
from ..io.atomic import write_text_atomic
from ..simulate import default_molecule, simulate_dataset
from .prediction import run_predict
from .runner import make_config, run_training

__all__ = ["DEMO_SETTINGS", "run_demo"]

# 4AKE in a 64-px box of 1.6 Å pixels, noiseless, no CTF: converges in ~1000 steps (docs/training.md);
# smaller boxes need several times more steps (32 px: 4000), which costs more than the bigger images
DEMO_SETTINGS = {"box": 64, "apix": 1.6, "n_images": 2000, "heldout": 200, "steps": 1200}


def run_demo(
    out_dir: str | os.PathLike,
    pdb=None,
    steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    force: bool = False,
    settings: dict | None = None,
) -> dict:
    """Run the whole pipeline into ``out_dir``; returns the evaluation figures.

    ``settings`` replaces entries of :data:`DEMO_SETTINGS` (box, apix, n_images, heldout, steps).
    """
    out = Path(out_dir)
    s = {**DEMO_SETTINGS, **(settings or {})}
    atoms = None if pdb is not None else default_molecule()
    sim = simulate_dataset(
        out / "data",
        pdb=pdb,
        atoms=atoms,
        box=s["box"],
        apix=s["apix"],
        n_images=s["n_images"],
        heldout=s["heldout"],
        seed=seed,
    )
    config = make_config(steps or s["steps"], seed=seed, device=device)
    run = out / "run"
    run_training(sim.train_star, run, config, ref=sim.map, eval_every=max(1, config.steps // 10), force=force)
    run_predict(run, sim.heldout_star, out / "heldout_poses.star", device=device)
    train_eval = evaluate_files(run / "map.mrc", sim.map, run / "poses.star", sim.train_star)
    paths = (run / "poses.star", sim.train_star, out / "heldout_poses.star", sim.heldout_star)
    heldout = heldout_figures(*paths, symmetry=train_eval.symmetry)
    figures = {"train": train_eval.to_json(), "heldout": heldout}
    write_text_atomic(out / "evaluation.json", json.dumps(figures, indent=2) + "\n")
    figures["report"] = str(write_report(run))
    return figures
