"""Held-out pose errors' tail: the share of images off by more than a threshold.

    python benchmarks/pose_tail.py RUN/poses.star SIM/train.star HELD.star SIM/heldout.star SIM/map.mrc

The held-out errors are taken under the global rotation fitted on the training poses, to the
nearest branch of the reference's (pseudo-)symmetry when
:func:`cryoposenet.analysis.evaluation.detect_symmetry` finds one (as ``cryoposenet evaluate``
does), and their mean, median, maximum and the shares over 5° and ``--over`` (15°) are printed.
"""

from __future__ import annotations

import argparse

import numpy as np

from cryoposenet.analysis.evaluation import detect_symmetry, matched_rotations
from cryoposenet.analysis.metrics import align_rotations, apply_alignment
from cryoposenet.io import read_map, read_star


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_poses")
    ap.add_argument("train_truth")
    ap.add_argument("heldout_poses")
    ap.add_argument("heldout_truth")
    ap.add_argument("ref_map")
    ap.add_argument("--over", type=float, default=15.0, help="degrees")
    a = ap.parse_args(argv)
    group, info = detect_symmetry(read_map(a.ref_map)[0])
    train = matched_rotations(read_star(a.train_poses), read_star(a.train_truth))
    est, ref = matched_rotations(read_star(a.heldout_poses), read_star(a.heldout_truth))
    err = apply_alignment(align_rotations(*train, symmetry=group), est, ref)
    print(f"symmetry: {info}")
    print(
        f"{len(err)} held-out images: mean {err.mean():.2f}°, median {np.median(err):.2f}°, "
        f"max {err.max():.1f}°; over 5°: {(err > 5).mean():.1%}; "
        f"over {a.over:g}°: {(err > a.over).sum()} ({(err > a.over).mean():.1%})"
    )


if __name__ == "__main__":
    main()
