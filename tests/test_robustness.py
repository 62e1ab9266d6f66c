"""Bad input gives one line and exit 2; killed runs resume; malformed STAR text never escapes as a crash."""

import os
import signal
import subprocess
import sys
import time
import warnings

import mrcfile
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryoposenet.cli import main
from cryoposenet.errors import InputError
from cryoposenet.io import default_optics, read_map, read_star, write_star
from datasets import write_dataset


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    truth = write_dataset(folder, n=24, m=120, snr=None)
    return folder, truth


def _star_with(folder, names, apix=2.0, box=24, optics=True):
    parts = pd.DataFrame({"rlnImageName": names})
    path = folder / "x.star"
    if optics:
        write_star(path, parts, default_optics(apix, box))
    else:
        path.write_text("data_\n\nloop_\n_rlnImageName #1\n" + "\n".join(names) + "\n")
    return path


def _stack(path, shape, apix=2.0, fill=None):
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32) if fill is None else fill
    with warnings.catch_warnings(), mrcfile.new(path, overwrite=True) as m:
        warnings.simplefilter("ignore")  # mrcfile warns about the NaN a test plants on purpose
        m.set_data(data)
        m.voxel_size = apix


def expect_one_line_exit_2(capsys, argv, *phrases, out=None):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err
    if out is not None:
        assert not out.exists(), "nothing may be written on bad input"


def train_argv(star, out):
    return ["train", str(star), "-o", str(out), "--steps", "2", "--device", "cpu"]


def test_missing_star(tmp_path, capsys):
    expect_one_line_exit_2(
        capsys, train_argv(tmp_path / "no.star", tmp_path / "o"), "no.star", "not found", out=tmp_path / "o"
    )


def test_unreadable_star(tmp_path, capsys):
    (tmp_path / "bad.star").write_bytes(bytes(range(256)) * 4)
    expect_one_line_exit_2(
        capsys, train_argv(tmp_path / "bad.star", tmp_path / "o"), "bad.star", out=tmp_path / "o"
    )


def test_star_without_particles(tmp_path, capsys):
    (tmp_path / "e.star").write_text(
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n1\n\ndata_particles\n\n"
        "loop_\n_rlnImageName #1\n_rlnOpticsGroup #2\n"
    )
    expect_one_line_exit_2(
        capsys, train_argv(tmp_path / "e.star", tmp_path / "o"), "e.star", out=tmp_path / "o"
    )


def test_star_without_image_names(tmp_path, capsys):
    (tmp_path / "n.star").write_text("data_\n\nloop_\n_rlnAngleRot #1\n_rlnAngleTilt #2\n1 2\n3 4\n")
    expect_one_line_exit_2(
        capsys, train_argv(tmp_path / "n.star", tmp_path / "o"), "rlnImageName", out=tmp_path / "o"
    )


def test_missing_stack(tmp_path, capsys):
    star = _star_with(tmp_path, ["1@gone.mrcs"])
    expect_one_line_exit_2(
        capsys, train_argv(star, tmp_path / "o"), "gone.mrcs", "not found", out=tmp_path / "o"
    )


def test_truncated_stack(tmp_path, capsys):
    _stack(tmp_path / "s.mrcs", (10, 24, 24))
    size = os.path.getsize(tmp_path / "s.mrcs")
    with open(tmp_path / "s.mrcs", "r+b") as f:
        f.truncate(size - 3000)
    star = _star_with(tmp_path, [f"{i}@s.mrcs" for i in range(1, 11)])
    expect_one_line_exit_2(
        capsys, train_argv(star, tmp_path / "o"), "s.mrcs", "truncated", out=tmp_path / "o"
    )


def test_stack_with_fewer_images_than_referenced(tmp_path, capsys):
    _stack(tmp_path / "s.mrcs", (3, 24, 24))
    star = _star_with(tmp_path, ["1@s.mrcs", "7@s.mrcs"])
    expect_one_line_exit_2(capsys, train_argv(star, tmp_path / "o"), "holds 3 images", out=tmp_path / "o")


