"""The ``cryoposenet`` command line: parses flags and calls library functions, nothing more.

Exit codes (SPEC.md): 0 success; 2 bad input or usage (one line on stderr, no traceback);
1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import CryoPoseNetError, InputError

__all__ = ["main", "build_parser"]

# subcommand -> "module:function" called with the parsed namespace; imported only when run
HANDLERS = {
    "simulate": "cryoposenet.runs.commands:simulate",
    "train": "cryoposenet.runs.commands:train",
    "predict": "cryoposenet.runs.commands:predict",
    "evaluate": "cryoposenet.runs.commands:evaluate",
    "backproject": "cryoposenet.runs.commands:backproject",
    "report": "cryoposenet.runs.commands:report",
    "demo": "cryoposenet.runs.commands:demo",
}


class _Parser(argparse.ArgumentParser):
    """argparse with SPEC.md's error style: one line on stderr, exit code 2, no usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _snr_db(text: str) -> float | None:
    return None if text.strip().lower() in ("inf", "+inf", "none") else float(text)


def _common(p: argparse.ArgumentParser, out_default: str | None = None, out_required: bool = False) -> None:
    p.add_argument("-o", "--out", default=out_default, required=out_required, help="output folder (or file)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="default auto")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _add_simulate(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="particle data set from an atomic model or a map",
        description="Without --pdb or --map, the embedded default molecule is used.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pdb", help="atomic model (PDB or mmCIF)")
    src.add_argument("--map", help="MRC map instead of an atomic model")
    p.add_argument("--box", type=_positive_int, default=None, help="box size in pixels (default 128)")
    p.add_argument("--apix", type=_positive_float, default=None, help="pixel size in Å (default 0.8)")
    p.add_argument("-n", type=_positive_int, default=10000, dest="n_images", help="number of images")
    p.add_argument("--heldout", type=int, default=None, help="images kept out of train.star (default 10%%)")
    p.add_argument("--snr-db", type=_snr_db, default=None, help="SNR in dB (omit or inf: noiseless)")
    p.add_argument("--ctf", action="store_true", help="corrupt images with a CTF")
    p.add_argument("--defocus-min", type=_positive_float, default=None, help="µm (default 0.4)")
    p.add_argument("--defocus-max", type=_positive_float, default=None, help="µm (default 1.2)")
    p.add_argument("--shift-max", type=float, default=0.0, help="max random shift in Å (default 0)")
    p.add_argument(
        "--bfactor",
        type=float,
        default=None,
        help="B-factor in Å² added to every atom (default 32·apix², printed; the paper's maps: a few Å²)",
    )
    p.add_argument("--preset", choices=list("ABCDEFG"), help="a row of the paper's Table 1")
    _common(p, out_default="simulated")


def _add_refine_steps(p) -> None:
    p.add_argument(
        "--refine-steps",
        type=_count,
        default=40,
        help="local refinement of the encoder's poses against the map, steps per image (0: none; default 40)",
    )


def _add_invert(p) -> None:
    sign = p.add_mutually_exclusive_group()
    sign.add_argument(
        "--invert",
        dest="invert",
        action="store_const",
        const=True,
        default=None,
        help="multiply the images by -1 (dark particles on a light background)",
    )
    sign.add_argument(
        "--no-invert",
        dest="invert",
        action="store_const",
        const=False,
        help="use the images as stored (default: the contrast sign is detected and reported)",
    )


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="ab initio reconstruction (CryoPoseNet)")
    p.add_argument("star", help="particle STAR file")
    p.add_argument("--datadir", help="folder that rlnImageName paths are relative to")
    p.add_argument("--steps", type=_positive_int, default=10000)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--lr", type=_positive_float, default=5e-4)
    p.add_argument("--rotation", choices=("s2s2", "quat", "euler"), default="s2s2")
    p.add_argument("--poses", choices=("encoder", "known", "free"), default="encoder")
    p.add_argument("--ref", help="reference map for --eval-every")
    p.add_argument("--eval-every", type=_positive_int, default=None, help="steps between evaluations")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--force", action="store_true", help="overwrite an output folder holding another run")
    p.add_argument("--checkpoint-every", type=_positive_int, default=None, help="steps between checkpoints")
    p.add_argument(
        "--box",
        type=_positive_int,
        default=None,
        help="training box in pixels: particles are Fourier-cropped to it on the fly "
        "(default: their own box up to 128 px, else 128; printed)",
    )
    p.add_argument(
        "--shifts",
        choices=("search", "known", "none"),
        default=None,
        help="particle translations: searched with the poses (within 5%% of the training box, at "
        "least 3 px), the STAR "
        "file's origins, or none (default: known when the STAR file has origins, else search)",
    )
    _add_invert(p)
    _add_refine_steps(p)
    _common(p, out_default="run")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="poses for new images from a trained encoder")
    p.add_argument("run", help="folder of a finished train run")
    p.add_argument("star", help="particle STAR file")
    p.add_argument("--datadir", help="folder that rlnImageName paths are relative to")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    _add_refine_steps(p)
    _common(p, out_required=True)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="map and poses against a reference, after global alignment")
    p.add_argument("--map", help="estimated map")
    p.add_argument("--ref", help="reference map")
    p.add_argument("--poses", help="STAR file with estimated poses")
    p.add_argument("--ref-poses", help="STAR file with reference poses")
    p.add_argument("--apix", type=_positive_float, help="pixel size when the maps have none")
    p.add_argument(
        "--no-symmetry",
        action="store_true",
        help="do not look for a (pseudo-)symmetry of --ref (by default one adds pose_mae_sym_deg)",
    )
    _common(p)


def _add_backproject(sub) -> None:
    p = sub.add_parser("backproject", help="map from given poses, half maps and FSC")
    p.add_argument("star", help="particle STAR file")
    p.add_argument("--poses", help="STAR file whose angles (and origins, if it has them) replace the input's")
    p.add_argument("--datadir", help="folder that rlnImageName paths are relative to")
    _add_invert(p)
    _common(p, out_default="backproject")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="plots and an HTML page of a run")
    p.add_argument("run", help="folder of a train run")
    _common(p)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="simulate, train, evaluate and report on an embedded molecule")
    p.add_argument("--pdb", help="use this atomic model instead of the embedded one")
    p.add_argument("--steps", type=_positive_int, default=None, help="training steps (default 1200)")
    p.add_argument("--force", action="store_true", help="overwrite a previous demo in the output folder")
    _common(p, out_default="cryoposenet-demo")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cryoposenet", description="Ab initio cryo-EM reconstruction with CryoPoseNet.")
    parser.add_argument("--version", action="version", version=f"cryoposenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in (
        _add_simulate,
        _add_train,
        _add_predict,
        _add_evaluate,
        _add_backproject,
        _add_report,
        _add_demo,
    ):
        add(sub)
    return parser


def _handler(command: str):
    module, func = HANDLERS[command].split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)  # argparse exits 2 with one usage line on bad flags
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s"
    )
    try:
        _handler(args.command)(args)
    except InputError as exc:
        print(f"cryoposenet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except CryoPoseNetError as exc:
        print(f"cryoposenet {args.command}: {exc}", file=sys.stderr)
        return 1
    except NotImplementedError as exc:
        print(f"cryoposenet {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cryoposenet {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
