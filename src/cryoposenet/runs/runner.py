"""``train`` from a STAR file into a run folder, with SPEC.md's outputs.

Training itself lives in :mod:`cryoposenet.training.train`; this module moves data between files
and that library. The folder's files: :mod:`.run_folder`; the in-run evaluation:
:mod:`.run_evaluation`; the final poses and map: :mod:`.final_map`; ``predict``: :mod:`.prediction`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import numpy as np
import torch

from ..analysis.reconstruct import backproject_halves, write_half_maps
from ..analysis.views import direction_coverage, viewing_directions
from ..errors import InputError
from ..io.mrc import write_map
from ..io.particles import ParticleStack, load_particles
from ..physics.imaging import origin_to_translation
from ..training import distributed
from ..training.checkpoint import load_checkpoint, read_checkpoint
from ..training.data import StackImages
from ..training.distributed import DataParallel
from ..training.inputs import (
    DataSettings,
    check_resumed,
    origins_out_A,
    particle_data,
    resolve_settings,
    settings_from_config,
)
from ..training.shift_search import default_shift_range
from ..training.train import (
    ParticleData,
    TrainConfig,
    TrainState,
    init_state,
    train,
)
from .final_map import final_poses_and_map, holding_map
from .progress import MetricsLog, Progress, stop_on_signals
from .run_evaluation import make_evaluator
from .run_folder import check_out_dir, read_config, write_config, write_poses_star

__all__ = [
    "make_config",
    "resolve_device",
    "run_training",
]

log = logging.getLogger(__name__)


def make_config(steps: int, poses: str = "encoder", **settings) -> TrainConfig:
    """The training recipe (``TrainConfig`` defaults) fitted to a run of ``steps`` steps.

    ``lr`` scales the map's rate too (the recipe's ratio is kept). Known poses (the "tomo"
    baseline) train on the full band from the start; otherwise the coarse-to-fine band reaches
    Nyquist after ``kmax_steps`` (1500) steps, or after two thirds of a shorter run, still before
    the rates drop at 80 % (a ramp over 40 % let 4AKE chain A's seed 1 collapse onto one great
    circle of views in a 1500-step run; docs/training.md); the global pose search runs the whole
    run (``search_local``) or ends with the band's ramp (the grid alone).
    """
    recipe = TrainConfig()
    config = dataclasses.replace(recipe, steps=steps, poses=poses, **settings)
    if recipe.lr_map is not None:  # --lr scales both rates, keeping the recipe's map/encoder ratio
        config = dataclasses.replace(config, lr_map=recipe.lr_map * config.lr / recipe.lr)
    if poses == "known":
        return dataclasses.replace(config, kmax_start=None, kmax_steps=0)
    fitted = max(1, (2 * steps) // 3)
    search = config.search_steps  # searching locally: the whole run, however far it is resumed
    if search is not None and config.search_local is None:
        search = min(search, fitted)
    return dataclasses.replace(config, kmax_steps=min(config.kmax_steps, fitted), search_steps=search)


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda given but no CUDA GPU is visible")
    return name


def _fresh_state(data: ParticleData, config: TrainConfig, star) -> TrainState:
    """A new model for ``data``; a setting the model cannot take is bad input, named in one line."""
    try:
        return init_state(data, config)
    except ValueError as exc:
        raise InputError(f"cannot train on these images: {exc}", star) from None


def _settings(stack: ParticleStack, out: Path, resume: bool, flags: dict) -> DataSettings:
    """How the particles are read: resolved from the flags and the data, or a resumed run's own."""
    if not resume:
        return resolve_settings(stack, **flags)
    settings = settings_from_config(read_config(out), stack)
    check_resumed(settings, **flags, path=out)
    return settings


