"""How a particle set enters training: the training box, the contrast sign and the shift mode.

Each is resolved once, from the flags and the data, printed at the start and recorded in
``config.yaml`` (``data:``), so ``--resume`` and ``predict`` read the particles the same way:

- **box** (``--box N``): particles are Fourier-cropped on the fly to ``N`` pixels of
  ``apix · n / N`` Å (:mod:`cryoposenet.physics.fourier_crop`); default: the particles' own box
  up to 128 px, else 128 px. CTFs are evaluated and known translations taken at the cropped
  pixel size.
- **invert** (``--invert`` / ``--no-invert``): images × −1 as they are read; default: detected
  (:mod:`cryoposenet.training.contrast`). Undetermined contrast trains as given, with a warning.
- **shifts** (``--shifts search|known|none``): ``known`` takes the STAR file's origins, ``none``
  takes every particle as centred, ``search`` leaves the translations to the pose search
  (``ParticleData.translations_px`` None, :mod:`cryoposenet.training.shift_search`); default ``known``
  when the STAR file has origin columns, else ``search``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import InputError
from ..io.particles import ParticleStack
from ..io.star import ParticleTable
from ..physics.fourier_crop import DEFAULT_BOX, cropped_apix, default_box, fourier_crop
from ..physics.imaging import origin_to_translation
from ..physics.rotations import relion_angles_to_matrix
from .contrast import Contrast, detect_contrast
from .data import StackImages, checked_box, sample_rows
from .shift_search import default_shift_range
from .train import ParticleData

__all__ = [
    "DataSettings",
    "SHIFT_MODES",
    "CONTRAST_IMAGES",
    "resolve_settings",
    "particle_data",
    "ctf_tensors",
    "contrast_setting",
    "origins_out_A",
    "settings_from_config",
    "check_resumed",
    "reference_at",
]

log = logging.getLogger(__name__)
SHIFT_MODES = ("search", "known", "none")
CONTRAST_IMAGES = 500  # images the contrast sign is measured on (200 gave |z| ≥ 57 at −10 dB)


@dataclass(frozen=True)
class DataSettings:
    """How the particles are read: training ``box`` and its pixel size ``apix``, the particles'
    own ``particle_box`` and ``particle_apix``, ``invert``, ``shifts``, and how the contrast was set."""

    box: int
    apix: float
    particle_box: int
    particle_apix: float
    invert: bool
    shifts: str
    contrast: str = ""  # how the contrast sign was set (detected, with its z-score, or a flag)
    box_rule: str = ""  # how the box was set

    @property
    def cropped(self) -> bool:
        return self.box < self.particle_box

    def describe(self) -> list[str]:
        """Lines printed at the start of a run."""
        own = f"particles {self.particle_box} px of {self.particle_apix:.4g} Å"
        how = f"{own}, Fourier-cropped" if self.cropped else "the particles' own"
        box = f"training box {self.box} px of {self.apix:.4g} Å ({self.box_rule}; {how})"
        sign = "inverted (× −1)" if self.invert else "as stored"
        shifts = {
            "known": "known (the STAR file's origins)",
            "none": "none (every particle taken as centred)",
            "search": f"searched with the poses, within ±{default_shift_range(self.box):g} px "
            f"({default_shift_range(self.box) * self.apix:.3g} Å) of the box centre",
        }[self.shifts]
        return [box, f"contrast: {self.contrast}; images {sign}", f"shifts: {shifts}"]

    def to_config(self) -> dict:
        return asdict(self)


def ctf_tensors(table: ParticleTable) -> dict[str, torch.Tensor] | None:
    """Per-particle CTF parameters as float32 ``(M,)`` tensors, or None without a CTF."""
    if not table.has_ctf:
        return None
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in table.ctf_params().items()}


def _box(stack: ParticleStack, box: int | None) -> int:
    if box is None:
        return default_box(stack.box)  # the particles' box up to DEFAULT_BOX, else DEFAULT_BOX
    return checked_box(stack, box)


def _shifts(table: ParticleTable, shifts: str | None) -> str:
    if shifts is None:
        return "known" if table.has_origins else "search"
    if shifts not in SHIFT_MODES:
        raise InputError(f"--shifts must be one of {', '.join(SHIFT_MODES)}, got {shifts!r}")
    if shifts == "known" and not table.has_origins:
        raise InputError(
            "--shifts known needs rlnOriginXAngst/YAngst (or rlnOriginX/Y) in the STAR file", table.source
        )
    return shifts


def detect(stack: ParticleStack, box: int, count: int = CONTRAST_IMAGES) -> Contrast:
    """The contrast sign of a seeded sample of the particles, read at the training ``box``."""
    images = StackImages(stack, box=box)
    ctf = ctf_tensors(stack.table)
    return detect_contrast(images, sample_rows(len(stack), count), images.apix, ctf)


def contrast_setting(stack: ParticleStack, box: int, invert: bool | None) -> tuple[bool, str]:
    """``(invert, how)``: the flag's value, or the detected sign (a warning when undetermined)."""
    if invert is not None:
        return invert, "set by --invert" if invert else "set by --no-invert"
    found = detect(stack, box)
    if found.sign == 0:
        log.warning(
            "%s: the contrast sign could not be detected (%s); training on the images as stored. "
            "If the map comes out negative, run again with --invert.",
            stack.table.source,
            found.describe(),
        )
    return found.dark, f"detected {found.describe()}"


