"""``montage.png``: a few simulated images, one column per image, one row per stage."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io.atomic import atomic_path

__all__ = ["write_montage"]


def write_montage(path: str | os.PathLike, rows: dict[str, np.ndarray], title: str = "") -> None:
    """Write a labelled grid: ``rows`` maps a row label to images ``(k, N, N)``; the PNG is atomic.

    Each image is shown with its own grey scale (1st–99th percentile), particles bright.
    """
    labels = list(rows)
    k = len(rows[labels[0]])
    fig = Figure(figsize=(1.4 * k + 1.2, 1.5 * len(labels) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(labels), k, squeeze=False)
    for r, label in enumerate(labels):
        for c in range(k):
            ax = axes[r, c]
            img = np.asarray(rows[label][c], dtype=np.float64)
            lo, hi = np.percentile(img, [1, 99])
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
            if r == 0:
                ax.set_title(f"#{c + 1}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
