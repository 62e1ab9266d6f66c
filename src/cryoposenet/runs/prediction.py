"""``predict``: poses for new particles from a trained run's encoder, refined against its map."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError
from ..io.particles import ParticleStack, load_particles
from ..physics.fourier_crop import cropped_apix
from ..training.checkpoint import load_checkpoint, read_checkpoint
from ..training.data import pass_progress
from ..training.inputs import DataSettings, origins_out_A, particle_data, settings_from_config
from ..training.refine import REFINE_STEPS, refine_fits
from ..training.train import predict_fits
from .run_folder import read_config, write_poses_star

__all__ = ["predict_settings", "run_predict"]

log = logging.getLogger(__name__)


def predict_settings(run: Path, stack: ParticleStack) -> DataSettings:
    """New particles read as the run read its own: cropped to its training box, its contrast sign,
    their own origins (when the STAR file has them)."""
    trained = settings_from_config(read_config(run), stack)
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
