"""Small models and helpers for the simulation tests (16–32 px, seconds each)."""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np
import pytest
import torch

from cryoposenet.simulate import AtomSet


def make_small_atoms(seed: int = 3, n: int = 400) -> AtomSet:
    """An asymmetric blob (σ 4.5 × 3 × 2.2 Å) of C/N/O/S atoms with a side arm."""
    rng = np.random.default_rng(seed)
    body = rng.normal(size=(n, 3)) * [4.5, 3.0, 2.2] + [-1.5, 0.0, 0.0]
    arm = np.outer(np.linspace(3, 10, 18), [0.3, 0.8, 0.5]) + [3.0, 2.0, 0.0]
    xyz = np.concatenate([body, arm + rng.normal(scale=0.3, size=arm.shape)])
    elements = rng.choice(["C", "N", "O", "S"], size=len(xyz), p=[0.6, 0.2, 0.18, 0.02])
    return AtomSet(xyz, elements, "<small>")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """16–32 px tensors are too small to share out; one thread is faster, above all on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_atoms() -> AtomSet:
    return make_small_atoms()


def write_pdb(path: Path, xyz: np.ndarray, elements, residues=None) -> Path:
    """Write atoms as a PDB file through gemmi; ``residues`` names per atom (default ALA)."""
    st = gemmi.Structure()
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    for i, (pos, el) in enumerate(zip(xyz, elements, strict=True)):
        res = gemmi.Residue()
        res.name = residues[i] if residues is not None else "ALA"
        res.seqid = gemmi.SeqId(i + 1, " ")
        res.het_flag = "H" if res.name in ("HOH", "LIG") else "A"
        atom = gemmi.Atom()
        atom.name = el
        atom.element = gemmi.Element(el)
        atom.pos = gemmi.Position(*map(float, pos))
        atom.occ = 1.0
        res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    st.write_pdb(str(path))
    return path


@pytest.fixture
def pdb_writer():
    return write_pdb


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Correlation over the last two axes ``(..., N, N)`` → ``(...)``."""
    a = a - a.mean(dim=(-2, -1), keepdim=True)
    b = b - b.mean(dim=(-2, -1), keepdim=True)
    return (a * b).sum((-2, -1)) / (a.norm(dim=(-2, -1)) * b.norm(dim=(-2, -1)))


@pytest.fixture
def corr():
    return pearson
