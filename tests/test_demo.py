"""``cryoposenet demo`` end to end on the embedded molecule, shrunk to seconds."""

import contextlib
import functools
import io
import json

import pytest

from cryoposenet.cli import main
from cryoposenet.runs import prediction, runner
from datasets import symmetry_searched_once

TINY = {"box": 32, "apix": 3.6, "n_images": 48, "heldout": 16, "steps": 2}
REFINE_STEPS = 2  # of local pose refinement after training and after prediction (default 40)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One ``cryoposenet demo`` run at TINY settings: ``(folder, printed text)``; both tests read it.

    The pipeline searches the reference's symmetry three times (training evaluations, evaluation,
    report) on one map: searched once (a deterministic function of the map). Refinement, most
    of the rest, takes REFINE_STEPS.
    """
    out = tmp_path_factory.mktemp("demo") / "d"
    text = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, symmetry_searched_once(), contextlib.redirect_stdout(text):
        mp.setattr("cryoposenet.runs.demo.DEMO_SETTINGS", TINY)
        for module, name in ((runner, "make_config"), (prediction, "run_predict")):
            mp.setattr(
                f"cryoposenet.runs.demo.{name}",
                functools.partial(getattr(module, name), refine_steps=REFINE_STEPS),
            )
        assert main(["demo", "-o", str(out), "--device", "cpu"]) == 0
    return out, text.getvalue()


def test_demo_writes_map_poses_figures_and_report(demo):
    out, _ = demo
    for name in ("run/map.mrc", "run/poses.star", "heldout_poses.star", "evaluation.json", "run/report.html"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["heldout"]["n_images"] == 16
    assert saved["train"]["pseudo_symmetry"]["order"] == 2  # 4AKE's 2-fold is found and reported


def test_demo_command_prints_where_things_are(demo):
    out, text = demo
    assert f"{out}/run/map.mrc" in text and "report.html" in text
    assert "nearest pseudo-symmetry branch" in text
