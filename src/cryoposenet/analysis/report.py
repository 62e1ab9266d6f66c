"""``cryoposenet report RUN``: PNG plots and one self-contained HTML page of a training run.

Everything is computed from the run folder (``metrics.csv``, ``map.mrc``, ``poses.star``,
``config.yaml``, ``checkpoint.pt``) and, when the run was given one, the reference map and the
ground-truth angles of its STAR file. The page links PNGs beside it: no server, no internet.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from ..errors import InputError  # noqa: E402
from ..io.atomic import atomic_path, write_text_atomic  # noqa: E402
from ..io.mrc import read_map  # noqa: E402
from ..io.particles import load_particles  # noqa: E402
from ..io.star import read_star  # noqa: E402
from ..physics.ctf import ctf_half_plane  # noqa: E402
from ..physics.imaging import origin_to_translation, render  # noqa: E402
from ..physics.projection import volume_to_fourier  # noqa: E402
from ..physics.rotations import relion_angles_to_matrix  # noqa: E402
from .evaluation import detect_symmetry, evaluate_maps, matched_rotations  # noqa: E402
from .metrics import align_map, align_rotations  # noqa: E402
from .views import direction_coverage, viewing_directions  # noqa: E402

__all__ = ["write_report"]


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path.name


def _curves(metrics: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    figs = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(metrics["step"], metrics["loss"], lw=0.8)
    ax.set(xlabel="step", ylabel="loss (fraction of image variance)", yscale="log", title="Training loss")
    figs.append(("Loss", _save(fig, out / "loss.png")))
    ev = metrics.dropna(subset=["pose_mae_deg"]) if "pose_mae_deg" in metrics else metrics.iloc[:0]
    if len(ev):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
        floor = 1e-3  # log axis: below a thousandth of a degree is shown as that
        a1.plot(ev["step"], ev["pose_mae_deg"].clip(lower=floor), "o-", label="mean")
        a1.plot(ev["step"], ev["pose_median_deg"].clip(lower=floor), "s--", label="median")
        if ev.get("pose_mae_sym_deg") is not None and ev["pose_mae_sym_deg"].notna().any():
            a1.plot(ev["step"], ev["pose_mae_sym_deg"].clip(lower=floor), "o-", label="mean, symmetry-aware")
            a1.plot(ev["step"], ev["pose_median_sym_deg"].clip(lower=floor), "s--", label="median, sym.")
        if ev.get("encoder_pose_mae_deg") is not None and ev["encoder_pose_mae_deg"].notna().any():
            # the run searched: the curves above are the search's poses, this is the encoder's own
            key = (
                "encoder_pose_mae_sym_deg"
                if ev["encoder_pose_mae_sym_deg"].notna().any()
                else "encoder_pose_mae_deg"
            )
            a1.plot(ev["step"], ev[key].clip(lower=floor), "^:", color="grey", label="encoder alone, mean")
        a1.set(xlabel="step", ylabel="pose error after alignment (°)", yscale="log", title="Pose error")
        a1.legend()
        a2.plot(ev["step"], ev["fsc05_A"], "o-", label="FSC 0.5")
        a2.plot(ev["step"], ev["fsc0143_A"], "s--", label="FSC 0.143")
        a2.set(xlabel="step", ylabel="resolution vs reference (Å)", title="Map resolution")
        a2.legend()
        figs.append(("Evaluation during training", _save(fig, out / "evaluation.png")))
    return figs


def _fsc_plot(curve: np.ndarray, n: int, apix: float, out: Path, label: str) -> str:
    freq = np.arange(len(curve)) / (n * apix)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(freq, curve, label=label)
    for t, style in ((0.5, "--"), (0.143, ":")):
        ax.axhline(t, color="grey", ls=style, lw=0.8)
        ax.text(freq[-1], t, f" {t}", va="center", fontsize=8)
    ax.set(
        xlabel="spatial frequency (1/Å)", ylabel="FSC", ylim=(-0.1, 1.05), title="FSC against the reference"
    )
    ax.legend()
    return _save(fig, out / "fsc.png")


def _views(maps: dict[str, np.ndarray], out: Path) -> str:
    rows = list(maps.items())
    fig, axes = plt.subplots(len(rows), 6, figsize=(12, 2.1 * len(rows)), squeeze=False)
    for r, (name, vol) in enumerate(rows):
        c = vol.shape[0] // 2
        panels = [vol[c], vol[:, c], vol[:, :, c], vol.sum(0), vol.sum(1), vol.sum(2)]
        titles = ["slice z", "slice y", "slice x", "projection z", "projection y", "projection x"]
        for k, (img, title) in enumerate(zip(panels, titles, strict=True)):
            axes[r, k].imshow(img, cmap="gray", origin="lower")
            axes[r, k].set_xticks([])
            axes[r, k].set_yticks([])
            if r == 0:
                axes[r, k].set_title(title, fontsize=9)
        axes[r, 0].set_ylabel(name)
    return _save(fig, out / "map_views.png")


def _histogram(errors: np.ndarray, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lo = 1e-2  # errors below it (e.g. known poses) are counted in the first bin
    ax.hist(np.clip(errors, lo, 180), bins=np.logspace(np.log10(lo), np.log10(180), 40))
    ax.set(
        xscale="log",
        xlabel="pose error after global alignment (°)",
        ylabel="particles",
        title=f"Pose errors: mean {errors.mean():.2f}°, median {np.median(errors):.2f}°",
    )
    return _save(fig, out / "pose_errors.png")


def _montage(star: Path, poses: Path, volume: np.ndarray, out: Path, count: int = 8) -> str:
    """Particle images beside the map rendered at their estimated poses (with their CTF and shift)."""
    from .reconstruct import poses_for_table

    stack = load_particles(star)
    rows = np.linspace(0, len(stack) - 1, min(count, len(stack))).astype(int)
    angles = poses_for_table(stack.table, read_star(poses))[rows]
    images = stack[rows]
    table = stack.table
    ctf = None
    if table.has_ctf:
        params = {k: torch.as_tensor(v[rows]) for k, v in table.ctf_params().items()}
        ctf = ctf_half_plane(stack.box, stack.apix, dtype=torch.float64, **params)
    shifts = origin_to_translation(torch.as_tensor(table.origins_A()[rows]), stack.apix)
    fvol = volume_to_fourier(torch.as_tensor(volume, dtype=torch.float64))
    rendered = render(fvol, relion_angles_to_matrix(angles), ctf, shifts).numpy()
    fig, axes = plt.subplots(2, len(rows), figsize=(1.6 * len(rows), 3.6), squeeze=False)
    for k in range(len(rows)):
        for r, (img, name) in enumerate(((images[k], "image"), (rendered[k], "rendered"))):
            axes[r, k].imshow(img, cmap="gray", origin="lower")
            axes[r, k].set_xticks([])
            axes[r, k].set_yticks([])
            if k == 0:
                axes[r, k].set_ylabel(name)
        axes[0, k].set_title(f"#{rows[k] + 1}", fontsize=8)
    return _save(fig, out / "montage.png")


def _directions(poses: Path, out: Path, facts: list) -> str:
    """An equal-area map of the poses' viewing directions (azimuth against cos of the polar angle:
    equal areas of the sphere are equal areas of the plot), with their coverage in ``facts``."""
    rotations = relion_angles_to_matrix(read_star(poses).angles_deg()).numpy()
    d = viewing_directions(rotations)
    coverage = direction_coverage(d)
    facts.append(("viewing directions", coverage.describe() + (" (concentrated)" * coverage.concentrated)))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    *_, image = ax.hist2d(
        np.degrees(np.arctan2(d[:, 1], d[:, 0])), d[:, 2], bins=(36, 18), range=((-180, 180), (-1, 1))
    )
    fig.colorbar(image, ax=ax, label="particles per bin")
    ax.set(xlabel="azimuth (°)", ylabel="cos(polar angle)", title="Viewing directions (equal-area bins)")
    return _save(fig, out / "viewing_directions.png")


def _page(title: str, facts: list[tuple[str, str]], figures: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    figs = "".join(
        f'<h2>{html.escape(t)}</h2><img src="{html.escape(src)}" alt="{html.escape(t)}">'
        for t, src in figures
    )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}th{text-align:left;padding-right:1em}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><table>{rows}</table>"
        f"{figs}</body></html>\n"
    )


def _reference_figures(run: Path, config: dict, volume: np.ndarray, apix: float, facts, figures) -> None:
    """Alignment, FSC, pose-error histogram and side-by-side views when the run had a reference."""
    ref_path, truth = config.get("ref"), read_star(Path(config["star"]))
    reference = read_map(ref_path)[0] if ref_path and Path(ref_path).is_file() else None
    group, info = detect_symmetry(reference) if reference is not None else (None, {})
    if group is not None:
        facts.append(
            (
                "reference pseudo-symmetry",
                f"{info['angle_deg']:.1f}° rotation, correlation {info['correlation']:.3f}",
            )
        )
    shown = {"estimate": volume}
    if truth.has_angles:
        poses = matched_rotations(read_star(run / "poses.star"), truth)
        alignment = align_rotations(*poses)
        facts.append(
            ("pose error, mean / median", f"{alignment.mean_deg:.2f}° / {alignment.median_deg:.2f}°")
        )
        if group is not None:
            alignment = align_rotations(*poses, symmetry=group)
            text = f"{alignment.mean_deg:.2f}° / {alignment.median_deg:.2f}°"
            facts.append(("pose error to the nearest symmetry branch, mean / median", text))
        facts.append(("handedness", "flipped" if alignment.mirrored else "same"))
        figures.append(("Pose errors", _histogram(alignment.errors_deg, run)))
        shown = {"estimate (aligned)": align_map(volume, alignment)}
    if reference is not None:
        maps = evaluate_maps(next(iter(shown.values())), reference, apix, alignment=None)  # already aligned
        facts.append(("FSC 0.5 / 0.143 vs reference", f"{maps.fsc05_A:.2f} Å / {maps.fsc0143_A:.2f} Å"))
        figures.append(("FSC", _fsc_plot(maps.fsc_curve, reference.shape[-1], apix, run, "learned map")))
        shown["reference"] = reference
    figures.append(("Central slices and projections", _views(shown, run)))


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``report.html`` and its PNGs into the run folder; returns the page's path."""
    run = Path(run_dir)
    for name in ("config.yaml", "metrics.csv", "map.mrc", "poses.star"):
        if not (run / name).is_file():
            raise InputError(f"not a finished cryoposenet run (no {name})", run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    metrics = pd.read_csv(run / "metrics.csv")
    volume, apix = read_map(run / "map.mrc")
    train_cfg = config.get("train", {})
    facts = [
        ("STAR file", str(config.get("star"))),
        ("steps", str(int(metrics["step"].max()))),
        ("poses", str(train_cfg.get("poses"))),
        ("rotation", str(train_cfg.get("rotation"))),
        ("box / pixel size", f"{volume.shape[-1]} px / {apix:.3f} Å"),
        ("final loss", f"{metrics['loss'].dropna().iloc[-1]:.4g}"),
    ]
    figures = _curves(metrics, run)
    figures.append(("Viewing directions of the poses", _directions(run / "poses.star", run, facts)))
    _reference_figures(run, config, volume, apix or 1.0, facts, figures)
    if Path(config["star"]).is_file():
        figures.append(
            (
                "Images and the map rendered at their estimated poses",
                _montage(Path(config["star"]), run / "poses.star", volume, run),
            )
        )
    page = run / "report.html"
    where = run.resolve()
    title = f"cryoposenet run {where.parent.name}/{where.name}"  # "demo/run", not "run run"
    write_text_atomic(page, _page(title, facts, figures))
    return page
