"""Benchmark training throughput and memory: images/s and peak RSS for 2k and 100k-particle stacks.

    python benchmarks/throughput.py                          # 64 and 128 px, 2k and 100k images
    python benchmarks/throughput.py --px 64 --sizes 2000 100000 --steps 20
    python benchmarks/throughput.py --px 128 --sizes 2000 --threads 2
    python benchmarks/throughput.py --px 64 --profile        # torch.profiler table of 5 steps
    python benchmarks/throughput.py --px 64 --crop-from 128 --sizes 2000 50000  # train --box 64
    python benchmarks/throughput.py --px 64 --search local --shifts search   # the joint shift search
    python benchmarks/throughput.py --px 64 --sizes 2000 --map-views 0 0.5   # without and with views

Stacks are not simulated (100,000 images of 64 px take ~18 min to simulate here): a cheap
generator writes smooth random blobs plus noise with a STAR file (random angles, CTF 1–2 µm) into
``--workdir`` once and reuses them. Each case runs in its own child process so its peak resident
memory (``VmHWM``, see :func:`peak_rss_mb`) is its own; the child builds the default recipe
(8 heads, symmetric loss, encoder, batch 32), runs 2 warm-up steps, then times ``--steps`` steps
(data reading included);
``--band c2f`` times the recipe's coarse-to-fine start instead of the full band.
Prints a Markdown table. The device is ``cuda`` when one is visible, else the CPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BLOCK = 4096  # images generated and written at a time


def _patterns(box: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` smooth random particle-like images ``(count, box, box)``: sums of Gaussian blobs."""
    c = np.arange(box) - box // 2
    y, x = np.meshgrid(c, c, indexing="ij")
    out = np.zeros((count, box, box), dtype=np.float32)
    for k in range(count):
        for _ in range(6):
            cx, cy = rng.uniform(-box / 5, box / 5, size=2)
            s = rng.uniform(box / 30, box / 10)
            out[k] += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s)).astype(np.float32)
    return out


def _apix(px: int) -> float:
    """1.6 Å at 64 px, 0.8 Å at 128 px (the paper's boxes): the same 102 Å field of view."""
    return 102.4 / px


def make_stack(folder: Path, n_images: int, box: int, apix: float, seed: int = 0) -> Path:
    """Write ``particles.mrcs`` + ``particles.star`` of ``n_images`` images into ``folder`` (once)."""
    import pandas as pd

    from cryoposenet.io import StackWriter, default_optics, write_star

    star = folder / "particles.star"
    if star.exists():
        return star
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = _patterns(box, 64, rng)
    with StackWriter(folder / "particles.mrcs", n_images, box, apix) as writer:
        for i in range(0, n_images, BLOCK):
            m = min(BLOCK, n_images - i)
            pick = base[rng.integers(len(base), size=m)]
            noise = rng.standard_normal((m, box, box), dtype=np.float32)
            writer[i : i + m] = pick + noise
    defocus = rng.uniform(10000, 20000, size=n_images)
    parts = pd.DataFrame(
        {
            "rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(n_images)],
            "rlnAngleRot": rng.uniform(-180, 180, n_images),
            "rlnAngleTilt": np.degrees(np.arccos(rng.uniform(-1, 1, n_images))),
            "rlnAnglePsi": rng.uniform(-180, 180, n_images),
            "rlnOriginXAngst": np.zeros(n_images),
            "rlnOriginYAngst": np.zeros(n_images),
            "rlnDefocusU": defocus,
            "rlnDefocusV": defocus,
            "rlnDefocusAngle": np.zeros(n_images),
        }
    )
    write_star(star, parts, default_optics(apix, box))
    return star


