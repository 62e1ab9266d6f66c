"""Run folders: ``train`` and ``predict`` from STAR files, with SPEC.md's outputs.

A run folder holds ``map.mrc``, ``poses.star``, ``metrics.csv`` (``step`` first), ``config.yaml``
and ``checkpoint.pt``. Training itself lives in :mod:`cryoposenet.train`; this module moves data
between files and that library.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from . import __version__, distributed
from .checkpoint import load_checkpoint, read_checkpoint
from .data import StackImages
from .distributed import DataParallel
from .errors import InputError
from .evaluation import detect_symmetry, evaluate_maps
from .io.atomic import write_text_atomic
from .io.mrc import read_map, write_map
from .io.particles import ParticleStack, load_particles, optics_for
from .io.star import ParticleTable, write_star
from .metrics import align_rotations
from .physics.imaging import origin_to_translation
from .physics.rotations import matrix_to_relion_angles, relion_angles_to_matrix
from .progress import MetricsLog, Progress, stop_on_signals
from .refine import REFINE_STEPS, refine_poses
from .train import ParticleData, TrainConfig, TrainResult, TrainState, init_state, predict_poses, train

__all__ = [
    "make_config",
    "resolve_device",
    "particle_data",
    "run_training",
    "run_predict",
    "write_poses_star",
    "RUN_FILES",
]

log = logging.getLogger(__name__)
RUN_FILES = ("map.mrc", "poses.star", "metrics.csv", "config.yaml", "checkpoint.pt")
EVAL_IMAGES = 512  # images whose predicted poses are scored at each evaluation


def make_config(steps: int, poses: str = "encoder", **settings) -> TrainConfig:
    """The training recipe (``TrainConfig`` defaults) fitted to a run of ``steps`` steps.

    ``lr`` scales the map's rate too (the recipe's ratio is kept). Known poses (the "tomo"
    baseline) train on the full band from the start; otherwise the
    coarse-to-fine band reaches Nyquist, and the global pose search ends, by 40 % of the run at the
    latest.
    """
    recipe = TrainConfig()
    config = dataclasses.replace(recipe, steps=steps, poses=poses, **settings)
    if recipe.lr_map is not None:  # --lr scales both rates, keeping the recipe's map/encoder ratio
        config = dataclasses.replace(config, lr_map=recipe.lr_map * config.lr / recipe.lr)
    if poses == "known":
        return dataclasses.replace(config, kmax_start=None, kmax_steps=0)
    fitted = max(1, int(0.4 * steps))
    search = None if config.search_steps is None else min(config.search_steps, fitted)
    return dataclasses.replace(config, kmax_steps=min(config.kmax_steps, fitted), search_steps=search)


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda given but no CUDA GPU is visible")
    return name


def particle_data(stack: ParticleStack) -> ParticleData:
    """A stack's per-particle parameters as :class:`ParticleData` tensors; images stay in the files.

    The images are a :class:`~cryoposenet.data.StackImages`: training reads batches from the
    stack files (checking each for NaN/Inf), so memory does not grow with the number of particles.
    """
    table = stack.table
    ctf = (
        {k: torch.as_tensor(v, dtype=torch.float32) for k, v in table.ctf_params().items()}
        if table.has_ctf
        else None
    )
    origins = torch.as_tensor(table.origins_A(), dtype=torch.float32)
    rotations = relion_angles_to_matrix(table.angles_deg()).float() if table.has_angles else None
    translations = origin_to_translation(origins, stack.apix)
    return ParticleData(StackImages(stack), stack.apix, ctf, translations, rotations)


def _subset(data: ParticleData, idx: torch.Tensor) -> ParticleData:
    pick = lambda x: None if x is None else x[idx]  # noqa: E731
    ctf = {k: v[idx] for k, v in data.ctf.items()} if data.ctf is not None else None
    return ParticleData(data.images[idx], data.apix, ctf, pick(data.translations_px), pick(data.rotations))


def write_poses_star(path, table: ParticleTable, rotations: torch.Tensor, apix: float, box: int) -> None:
    """The input particle rows, every column kept, angles replaced by ``rotations``; RELION 3.1."""
    parts = table.particles[table.original_columns].copy()
    angles = matrix_to_relion_angles(rotations.double()).numpy()
    parts["rlnAngleRot"], parts["rlnAngleTilt"], parts["rlnAnglePsi"] = angles.T
    if "rlnOriginX" in parts and "rlnOriginXAngst" not in parts:  # 3.0 pixels → 3.1 Å
        origins = table.origins_A()
        parts = parts.drop(columns=[c for c in ("rlnOriginX", "rlnOriginY") if c in parts])
        parts["rlnOriginXAngst"], parts["rlnOriginYAngst"] = origins.T
    write_star(path, parts, optics_for(table, apix, box))


def _check_out_dir(out: Path, resume: bool, force: bool) -> None:
    holds_run = any((out / f).exists() for f in ("checkpoint.pt", "config.yaml"))
    if resume and not (out / "checkpoint.pt").exists():
        raise InputError("--resume given but there is no checkpoint.pt here", out)
    if holds_run and not (resume or force):
        raise InputError("output folder holds another run; use --resume to continue it or --force", out)


def _evaluator(data: ParticleData, ref_path, apix: float):
    """A function ``state -> dict`` of FSC resolution and pose error against ground truth.

    With a (pseudo-)symmetric reference the symmetry-aware errors are logged too and the map is
    aligned by them (see :mod:`cryoposenet.evaluation`).
    """
    reference, _ = read_map(ref_path)
    if reference.shape[-1] != data.images.shape[-1]:
        raise InputError(f"reference box {reference.shape[-1]} differs from the images'", ref_path)
    # Detected at the first evaluation: ranks other than 0 under torchrun build this evaluator
    # (it checks --ref) but never call it.
    symmetry = functools.cache(lambda: detect_symmetry(reference)[0])
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:EVAL_IMAGES]
    sub = _subset(data, idx)

    def evaluate(state: TrainState) -> dict:
        est = predict_poses(state, sub).double().numpy()
        truth = sub.rotations.double().numpy()
        alignment = align_rotations(est, truth)
        row = {"pose_mae_deg": alignment.mean_deg, "pose_median_deg": alignment.median_deg}
        group = symmetry()
        if group is not None:
            alignment = align_rotations(est, truth, symmetry=group)
            row.update(pose_mae_sym_deg=alignment.mean_deg, pose_median_sym_deg=alignment.median_deg)
        with torch.no_grad():
            vol = (state.volume.volume().detach().cpu().double() / state.scale).numpy()
        maps = evaluate_maps(vol, reference, apix, alignment)
        return {"fsc05_A": maps.fsc05_A, "fsc0143_A": maps.fsc0143_A, **row}

    return evaluate


def _write_config(out: Path, star, config: TrainConfig, **settings) -> None:
    doc = {
        "cryoposenet_version": __version__,
        "command": " ".join(sys.argv),
        "star": str(star),
        "train": dataclasses.asdict(config),
        **settings,
    }
    write_text_atomic(out / "config.yaml", yaml.safe_dump(doc, sort_keys=False))


def _fresh_state(data: ParticleData, config: TrainConfig, star) -> TrainState:
    """A new model for ``data``; a setting the model cannot take is bad input, named in one line."""
    try:
        return init_state(data, config)
    except ValueError as exc:
        raise InputError(f"cannot train on these images: {exc}", star) from None


def _prepare(star, out: Path, config: TrainConfig, datadir, ref, eval_every, resume: bool, force: bool):
    """Check and read everything a run needs (writes nothing): ``(stack, data, state, evaluate)``."""
    _check_out_dir(out, resume, force)
    stack = load_particles(star, datadir=datadir)
    data = particle_data(stack)
    if config.poses == "known" and data.rotations is None:
        raise InputError("--poses known needs rlnAngleRot/Tilt/Psi in the STAR file", star)
    evaluate = None
    if ref is not None and eval_every:
        if data.rotations is None:
            raise InputError("--eval-every needs ground-truth angles in the STAR file", star)
        evaluate = _evaluator(data, ref, stack.apix)
    if resume:
        # the command line's step count and final refinement apply; the rest is the checkpoint's
        payload = read_checkpoint(out / "checkpoint.pt")
        state = load_checkpoint(
            payload, data, config.device, steps=config.steps, refine_steps=config.refine_steps
        )
        log.info("resuming %s at step %d", out, state.step)
    else:
        state = _fresh_state(data, config, star)
    return stack, data, state, evaluate


def run_training(star, out_dir, config: TrainConfig, **options) -> dict:
    """Train on a STAR file and write the run folder; returns the final figures.

    ``options``: those of :func:`_run_training`. Under ``torchrun`` (``WORLD_SIZE`` > 1) every
    process trains on its share of each batch (see :mod:`cryoposenet.distributed`) and rank 0
    alone writes the run folder.
    """
    parallel = distributed.from_env(config.device)
    try:
        result = _run_training(star, out_dir, config, parallel=parallel, **options)
        if parallel is not None:
            parallel.barrier()  # leave together: gloo may abort a rank whose peer tears down first
        return result
    finally:
        distributed.shutdown()


def _run_training(
    star,
    out_dir,
    config: TrainConfig,
    *,
    datadir=None,
    ref=None,
    eval_every=None,
    resume: bool = False,
    force: bool = False,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 300.0,
    progress: bool = True,
    parallel: DataParallel | None = None,
) -> dict:
    out = Path(out_dir)
    if parallel is not None:
        config = dataclasses.replace(config, device=parallel.device)
    stack, data, state, evaluate = _prepare(star, out, config, datadir, ref, eval_every, resume, force)
    if parallel is not None:
        state.parallel = parallel
        parallel.wrap(state.volume, state.encoder)
        parallel.barrier()  # every rank has read and checked its input before rank 0 writes
        if not parallel.is_main:
            result = train(data, state.config, state=state)
            _refined(result, data)  # this rank's share of the refinement; rank 0 gathers
            return {"steps": result.state.step, "time_s": None, "final": {}, "rank": parallel.rank}
    out.mkdir(parents=True, exist_ok=True)  # only now: bad input above leaves nothing behind
    _write_config(
        out,
        star,
        state.config,
        datadir=datadir and str(datadir),
        ref=ref and str(Path(ref).resolve()),
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        processes=parallel.world if parallel is not None else 1,
    )
    rows = MetricsLog(out / "metrics.csv", state.step if resume else None)
    hook = Progress(
        out,
        state,
        config.steps,
        rows,
        checkpoint_every,
        checkpoint_seconds,
        progress,
        eval_every=eval_every if evaluate is not None else 0,
    )
    on_eval = None
    if evaluate is not None:

        def on_eval(st: TrainState) -> None:
            hook.on_eval(evaluate(st), st)

    try:
        with stop_on_signals(hook):
            result = train(data, state.config, hook.on_step, on_eval, eval_every=eval_every or 0, state=state)
        hook.save(result.state)
    finally:
        hook.flush()
        hook.bar.close()
        rows.close()
    write_map(out / "map.mrc", result.volume.numpy().astype(np.float32), stack.apix)
    write_poses_star(out / "poses.star", stack.table, _refined(result, data), stack.apix, stack.box)
    return {"steps": result.state.step, "time_s": hook.elapsed(), "final": hook.last_eval, "rank": 0}


def _refined(result: TrainResult, data: ParticleData) -> torch.Tensor:
    """The final training poses, refined against the map when the encoder made them."""
    cfg = result.state.config
    if cfg.poses != "encoder" or cfg.refine_steps <= 0:
        return result.rotations

    def refine(rows: torch.Tensor) -> torch.Tensor:
        return refine_poses(result.state, data, result.rotations[rows], rows, cfg.refine_steps)

    return distributed.split_rows(result.state.parallel, len(data), refine)  # torchrun: a share per rank


def run_predict(
    run_dir,
    star,
    out_star,
    *,
    datadir=None,
    batch_size: int = 256,
    device: str = "cpu",
    refine_steps: int = REFINE_STEPS,
) -> int:
    """Poses for the images of ``star`` from a trained run's encoder (one forward pass), then
    ``refine_steps`` of local refinement against the run's map (0: the encoder's poses); writes a STAR."""
    run = Path(run_dir)
    if not (run / "checkpoint.pt").is_file():
        raise InputError("not a cryoposenet run (no checkpoint.pt)", run)
    payload = read_checkpoint(run / "checkpoint.pt")
    if payload["config"].get("poses") != "encoder":
        raise InputError(
            f"run was trained with --poses {payload['config'].get('poses')}; it has no encoder", run
        )
    stack = load_particles(star, datadir=datadir)
    data = particle_data(stack)
    state = load_checkpoint(payload, data, device)
    rotations = predict_poses(state, data, batch_size=batch_size)
    if refine_steps > 0:
        rotations = refine_poses(state, data, rotations, steps=refine_steps, batch_size=batch_size)
    write_poses_star(out_star, stack.table, rotations, stack.apix, stack.box)
    return len(rotations)
