"""``cryoposenet demo`` end to end on the embedded molecule, shrunk to seconds."""

import json

from cryoposenet.cli import main
from cryoposenet.demo import run_demo

TINY = {"box": 32, "apix": 3.6, "n_images": 48, "heldout": 16, "steps": 4}


def test_demo_writes_map_poses_figures_and_report(tmp_path):
    figures = run_demo(tmp_path / "demo", settings=TINY)
    out = tmp_path / "demo"
    for name in ("run/map.mrc", "run/poses.star", "heldout_poses.star", "evaluation.json", "run/report.html"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["heldout"]["n_images"] == 16
    assert saved["train"]["pseudo_symmetry"]["order"] == 2  # 4AKE's 2-fold is found and reported
    assert figures["report"].endswith("report.html")


def test_demo_command_prints_where_things_are(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("cryoposenet.demo.DEMO_SETTINGS", {**TINY, "steps": 2})
    main(["demo", "-o", str(tmp_path / "d"), "--device", "cpu"])
    text = capsys.readouterr().out
    assert f"{tmp_path}/d/run/map.mrc" in text and "report.html" in text
    assert "nearest pseudo-symmetry branch" in text
