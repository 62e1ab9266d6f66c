"""The molecule suite's plan (benchmarks/molecules.py): ``--rows`` makes exactly the rows named,
grouped by data set, and refuses to be mixed with the grid flags it replaces."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
pytest.importorskip("gemmi")
pytest.importorskip("scipy")
molecules = pytest.importorskip("molecules")


def fake(name: str) -> "molecules.Molecule":
    return molecules.Molecule(name, Path(f"{name}.pdb"), 100, 10.0, 40.0, 38.0, 1.0)


def test_rows_plan_only_the_named_rows_grouped_by_data_set():
    a = molecules.parse(["--rows", "4ake:default:1", "1hvr:5:1", "4ake:default:0", "--steps", "10"])
    assert a.molecules == ["4ake", "1hvr"]
    plan = molecules.run_plan([fake("4ake"), fake("1hvr")], a)
    assert [(ds.mol.name, ds.bfactor, seed) for ds, seed in plan] == [
        ("4ake", None, 0),
        ("4ake", None, 1),
        ("1hvr", 5.0, 1),
    ]


def test_grid_plan_is_every_molecule_blur_and_seed():
    a = molecules.parse(["--molecules", "2cay_A", "--seeds", "3"])
    plan = molecules.run_plan([fake("2cay_A")], a)
    assert [(ds.bfactor, seed) for ds, seed in plan] == [(None, 3), (5.0, 3)]


@pytest.mark.parametrize("flag", [["--molecules", "1hvr"], ["--bfactors", "5"], ["--seeds", "0"]])
def test_rows_refuse_the_grid_flags(flag, capsys):
    with pytest.raises(SystemExit):
        molecules.parse(["--rows", "1hvr:5:1", *flag])
    assert "--rows" in capsys.readouterr().err


def test_a_malformed_row_is_refused(capsys):
    with pytest.raises(SystemExit):
        molecules.parse(["--rows", "1hvr:5"])
    assert "expected MOLECULE:B:SEED" in capsys.readouterr().err
