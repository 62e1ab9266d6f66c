"""Half-map FSC vs the truth: does `backproject`'s gold-standard estimate tell the real resolution?

Simulates a data set (4AKE when ../shared/data/4ake.pdb exists, else the embedded molecule),
backprojects it with the ground-truth poses into two half maps, and prints the half-map FSC
resolution (0.143) beside the full map's FSC against the ground truth (0.5), the pair that
should agree (Rosenthal & Henderson 2003), plus the time.

    python benchmarks/backproject.py --box 64 --apix 1.6 -n 5000 --preset D
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cryoposenet.analysis.metrics import fsc, resolution_at
from cryoposenet.analysis.reconstruct import run_backprojection
from cryoposenet.io import read_map
from cryoposenet.simulate import default_molecule, simulate_dataset

PDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "4ake.pdb"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--apix", type=float, default=1.6)
    p.add_argument("-n", type=int, default=5000)
    p.add_argument("--preset", nargs="+", default=["A", "D", "G"])
    p.add_argument("--wiener", type=float, default=1e-2)
    args = p.parse_args()
    source = {"pdb": PDB} if PDB.exists() else {"atoms": default_molecule()}
    print(
        f"molecule: {PDB.name if PDB.exists() else 'embedded'}; "
        f"{args.n} images of {args.box} px at {args.apix} Å"
    )
    print(
        "| preset | half-map FSC 0.143 (Å) | half-map FSC 0.5 (Å) | full map vs truth FSC 0.5 (Å) | "
        "vs truth 0.143 (Å) | backprojection s |"
    )
    print("|---|---|---|---|---|---|")
    for preset in args.preset:
        with tempfile.TemporaryDirectory() as tmp:
            sim = simulate_dataset(
                Path(tmp) / "sim",
                box=args.box,
                apix=args.apix,
                n_images=args.n,
                heldout=0,
                preset=preset,
                progress=False,
                **source,
            )
            t0 = time.perf_counter()
            gold = run_backprojection(sim.train_star, Path(tmp) / "bp", wiener=args.wiener, progress=False)
            seconds = time.perf_counter() - t0
            full, _ = read_map(Path(tmp) / "bp" / "map.mrc")
            truth, _ = read_map(sim.map)
            curve = fsc(full, truth)
            r05 = resolution_at(curve, 0.5, args.box, args.apix)
            r0143 = resolution_at(curve, 0.143, args.box, args.apix)
        print(
            f"| {preset} | {gold['fsc0143_A']:.2f} | {gold['fsc05_A']:.2f} | {r05:.2f} | {r0143:.2f} "
            f"| {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
