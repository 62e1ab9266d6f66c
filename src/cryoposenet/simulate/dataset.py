"""``simulate_dataset``: an atomic model or a map → a RELION particle data set (the paper's recipe).

Pipeline per batch of images (never the whole stack in memory): poses uniform on SO(3) →
real-space rotate-and-project (:mod:`.projector`) → CTF on a 2×-padded grid and Fourier shift
(:mod:`.forward`) → white Gaussian noise → written into ``particles.mrcs`` by
:class:`cryoposenet.io.mrc.StackWriter`.

SNR (dB) = 10·log10(var(signal) / var(noise)), signal = the CTF-corrupted, shifted projection,
variance over all pixels of the data set. The noise level is fixed from a **pilot**: the first
``min(n, 1024)`` images of the data set itself (their signal is held until the level is known, then
written with noise like every other image), so no image is computed twice. The variance over the
whole data set is accumulated as images stream by, and the SNR actually achieved (whole-set signal
variance over the realised noise variance) is reported in :class:`SimulationResult`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..io.mrc import StackWriter, write_map
from ..io.star import default_optics, write_star
from .forward import form_images
from .maps import load_map_volume
from .montage import write_montage
from .params import ImageParams, noise_generator, particle_table, rotations_from_angles, sample_params
from .potential import AtomSet, blur_A2, potential_from_atoms, read_atoms
from .presets import preset_params
from .projector import support_radius_px

__all__ = [
    "SimulationResult",
    "simulate_dataset",
    "load_ground_truth",
    "PILOT_IMAGES",
    "DEFAULT_BOX",
    "DEFAULT_APIX",
]

PILOT_IMAGES = 1024
DEFAULT_BOX = 128  # the paper's box and pixel size
DEFAULT_APIX = 0.8
MONTAGE_IMAGES = 8


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate_dataset` wrote and measured (SNR in dB; None when noiseless)."""

    out_dir: Path
    particles: Path
    train_star: Path
    heldout_star: Path
    map: Path
    montage: Path
    n_images: int
    n_train: int
    n_heldout: int
    box: int
    apix: float
    snr_db: float | None
    snr_db_measured: float | None
    signal_var: float
    noise_sigma: float
    seconds: float
    bfactor_A2: float | None = None  # the B added to every atom; None for a map source


@dataclass(frozen=True)
class _Settings:
    snr_db: float | None
    defocus_um: tuple[float, float] | None
    astigmatism: bool


def _resolve(preset, snr_db, ctf, defocus_min_um, defocus_max_um, astigmatism) -> _Settings:
    """Preset first, explicit (non-None) arguments override it; then defaults; then checks."""
    given = {
        "snr_db": snr_db,
        "ctf": ctf,
        "defocus_min_um": defocus_min_um,
        "defocus_max_um": defocus_max_um,
        "astigmatism": astigmatism,
    }
    base = preset_params(preset) if preset is not None else {}
    p = {k: (v if v is not None else base.get(k)) for k, v in given.items()}
    snr = p["snr_db"]
    if snr is not None and (math.isnan(snr) or snr == -math.inf):
        raise InputError(f"--snr-db must be a number or inf, not {snr}")
    snr = None if snr is None or snr == math.inf else float(snr)
    if not p["ctf"]:
        return _Settings(snr, None, False)
    lo = 0.4 if p["defocus_min_um"] is None else float(p["defocus_min_um"])
    hi = 1.2 if p["defocus_max_um"] is None else float(p["defocus_max_um"])
    if not (0 < lo <= hi):
        raise InputError(f"defocus range must satisfy 0 < min <= max (µm), got {lo}–{hi}")
    return _Settings(snr, (lo, hi), True if p["astigmatism"] is None else bool(p["astigmatism"]))


def load_ground_truth(
    pdb=None,
    map_path=None,
    volume=None,
    atoms: AtomSet | None = None,
    *,
    box: int,
    apix: float,
    bfactor: float | None = None,
) -> np.ndarray:
    """The ground-truth map ``(box,)*3`` float32 ``[z, y, x]`` from exactly one source.

    ``bfactor`` (Å², default ``32·apix²``) blurs atomic models only; with a map it is an error.
    """
    sources = [s for s in (pdb, map_path, volume, atoms) if s is not None]
    if len(sources) != 1:
        raise InputError("give exactly one of --pdb FILE or --map FILE")
    if pdb is not None:
        return potential_from_atoms(read_atoms(pdb), box, apix, bfactor=bfactor)
    if atoms is not None:
        return potential_from_atoms(atoms, box, apix, bfactor=bfactor)
    if bfactor is not None:
        raise InputError("--bfactor blurs the atoms of an atomic model (--pdb); a map has none", map_path)
    if map_path is not None:
        return load_map_volume(map_path, box, apix)
    vol = np.asarray(volume, dtype=np.float32)
    if vol.shape != (box,) * 3:
        raise InputError(f"volume has shape {vol.shape}, expected ({box}, {box}, {box})")
    return vol


