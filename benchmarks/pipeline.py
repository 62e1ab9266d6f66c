"""Steps shared by the benchmarks (``table1.py``, ``molecules.py``): run a ``cryoposenet`` command,
simulate or train once into a folder (reused when finished, resumed when interrupted), and
evaluate a run against its simulation.

Evaluation: the map's FSC0.5 against the simulation's ``map.mrc`` and the training poses' error,
after the global rotation (and mirror) fitted on the training poses; for an encoder run, held-out
poses from ``cryoposenet predict`` are compared under that same rotation (``heldout_figures``).
With a (pseudo-)symmetry group, errors to the nearest branch are added and the map is aligned by
the symmetry-aware fit, as ``cryoposenet evaluate`` does. Figures go to ``RUN/benchmark.json`` and
are reused while it is newer than the run's poses and was made with the same symmetry group.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cryoposenet.analysis.evaluation import detect_symmetry, evaluate_maps, heldout_figures, matched_rotations
from cryoposenet.analysis.metrics import align_rotations
from cryoposenet.io.mrc import read_map
from cryoposenet.io.star import read_star

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FIGURES_VERSION = 2  # benchmark.json written by an older layout is recomputed

__all__ = [
    "ROOT",
    "SHARED_DATA",
    "cli",
    "made_once",
    "simulate_once",
    "train_once",
    "evaluate_run",
    "wall_seconds",
    "fmt",
]


def cli(*args: str, log: Path, threads: str | None = None) -> float:
    """Run ``python -m cryoposenet ARGS`` (one torch thread unless told), output to ``log``; seconds."""
    threads = threads or os.environ.get("OMP_NUM_THREADS", "1")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run([sys.executable, "-m", "cryoposenet", *args], stdout=fh, stderr=fh, env=env)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): cryoposenet {' '.join(args)}; see {log}")
    return time.perf_counter() - t0


def simulate_once(sim: Path, args: list[str], threads: str | None = None) -> Path:
    """``cryoposenet simulate ARGS -o SIM`` unless SIM is complete (:func:`made_once`)."""
    return made_once(
        sim, lambda tmp: cli("simulate", *args, "-o", str(tmp), log=tmp / "simulate.log", threads=threads)
    )


def made_once(sim: Path, make) -> Path:
    """The data set folder ``sim``: as it is when complete (``heldout.star`` and ``montage.png``,
    written last), else ``make(tmp)`` writes it into ``SIM.tmp`` (an empty folder), which then
    replaces ``sim``."""
    if (sim / "heldout.star").is_file() and (sim / "montage.png").is_file():
        return sim
    tmp = sim.with_name(sim.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    make(tmp)
    shutil.rmtree(sim, ignore_errors=True)
    tmp.rename(sim)
    return sim


def train_once(run: Path, args: list[str], threads: str | None = None) -> Path:
    """``cryoposenet train ARGS -o RUN`` unless RUN is finished (``poses.star``, written last); an
    interrupted run resumes.

    The arguments are kept in ``RUN/benchmark_args.json`` (paths relative to RUN, ``--device``
    left out); a run folder made with other arguments is an error (give the new run another
    folder) rather than silently reused.
    """
    record = run / "benchmark_args.json"
    if record.is_file() and json.loads(record.read_text()) != _portable(args, run):
        raise SystemExit(f"{run} was trained with other arguments (see {record}); use another folder")
    if (run / "poses.star").is_file():
        return run
    run.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(_portable(args, run)) + "\n")
    again = ["--resume"] if (run / "checkpoint.pt").is_file() else ["--force"]
    log = run / ("train.log" if again == ["--force"] else "train-resume.log")
    cli("train", *args, *again, "-o", str(run), log=log, threads=threads)
    return run


def _portable(args: list[str], run: Path) -> list[str]:
    """``args`` as compared between invocations: paths relative to ``run``, no ``--device``."""
    out, skip = [], False
    for arg in args:
        if skip or arg == "--device":
            skip = not skip
            continue
        is_path = Path(arg).exists()
        out.append(os.path.relpath(Path(arg).resolve(), run.resolve()) if is_path else arg)
    return out


def _pose_fits(run: Path, sim: Path, group):
    """Blind and (with ``group``) symmetry-aware alignments of the training poses."""
    r_est, r_ref = matched_rotations(read_star(run / "poses.star"), read_star(sim / "train.star"))
    blind = align_rotations(r_est, r_ref)
    return blind, (align_rotations(r_est, r_ref, symmetry=group) if group is not None else None)


def _symmetry_key(symmetry) -> str | list | None:
    """What the figures were computed with: "detect", a group (rounded lists) or None."""
    if symmetry is None or isinstance(symmetry, str):
        return symmetry
    return np.round(np.asarray(symmetry, dtype=np.float64), 6).tolist()


def _cached(run: Path, symmetry) -> dict | None:
    path = run / "benchmark.json"
    if not path.is_file() or path.stat().st_mtime < (run / "poses.star").stat().st_mtime:
        return None
    fig = json.loads(path.read_text())
    ok = fig.get("version") == FIGURES_VERSION and fig.get("symmetry") == _symmetry_key(symmetry)
    return fig if ok else None


def evaluate_run(
    run: Path, sim: Path, predict_args: list[str] | None, symmetry="detect", threads: str | None = None
) -> dict:
    """Figures of a finished run against its simulation (cached in ``RUN/benchmark.json``).

    ``predict_args``: flags for ``cryoposenet predict`` on ``SIM/heldout.star`` (an encoder run);
    None for runs that cannot predict (known or free poses). ``symmetry``: ``"detect"`` (the
    reference map's own (pseudo-)symmetry, as ``cryoposenet evaluate``), a group ``(K, 3, 3)``
    (e.g. found once for the molecule), or None (blind figures only).
    """
    cached = _cached(run, symmetry)
    if cached is not None:
        return cached
    ref, apix = read_map(sim / "map.mrc")
    group = detect_symmetry(ref)[0] if isinstance(symmetry, str) else symmetry
    blind, sym = _pose_fits(run, sim, group)
    full = run / "full" / "map.mrc"  # at the particles' own box when trained on cropped ones
    learned = read_map(full if full.is_file() else run / "map.mrc")[0]
    maps = evaluate_maps(learned, ref, apix, blind if sym is None else sym)
    fig = {"version": FIGURES_VERSION, "symmetry": _symmetry_key(symmetry), "order": _order(group)}
    fig.update(fsc05_A=maps.fsc05_A, fsc0143_A=maps.fsc0143_A, wall_s=wall_seconds(run))
    fig.update(train_deg=blind.mean_deg, train_median_deg=blind.median_deg)
    if sym is not None:
        fig.update(train_sym_deg=sym.mean_deg, train_sym_median_deg=sym.median_deg)
    if predict_args is not None:
        fig.update(_heldout(run, sim, predict_args, group, threads))
    (run / "benchmark.json").write_text(json.dumps(fig, indent=2) + "\n")
    return fig


def _order(group) -> int:
    return 1 if group is None else len(group)


def _heldout(run: Path, sim: Path, predict_args: list[str], group, threads) -> dict:
    """Held-out poses predicted by the run's encoder (``heldout_*``), and by its forward pass alone
    (``predict --refine-steps 0``: ``forward_*``); errors under the training poses' rotation."""
    out = {}
    for key, name, extra in (
        ("heldout", "heldout_poses", []),
        ("forward", "heldout_forward", ["--refine-steps", "0"]),
    ):
        held = run / f"{name}.star"
        if not held.is_file() or held.stat().st_mtime < (run / "poses.star").stat().st_mtime:
            args = ["predict", str(run), str(sim / "heldout.star"), *predict_args, *extra, "-o", str(held)]
            cli(*args, log=run / f"{name}.log", threads=threads)
        f = heldout_figures(
            run / "poses.star", sim / "train.star", held, sim / "heldout.star", symmetry=group
        )
        out.update({f"{key}_deg": f["pose_mae_deg"], f"{key}_median_deg": f["pose_median_deg"]})
        out.update(
            {
                f"{key}_sym_deg": f.get("pose_mae_sym_deg"),
                f"{key}_sym_median_deg": f.get("pose_median_sym_deg"),
            }
        )
    return out


def wall_seconds(run: Path) -> float | None:
    """Training wall time: the last ``time_s`` of ``metrics.csv`` (includes its evaluations)."""
    lines = (run / "metrics.csv").read_text().splitlines()
    if len(lines) < 2:
        return None
    column = lines[0].split(",").index("time_s")
    return float(lines[-1].split(",")[column])


def fmt(x, unit: str = "", digits: int = 2) -> str:
    """A figure for a Markdown table; "–" when missing."""
    return "–" if x is None else f"{x:.{digits}f}{unit}"
