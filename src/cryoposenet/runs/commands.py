"""Subcommand handlers: each turns parsed flags into one library call and prints where results are."""

from __future__ import annotations

import json
import sys
from argparse import Namespace

from ..io.atomic import write_text_atomic

__all__ = ["simulate", "train", "predict", "evaluate", "backproject", "report", "demo"]


def _bfactor_line(bfactor: float | None, apix: float) -> str:
    from ..simulate.potential import blur_A2

    how = "--bfactor" if bfactor is not None else f"default 32·apix² at {apix:g} Å/pixel"
    return f"B-factor {blur_A2(apix, bfactor):.4g} Å² added to every atom ({how})"


def simulate(args: Namespace) -> None:
    from ..simulate import default_molecule, simulate_dataset
    from ..simulate.dataset import DEFAULT_APIX

    sizes = {k: v for k, v in (("box", args.box), ("apix", args.apix)) if v is not None}
    atoms = default_molecule() if args.pdb is None and args.map is None else None
    if args.map is None:
        print(_bfactor_line(args.bfactor, sizes.get("apix", DEFAULT_APIX)), flush=True)
    result = simulate_dataset(
        args.out,
        pdb=args.pdb,
        map_path=args.map,
        atoms=atoms,
        n_images=args.n_images,
        heldout=args.heldout,
        snr_db=args.snr_db,
        ctf=True if args.ctf else None,
        defocus_min_um=args.defocus_min,
        defocus_max_um=args.defocus_max,
        shift_max_A=args.shift_max,
        seed=args.seed,
        preset=args.preset,
        bfactor=args.bfactor,
        **sizes,
    )
    snr = "noiseless" if result.snr_db is None else f"SNR {result.snr_db_measured:.2f} dB"
    print(
        f"{result.n_train} train + {result.n_heldout} held-out images of {result.box} px at "
        f"{result.apix} Å ({snr}) in {result.seconds:.0f} s; wrote {args.out}/"
    )


def train(args: Namespace) -> None:
    from .runner import make_config, resolve_device, run_training

    config = make_config(
        args.steps,
        args.poses,
        batch_size=args.batch_size,
        lr=args.lr,
        rotation=args.rotation,
        refine_steps=args.refine_steps,
        seed=args.seed,
        device=resolve_device(args.device),
    )
    result = run_training(
        args.star,
        args.out,
        config,
        datadir=args.datadir,
        ref=args.ref,
        eval_every=args.eval_every,
        resume=args.resume,
        force=args.force,
        checkpoint_every=args.checkpoint_every,
        box=args.box,
        shifts=args.shifts,
        invert=args.invert,
    )
    if result.get("rank"):  # under torchrun only rank 0 writes and reports
        return
    final = result["final"]
    figures = "".join(f", {k} {v:.2f}" for k, v in final.items() if v is not None)
    print(
        f"{result['steps']} steps in {result['time_s']:.0f} s{figures}; wrote {args.out}/map.mrc, poses.star"
    )
    if "full" in result:
        full = result["full"]
        print(
            f"full-size map of {full['n_images']} images: half-map FSC 0.143 {full['fsc0143_A']:.2f} Å, "
            f"0.5 {full['fsc05_A']:.2f} Å; wrote {args.out}/full/map.mrc, half1.mrc, half2.mrc, fsc.csv"
        )


def predict(args: Namespace) -> None:
    from .prediction import run_predict
    from .runner import resolve_device

    n = run_predict(
        args.run,
        args.star,
        args.out,
        datadir=args.datadir,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        refine_steps=args.refine_steps,
    )
    print(f"poses for {n} images; wrote {args.out}")


def evaluate(args: Namespace) -> None:
    from ..analysis.evaluation import evaluate_files

    result = evaluate_files(
        args.map, args.ref, args.poses, args.ref_poses, apix=args.apix, symmetry=not args.no_symmetry
    )
    text = json.dumps(result.to_json(), indent=2)
    print(text)
    if args.out:
        write_text_atomic(args.out, text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)


def backproject(args: Namespace) -> None:
    from ..analysis.reconstruct import run_backprojection

    result = run_backprojection(
        args.star, args.out, poses=args.poses, datadir=args.datadir, seed=args.seed, invert=args.invert
    )
    print(f"contrast: {result['contrast']}")
    print(
        f"{result['n_images']} images; half-map FSC 0.143: {result['fsc0143_A']:.2f} Å, "
        f"0.5: {result['fsc05_A']:.2f} Å; wrote {args.out}/map.mrc, half1.mrc, half2.mrc, fsc.csv"
    )


def report(args: Namespace) -> None:
    from ..analysis.report import write_report

    print(f"wrote {write_report(args.run)}")


def _pose_line(train: dict, heldout: dict) -> str:
    """Mean (median) pose errors, training and held-out; also to the nearest branch of a 2-fold."""

    def pair(fig: dict, key: str) -> str:
        return f"{fig[f'pose_mae{key}_deg']:.2f}° (median {fig[f'pose_median{key}_deg']:.2f}°)"

    line = f"training mean error {pair(train, '')}, held-out {pair(heldout, '')}"
    if "pose_mae_sym_deg" in heldout:
        line += f"; to the nearest pseudo-symmetry branch {pair(train, '_sym')} and {pair(heldout, '_sym')}"
    return line


def demo(args: Namespace) -> None:
    from .demo import run_demo
    from .runner import resolve_device

    figures = run_demo(
        args.out,
        pdb=args.pdb,
        steps=args.steps,
        seed=args.seed,
        device=resolve_device(args.device),
        force=args.force,
    )
    t, h = figures["train"], figures["heldout"]
    print(
        f"map: {args.out}/run/map.mrc  (FSC 0.5 vs ground truth {t['fsc05_A']:.2f} Å, "
        f"handedness {t['handedness']})"
    )
    print(f"poses: {_pose_line(t, h)} (held-out aligned by the training poses' global rotation)")
    print(f"figures: {args.out}/evaluation.json; report: {figures['report']}")
