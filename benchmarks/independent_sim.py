"""Particles made without cryoposenet: an independent simulator for the molecule suite (issue #12).

The suite's data come from ``cryoposenet simulate``; a convention shared by our simulator and
our model (a rotation read the other way, a centre half a pixel off, a blur that hides it) would
not show there. This module writes the same kind of data set with none of the project's code:

* **map**: gemmi's electron-scattering density (``gemmi.DensityCalculatorE``, its own
  Gaussian sums of the International Tables' coefficients) with every atom's B-factor replaced by
  ``bfactor`` Å², computed on a grid ``OVERSAMPLE`` times finer than the pixel and brought to the
  pixel by cropping its Fourier transform (numpy). The atoms' mean position, weighted by atomic
  number, sits at voxel ``N//2`` (RELION's box centre).
* **poses**: uniform on SO(3) (``scipy.spatial.transform.Rotation.random``), written as RELION's
  ``rlnAngleRot/Tilt/Psi`` = scipy's intrinsic ``ZYZ`` Euler angles, and RELION's projection
  ``image(x, y) = ∫ V(Aᵀ (x, y, z)) dz`` with ``Aᵀ`` = scipy's matrix of those angles.
* **projection**: rotate-and-sum in real space, trilinear (``scipy.ndimage.map_coordinates``).
* **noise**: white Gaussian of variance ``mean(var(clean image)) / 10^(snr_db / 10)`` over
  the whole box; no CTF, particles centred (origins 0 Å).
* **files**: ``particles.mrcs`` (mrcfile), ``train.star`` / ``heldout.star`` (starfile, RELION
  3.1 with an optics table), ``map.mrc``, ``montage.png`` (matplotlib) — the layout of
  ``cryoposenet simulate``, so :mod:`molecules` trains, predicts and evaluates on it unchanged.

    python benchmarks/independent_sim.py --pdb ../shared/data/4ake.pdb --box 64 --apix 1.6 \
        --bfactor 5 -n 5000 --heldout 500 -o indep
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import gemmi
import mrcfile
import numpy as np
import pandas as pd
import starfile
from scipy import ndimage
from scipy.spatial.transform import Rotation

OVERSAMPLE = 4  # the density grid is this many times finer than the pixel


def read_model(pdb: Path) -> gemmi.Structure:
    """The first model of ``pdb`` (``.gz`` allowed) without hydrogens, waters or alternative
    conformations beyond the first."""
    if str(pdb).endswith(".gz"):
        st = gemmi.read_pdb_string(gzip.open(pdb, "rt").read())
    else:
        st = gemmi.read_structure(str(pdb))
    st.remove_hydrogens()
    st.remove_waters()
    st.remove_alternative_conformations()
    while len(st) > 1:
        del st[1]
    return st


def density_map(st: gemmi.Structure, box: int, apix: float, bfactor: float) -> np.ndarray:
    """``(box,)*3`` ``[z, y, x]`` map of ``st`` (see the module's text), float64."""
    fine = box * OVERSAMPLE
    side = box * apix
    atoms = [a for ch in st[0] for r in ch for a in r]
    pos = np.array([a.pos.tolist() for a in atoms])
    z = np.array([a.element.atomic_number for a in atoms], dtype=float)
    shift = (box // 2) * apix - (pos * z[:, None]).sum(0) / z.sum()
    for a, p in zip(atoms, pos + shift, strict=True):
        a.pos = gemmi.Position(*p)
        a.b_iso = 0.0
    st.cell = gemmi.UnitCell(side, side, side, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    calc = gemmi.DensityCalculatorE()
    calc.blur = bfactor
    calc.d_min = 0.0  # the grid below is used as it is
    calc.grid.set_unit_cell(st.cell)
    calc.grid.spacegroup = gemmi.find_spacegroup_by_name("P 1")
    calc.grid.set_size(fine, fine, fine)
    calc.put_model_density_on_grid(st[0])
    dense = np.array(calc.grid, copy=True).transpose(2, 1, 0)  # gemmi [x, y, z] -> [z, y, x]
    return fourier_crop(dense, box)


def fourier_crop(vol: np.ndarray, box: int) -> np.ndarray:
    """``vol`` ``(M,)*3`` resampled to ``(box,)*3`` on the same origin by keeping the central
    ``box`` Fourier coefficients per axis (``M`` a multiple of ``box``); mean value kept."""
    m = vol.shape[0]
    spec = np.fft.fftshift(np.fft.fftn(vol))
    lo = m // 2 - box // 2
    crop = spec[lo : lo + box, lo : lo + box, lo : lo + box]
    return np.fft.ifftn(np.fft.ifftshift(crop)).real * (box / m) ** 3


def project(vol: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Real-space projections ``(B, N, N)`` of ``vol`` ``[z, y, x]``: ``∫ V(R r) dz`` with
    ``r = (x, y, z)`` about voxel ``N//2`` and ``R`` ``(B, 3, 3)`` (RELION's ``Aᵀ``)."""
    n = vol.shape[0]
    c = np.arange(n) - n // 2
    zz, yy, xx = np.meshgrid(c, c, c, indexing="ij")
    r = np.stack([xx.ravel(), yy.ravel(), zz.ravel()])  # (3, N³), x fastest along the last axis
    out = np.empty((len(matrices), n, n))
    for i, rot in enumerate(matrices):
        p = rot @ r + n // 2  # (x, y, z) voxel coordinates in the map
        vals = ndimage.map_coordinates(vol, p[::-1], order=1, mode="constant", cval=0.0)
        out[i] = vals.reshape(n, n, n).sum(axis=0)  # sum over z
    return out


def write_star(path: Path, rows: slice, angles: np.ndarray, box: int, apix: float) -> None:
    """RELION 3.1 STAR for the particles ``rows`` of ``particles.mrcs`` (no CTF columns)."""
    idx = np.arange(len(angles))[rows]
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnOpticsGroup": [1],
            "rlnImagePixelSize": [apix],
            "rlnImageSize": [box],
            "rlnImageDimensionality": [2],
            "rlnVoltage": [300.0],
            "rlnSphericalAberration": [2.7],
            "rlnAmplitudeContrast": [0.1],
        }
    )
    particles = pd.DataFrame(
        {
            "rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in idx],
            "rlnAngleRot": angles[idx, 0],
            "rlnAngleTilt": angles[idx, 1],
            "rlnAnglePsi": angles[idx, 2],
            "rlnOriginXAngst": np.zeros(len(idx)),
            "rlnOriginYAngst": np.zeros(len(idx)),
            "rlnOpticsGroup": np.ones(len(idx), dtype=int),
        }
    )
    starfile.write({"optics": optics, "particles": particles}, path, overwrite=True)


def write_montage(path: Path, images: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(8, 4.4))
    for ax, img in zip(axes.ravel(), images, strict=False):
        ax.imshow(img, cmap="gray")
        ax.axis("off")
    fig.suptitle("independent simulator (gemmi + scipy)")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def simulate(pdb, out, *, box=64, apix=1.6, bfactor=5.0, n=5000, heldout=500, snr_db=None, seed=0, chunk=250):  # noqa: E501
    """Write the data set into ``out``; returns the noise σ (0 when noiseless) and seconds."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vol = density_map(read_model(Path(pdb)), box, apix, bfactor)
    vol = vol / vol.std()
    with mrcfile.new(out / "map.mrc", overwrite=True) as m:
        m.set_data(vol.astype(np.float32))
        m.voxel_size = apix
    rng = np.random.default_rng(seed)
    rots = Rotation.random(n, random_state=seed + 1)
    angles = rots.as_euler("ZYZ", degrees=True)  # (rot, tilt, psi)
    stack = mrcfile.new_mmap(out / "particles.mrcs", shape=(n, box, box), mrc_mode=2, overwrite=True)
    stack.set_image_stack()
    stack.voxel_size = apix
    imgs = np.concatenate([project(vol, rots[i : i + chunk].as_matrix()) for i in range(0, n, chunk)])
    sigma = 0.0 if snr_db is None else float(np.sqrt(imgs.var(axis=(1, 2)).mean() / 10 ** (snr_db / 10)))
    imgs += sigma * rng.standard_normal(imgs.shape)
    stack.data[:] = imgs.astype(np.float32)
    write_montage(out / "montage.png", imgs[:8])
    stack.close()
    write_star(out / "train.star", slice(0, n - heldout), angles, box, apix)
    write_star(out / "heldout.star", slice(n - heldout, None), angles, box, apix)
    return sigma, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pdb", required=True)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--apix", type=float, default=1.6)
    p.add_argument("--bfactor", type=float, default=5.0, help="Å² on every atom")
    p.add_argument("-n", type=int, default=5000)
    p.add_argument("--heldout", type=int, default=500)
    p.add_argument("--snr-db", type=float, default=None, help="default: noiseless")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", required=True)
    a = p.parse_args(argv)
    sigma, secs = simulate(
        a.pdb, a.out, box=a.box, apix=a.apix, bfactor=a.bfactor, n=a.n, heldout=a.heldout,
        snr_db=a.snr_db, seed=a.seed,
    )  # fmt: skip
    print(f"{a.out}: {a.n} images, {a.box} px, {a.apix} Å, B {a.bfactor} Å², σ {sigma:.4g}, {secs:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
