"""Reliability of the contrast-sign detector (cryoposenet.training.contrast) on simulated stacks.

    python benchmarks/contrast.py --work /tmp/contrast --images 2000

Simulates the embedded 4AKE with CTF at several SNRs, defocus ranges and box sizes (cached in
``--work``), reads each stack as training would (Fourier-cropped to ``--box``), and prints the
z-score of the disc-minus-annulus statistic for three variants: raw images, phase-flipped
(the detector's choice) and CTF-multiplied, on all images and on the first 200. The statistic is
linear in the images, so an inverted stack gives exactly −z (checked on the first case).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from cryoposenet.io.particles import load_particles
from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.physics.fourier import fourier_to_image, image_to_fourier
from cryoposenet.simulate import default_molecule, simulate_dataset
from cryoposenet.training.contrast import detect_contrast, disc_minus_annulus
from cryoposenet.training.data import StackImages

CASES = {  # name: (box, apix, snr_db, defocus µm)
    "64 px 1.6 Å, 0 dB, 0.8–2.5 µm": (64, 1.6, 0.0, (0.8, 2.5)),
    "64 px 1.6 Å, −10 dB, 0.8–2.5 µm": (64, 1.6, -10.0, (0.8, 2.5)),
    "64 px 1.6 Å, −10 dB, 2.0–4.0 µm": (64, 1.6, -10.0, (2.0, 4.0)),
    "64 px 1.6 Å, −20 dB, 0.8–2.5 µm": (64, 1.6, -20.0, (0.8, 2.5)),
    "192 px 0.8 Å → 64, −10 dB, 0.8–2.5 µm": (192, 0.8, -10.0, (0.8, 2.5)),
}


def _z(scores: torch.Tensor) -> float:
    return scores.mean().item() / (scores.std().item() / math.sqrt(len(scores)))


def _variants(images: StackImages, ctf: dict, rows: torch.Tensor) -> dict[str, float]:
    n, apix = images.shape[-1], images.apix
    out = {"raw": [], "ctf-multiplied": []}
    for part in rows.split(256):
        batch = images[part].double()
        c = ctf_half_plane(n, apix, dtype=batch.dtype, **{k: v[part] for k, v in ctf.items()})
        out["raw"].append(disc_minus_annulus(batch))
        out["ctf-multiplied"].append(disc_minus_annulus(fourier_to_image(image_to_fourier(batch) * c, n)))
    return {k: _z(torch.cat(v)) for k, v in out.items()}


def _dataset(work: Path, name: str, case, images: int) -> Path:
    box, apix, snr, (dmin, dmax) = case
    folder = work / name.split(",")[0].replace(" ", "").replace("→", "to") / f"{snr:g}dB_{dmin:g}-{dmax:g}"
    if not (folder / "train.star").exists():
        simulate_dataset(
            folder, atoms=default_molecule(), box=box, apix=apix, n_images=images, heldout=0,
            snr_db=snr, ctf=True, defocus_min_um=dmin, defocus_max_um=dmax, shift_max_A=6.0,
            progress=False,
        )  # fmt: skip
    return folder / "train.star"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("contrast_bench"))
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--box", type=int, default=64, help="training box the stacks are cropped to")
    a = p.parse_args()
    print("| case | phase-flipped z (all / 200) | raw z | CTF-multiplied z |")
    print("|---|---:|---:|---:|")
    for k, (name, case) in enumerate(CASES.items()):
        stack = load_particles(_dataset(a.work, name, case, a.images))
        table = stack.table
        ctf = {key: torch.as_tensor(v) for key, v in table.ctf_params().items()}
        images = StackImages(stack, box=min(a.box, stack.box))
        rows = torch.arange(len(stack))
        found = detect_contrast(images, rows, images.apix, ctf)
        few = detect_contrast(images, rows[:200], images.apix, ctf)
        other = _variants(images, ctf, rows)
        raw, mult = other["raw"], other["ctf-multiplied"]
        print(f"| {name} | {found.z:+.1f} / {few.z:+.1f} | {raw:+.1f} | {mult:+.1f} |")
        if k == 0:
            inverted = detect_contrast(
                StackImages(stack, box=images.box, invert=True), rows, images.apix, ctf
            )
            print(f"| (same, inverted) | {inverted.z:+.1f} → {inverted.describe()} | | |")


if __name__ == "__main__":
    main()