def _prepare(star, out: Path, config: TrainConfig, datadir, flags: dict, ref, eval_every, resume, force):
    """Check and read everything a run needs (writes nothing): ``(stack, settings, data, state,
    evaluate)``; ``flags``: ``box``, ``shifts``, ``invert`` (None: the default)."""
    check_out_dir(out, resume, force)
    stack = load_particles(star, datadir=datadir)
    settings = _settings(stack, out, resume, flags)
    data = particle_data(stack, settings)
    if config.poses == "known" and data.rotations is None:
        raise InputError("--poses known needs rlnAngleRot/Tilt/Psi in the STAR file", star)
    evaluate = None
    if ref is not None and eval_every:
        if data.rotations is None:
            raise InputError("--eval-every needs ground-truth angles in the STAR file", star)
        evaluate = make_evaluator(data, ref, settings)
    if resume:
        # the command line's step count and final refinement apply; the rest is the checkpoint's
        payload = read_checkpoint(out / "checkpoint.pt")
        state = load_checkpoint(
            payload, data, config.device, steps=config.steps, refine_steps=config.refine_steps
        )
        log.info("resuming %s at step %d", out, state.step)
    else:
        if settings.shifts == "search":
            config = dataclasses.replace(config, shift_range=default_shift_range(settings.box))
        state = _fresh_state(data, config, star)
    return stack, settings, data, state, evaluate


def run_training(star, out_dir, config: TrainConfig, **options) -> dict:
    """Train on a STAR file and write the run folder; returns the final figures.

    ``options``: those of :func:`_run_training`. Under ``torchrun`` (``WORLD_SIZE`` > 1) every
    process trains on its share of each batch (see :mod:`cryoposenet.training.distributed`) and rank 0
    alone writes the run folder. When the training box is smaller than the particles, rank 0 then
    backprojects the particles at their own size into ``OUT/full/`` (after the others have left).
    """
    parallel = distributed.from_env(config.device)
    try:
        result, full_map = _run_training(star, out_dir, config, parallel=parallel, **options)
        if parallel is not None:
            parallel.barrier()  # leave together: gloo may abort a rank whose peer tears down first
    finally:
        distributed.shutdown()
    if full_map is not None:
        result["full"] = full_map()
    return result


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
    box: int | None = None,
    shifts: str | None = None,
    invert: bool | None = None,
):
    """``(figures, full_map)``: the run's figures and, when the particles were cropped, a function
    that writes ``OUT/full/`` and returns its figures (None otherwise, and on ranks other than 0)."""
    out = Path(out_dir)
    if parallel is not None:
        config = dataclasses.replace(config, device=parallel.device)
    flags = {"box": box, "shifts": shifts, "invert": invert}
    stack, settings, data, state, evaluate = _prepare(
        star, out, config, datadir, flags, ref, eval_every, resume, force
    )
    if parallel is not None and not _join(parallel, state):
        train(data, state.config, state=state, poses=False)
        final_poses_and_map(state, data, show=False)  # this rank's share; rank 0 gathers
        return {"steps": state.step, "time_s": None, "final": {}, "rank": parallel.rank}, None
    for line in settings.describe():
        log.info(line)
    out.mkdir(parents=True, exist_ok=True)  # only now: bad input above leaves nothing behind
    write_config(
        out,
        star,
        state.config,
        datadir=datadir and str(datadir),
        ref=ref and str(Path(ref).resolve()),
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        processes=parallel.world if parallel is not None else 1,
        data=settings.to_config(),
    )
    hook, result = _train_loop(
        out, data, state, evaluate, eval_every, resume, checkpoint_every, checkpoint_seconds, progress
    )
    rotations, origins, volume = _write_outputs(out, stack, settings, data, result, hook, progress)
    final = hook.last_eval if evaluate is None else _map_figures(evaluate, result.state, volume)
    figures = {"steps": result.state.step, "time_s": hook.elapsed(), "final": final, "rank": 0}
    if not settings.cropped:
        return figures, None
    folder, seed = out / "full", config.seed
    return figures, functools.partial(_full_map, stack, settings, rotations, origins, folder, seed, progress)


def _map_figures(evaluate, state: TrainState, volume: torch.Tensor) -> dict:
    """The in-run evaluation's figures of ``volume`` (``map.mrc``) in place of the trained map."""
    with holding_map(state, volume) as held:
        return evaluate(held)


