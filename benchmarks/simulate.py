"""Benchmark ``simulate_dataset``: wall time and peak memory for the paper-sized data sets.

    python benchmarks/simulate.py                 # both cases
    python benchmarks/simulate.py --case 128      # 10,000 images of 128 px (0.8 Å)
    python benchmarks/simulate.py --case 64 -n 20000

Each case runs in its own child process so that its peak RSS (``ru_maxrss``) is its own; CPU time
(user + system) is reported beside wall time because the machine may be shared, and the peak of
``RssAnon`` beside ``ru_maxrss`` (see :class:`AnonPeak`). The model
is 4AKE from ``../shared/data/4ake.pdb`` when present (the paper's molecule), else the embedded
molecule; the data set is the paper's preset G (0 dB, CTF 0.4–1.2 µm), the most work per image.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CASES = {"128": {"n": 10_000, "box": 128, "apix": 0.8}, "64": {"n": 100_000, "box": 64, "apix": 1.6}}
DEFAULT_PDB = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "4ake.pdb"


class AnonPeak:
    """Samples ``RssAnon`` (memory the process itself holds, not file pages) every 0.2 s; Linux only.

    ``ru_maxrss`` also counts the pages of the memory-mapped output stack that the kernel keeps
    resident after they are written (clean, reclaimable page cache), so it grows with the stack.
    """

    def __init__(self):
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def run_case(case: str, n: int | None, pdb: str | None, out: str | None, threads: int | None) -> dict:
    """Simulate one case in this process; return its figures."""
    import torch

    from cryoposenet.simulate import default_molecule, simulate_dataset

    if threads:
        torch.set_num_threads(threads)
    spec = dict(CASES[case])
    n = n or spec["n"]
    source = {"pdb": pdb} if pdb else {"atoms": default_molecule()}
    with tempfile.TemporaryDirectory(prefix="simbench-", dir=out) as tmp:
        with AnonPeak() as anon:
            t0 = time.perf_counter()
            res = simulate_dataset(
                tmp, **source, box=spec["box"], apix=spec["apix"], n_images=n, preset="G", progress=False
            )
            wall = time.perf_counter() - t0
        stack_mb = res.particles.stat().st_size / 2**20
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "case": f"{n} x {spec['box']} px",
        "model": Path(pdb).name if pdb else "embedded",
        "wall_s": wall,
        "ms_per_image": 1e3 * wall / n,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "peak_anon_mb": anon.peak_kb / 1024,
        "stack_mb": stack_mb,
        "snr_db_measured": res.snr_db_measured,
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=[*CASES, "both"], default="both")
    ap.add_argument("-n", type=int, default=None, help="images (default: 10,000 at 128 px, 100,000 at 64 px)")
    ap.add_argument("--pdb", default=str(DEFAULT_PDB) if DEFAULT_PDB.is_file() else None)
    ap.add_argument("--out", default=None, help="folder for the temporary data set (default: system temp)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(args.case, args.n, args.pdb, args.out, args.threads)))
        return
    rows = []
    for case in CASES if args.case == "both" else [args.case]:
        cmd = [sys.executable, __file__, "--child", "--case", case]
        opts = {"-n": args.n, "--pdb": args.pdb, "--out": args.out, "--threads": args.threads}
        for flag, value in opts.items():
            if value is not None:
                cmd += [flag, str(value)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    head = ("case", "model", "wall (s)", "CPU (s)", "ms/img", "ru_maxrss MB", "anon MB", "stack MB", "SNR dB")
    print(f"\n{head[0]:<20}{head[1]:<10}" + "".join(f"{h:>14}" for h in head[2:]))
    for r in rows:
        print(
            f"{r['case']:<20}{r['model']:<10}{r['wall_s']:>14.1f}{r['cpu_s']:>14.1f}{r['ms_per_image']:>14.2f}"
            f"{r['peak_rss_mb']:>14.0f}{r['peak_anon_mb']:>14.0f}{r['stack_mb']:>14.0f}"
            f"{r['snr_db_measured']:>14.3f}"
        )


if __name__ == "__main__":
    main()
