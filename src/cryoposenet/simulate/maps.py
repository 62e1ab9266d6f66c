"""A user's MRC map as the ground truth for simulation (``--map``).

Choice: the map is **resampled** onto the requested grid (``box`` voxels of ``apix`` Å, centre at
voxel ``N//2`` kept at the physical centre of the input map, voxel ``M//2``) whenever its pixel
size or box differs; a map that already matches is used as is. Resampling is cubic-spline
interpolation (``scipy.ndimage.map_coordinates``), preceded by a Gaussian low-pass when the pixel
size grows (σ = 0.4·apix, so content beyond the new Nyquist does not alias). A map without a
pixel size in its header is taken to have ``apix``. A map whose content (|value| mass) falls
outside the new box by more than 1 % is an :class:`InputError` naming the box it needs.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..io.mrc import read_map

__all__ = ["load_map_volume", "resample_map"]

log = logging.getLogger(__name__)


def load_map_volume(path: str | os.PathLike, box: int, apix: float) -> np.ndarray:
    """The map at ``path`` as float32 ``(box, box, box)`` ``[z, y, x]`` at ``apix`` Å/voxel."""
    data, apix_in = read_map(path)
    if apix_in is None:
        log.warning("%s: no pixel size in the MRC header; taking --apix %.4g Å", path, apix)
        apix_in = apix
    same_apix = abs(apix_in - apix) <= 1e-3 * apix
    if same_apix and data.shape[0] == box:
        return data.astype(np.float32)
    _check_fits(data, apix_in, box, apix, path)
    if not same_apix:
        log.info("%s: resampling from %.4g Å to %.4g Å per pixel", path, apix_in, apix)
    return resample_map(data, apix_in, box, apix)


def _check_fits(data: np.ndarray, apix_in: float, box: int, apix: float, path) -> None:
    """Raise when more than 1 % of the map's |value| mass lies outside the new box."""
    m = data.shape[0]
    half_A = (box // 2 - 0.5) * apix  # the new box spans centre ± this, to voxel edges
    c = (np.arange(m) - m // 2) * apix_in
    inside_1d = np.abs(c) <= half_A
    mass = np.abs(data)
    total = mass.sum()
    inside = mass[np.ix_(inside_1d, inside_1d, inside_1d)].sum()
    if total > 0 and inside < 0.99 * total:
        need = 2 * math.ceil(m * apix_in / (2 * apix))
        raise InputError(
            f"map content ({m} px of {apix_in:g} Å) does not fit a {box}-pixel box at {apix:g} Å; "
            f"it needs --box {need}",
            path,
        )


def resample_map(data: np.ndarray, apix_in: float, box: int, apix: float) -> np.ndarray:
    """Resample ``data`` ``(M, M, M)`` at ``apix_in`` onto ``(box,)*3`` at ``apix``, centres aligned."""
    m = data.shape[0]
    src = data.astype(np.float64)
    if apix > apix_in * 1.001:
        src = ndimage.gaussian_filter(src, sigma=0.4 * apix / apix_in, mode="constant")
    coord = (np.arange(box) - box // 2) * (apix / apix_in) + m // 2
    z, y, x = np.meshgrid(coord, coord, coord, indexing="ij")
    out = ndimage.map_coordinates(src, [z, y, x], order=3, mode="constant", cval=0.0)
    return out.astype(np.float32)
