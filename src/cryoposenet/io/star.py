"""RELION STAR files through ``starfile``: 3.0 (optics per particle) and 3.1+ (``data_optics``).

:func:`read_star` returns a :class:`ParticleTable`: the particle rows exactly as read (every
column kept, so :func:`write_star` can hand them back to RELION with new angles) and per-particle
views in physical units that the rest of the package uses (angles in degrees, origins in Å, CTF
parameters, pixel size).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..errors import InputError
from .atomic import atomic_path

__all__ = ["ParticleTable", "read_star", "write_star", "OPTICS_COLUMNS"]

OPTICS_COLUMNS = (
    "rlnOpticsGroup",
    "rlnOpticsGroupName",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnImageDimensionality",
)
ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")


@dataclass
class ParticleTable:
    """Particles of one STAR file.

    ``particles``: one row per particle, all input columns, optics values joined in (3.1+) so each
    row is self-contained; ``optics``: the ``data_optics`` block (3.1+) or None (3.0);
    ``base_dir``: the folder ``rlnImageName`` paths are relative to; ``apix``: pixel size in Å
    (STAR wins over MRC, None if neither says); ``source``: the file read.
    """

    particles: pd.DataFrame
    optics: pd.DataFrame | None
    base_dir: Path
    apix: float | None
    source: Path | None = None
    original_columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.particles)

    def column(self, name: str, default: float | None = None) -> np.ndarray:
        """A numeric column as float64 ``(M,)``; ``default`` fills a missing column (else an error)."""
        if name in self.particles:
            return self.particles[name].to_numpy(dtype=np.float64, copy=True)
        if default is None:
            raise InputError(f"missing column {name}", self.source)
        return np.full(len(self), float(default))

    @property
    def has_angles(self) -> bool:
        return all(c in self.particles for c in ANGLE_COLUMNS)

    @property
    def has_origins(self) -> bool:
        return any(c in self.particles for c in ("rlnOriginXAngst", "rlnOriginX"))

    @property
    def has_ctf(self) -> bool:
        return "rlnDefocusU" in self.particles

    def angles_deg(self) -> np.ndarray:
        """``(M, 3)`` RELION (rot, tilt, psi) in degrees."""
        return np.stack([self.column(c) for c in ANGLE_COLUMNS], axis=1)

    def origins_A(self) -> np.ndarray:
        """``(M, 2)`` RELION origins (x, y) in Å (3.0 pixel origins converted), zeros when absent."""
        if "rlnOriginXAngst" in self.particles:
            return np.stack([self.column("rlnOriginXAngst"), self.column("rlnOriginYAngst", 0.0)], 1)
        if "rlnOriginX" in self.particles:
            apix = self.apix if self.apix else 1.0
            return np.stack([self.column("rlnOriginX"), self.column("rlnOriginY", 0.0)], 1) * apix
        return np.zeros((len(self), 2))

    def ctf_params(self) -> dict[str, np.ndarray]:
        """Per-particle CTF parameters named as :func:`cryoposenet.physics.ctf.ctf_2d` takes them."""
        u = self.column("rlnDefocusU")
        return {
            "defocus_u_A": u,
            "defocus_v_A": self.column("rlnDefocusV") if "rlnDefocusV" in self.particles else u,
            "defocus_angle_deg": self.column("rlnDefocusAngle", 0.0),
            "voltage_kv": self.column("rlnVoltage", 300.0),
            "cs_mm": self.column("rlnSphericalAberration", 2.7),
            "amplitude_contrast": self.column("rlnAmplitudeContrast", 0.1),
            "phase_shift_deg": self.column("rlnPhaseShift", 0.0),
        }

    def image_refs(self) -> tuple[np.ndarray, list[Path]]:
        """``(indices0, paths)``: 0-based image index in its stack and the resolved stack path per row."""
        if "rlnImageName" not in self.particles:
            raise InputError("missing column rlnImageName", self.source)
        names = self.particles["rlnImageName"].astype(str)
        parts = names.str.split("@", n=1, expand=True)
        if parts.shape[1] == 1:  # 'stack.mrc' alone: a single image per file
            index = np.zeros(len(names), dtype=np.int64)
            rel = parts[0]
        else:
            rel = parts[1].where(parts[1].notna(), parts[0])
            idx = pd.to_numeric(parts[0].where(parts[1].notna(), "1"), errors="coerce")
            if idx.isna().any() or (idx < 1).any():
                bad = names[idx.isna() | (idx < 1)].iloc[0]
                raise InputError(f"bad rlnImageName {bad!r} (expected N@stack.mrcs)", self.source)
            index = idx.to_numpy(dtype=np.int64) - 1
        cache: dict[str, Path] = {}
        paths = [cache.setdefault(r, self.base_dir / r) for r in rel]
        return index, paths


def _read_blocks(path: Path) -> dict[str, pd.DataFrame]:
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises many types on malformed text
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise InputError(f"not a readable STAR file ({reason})", path) from None
    return {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}


def _particle_block(blocks: dict[str, pd.DataFrame], path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    optics = blocks.get("optics")
    if "particles" in blocks:
        parts = blocks["particles"]
    else:
        loops = [b for name, b in blocks.items() if name != "optics" and "rlnImageName" in b]
        if not loops:
            raise InputError("no particle block with rlnImageName", path)
        parts = loops[0]
    if len(parts) == 0:
        raise InputError("the STAR file holds no particles", path)
    return parts.reset_index(drop=True), optics


def _join_optics(parts: pd.DataFrame, optics: pd.DataFrame, path: Path) -> pd.DataFrame:
    if "rlnOpticsGroup" not in optics or "rlnOpticsGroup" not in parts:
        raise InputError("data_optics present but rlnOpticsGroup missing", path)
    extra = [c for c in optics.columns if c not in parts.columns or c == "rlnOpticsGroup"]
    merged = parts.merge(optics[extra], on="rlnOpticsGroup", how="left", validate="many_to_one")
    probe = next((c for c in extra if c != "rlnOpticsGroup"), None)
    if probe is not None and merged[probe].isna().any():
        raise InputError("a particle's rlnOpticsGroup is not in data_optics", path)
    return merged


def _star_apix(parts: pd.DataFrame, path: Path) -> float | None:
    if "rlnImagePixelSize" in parts:
        values = parts["rlnImagePixelSize"]
    elif "rlnDetectorPixelSize" in parts and "rlnMagnification" in parts:
        values = parts["rlnDetectorPixelSize"] * 1e4 / parts["rlnMagnification"]
    elif "rlnPixelSize" in parts:
        values = parts["rlnPixelSize"]
    else:
        return None
    values = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).all() or (values <= 0).any():
        raise InputError("pixel size is missing or not positive for some particles", path)
    if np.ptp(values) > 1e-4 * values.max():
        raise InputError(f"particles have different pixel sizes ({values.min()}–{values.max()} Å)", path)
    return float(values[0])


def read_star(path: str | os.PathLike, datadir: str | os.PathLike | None = None) -> ParticleTable:
    """Read a RELION 3.0 or 3.1+ particle STAR file into a :class:`ParticleTable`.

    ``datadir`` overrides the folder that ``rlnImageName`` paths are relative to (default: the
    STAR file's folder).
    """
    path = Path(path)
    parts, optics = _particle_block(_read_blocks(path), path)
    original = list(parts.columns)
    merged = _join_optics(parts, optics, path) if optics is not None else parts
    table = ParticleTable(
        particles=merged,
        optics=optics,
        base_dir=Path(datadir) if datadir is not None else path.parent,
        apix=_star_apix(merged, path),
        source=path,
        original_columns=original,
    )
    _check_numeric(table)
    return table


def _check_numeric(table: ParticleTable) -> None:
    numeric = [
        *ANGLE_COLUMNS,
        "rlnOriginXAngst",
        "rlnOriginYAngst",
        "rlnOriginX",
        "rlnOriginY",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnPhaseShift",
    ]
    for col in numeric:
        if col in table.particles:
            values = pd.to_numeric(table.particles[col], errors="coerce")
            if values.isna().any():
                raise InputError(f"column {col} has non-numeric or empty values", table.source)
            table.particles[col] = values.astype(np.float64)


def default_optics(
    apix: float, box: int, voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1
) -> pd.DataFrame:
    """A one-group ``data_optics`` block."""
    return pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnVoltage": [voltage_kv],
            "rlnSphericalAberration": [cs_mm],
            "rlnAmplitudeContrast": [amplitude_contrast],
            "rlnImagePixelSize": [apix],
            "rlnImageSize": [box],
            "rlnImageDimensionality": [2],
        }
    )


def write_star(path: str | os.PathLike, particles: pd.DataFrame, optics: pd.DataFrame) -> None:
    """Write RELION 3.1 STAR (``data_optics`` + ``data_particles``) atomically.

    Optics columns are dropped from the particle rows (they live in ``data_optics``) and
    ``rlnPhaseShift`` is written (0 when absent) so strict readers work.
    """
    parts = particles.copy()
    if "rlnOpticsGroup" not in parts:
        parts["rlnOpticsGroup"] = 1
    if "rlnPhaseShift" not in parts and "rlnDefocusU" in parts:
        parts["rlnPhaseShift"] = 0.0
    drop = [c for c in optics.columns if c in parts.columns and c != "rlnOpticsGroup"]
    parts = parts.drop(columns=drop)
    with atomic_path(path) as tmp:
        starfile.write({"optics": optics, "particles": parts}, tmp, float_format="%.6f")
