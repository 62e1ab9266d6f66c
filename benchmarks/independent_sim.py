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
* **shifts** (``--shift-max`` px, optional): each particle's centre moved uniformly within that
  radius, by a Fourier phase ramp; RELION's origin is the centre's offset negated (the particle
  sits at the box centre *minus* ``rlnOriginX/YAngst``). With shifts, ``train.star`` and
  ``heldout.star`` carry **no** origins (a fresh extraction: shifts not yet known) and
  ``train_truth.star`` / ``heldout_truth.star`` carry the true ones.
* **CTF** (``--ctf``, optional): RELION's formula, written out here in numpy,
  ``CTF(s) = -sin(π λ Δf s² - π/2 Cs λ³ s⁴ - atan(Q0/√(1-Q0²)))`` with ``Δf`` the astigmatic
  defocus at the frequency's azimuth *negated* (RELION's underfocus is positive ``rlnDefocusU``),
  λ of 300 kV electrons, Cs 2.7 mm, Q0 0.1; defocus U uniform in ``--defocus`` µm, V within 5 %
  of it, random azimuth. It is applied in a box twice the particle's (the projection padded with
  zeros), then cropped: signal delocalised beyond the box is lost, as in a real extraction.
* **noise**: white Gaussian of variance ``mean(var(image)) / 10^(snr_db / 10)`` over the whole
  box (the image after shifts and CTF).
* **files**: ``particles.mrcs`` (mrcfile), ``train.star`` / ``heldout.star`` (starfile, RELION
  3.1 with an optics table; CTF columns with ``--ctf``), ``map.mrc``, ``montage.png``
  (matplotlib) — the layout of ``cryoposenet simulate``, so :mod:`molecules` trains, predicts
  and evaluates on it unchanged.

    python benchmarks/independent_sim.py --pdb ../shared/data/4ake.pdb --box 64 --apix 1.6 \
        --bfactor 5 -n 5000 --heldout 500 -o indep
    python benchmarks/independent_sim.py --pdb 4ake_A.pdb --box 128 --apix 0.85 --bfactor 5 \
        --snr-db -10 --ctf --shift-max 5 -o indep_ctf   # a user's particles, made without us
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
KV, CS_MM, Q0 = 300.0, 2.7, 0.1  # microscope of the CTF


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


def wavelength_A(kv: float) -> float:
    """Relativistic electron wavelength (Å) at ``kv`` kilovolts."""
    v = kv * 1e3
    return 12.2643247 / np.sqrt(v * (1 + 0.978466e-6 * v))


def ctf_2d(n: int, apix: float, defocus: np.ndarray) -> np.ndarray:
    """RELION's CTF ``(B, n, n)`` on ``np.fft.fftfreq`` axes ``[y, x]`` for ``defocus`` ``(B, 3)``
    = (U Å, V Å, azimuth °) (see the module's text)."""
    f = np.fft.fftfreq(n, d=apix)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    s2, azimuth = fx**2 + fy**2, np.arctan2(fy, fx)
    u, v, ang = (defocus[:, i, None, None] for i in range(3))
    mean, half_diff = (u + v) / 2, (u - v) / 2
    delta_f = -(mean + half_diff * np.cos(2 * (azimuth - np.deg2rad(ang))))  # RELION's sign
    lam = wavelength_A(KV)
    gamma = np.pi * lam * delta_f * s2 + np.pi / 2 * CS_MM * 1e7 * lam**3 * s2**2
    return -np.sin(gamma - np.arctan(Q0 / np.sqrt(1 - Q0**2)))


def form_images(proj: np.ndarray, apix: float, shifts_px: np.ndarray | None, defocus: np.ndarray | None):
    """Projections ``(B, N, N)`` moved by ``shifts_px`` ``(B, 2)`` (x, y; the particle's centre
    goes to ``N//2 + shift``) and multiplied by the CTF of ``defocus`` in a ``2N`` box, cropped
    back to ``N``."""
    if shifts_px is None and defocus is None:
        return proj
    b, n, _ = proj.shape
    m = 2 * n
    pad = np.zeros((b, m, m))
    lo = m // 2 - n // 2
    pad[:, lo : lo + n, lo : lo + n] = proj
    spec = np.fft.fft2(pad)
    if shifts_px is not None:
        f = np.fft.fftfreq(m)
        fy, fx = np.meshgrid(f, f, indexing="ij")
        phase = fx * shifts_px[:, 0, None, None] + fy * shifts_px[:, 1, None, None]
        spec *= np.exp(-2j * np.pi * phase)
    if defocus is not None:
        spec *= ctf_2d(m, apix, defocus)
    return np.fft.ifft2(spec).real[:, lo : lo + n, lo : lo + n]


