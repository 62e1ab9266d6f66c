"""A run folder's files: ``config.yaml`` (written, read), ``poses.star`` (RELION 3.1) and the check
that an output folder may take a new run.

A run folder holds ``map.mrc``, ``poses.star``, ``metrics.csv`` (``step`` first), ``config.yaml``
and ``checkpoint.pt`` (:data:`RUN_FILES`).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import __version__
from ..errors import InputError
from ..io.atomic import write_text_atomic
from ..io.particles import optics_for
from ..io.star import ParticleTable, write_star
from ..physics.rotations import matrix_to_relion_angles
from ..training.train import TrainConfig

__all__ = ["RUN_FILES", "write_poses_star", "check_out_dir", "write_config", "read_config"]

RUN_FILES = ("map.mrc", "poses.star", "metrics.csv", "config.yaml", "checkpoint.pt")


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


def check_out_dir(out: Path, resume: bool, force: bool) -> None:
    holds_run = any((out / f).exists() for f in ("checkpoint.pt", "config.yaml"))
    if resume and not (out / "checkpoint.pt").exists():
        raise InputError("--resume given but there is no checkpoint.pt here", out)
    if holds_run and not (resume or force):
        raise InputError("output folder holds another run; use --resume to continue it or --force", out)


def write_config(out: Path, star, config: TrainConfig, **settings) -> None:
    doc = {
        "cryoposenet_version": __version__,
        "command": " ".join(sys.argv),
        "star": str(star),
        "train": dataclasses.asdict(config),
        **settings,
    }
    write_text_atomic(out / "config.yaml", yaml.safe_dump(doc, sort_keys=False))


def read_config(folder: Path) -> dict:
    """A run folder's ``config.yaml`` (empty when it has none)."""
    path = folder / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