def test_non_square_images(tmp_path, capsys):
    _stack(tmp_path / "s.mrcs", (2, 24, 16))
    star = _star_with(tmp_path, ["1@s.mrcs"])
    expect_one_line_exit_2(capsys, train_argv(star, tmp_path / "o"), "not square", out=tmp_path / "o")


def test_mismatched_sizes_across_stacks(tmp_path, capsys):
    _stack(tmp_path / "a.mrcs", (2, 24, 24))
    _stack(tmp_path / "b.mrcs", (2, 32, 32))
    star = _star_with(tmp_path, ["1@a.mrcs", "1@b.mrcs"])
    expect_one_line_exit_2(
        capsys, train_argv(star, tmp_path / "o"), "different image sizes", out=tmp_path / "o"
    )


def test_pixel_size_missing_everywhere(tmp_path, capsys):
    _stack(tmp_path / "s.mrcs", (2, 24, 24), apix=0.0)
    star = _star_with(tmp_path, ["1@s.mrcs", "2@s.mrcs"], optics=False)
    expect_one_line_exit_2(capsys, train_argv(star, tmp_path / "o"), "pixel size", out=tmp_path / "o")


def test_nan_in_images(tmp_path, capsys):
    data = np.ones((2, 24, 24), np.float32)
    data[1, 3, 4] = np.nan
    _stack(tmp_path / "s.mrcs", (2, 24, 24), fill=data)
    star = _star_with(tmp_path, ["1@s.mrcs", "2@s.mrcs"])
    expect_one_line_exit_2(capsys, train_argv(star, tmp_path / "o"), "NaN", out=tmp_path / "o")