def write_star(path: Path, rows: slice, angles, box: int, apix: float, origins_A=None, defocus=None) -> None:
    """RELION 3.1 STAR for the particles ``rows`` of ``particles.mrcs``: origins ``(M, 2)`` Å
    (None: no origin columns), CTF columns when ``defocus`` ``(M, 3)`` is given."""
    idx = np.arange(len(angles))[rows]
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnOpticsGroup": [1],
            "rlnImagePixelSize": [apix],
            "rlnImageSize": [box],
            "rlnImageDimensionality": [2],
            "rlnVoltage": [KV],
            "rlnSphericalAberration": [CS_MM],
            "rlnAmplitudeContrast": [Q0],
        }
    )
    particles = pd.DataFrame(
        {
            "rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in idx],
            "rlnAngleRot": angles[idx, 0],
            "rlnAngleTilt": angles[idx, 1],
            "rlnAnglePsi": angles[idx, 2],
            "rlnOpticsGroup": np.ones(len(idx), dtype=int),
        }
    )
    if origins_A is not None:
        particles["rlnOriginXAngst"], particles["rlnOriginYAngst"] = origins_A[idx, 0], origins_A[idx, 1]
    if defocus is not None:
        particles["rlnDefocusU"], particles["rlnDefocusV"] = defocus[idx, 0], defocus[idx, 1]
        particles["rlnDefocusAngle"] = defocus[idx, 2]
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


def simulate(
    pdb, out, *, box=64, apix=1.6, bfactor=5.0, n=5000, heldout=500, snr_db=None, seed=0,
    shift_max_px=0.0, defocus_um=None, chunk=250,
):  # fmt: skip
    """Write the data set into ``out``; returns the noise σ (0 when noiseless) and seconds.
    ``defocus_um``: (min, max) of defocus U in µm for a CTF, None for none."""
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
    shifts, defocus = draw_shifts(n, shift_max_px, seed), draw_defocus(n, defocus_um, seed)
    stack = mrcfile.new_mmap(out / "particles.mrcs", shape=(n, box, box), mrc_mode=2, overwrite=True)
    stack.set_image_stack()
    stack.voxel_size = apix
    parts = [slice(i, i + chunk) for i in range(0, n, chunk)]
    imgs = np.concatenate(
        [form_images(project(vol, rots[p].as_matrix()), apix, *_rows(p, shifts, defocus)) for p in parts]
    )
    sigma = 0.0 if snr_db is None else float(np.sqrt(imgs.var(axis=(1, 2)).mean() / 10 ** (snr_db / 10)))
    imgs += sigma * rng.standard_normal(imgs.shape)
    stack.data[:] = imgs.astype(np.float32)
    write_montage(out / "montage.png", imgs[:8])
    stack.close()
    write_stars(out, n, heldout, angles, box, apix, shifts, defocus)
    return sigma, time.perf_counter() - t0


def _rows(part: slice, *arrays):
    return [None if x is None else x[part] for x in arrays]


def draw_shifts(n: int, shift_max_px: float, seed: int) -> np.ndarray | None:
    """``(n, 2)`` centre offsets (x, y) px uniform in the disc of radius ``shift_max_px``."""
    if shift_max_px <= 0:
        return None
    rng = np.random.default_rng([seed, 1])
    radius, phi = shift_max_px * np.sqrt(rng.uniform(size=n)), rng.uniform(0, 2 * np.pi, n)
    return np.stack([radius * np.cos(phi), radius * np.sin(phi)], axis=1)


def draw_defocus(n: int, defocus_um, seed: int) -> np.ndarray | None:
    """``(n, 3)`` (U Å, V Å, azimuth °): U uniform in ``defocus_um``, V within 5 % of U."""
    if defocus_um is None:
        return None
    rng = np.random.default_rng([seed, 2])
    u = rng.uniform(*defocus_um, n) * 1e4
    return np.stack([u, u * rng.uniform(0.95, 1.0, n), rng.uniform(0, 180, n)], axis=1)


def write_stars(out: Path, n, heldout, angles, box, apix, shifts, defocus) -> None:
    """``train.star`` / ``heldout.star`` (origins 0 Å without shifts, none with them) and, with
    shifts, ``train_truth.star`` / ``heldout_truth.star`` holding the true origins."""
    rows = {"train": slice(0, n - heldout), "heldout": slice(n - heldout, None)}
    zero = np.zeros((n, 2))
    for name, part in rows.items():
        write_star(out / f"{name}.star", part, angles, box, apix, zero if shifts is None else None, defocus)
        if shifts is not None:
            write_star(out / f"{name}_truth.star", part, angles, box, apix, -shifts * apix, defocus)


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
    p.add_argument("--shift-max", type=float, default=0.0, help="px; origins then only in *_truth.star")
    p.add_argument("--ctf", action="store_true", help="RELION's CTF, 300 kV, Cs 2.7 mm, Q0 0.1")
    p.add_argument("--defocus", type=float, nargs=2, default=[1.0, 2.5], help="µm, range of defocus U")
    p.add_argument("-o", "--out", required=True)
    a = p.parse_args(argv)
    sigma, secs = simulate(
        a.pdb, a.out, box=a.box, apix=a.apix, bfactor=a.bfactor, n=a.n, heldout=a.heldout,
        snr_db=a.snr_db, seed=a.seed, shift_max_px=a.shift_max, defocus_um=a.defocus if a.ctf else None,
    )  # fmt: skip
    extra = f", CTF {a.defocus[0]}–{a.defocus[1]} µm" if a.ctf else ""
    extra += f", shifts ≤ {a.shift_max} px" if a.shift_max > 0 else ""
    print(
        f"{a.out}:",
        f"{a.n} images, {a.box} px, {a.apix} Å, B {a.bfactor} Å²{extra}, σ {sigma:.4g}, {secs:.0f} s",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