def peak_rss_mb() -> float:
    """This process's peak resident memory: ``VmHWM`` where Linux gives it, else ``ru_maxrss``.

    ``ru_maxrss`` survives ``exec``: a child started by a parent that had just written a large
    stack through a memory map would report the parent's peak (seen here: 7 GB for 128 px × 100k).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(
    star: str, steps: int, batch: int, threads: int, full_band: bool, search: str = "off",
    box: int | None = None, shifts: str = "known", map_views: float | None = None,
) -> dict:  # fmt: skip
    """Time ``steps`` training steps on ``star`` in this process; images/s and peak RSS.

    Steps run through :func:`cryoposenet.training.train.train` (images streamed, read one step ahead);
    the final pose pass is skipped. Time is counted from the end of the second (warm-up) step.
    ``full_band``: the loss on the full band from the start (as after the coarse-to-fine phase,
    most of a run), else the recipe's start (a 4-cycle band: the decoder samples less).
    ``search``: ``local`` (the recipe: every timed step searches, on local levels, and the map learns
    the loss band), ``grid`` (the grid alone, its band capped at N/4, as before local levels) or
    ``off`` (no step searches). ``box``: the training box (particles Fourier-cropped to it
    as they are read, as ``train --box``); ``shifts``: ``search`` searches translations as
    ``train --shifts search`` does; ``map_views``: the encoder's views of the map per image
    (None: the recipe's, ``TrainConfig.map_views``; 0: none).
    """
    import torch

    from cryoposenet.io import load_particles
    from cryoposenet.training.inputs import particle_data, resolve_settings
    from cryoposenet.training.shift_search import default_shift_range
    from cryoposenet.training.train import TrainConfig, train

    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    stack = load_particles(star)
    data = particle_data(stack, resolve_settings(stack, box=box, shifts=shifts, invert=False))
    shift_range = default_shift_range(data.box) if shifts == "search" else 0.0
    stamps, losses = [], []

    def on_step(info, _state) -> None:
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        losses.append(info.loss)

    band = {"kmax_start": None} if full_band else {}
    search_steps = None if search == "off" else steps + 2
    local = {"search_local": None} if search == "grid" else {}  # "local": the recipe's default
    views = {} if map_views is None else {"map_views": map_views}
    config = TrainConfig(
        steps=steps + 2, batch_size=batch, device=device, search_steps=search_steps,
        shift_range=shift_range, **band, **local, **views,
    )  # fmt: skip
    train(data, config, on_step, poses=False)
    return {
        "device": device,
        "images_per_s": steps * batch / (stamps[-1] - stamps[1]),
        "peak_rss_MB": peak_rss_mb(),
        "last_loss": losses[-1],
    }


def profile(star: str, steps: int, batch: int, threads: int, full_band: bool) -> str:
    """torch.profiler's table (top 30 ops by self CPU time) of ``steps`` steps after 2 warm-up steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from cryoposenet.io import load_particles
    from cryoposenet.training.inputs import particle_data
    from cryoposenet.training.train import TrainConfig, init_state, train

    torch.set_num_threads(threads)
    data = particle_data(load_particles(star))
    band = {"kmax_start": None} if full_band else {}
    state = init_state(data, TrainConfig(steps=2, batch_size=batch, **band))
    train(data, state.config, state=state, poses=False)
    config = TrainConfig(steps=2 + steps, batch_size=batch, **band)
    state.config = config
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        train(data, config, state=state, poses=False)
    by_shape = prof.key_averages(group_by_input_shape=True)
    return by_shape.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=30)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--px", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 100_000])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cryoposenet-throughput"))
    ap.add_argument("--band", choices=["full", "c2f"], default="full", help="loss band (see child())")
    ap.add_argument(
        "--search", choices=["local", "grid", "off"], default="off",
        help="time search steps: the recipe's (local levels, map on the loss band), the grid alone, or none",
    )  # fmt: skip
    ap.add_argument("--crop-from", type=int, help="particles of this box, Fourier-cropped to --px")
    ap.add_argument("--shifts", choices=["known", "search"], default="known", help="as train --shifts")
    ap.add_argument(
        "--map-views", type=float, nargs="+", default=[None],
        help="the encoder's views of the map per image (default: the recipe's); several: one row each",
    )  # fmt: skip
    ap.add_argument("--box", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help="profile steps at the first --px, 2k images")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.profile:
        star = make_stack(args.workdir / f"{args.px[0]}px_2000", 2000, args.px[0], apix=_apix(args.px[0]))
        print(profile(str(star), min(args.steps, 5), args.batch, args.threads, args.band == "full"))
        return
    if args.child:
        full = args.band == "full"
        views = args.map_views[0]
        r = child(
            args.child, args.steps, args.batch, args.threads, full, args.search, args.box, args.shifts, views
        )
        print(json.dumps(r))
        return
    head = "| px | particles (own box) | loss band | search | shifts | views/image | device | images/s |"
    print(head + " peak RSS (MB) |")
    print("|---:|---:|---|---|---|---:|---|---:|---:|")
    for px, n, views in itertools.product(args.px, args.sizes, args.map_views):
        own = args.crop_from or px  # the particles' box; cropped to px when larger
        star = make_stack(args.workdir / f"{own}px_{n}", n, own, apix=_apix(px) * px / own)
        cmd = [sys.executable, __file__, "--child", str(star), "--steps", str(args.steps)]
        cmd += ["--box", str(px), "--shifts", args.shifts]
        cmd += ["--batch", str(args.batch), "--threads", str(args.threads), "--band", args.band]
        cmd += ["--search", args.search] + ([] if views is None else ["--map-views", str(views)])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        cells = [
            px,
            f"{n:,} ({own} px)",
            args.band,
            args.search,
            args.shifts,
            "recipe" if views is None else views,
            r["device"],
            f"{r['images_per_s']:.1f}",
            f"{r['peak_rss_MB']:.0f}",
        ]
        print("| " + " | ".join(map(str, cells)) + " |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
