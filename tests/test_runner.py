import numpy as np
import pandas as pd
import pytest
import yaml

from cryoposenet.cli import main
from cryoposenet.io import read_map, read_star, write_map
from cryoposenet.runs.runner import make_config
from cryoposenet.training.checkpoint import read_checkpoint
from cryoposenet.training.schedule import k_max_at, lr_scale_at
from datasets import symmetry_searched_once, write_dataset


def corr(a, b):
    return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


@pytest.fixture
def clean_set(tmp_path):
    """A noiseless 16-px, 96-image set and its truth map; the training evaluations and the report
    search the truth's symmetry once for the module (the same map each time)."""
    truth = write_dataset(tmp_path, n=16, m=96, snr=None)
    write_map(tmp_path / "truth.mrc", truth.astype(np.float32), 2.0)
    with symmetry_searched_once():
        yield tmp_path, truth


def train(folder, out, *extra):
    return main(
        [
            "train",
            str(folder / "p.star"),
            "-o",
            str(folder / out),
            "--device",
            "cpu",
            "--batch-size",
            "16",
            *extra,
        ]
    )


def test_known_pose_training_recovers_map_and_writes_run_files(clean_set):
    folder, truth = clean_set
    code = train(
        folder,
        "run",
        "--poses",
        "known",
        "--steps",
        "80",
        "--lr",
        "1e-2",
        "--ref",
        str(folder / "truth.mrc"),
        "--eval-every",
        "40",
    )
    assert code == 0
    run = folder / "run"
    vol, apix = read_map(run / "map.mrc")
    assert apix == pytest.approx(2.0)
    # the final map (the images' backprojection at the known poses, or the trained map where it
    # fits them better: here the two fit about equally, so either may win); the checkpoint
    # carries it beside the trained map, which --resume trains on from
    assert corr(vol, truth) > 0.98  # measured 0.995 (backprojection) and 0.984 (trained)
    ckpt = read_checkpoint(run / "checkpoint.pt")
    np.testing.assert_allclose(ckpt["final_map"].numpy(), vol, atol=1e-6 * np.abs(vol).max())
    trained = ckpt["volume"]["data"] * ckpt["volume"]["mask"] / ckpt["scale"]
    assert corr(trained, truth) > 0.9
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics.columns[0] == "step" and list(metrics["step"]) == list(range(1, 81))
    assert metrics["loss"].iloc[-10:].mean() < 0.2 * metrics["loss"].iloc[:5].mean()
    evals = metrics.dropna(subset=["fsc05_A"])
    assert list(evals["step"]) == [40, 80]
    assert evals["pose_mae_deg"].max() < 1e-3  # known poses align to themselves (measured 3e-15°)
    assert evals["encoder_pose_mae_deg"].isna().all()  # no search, no encoder beside it
    assert evals["fsc05_A"].iloc[-1] < 12.0  # measured 4.6 Å
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["poses"] == "known" and config["cryoposenet_version"]
    poses, source = read_star(run / "poses.star"), read_star(folder / "p.star")
    assert set(source.original_columns) <= set(poses.particles.columns)
    np.testing.assert_allclose(poses.column("rlnDefocusU"), source.column("rlnDefocusU"), rtol=1e-6)
    assert (run / "checkpoint.pt").is_file()
    # the report of this run: every figure the page shows exists, with the reference-based ones
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    pngs = ("loss.png", "evaluation.png", "fsc.png", "map_views.png", "pose_errors.png", "montage.png")
    for png in (*pngs, "viewing_directions.png"):
        assert f'src="{png}"' in page and (run / png).stat().st_size > 1000
    assert "handedness" in page and "FSC 0.5 / 0.143" in page
    assert "view the map from the most populated 5 % of directions" in page