def resolve_settings(
    stack: ParticleStack, box: int | None = None, shifts: str | None = None, invert: bool | None = None
) -> DataSettings:
    """The :class:`DataSettings` of a particle stack for these flags (None: the default)."""
    n = _box(stack, box)
    mode = _shifts(stack.table, shifts)
    flip, how = contrast_setting(stack, n, invert)
    apix = cropped_apix(stack.apix, stack.box, n)
    rule = "--box" if box is not None else f"default: the particles' box up to {DEFAULT_BOX} px"
    return DataSettings(n, apix, stack.box, stack.apix, flip, mode, how, rule)


def particle_data(stack: ParticleStack, settings: DataSettings | None = None) -> ParticleData:
    """A stack's per-particle parameters as :class:`ParticleData` tensors; images stay in the files.

    The images are a :class:`~cryoposenet.training.data.StackImages` (read in batches, cropped and inverted
    as ``settings`` say; default: the particles as stored, known origins); translations are in
    training pixels, None for ``shifts="search"``.
    """
    s = settings or DataSettings(stack.box, stack.apix, stack.box, stack.apix, False, "known")
    table = stack.table
    images = StackImages(stack, box=s.box, invert=s.invert)
    origins = torch.as_tensor(table.origins_A(), dtype=torch.float32)
    if s.shifts == "none":
        origins = torch.zeros_like(origins)
    translations = None if s.shifts == "search" else origin_to_translation(origins, images.apix)
    rotations = relion_angles_to_matrix(table.angles_deg()).float() if table.has_angles else None
    return ParticleData(images, images.apix, ctf_tensors(table), translations, rotations)


def origins_out_A(table: ParticleTable, settings: DataSettings, translations_px=None) -> np.ndarray:
    """RELION origins ``(M, 2)`` in Å for ``poses.star``: the STAR file's (``known``), zeros
    (``none``), or, given ``translations_px`` ``(M, 2)`` in training pixels (a shift search's),
    those; Å do not depend on the pixel size, so they hold at the particles' own box."""
    if translations_px is not None:
        return (-torch.as_tensor(translations_px, dtype=torch.float64) * settings.apix).numpy()
    if settings.shifts == "known":
        return table.origins_A()
    return np.zeros((len(table), 2))


def settings_from_config(doc: dict, stack: ParticleStack) -> DataSettings:
    """The :class:`DataSettings` a run recorded in ``config.yaml`` (``data:``); a run from before
    they were recorded read the particles as stored, with known origins."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not data:
        return DataSettings(stack.box, stack.apix, stack.box, stack.apix, False, "known", "as stored")
    return DataSettings(**{k: data[k] for k in DataSettings.__dataclass_fields__ if k in data})


def check_resumed(settings: DataSettings, box=None, shifts=None, invert=None, path=None) -> None:
    """A flag given with ``--resume`` must agree with the run's recorded settings."""
    given = {"box": box, "shifts": shifts, "invert": invert}
    for name, value in given.items():
        if value is not None and value != getattr(settings, name):
            flag = {"box": "--box", "shifts": "--shifts", "invert": "--invert/--no-invert"}[name]
            raise InputError(f"{flag} {value} differs from the run's {getattr(settings, name)}", path)


def reference_at(reference: np.ndarray, settings: DataSettings, path) -> np.ndarray:
    """A ground-truth map at the training box: as given, or Fourier-cropped from the particles' box."""
    n = reference.shape[-1]
    if n == settings.box:
        return reference
    if n == settings.particle_box:
        return fourier_crop(torch.as_tensor(reference, dtype=torch.float64), settings.box, ndim=3).numpy()
    raise InputError(f"reference box {n} differs from the images' ({settings.particle_box} px)", path)