def _check_sizes(box: int, apix: float, n_images: int, heldout: int, shift_max_A: float) -> None:
    if int(box) != box or box < 8:
        raise InputError(f"--box must be an integer >= 8, got {box}")
    if not (apix > 0 and math.isfinite(apix)):
        raise InputError(f"--apix must be a positive number of Å, got {apix}")
    if int(n_images) != n_images or n_images < 1:
        raise InputError(f"-n must be a positive integer, got {n_images}")
    if int(heldout) != heldout or not 0 <= heldout < n_images:
        raise InputError(f"--heldout must be in [0, {n_images - 1}] (train needs an image), got {heldout}")
    if not (shift_max_A >= 0 and math.isfinite(shift_max_A)):
        raise InputError(f"--shift-max must be >= 0 Å, got {shift_max_A}")


class _Moments:
    """Running count, sum and sum of squares (float64) of all pixels seen."""

    def __init__(self):
        self.count, self.sum, self.sumsq = 0, 0.0, 0.0

    def add(self, x: torch.Tensor) -> None:
        x = x.double()
        self.count += x.numel()
        self.sum += float(x.sum())
        self.sumsq += float((x * x).sum())

    @property
    def var(self) -> float:
        mean = self.sum / max(self.count, 1)
        return max(self.sumsq / max(self.count, 1) - mean * mean, 0.0)


class _Stream:
    """Adds noise and writes batches in order; holds the pilot's signal until the noise level is set."""

    def __init__(self, writer: StackWriter, snr_db: float | None, pilot_images: int, seed: int, bar):
        self.writer, self.snr_db, self.pilot_images, self.bar = writer, snr_db, pilot_images, bar
        self.gen = noise_generator(seed)
        self.signal, self.noise = _Moments(), _Moments()
        self.sigma = 0.0 if snr_db is None else None
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.seen = 0
        self.first_noisy: torch.Tensor | None = None

    def push(self, start: int, signal: torch.Tensor) -> None:
        """Images ``start .. start+B−1``: signal ``(B, N, N)``, in order."""
        self.signal.add(signal)
        self.seen += len(signal)
        self.bar.update(len(signal))
        if self.sigma is not None:
            self._write(start, signal)
            return
        self.pending.append((start, signal))
        if self.seen >= self.pilot_images:
            self._set_sigma()

    def finish(self) -> None:
        if self.pending:
            self._set_sigma()

    def _set_sigma(self) -> None:
        self.sigma = math.sqrt(self.signal.var / 10 ** (self.snr_db / 10))
        for start, signal in self.pending:
            self._write(start, signal)
        self.pending = []

    def _write(self, start: int, signal: torch.Tensor) -> None:
        images = signal
        if self.sigma > 0:
            noise = torch.randn(signal.shape, generator=self.gen, dtype=signal.dtype) * self.sigma
            self.noise.add(noise)
            images = signal + noise
        if start == 0:
            self.first_noisy = images[:MONTAGE_IMAGES].clone()
        self.writer[start : start + len(images)] = images.numpy()

    @property
    def snr_db_measured(self) -> float | None:
        if self.noise.count == 0 or self.noise.var == 0:
            return None
        return 10 * math.log10(self.signal.var / self.noise.var)