def _join(parallel: DataParallel, state: TrainState) -> bool:
    """Wrap the state's modules for ``parallel`` once every rank has read and checked its input;
    True on rank 0, the rank that writes the run folder."""
    state.parallel = parallel
    parallel.wrap(state.volume, state.encoder)
    parallel.barrier()
    return parallel.is_main


def _write_outputs(out: Path, stack, settings: DataSettings, data, result, hook: Progress, show: bool):
    """``map.mrc`` (:func:`final_poses_and_map`'s map: the training images backprojected at the
    final poses, or the trained map where it fits them better; also checkpointed) and
    ``poses.star`` (the final poses, for the original particles, origins in Å); returns
    ``(rotations, origins_A, final map)``."""
    rotations, translations, volume = final_poses_and_map(result.state, data, show)
    hook.save(result.state, volume)
    # a cropped voxel is particle_box/box times longer: rescaled, map.mrc holds the full map's crop
    scale = settings.box / settings.particle_box * result.state.volume.mask.cpu()  # the mask, once
    write_map(out / "map.mrc", (volume * scale).numpy().astype(np.float32), settings.apix)
    origins = origins_out_A(stack.table, settings, translations)
    write_poses_star(out / "poses.star", stack.table, rotations, stack.apix, stack.box, origins)
    _log_views(rotations, learned=result.state.config.poses != "known")
    return rotations, origins, volume


def _log_views(rotations: torch.Tensor, learned: bool) -> None:
    """How evenly the final poses ``(M, 3, 3)`` view the map; a warning where learned poses
    crowd into a few directions (:mod:`~cryoposenet.analysis.views`)."""
    coverage = direction_coverage(viewing_directions(rotations.double().numpy()))
    if learned and coverage.concentrated:
        log.warning(
            "viewing directions: %s. Unless the particles prefer a few views, the poses may have "
            "collapsed onto a wrong map: look at the map and the report, or train again with "
            "another --seed",
            coverage.describe(),
        )
    else:
        log.info("viewing directions: %s", coverage.describe())


def _train_loop(
    out: Path, data, state, evaluate, eval_every, resume, checkpoint_every, checkpoint_seconds, show
):
    """Train with the run folder's hook (metrics, bar, checkpoints, signals); ``(hook, result)``,
    the result without poses (:func:`~cryoposenet.runs.final_map.final_rotations` makes them)."""
    rows = MetricsLog(out / "metrics.csv", state.step if resume else None)
    evaluating = evaluate is not None
    every = eval_every if evaluating else 0
    hook = Progress(out, state, state.config.steps, rows, checkpoint_every, checkpoint_seconds, show, every)
    on_eval = None
    if evaluating:

        def on_eval(st: TrainState) -> None:
            hook.on_eval(evaluate(st), st)

    try:
        with stop_on_signals(hook):
            result = train(
                data, state.config, hook.on_step, on_eval, eval_every=every, state=state, poses=False
            )
        hook.save(result.state)
    finally:
        hook.flush()
        hook.bar.close()
        rows.close()
    return hook, result


def _full_map(
    stack: ParticleStack, settings: DataSettings, rotations, origins_A, folder: Path, seed, show
) -> dict:
    """The particles at their own box and pixel size backprojected with the learned poses and
    shifts into ``folder`` (``map.mrc``, ``half1.mrc``, ``half2.mrc``, ``fsc.csv``), streamed."""
    images = StackImages(stack, invert=settings.invert)
    translations = origin_to_translation(torch.as_tensor(origins_A, dtype=torch.float64), stack.apix)
    ctf = stack.table.ctf_params() if stack.table.has_ctf else None
    accs = backproject_halves(
        images,
        rotations,
        translations,
        ctf,
        stack.apix,
        seed,
        dtype=torch.float32,
        desc="full-size map",
        show=show,
    )
    return write_half_maps(folder, accs)