def test_evaluations_on_checkpoint_steps_reach_metrics(clean_set):
    """A checkpoint flushes the held row; an evaluation of the same step must still land in it."""
    folder, _ = clean_set
    args = ["--poses", "known", "--steps", "20", "--ref", str(folder / "truth.mrc"), "--eval-every", "10"]
    assert train(folder, "run", *args, "--checkpoint-every", "5") == 0
    metrics = pd.read_csv(folder / "run" / "metrics.csv")
    assert list(metrics["step"]) == list(range(1, 21))
    assert list(metrics.dropna(subset=["fsc05_A"])["step"]) == [10, 20]


def test_a_searching_run_scores_the_searched_poses_and_logs_the_encoders_beside_them(clean_set):
    """While the map learns from the pose search, metrics.csv's pose errors are the search's and the
    encoder's own are the ``encoder_pose_*`` columns (empty in known-pose runs: see above)."""
    folder, _ = clean_set
    ref = ["--ref", str(folder / "truth.mrc"), "--eval-every", "3", "--refine-steps", "0"]
    assert train(folder, "enc", "--steps", "6", *ref) == 0
    enc = pd.read_csv(folder / "enc" / "metrics.csv").dropna(subset=["fsc05_A"])
    assert list(enc["step"]) == [3, 6]
    assert enc["pose_mae_deg"].notna().all() and enc["encoder_pose_mae_deg"].notna().all()
    assert (enc["pose_mae_deg"] != enc["encoder_pose_mae_deg"]).all()  # two estimates, not one copied
    assert enc["views_top5_share"].between(1 / 24, 1.0).all()  # 96 poses, 24 cells: the top one holds >= 1/24
    assert enc["views_min_moment"].between(0.0, 1 / 3 + 1e-9).all()  # the smallest of three summing to 1
    assert main(["report", str(folder / "enc")]) == 0  # its pose plot draws the encoder's curve too
    assert (folder / "enc" / "evaluation.png").stat().st_size > 1000


def test_output_folder_holding_a_run_is_refused_without_force(clean_set, capsys):
    folder, _ = clean_set
    quick = ("--steps", "2", "--refine-steps", "0")  # no pose refinement: only the folder matters here
    assert train(folder, "run", *quick) == 0
    assert train(folder, "run", *quick) == 2
    assert "another run" in capsys.readouterr().err
    assert train(folder, "run", *quick, "--force") == 0


def test_predict_gives_a_pose_per_image_and_refuses_non_runs(clean_set, tmp_path_factory, capsys):
    folder, _ = clean_set
    other = tmp_path_factory.mktemp("other")
    write_dataset(other, n=16, m=30, snr=None, seed=5, name="new")
    assert train(folder, "run", "--steps", "3", "--refine-steps", "0") == 0
    out = other / "pred.star"
    refine = ["--refine-steps", "2"]  # prediction's refinement runs, briefly
    assert main(["predict", str(folder / "run"), str(other / "new.star"), "-o", str(out), *refine]) == 0
    pred = read_star(out)
    assert len(pred) == 30 and pred.has_angles
    assert list(pred.particles["rlnImageName"]) == list(
        read_star(other / "new.star").particles["rlnImageName"]
    )
    assert main(["predict", str(other), str(other / "new.star"), "-o", str(out)]) == 2
    assert "not a cryoposenet run" in capsys.readouterr().err
    assert train(folder, "known", "--steps", "2", "--poses", "known") == 0
    assert main(["predict", str(folder / "known"), str(other / "new.star"), "-o", str(out)]) == 2


@pytest.mark.parametrize("steps", [30, 1200, 1500, 2250, 4000, 10000])
def test_the_band_ramps_over_1500_steps_or_two_thirds_of_a_shorter_run_before_the_rates_drop(steps):
    # a ramp over 40 % of a 1500-step run let 4AKE chain A (seed 1) collapse; 1000 and 1500 did not
    cfg = make_config(steps)
    assert cfg.kmax_steps == min(1500, 2 * steps // 3)
    drop = next(s for s in range(steps) if lr_scale_at(cfg, s) < 1)
    assert k_max_at(cfg, 64, drop) == 32  # the whole band is learned before the rates drop
    assert make_config(steps, "known").kmax_start is None  # known poses: the full band throughout