def _batch_size(box: int) -> int:
    """Images per batch: about 2 Mpixel (8 MB of float32 images), 16 to 512."""
    return int(max(16, min(512, 2**21 // box**2)))


def _render_stack(
    path: Path,
    vol: np.ndarray,
    params: ImageParams,
    apix: float,
    snr_db: float | None,
    seed: int,
    progress: bool,
):
    """Stream all images into ``path``; returns the stream and the first images' projections/signal."""
    n, box = len(params), vol.shape[0]
    vol_t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))
    radius = support_radius_px(vol_t)
    batch = _batch_size(box)
    first = None
    with (
        StackWriter(path, n, box, apix) as writer,
        tqdm(total=n, unit="img", desc="simulate", disable=not progress) as bar,
    ):
        stream = _Stream(writer, snr_db, min(n, PILOT_IMAGES), seed, bar)
        for start in range(0, n, batch):
            sl = slice(start, min(start + batch, n))
            rot = rotations_from_angles(params.angles_deg[sl])
            ctf = params.ctf.subset(sl) if params.ctf is not None else None
            origins = params.origins_A[sl] if params.origins_A is not None else None
            proj, signal = form_images(vol_t, rot, apix, ctf, origins, radius_px=radius)
            if first is None:
                first = (proj[:MONTAGE_IMAGES].clone(), signal[:MONTAGE_IMAGES].clone())
            stream.push(start, signal)
        stream.finish()
    return stream, first


def _write_montage(
    path: Path, first, stream: _Stream, params: ImageParams, box: int, apix: float, bfactor: float | None
) -> None:
    proj, signal = first
    rows = {"projection": proj.numpy()}
    stages = [s for s, on in (("CTF", params.ctf is not None), ("shift", params.origins_A is not None)) if on]
    if stages:
        rows["+ " + " + ".join(stages)] = signal.numpy()
    if stream.snr_db is not None:
        rows[f"+ noise ({stream.snr_db:g} dB)"] = stream.first_noisy.numpy()
    blur = "" if bfactor is None else f", B {bfactor:.3g} Å²"
    write_montage(path, rows, title=f"{len(params)} images, {box} px of {apix:g} Å{blur}")


def _output_paths(out_dir: str | os.PathLike) -> tuple[Path, dict[str, Path]]:
    """The output folder (made) and SPEC's file names in it, keyed as in ``SimulationResult``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {
        "particles": "particles.mrcs",
        "train_star": "train.star",
        "heldout_star": "heldout.star",
        "map": "map.mrc",
        "montage": "montage.png",
    }
    return out, {key: out / name for key, name in names.items()}


def simulate_dataset(
    out_dir: str | os.PathLike,
    *,
    pdb: str | os.PathLike | None = None,
    map_path: str | os.PathLike | None = None,
    volume: np.ndarray | None = None,
    atoms: AtomSet | None = None,
    box: int = DEFAULT_BOX,
    apix: float = DEFAULT_APIX,
    n_images: int = 10_000,
    heldout: int | None = None,
    snr_db: float | None = None,
    ctf: bool | None = None,
    defocus_min_um: float | None = None,
    defocus_max_um: float | None = None,
    astigmatism: bool | None = None,
    shift_max_A: float = 0.0,
    seed: int = 0,
    preset: str | None = None,
    progress: bool = True,
    bfactor: float | None = None,
) -> SimulationResult:
    """Simulate ``n_images`` particle images of one ground truth and write the SPEC's files.

    Exactly one source: ``pdb`` (PDB/mmCIF file), ``map_path`` (MRC map, resampled to ``box`` ×
    ``apix`` if needed), ``volume`` (array ``(box,)*3`` ``[z, y, x]`` at ``apix``) or ``atoms``.
    ``heldout`` (default 10 %): the last images, in ``heldout.star``; the rest in ``train.star``.
    ``snr_db`` None or inf: noiseless. ``preset`` (A..G, Table 1) sets ``snr_db``, ``ctf``,
    ``defocus_*_um`` and ``astigmatism``; those given explicitly (not None) override it. Without
    a preset: no CTF; with CTF, defocus 0.4–1.2 µm and astigmatism on. ``shift_max_A``: origins
    uniform in a disc of that radius (Å). ``bfactor``: the B (Å²) added to every atom of an atomic
    model (default ``32·apix²``; an error with a map). Writes ``particles.mrcs``, ``train.star``,
    ``heldout.star``, ``map.mrc`` and ``montage.png`` into ``out_dir``.
    """
    t0 = time.perf_counter()
    heldout = n_images // 10 if heldout is None else heldout
    _check_sizes(box, apix, n_images, heldout, shift_max_A)
    box, n_images, heldout = int(box), int(n_images), int(heldout)
    settings = _resolve(preset, snr_db, ctf, defocus_min_um, defocus_max_um, astigmatism)
    vol = load_ground_truth(pdb, map_path, volume, atoms, box=box, apix=apix, bfactor=bfactor)
    blur = blur_A2(apix, bfactor) if pdb is not None or atoms is not None else None
    if not np.any(vol):
        raise InputError("the ground-truth map is zero everywhere", map_path or pdb)
    params = sample_params(n_images, seed, shift_max_A, settings.defocus_um, settings.astigmatism)
    out, paths = _output_paths(out_dir)
    label = None if blur is None else f"cryoposenet simulate: B-factor {blur:.6g} A^2 on every atom"
    write_map(paths["map"], vol, apix, label=label)
    stream, first = _render_stack(paths["particles"], vol, params, apix, settings.snr_db, seed, progress)
    n_train = n_images - heldout
    optics = default_optics(apix, box)
    write_star(paths["train_star"], particle_table(params, slice(0, n_train)), optics)
    write_star(paths["heldout_star"], particle_table(params, slice(n_train, None)), optics)
    _write_montage(paths["montage"], first, stream, params, box, apix, blur)
    return SimulationResult(
        out_dir=out,
        **paths,
        n_images=n_images,
        n_train=n_train,
        n_heldout=heldout,
        box=box,
        apix=float(apix),
        snr_db=settings.snr_db,
        snr_db_measured=stream.snr_db_measured,
        signal_var=stream.signal.var,
        noise_sigma=float(stream.sigma or 0.0),
        seconds=time.perf_counter() - t0,
        bfactor_A2=blur,
    )