@pytest.mark.parametrize(
    "argv,phrase",
    [
        (["train", "x.star", "--steps", "0"], "--steps"),
        (["train", "x.star", "--batch-size", "-3"], "--batch-size"),
        (["simulate", "--apix", "0"], "--apix"),
        (["simulate", "--box", "-8"], "--box"),
    ],
)
def test_non_positive_numbers(argv, phrase, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and phrase in err


def test_box_too_small_for_molecule(tmp_path, capsys):
    expect_one_line_exit_2(
        capsys,
        ["simulate", "--box", "16", "--apix", "1.0", "-n", "4", "-o", str(tmp_path / "o")],
        "box",
        out=tmp_path / "o",
    )


def test_pdb_missing_and_without_atoms(tmp_path, capsys):
    expect_one_line_exit_2(
        capsys,
        ["simulate", "--pdb", str(tmp_path / "none.pdb"), "-o", str(tmp_path / "o")],
        "none.pdb",
        out=tmp_path / "o",
    )
    (tmp_path / "empty.pdb").write_text("HEADER    EMPTY\nEND\n")
    expect_one_line_exit_2(
        capsys,
        ["simulate", "--pdb", str(tmp_path / "empty.pdb"), "-o", str(tmp_path / "o")],
        "empty.pdb",
        out=tmp_path / "o",
    )


def test_predict_on_a_folder_that_is_not_a_run(good, tmp_path, capsys):
    folder, _ = good
    expect_one_line_exit_2(
        capsys,
        ["predict", str(tmp_path), str(folder / "p.star"), "-o", str(tmp_path / "x.star")],
        "not a cryoposenet run",
        out=tmp_path / "x.star",
    )


def _train_args(star, out, *extra):
    return ["train", str(star), "-o", str(out), "--device", "cpu", "--batch-size", "8", "--seed", "4", *extra]


# 12 steps with a checkpoint every 4: the signal lands after the first checkpoint with 8 steps to go;
# no pose refinement after training (the map is compared, and refinement does not touch it)
RESUME_RUN = ("--steps", "12", "--refine-steps", "0")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 16-px, 48-image data set and the map of its uninterrupted run (both signals compare to it).

    Trained in this process; the killed run's subprocess gets the same thread count, so the two do
    the same arithmetic (measured: bitwise equal maps).
    """
    folder = tmp_path_factory.mktemp("resumable")
    write_dataset(folder, n=16, m=48, snr=None)
    assert main(_train_args(folder / "p.star", folder / "straight", *RESUME_RUN)) == 0
    return folder / "p.star", read_map(folder / "straight" / "map.mrc")[0]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path, sig):
    import torch

    star, a = uninterrupted
    killed, log = tmp_path / "killed", tmp_path / "killed.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    argv = _train_args(star, killed, *RESUME_RUN, "--checkpoint-every", "4")
    cmd = [sys.executable, "-m", "cryoposenet", *argv]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        start = time.time()
        while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.time() - start < 120:
            time.sleep(0.05)
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
    text = log.read_text()
    if sig == signal.SIGTERM and code != 0:  # stopped by the signal, not finished first
        assert code == 1 and "checkpoint saved" in text and "Traceback" not in text, text[-2000:]
    # resumed in this process: its RNG and module state are not the fresh process's, as after a kill
    assert main(_train_args(star, killed, *RESUME_RUN, "--resume")) == 0
    b, _ = read_map(killed / "map.mrc")
    # same arithmetic: equal maps; the bounds leave room for another thread count's reduction order
    # (1 vs 2 threads: 7.5e-7 of the maximum), far below what a lost optimizer or RNG state does
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())
    steps = pd.read_csv(killed / "metrics.csv")["step"]
    assert list(steps) == list(range(1, 13))


TOKENS = [
    "data_",
    "data_optics",
    "data_particles",
    "loop_",
    "_rlnImageName",
    "_rlnOpticsGroup",
    "_rlnAngleRot",
    "_rlnVoltage",
    "_rlnDefocusU",
    "_rlnImagePixelSize",
    "_rlnOriginXAngst",
    "#1",
    "1@s.mrcs",
    "@",
    "1",
    "-3.5",
    "nan",
    "abc",
    '"quoted text"',
    "\t",
    "\n",
    "\n\n",
    " ",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=60))
def test_malformed_star_text_gives_only_project_errors(tmp_path, pieces):
    path = tmp_path / "fuzz.star"
    path.write_text(" ".join(pieces), encoding="utf-8", errors="surrogatepass")
    try:
        table = read_star(path)
        table.image_refs()
        if table.has_angles:
            table.angles_deg()
        if table.has_ctf:
            table.ctf_params()
        table.origins_A()
    except InputError:
        pass


def test_diverging_run_stops_with_one_line_and_no_nan_checkpoint(good, tmp_path, capsys):
    import torch

    folder, _ = good
    out = tmp_path / "run"
    code = main(
        [
            "train",
            str(folder / "p.star"),
            "-o",
            str(out),
            "--steps",
            "20",
            "--lr",
            "1e12",
            "--checkpoint-every",
            "1",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "NaN" in err and "Traceback" not in err
    assert [ln for ln in err.splitlines() if "cryoposenet train" in ln] == err.strip().splitlines()[-1:]
    if (out / "checkpoint.pt").exists():  # whatever was saved before divergence is finite
        payload = torch.load(out / "checkpoint.pt", weights_only=False)
        for tensor in [*payload["volume"].values(), *payload["encoder"].values()]:
            assert torch.isfinite(tensor).all()


def test_resuming_a_run_logged_with_fewer_metric_columns_keeps_its_rows_under_todays_header(tmp_path):
    """Columns are only appended: a run started by an older version resumes into today's header,
    its rows past the resumed step dropped and the kept ones still read under their names."""
    from cryoposenet.runs.progress import METRIC_COLUMNS, MetricsLog

    path = tmp_path / "metrics.csv"
    old = METRIC_COLUMNS[:6]
    path.write_text(",".join(old) + "\n" + "".join(f"{s},{1 / s},{s},9,4,\n" for s in range(1, 5)))
    log = MetricsLog(path, resume_step=2)
    log.write({"step": 3, "loss": 0.25, "encoder_pose_mae_deg": 50.0})
    log.close()
    rows = pd.read_csv(path)
    assert tuple(rows.columns) == METRIC_COLUMNS
    assert list(rows["step"]) == [1, 2, 3] and list(rows["loss"]) == [1.0, 0.5, 0.25]
    assert rows["encoder_pose_mae_deg"].isna().tolist() == [True, True, False]
