import subprocess
import sys

import pytest

from cryoposenet.cli import HANDLERS, build_parser, main

SPEC_COMMANDS = {"simulate", "train", "predict", "evaluate", "backproject", "report", "demo"}


def test_all_spec_subcommands_are_registered():
    assert set(HANDLERS) == SPEC_COMMANDS
    parser = build_parser()
    for cmd in SPEC_COMMANDS:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([cmd, "--help"])
        assert exc.value.code == 0


def test_spec_flags_parse():
    ns = build_parser().parse_args(
        [
            "train",
            "p.star",
            "--steps",
            "5",
            "--batch-size",
            "4",
            "--lr",
            "1e-3",
            "--rotation",
            "quat",
            "--poses",
            "known",
            "--eval-every",
            "2",
            "--ref",
            "m.mrc",
            "--resume",
            "--checkpoint-every",
            "3",
            "-o",
            "out",
            "--seed",
            "7",
            "--device",
            "cpu",
        ]
    )
    assert (ns.steps, ns.batch_size, ns.rotation, ns.poses, ns.seed) == (5, 4, "quat", "known", 7)
    ns = build_parser().parse_args(
        [
            "simulate",
            "--pdb",
            "x.pdb",
            "--box",
            "64",
            "--apix",
            "1.6",
            "-n",
            "100",
            "--heldout",
            "10",
            "--snr-db",
            "inf",
            "--ctf",
            "--defocus-min",
            "0.5",
            "--defocus-max",
            "1.0",
            "--shift-max",
            "2",
            "--preset",
            "G",
        ]
    )
    assert ns.snr_db is None and ns.ctf and ns.n_images == 100 and ns.preset == "G"


def test_bad_flag_value_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "p.star", "--steps", "0"])
    assert exc.value.code == 2
    assert "positive" in capsys.readouterr().err


def test_missing_input_is_one_line_exit_2(tmp_path, capsys):
    code = main(["evaluate", "--poses", str(tmp_path / "a.star"), "--ref-poses", str(tmp_path / "b.star")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "a.star" in err and "not found" in err
    assert "Traceback" not in err


def test_python_dash_m_works_like_the_script():
    out = subprocess.run([sys.executable, "-m", "cryoposenet", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("cryoposenet ")
