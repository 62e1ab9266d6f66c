"""Run folders: ``train`` and ``predict`` from STAR files, with SPEC.md's outputs.

A run folder holds ``map.mrc``, ``poses.star``, ``metrics.csv`` (``step`` first), ``config.yaml``
and ``checkpoint.pt``. Training itself lives in :mod:`cryoposenet.training.train`; this module moves data
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

from .. import __version__
from ..analysis.evaluation import detect_symmetry, evaluate_maps
from ..analysis.map_alignment import align_maps
from ..analysis.metrics import Alignment, align_rotations
from ..analysis.reconstruct import backproject_halves, write_half_maps
from ..analysis.views import direction_coverage, viewing_directions
from ..errors import InputError
from ..io.atomic import write_text_atomic
from ..io.mrc import read_map, write_map
from ..io.particles import ParticleStack, load_particles, optics_for
from ..io.star import ParticleTable, write_star
from ..physics.fourier_crop import cropped_apix
from ..physics.imaging import origin_to_translation
from ..physics.rotations import matrix_to_relion_angles
from ..training import distributed
from ..training.checkpoint import load_checkpoint, read_checkpoint
from ..training.data import StackImages, pass_progress
from ..training.distributed import DataParallel
from ..training.inputs import (
    DataSettings,
    check_resumed,
    origins_out_A,
    particle_data,
    reference_at,
    resolve_settings,
    settings_from_config,
)
from ..training.refine import REFINE_STEPS, refine_fits, searched_poses
from ..training.schedule import searching_at
from ..training.shift_search import default_shift_range
from ..training.train import (
    ParticleData,
    TrainConfig,
    TrainState,
    final_poses,
    init_state,
    predict_fits,
    predict_poses,
    train,
)
from .final_map import MISFIT_IMAGES, final_map, holding_map, misfit
from .progress import MetricsLog, Progress, stop_on_signals

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


def _subset(data: ParticleData, idx: torch.Tensor) -> ParticleData:
    pick = lambda x: None if x is None else x[idx]  # noqa: E731
    ctf = {k: v[idx] for k, v in data.ctf.items()} if data.ctf is not None else None
    return ParticleData(data.images[idx], data.apix, ctf, pick(data.translations_px), pick(data.rotations))


def write_poses_star(
    path, table: ParticleTable, rotations: torch.Tensor, apix: float, box: int, origins_A=None
) -> None:
    """The input particle rows, every column kept, angles replaced by ``rotations``; RELION 3.1.

    ``origins_A`` ``(M, 2)``: RELION origins in Å to write (default: the input's, 3.0 pixel
    origins converted to Å).
    """
    parts = table.particles[table.original_columns].copy()
    angles = matrix_to_relion_angles(rotations.double()).numpy()
    parts["rlnAngleRot"], parts["rlnAngleTilt"], parts["rlnAnglePsi"] = angles.T
    has_pixels = "rlnOriginX" in parts and "rlnOriginXAngst" not in parts
    if origins_A is None and has_pixels:  # 3.0 pixels → 3.1 Å
        origins_A = table.origins_A()
    if origins_A is not None:
        parts = parts.drop(columns=[c for c in ("rlnOriginX", "rlnOriginY") if c in parts])
        parts["rlnOriginXAngst"], parts["rlnOriginYAngst"] = np.asarray(origins_A, dtype=np.float64).T
    write_star(path, parts, optics_for(table, apix, box))


def _check_out_dir(out: Path, resume: bool, force: bool) -> None:
    holds_run = any((out / f).exists() for f in ("checkpoint.pt", "config.yaml"))
    if resume and not (out / "checkpoint.pt").exists():
        raise InputError("--resume given but there is no checkpoint.pt here", out)
    if holds_run and not (resume or force):
        raise InputError("output folder holds another run; use --resume to continue it or --force", out)


def _evaluator(data: ParticleData, ref_path, settings: DataSettings):
    """A function ``state -> dict`` of FSC resolution and pose error against ground truth.

    The reference is taken at the training box (Fourier-cropped from the particles' box). With a
    (pseudo-)symmetric reference the symmetry-aware errors are logged too and the map is aligned
    by them (see :mod:`cryoposenet.analysis.evaluation`). The map is also aligned to the reference on its own
    (:func:`~cryoposenet.analysis.map_alignment.align_maps`) and the better FSC kept: while the poses
    are still far off, aligning by them would understate the map.

    The poses scored are those the map learns from: while the run searches, each image's best pose
    from a global search on the current map (:func:`~cryoposenet.training.refine.searched_poses`),
    with the encoder's own error beside them (``encoder_pose_*``); otherwise the encoder's.
    ``views_top5_share`` and ``views_min_moment``: how those poses' viewing directions cover the
    sphere (:mod:`~cryoposenet.analysis.views`; no reference needed: a run collapsing onto a great
    circle of views shows it in the second, from step ~300 on 4AKE chain A).
    """
    reference = reference_at(read_map(ref_path)[0], settings, ref_path)
    apix = settings.apix
    # Detected at the first evaluation: ranks other than 0 under torchrun build this evaluator
    # (it checks --ref) but never call it.
    symmetry = functools.cache(lambda: detect_symmetry(reference)[0])
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:EVAL_IMAGES]
    sub = _subset(data, idx)
    truth = sub.rotations.double().numpy()

    def evaluate(state: TrainState) -> dict:
        encoder = predict_poses(state, sub).double().numpy()
        searched = searching_at(state.config, max(state.step - 1, 0))
        est = searched_poses(state, sub).double().numpy() if searched else encoder
        row, alignment = _pose_figures(est, truth, symmetry())
        views = direction_coverage(viewing_directions(est))
        row.update(views_top5_share=views.top_share, views_min_moment=views.min_moment)
        if searched:
            enc = _pose_figures(encoder, truth, symmetry())[0]
            row.update({f"encoder_{k}": v for k, v in enc.items()})
        with torch.no_grad():
            vol = (state.volume.volume().detach().cpu().double() / state.scale).numpy()
        maps = evaluate_maps(vol, reference, apix, alignment)
        by_map = evaluate_maps(vol, reference, apix, align_maps(vol, reference)[0])
        maps = by_map if by_map.fsc05_A < maps.fsc05_A else maps  # poses far off misalign the map
        return {"fsc05_A": maps.fsc05_A, "fsc0143_A": maps.fsc0143_A, **row}

    return evaluate


def _pose_figures(est: np.ndarray, truth: np.ndarray, group) -> tuple[dict, Alignment]:
    """``pose_mae_deg`` / ``pose_median_deg`` of rotations ``est`` ``(M, 3, 3)`` against ``truth``
    (with a detected symmetry ``group``, also the ``_sym`` ones, to the nearest branch), and the
    alignment to align the map by (the symmetry-aware one where there is a symmetry)."""
    alignment = align_rotations(est, truth)
    row = {"pose_mae_deg": alignment.mean_deg, "pose_median_deg": alignment.median_deg}
    if group is not None:
        alignment = align_rotations(est, truth, symmetry=group)
        row.update(pose_mae_sym_deg=alignment.mean_deg, pose_median_sym_deg=alignment.median_deg)
    return row, alignment


def _write_config(out: Path, star, config: TrainConfig, **settings) -> None:
    doc = {
        "cryoposenet_version": __version__,
        "command": " ".join(sys.argv),
        "star": str(star),
        "train": dataclasses.asdict(config),
        **settings,
    }
    write_text_atomic(out / "config.yaml", yaml.safe_dump(doc, sort_keys=False))


def _read_config(folder: Path) -> dict:
    """A run folder's ``config.yaml`` (empty when it has none)."""
    path = folder / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


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
    settings = settings_from_config(_read_config(out), stack)
    check_resumed(settings, **flags, path=out)
    return settings


def _prepare(star, out: Path, config: TrainConfig, datadir, flags: dict, ref, eval_every, resume, force):
    """Check and read everything a run needs (writes nothing): ``(stack, settings, data, state,
    evaluate)``; ``flags``: ``box``, ``shifts``, ``invert`` (None: the default)."""
    _check_out_dir(out, resume, force)
    stack = load_particles(star, datadir=datadir)
    settings = _settings(stack, out, resume, flags)
    data = particle_data(stack, settings)
    if config.poses == "known" and data.rotations is None:
        raise InputError("--poses known needs rlnAngleRot/Tilt/Psi in the STAR file", star)
    evaluate = None
    if ref is not None and eval_every:
        if data.rotations is None:
            raise InputError("--eval-every needs ground-truth angles in the STAR file", star)
        evaluate = _evaluator(data, ref, settings)
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
        _final_poses_and_map(state, data, show=False)  # this rank's share; rank 0 gathers
        return {"steps": state.step, "time_s": None, "final": {}, "rank": parallel.rank}, None
    for line in settings.describe():
        log.info(line)
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
    """``map.mrc`` (:func:`_final_poses_and_map`'s map: the training images backprojected at the
    final poses, or the trained map where it fits them better; also checkpointed) and
    ``poses.star`` (the final poses, for the original particles, origins in Å); returns
    ``(rotations, origins_A, final map)``."""
    rotations, translations, volume = _final_poses_and_map(result.state, data, show)
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
    the result without poses (:func:`_final_rotations` makes them)."""
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


def _share(state: TrainState, m: int) -> int:
    """How many of ``m`` rows this process handles in a pass split across ranks."""
    return m if state.parallel is None else len(state.parallel.shard(torch.arange(m)))


def _final_rotations(state: TrainState, data: ParticleData, show: bool):
    """A rotation ``(M, 3, 3)`` per training image, refined against the map when the encoder made
    them, and the searched translations ``(M, 2)`` in training pixels (None unless searched); each
    pass over the particles shows a progress bar (under torchrun: a share per rank)."""
    with pass_progress("final poses", _share(state, len(data)), show):
        rotations, translations = final_poses(state, data)
    return _refined(state, data, rotations, translations, show)


def _refined(state: TrainState, data: ParticleData, rotations, translations, show: bool):
    """``(rotations, translations)`` refined against the state's map (encoder runs with
    ``refine_steps``; others as given), split across ranks under torchrun."""
    cfg = state.config
    if cfg.poses != "encoder" or cfg.refine_steps <= 0:
        return rotations, translations

    def refine(rows: torch.Tensor):
        start = None if translations is None else translations[rows]
        return refine_fits(state, data, rotations[rows], rows, cfg.refine_steps, translations=start)

    with pass_progress("refine poses", _share(state, len(data)), show):
        return distributed.split_pose_rows(state.parallel, len(data), refine)


def _final_poses_and_map(state: TrainState, data: ParticleData, show: bool):
    """``(rotations, translations, map)``: :func:`_final_rotations` and the map that explains the
    training images better at those poses (:func:`~cryoposenet.runs.final_map.misfit`): their
    backprojection (:func:`~cryoposenet.runs.final_map.final_map`) or the trained map. When the
    backprojection wins, ``final_rounds - 1`` times more (encoder runs): the poses refined against
    it and backprojected again. Every rank makes each map and the same choice."""
    rotations, translations = _final_rotations(state, data, show)
    volume = final_map(data, rotations, translations, show=show)
    rows = torch.linspace(0, len(data) - 1, min(MISFIT_IMAGES, len(data))).round().long()
    trained_fit = misfit(state, data, rotations, translations, rows)
    with holding_map(state, volume) as held:
        backprojected_fit = misfit(held, data, rotations, translations, rows)
    if backprojected_fit >= trained_fit:
        log.info("final map: the trained map (it fits the images better than their backprojection)")
        return rotations, translations, (state.volume.data.detach() / state.scale).cpu()  # unmasked
    cfg = state.config
    rounds = cfg.final_rounds if cfg.poses == "encoder" and cfg.refine_steps > 0 else 1
    for _ in range(rounds - 1):
        with holding_map(state, volume) as held:
            rotations, translations = _refined(held, data, rotations, translations, show)
        volume = final_map(data, rotations, translations, show=show)
    return rotations, translations, volume


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


def predict_settings(run: Path, stack: ParticleStack) -> DataSettings:
    """New particles read as the run read its own: cropped to its training box, its contrast sign,
    their own origins (when the STAR file has them)."""
    trained = settings_from_config(_read_config(run), stack)
    box = trained.box
    if stack.box < box:
        raise InputError(
            f"particles of {stack.box} px are smaller than the run's {box}-px box", stack.table.source
        )
    apix = cropped_apix(stack.apix, stack.box, box)
    if abs(apix - trained.apix) > 0.01 * trained.apix:
        log.warning(
            "%s: cropped to the run's %d px these images have %.4g Å pixels, the run trained on %.4g Å",
            stack.table.source, box, apix, trained.apix,
        )  # fmt: skip
    shifts = "known" if stack.table.has_origins else ("search" if trained.shifts == "search" else "none")
    return DataSettings(
        box, apix, stack.box, stack.apix, trained.invert, shifts, trained.contrast, "the run's"
    )


def run_predict(
    run_dir,
    star,
    out_star,
    *,
    datadir=None,
    batch_size: int = 256,
    device: str = "cpu",
    refine_steps: int = REFINE_STEPS,
    progress: bool = True,
) -> int:
    """Poses for the images of ``star`` from a trained run's encoder (one forward pass), then
    ``refine_steps`` of local refinement against the run's map; writes a STAR. With
    ``refine_steps`` 0 the encoder sees each image at its four quarter turns and the answer that
    fits the map best is kept (docs/training.md: 35–46 % lower held-out errors; with refinement the
    search finds the same poses without them). The images are read as the run read its own
    (training box, contrast sign)."""
    run = Path(run_dir)
    if not (run / "checkpoint.pt").is_file():
        raise InputError("not a cryoposenet run (no checkpoint.pt)", run)
    payload = read_checkpoint(run / "checkpoint.pt")
    if payload["config"].get("poses") != "encoder":
        raise InputError(
            f"run was trained with --poses {payload['config'].get('poses')}; it has no encoder", run
        )
    stack = load_particles(star, datadir=datadir)
    settings = predict_settings(run, stack)
    data = particle_data(stack, settings)
    state = load_checkpoint(payload, data, device, final_map=True)
    with pass_progress("predict", len(data), progress):
        rotations, shifts = predict_fits(state, data, batch_size=batch_size, every_turn=refine_steps == 0)
    if refine_steps > 0:
        with pass_progress("refine poses", len(data), progress):
            rotations, shifts = refine_fits(
                state, data, rotations, steps=refine_steps, batch_size=batch_size, translations=shifts
            )
    origins = origins_out_A(stack.table, settings, shifts) if shifts is not None else None
    write_poses_star(out_star, stack.table, rotations, stack.apix, stack.box, origins)
    return len(rotations)
