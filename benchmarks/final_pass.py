"""Cost of the passes over all particles after training: time and memory per particle.

    python benchmarks/final_pass.py --px 64 --sizes 2000 20000 --refine-steps 40
    python benchmarks/final_pass.py --px 64 128 --sizes 2000 --full-map
    python benchmarks/final_pass.py --px 64 --sizes 1000 --shifts search

Times are in ms per particle.

Each case runs in a child process on a synthetic stack (``throughput.make_stack``, cached in
``--workdir``) with the default recipe's untrained model (the passes cost the same trained or
not): the final pose pass (encoder forward, every head scored against the map), the local
refinement (``--refine-steps`` per image) and, with ``--full-map``, the full-size backprojection
(float32, as ``train`` writes ``OUT/full/``). Reported: milliseconds per particle of each pass, the
resident memory before the passes, and how much the passes added (``VmHWM`` after − ``VmRSS``
before, per particle: flat memory means this does not grow with the number of particles).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import _apix, make_stack, peak_rss_mb  # noqa: E402


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(star: str, refine_steps: int, full_map: bool, shifts: str = "known") -> dict:
    import torch

    from cryoposenet.analysis.reconstruct import backproject_halves
    from cryoposenet.io.particles import load_particles
    from cryoposenet.runs.runner import make_config
    from cryoposenet.training.data import pass_progress
    from cryoposenet.training.inputs import particle_data, resolve_settings
    from cryoposenet.training.refine import refine_fits
    from cryoposenet.training.shift_search import default_shift_range
    from cryoposenet.training.train import final_poses, init_state

    torch.set_num_threads(1)
    stack = load_particles(star)
    data = particle_data(stack, resolve_settings(stack, shifts=shifts, invert=False))
    searching = {"shift_range": default_shift_range(data.box)} if shifts == "search" else {}
    state = init_state(data, make_config(100, **searching))
    m, before, out = len(data), _rss_mb(), {}
    t0 = time.perf_counter()
    with pass_progress("final poses", m, show=False):
        rotations, found = final_poses(state, data)
    out["final_ms"] = 1e3 * (time.perf_counter() - t0) / m
    if refine_steps:
        t0 = time.perf_counter()
        with pass_progress("refine", m, show=False):
            rotations, found = refine_fits(state, data, rotations, steps=refine_steps, translations=found)
        out["refine_ms"] = 1e3 * (time.perf_counter() - t0) / m
    if full_map:
        t0 = time.perf_counter()
        ctf = stack.table.ctf_params()
        backproject_halves(data.images, rotations, None, ctf, data.apix, dtype=torch.float32, show=False)
        out["full_map_ms"] = 1e3 * (time.perf_counter() - t0) / m
    out.update(before_mb=before, added_mb=peak_rss_mb() - before, particles=m)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--px", type=int, nargs="+", default=[64])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--refine-steps", type=int, default=40)
    p.add_argument("--full-map", action="store_true")
    p.add_argument("--shifts", choices=("known", "search"), default="known", help="as train --shifts")
    p.add_argument("--workdir", type=Path, default=Path("bench_stacks"))
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), a.child[2] == "1", a.child[3])))
        return
    print("| px | particles | final poses | refine | full map | RSS before (MB) | added (MB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for px in a.px:
        for m in a.sizes:
            star = make_stack(a.workdir / f"{px}px_{m}", m, px, _apix(px))
            flags = [str(star), str(a.refine_steps), str(int(a.full_map)), a.shifts]
            cmd = [sys.executable, __file__, "--child", *flags]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            cells = [f"{r[k]:.2f}" if k in r else "–" for k in ("final_ms", "refine_ms", "full_map_ms")]
            print(f"| {px} | {m:,} | {' | '.join(cells)} | {r['before_mb']:.0f} | {r['added_mb']:.0f} |")


if __name__ == "__main__":
    main()
