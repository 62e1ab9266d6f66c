"""Decoder throughput: images/s of ``volume_to_fourier`` + ``render`` (CTF and shifts), forward and
backward to both the map and the rotation parameters, printed as a Markdown table.

    python benchmarks/projector.py                       # 64 and 128 px, batch 32, oversample 2
    python benchmarks/projector.py --box 64 --oversample 1 2 --repeats 10
    python benchmarks/projector.py --compare             # + accuracy and library comparisons

``--compare`` also measures accuracy against a real-space rotate-and-sum reference and against
exact (analytic) projections of a Gaussian-blob map, and compares with torch-fourier-slice,
torch-ctf and roma when they are installed (they are not dependencies of cryoposenet).
Timings are the best of ``--repeats`` runs after one warm-up (the median is shown too): on a
shared machine the best run is the least disturbed one.
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import statistics
import sys
import time

import torch

from cryoposenet.physics import imaging, projection, rotations
from cryoposenet.physics.ctf import ctf_half_plane
from cryoposenet.physics.fourier import fourier_to_image


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """Best and median seconds of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    return time_cases([("", fn)], device, repeats)[""]


def time_cases(cases, device: torch.device, repeats: int) -> dict[str, tuple[float, float]]:
    """Best and median seconds of each ``(name, fn)``, after one warm-up each. The cases take
    turns in every round, so load from other processes falls on all of them alike."""
    for _, fn in cases:
        fn()
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(repeats):
        for name, fn in cases:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def peak_memory_mib(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; the process's peak so far
    return f"{rss / 1024:.0f} MiB (process RSS)"


def blob_map(n: int, seed: int = 0, k: int = 6):
    """Asymmetric Gaussian blobs: the map ``(n, n, n)`` and a function giving exact projections."""
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(k, 3, generator=g, dtype=torch.float64) - 0.5) * 0.4 * n
    sig = (0.04 + 0.06 * torch.rand(k, generator=g, dtype=torch.float64)) * n
    hgt = 0.5 + torch.rand(k, generator=g, dtype=torch.float64)
    c = torch.arange(n, dtype=torch.float64) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    vol = torch.zeros(n, n, n, dtype=torch.float64)
    for p, s, h in zip(pos, sig, hgt, strict=True):
        vol += h * torch.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * s**2))

    def exact(rots: torch.Tensor) -> torch.Tensor:
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        centres = torch.einsum("bij,kj->bki", rots.to(torch.float64), pos)  # blob k lands at A p_k
        out = torch.zeros(len(rots), n, n, dtype=torch.float64)
        for i in range(k):
            cx, cy = centres[:, i, 0, None, None], centres[:, i, 1, None, None]
            out += (
                hgt[i]
                * sig[i]
                * math.sqrt(2 * math.pi)
                * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sig[i] ** 2))
            )
        return out

    return vol, exact


def corr_min(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.double() - a.double().mean(dim=(-2, -1), keepdim=True)
    b = b.double() - b.double().mean(dim=(-2, -1), keepdim=True)
    c = (a * b).sum(dim=(-2, -1)) / (a.norm(dim=(-2, -1)) * b.norm(dim=(-2, -1)))
    return c.min().item()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# --------------------------------------------------------------------------- decoder benchmark


def decoder_step(n: int, batch: int, oversample: int, device: torch.device, dtype: torch.dtype):
    """One training-like step: map -> padded rfft -> slices -> shift -> CTF -> L2 -> backward."""
    g = torch.Generator().manual_seed(0)
    vol = (torch.randn(n, n, n, generator=g) * 0.01).to(device, dtype).requires_grad_(True)
    pose = torch.randn(batch, 6, generator=g).to(device, dtype).requires_grad_(True)
    shifts = (torch.randn(batch, 2, generator=g) * 2).to(device, dtype)
    defocus = (torch.rand(batch, generator=g) * 8000 + 4000).to(device, dtype)
    ctf = ctf_half_plane(
        n,
        1.5,
        device=device,
        dtype=dtype,
        defocus_u_A=defocus,
        defocus_v_A=defocus * 0.95,
        defocus_angle_deg=30.0,
        voltage_kv=300.0,
        cs_mm=2.7,
        amplitude_contrast=0.1,
    )
    target = torch.randn(batch, n, n, generator=g).to(device, dtype)

    def step():
        vol.grad = pose.grad = None
        fvol = projection.volume_to_fourier(vol, oversample=oversample)
        img = imaging.render(fvol, rotations.params_to_matrix("s2s2", pose), ctf=ctf, translations_px=shifts)
        loss = (img - target).square().mean()
        loss.backward()

    return step


def bench_decoder(args, device: torch.device) -> None:
    print(f"\n### Decoder fwd+bwd (map and s2s2 rotations), CTF + shifts, {args.dtype}, {device}\n")
    print("| box | oversample | batch | best ms/batch | median ms/batch | images/s (best) | peak memory |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    dtype = getattr(torch, args.dtype)
    for n in args.box:
        cases = [(str(p), decoder_step(n, args.batch, p, device, dtype)) for p in args.oversample]
        memory = {}
        for p, fn in cases:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            fn()
            memory[p] = peak_memory_mib(device)
        for p, (best, med) in time_cases(cases, device, args.repeats).items():
            print(
                f"| {n} | {p} | {args.batch} | {best * 1e3:.1f} | {med * 1e3:.1f} | "
                f"{args.batch / best:.0f} | {memory[p]} |",
                flush=True,
            )


# --------------------------------------------------------------------------- comparisons


def try_import(name: str):
    try:
        return __import__(name)
    except ImportError:
        print(f"\n({name} not installed: skipped)")
        return None


def compare_accuracy(args, tfs) -> None:
    print("\n### Projector accuracy, asymmetric 6-blob map, 16 random poses (float32 projectors)\n")
    print("corr = worst per-image Pearson correlation; relL2 = ‖p − ref‖/‖ref‖ over the stack.\n")
    print("| box | projector | corr vs real-space | relL2 vs real-space | corr vs exact | relL2 vs exact |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in args.box:
        vol64, exact = blob_map(n)
        rots = rotations.random_rotations(16, torch.Generator().manual_seed(1))
        real = projection.project_real_space(vol64, rots)
        ref = exact(rots)
        rows = [("real-space rotate+sum (float64)", real)]
        vol = vol64.float()
        for p in (1, 2):
            for gc in (False, True):
                fvol = projection.volume_to_fourier(vol, oversample=p, gridding_correction=gc)
                img = fourier_to_image(projection.slice_volume(fvol, rots.float()), n)
                rows.append((f"ours oversample {p}, gridding {'on' if gc else 'off'}", img))
        if tfs is not None:
            # torch-fourier-slice samples at M k for xyz column vectors: our pose A is its Aᵀ.
            for pad in (2.0,):
                img = tfs.project_3d_to_2d(vol, rots.transpose(-1, -2).float(), pad_factor=pad)
                rows.append((f"torch-fourier-slice pad {pad:g}", img))
            wrong = tfs.project_3d_to_2d(vol, rots.float())
            rows.append(("torch-fourier-slice given A (wrong pose)", wrong))
        for name, img in rows:
            print(
                f"| {n} | {name} | {corr_min(img, real):.5f} | {rel_l2(img, real):.4f} | "
                f"{corr_min(img, ref):.5f} | {rel_l2(img, ref):.4f} |",
                flush=True,
            )


def projector_steps(n: int, batch: int, device: torch.device, tfs) -> list:
    """(name, step) pairs: projector alone, forward and backward to the map and the rotations."""
    g = torch.Generator().manual_seed(0)
    vol = (torch.randn(n, n, n, generator=g) * 0.01).to(device).requires_grad_(True)
    pose = torch.randn(batch, 6, generator=g).to(device).requires_grad_(True)

    def ours(p):
        def step():
            vol.grad = pose.grad = None
            fvol = projection.volume_to_fourier(vol, oversample=p)
            img = fourier_to_image(projection.slice_volume(fvol, rotations.s2s2_to_matrix(pose)), n)
            img.square().mean().backward()

        return step

    def theirs():
        vol.grad = pose.grad = None
        # torch-fourier-slice samples at M k for xyz column vectors: our pose A is its Aᵀ.
        img = tfs.project_3d_to_2d(vol, rotations.s2s2_to_matrix(pose).transpose(-1, -2))
        img.square().mean().backward()

    steps = [("ours oversample 1", ours(1)), ("ours oversample 2", ours(2))]
    if tfs is not None:
        steps.append(("torch-fourier-slice pad 2", theirs))
    return steps


def compare_speed(args, device, tfs) -> None:
    print(f"\n### Projector alone, fwd+bwd to map and rotations, batch {args.batch}, float32, {device}\n")
    print("| box | projector | best ms/batch | median ms/batch | images/s (best) |")
    print("|---:|---|---:|---:|---:|")
    for n in args.box:
        results = time_cases(projector_steps(n, args.batch, device, tfs), device, args.repeats)
        for name, (best, med) in results.items():
            print(
                f"| {n} | {name} | {best * 1e3:.1f} | {med * 1e3:.1f} | {args.batch / best:.0f} |",
                flush=True,
            )


def compare_ctf(torch_ctf) -> None:
    print("\n### CTF: torch-ctf vs ours (64 px, 1.2 Å/px, 300 kV, Cs 2.7 mm, w 0.07)\n")
    print("| U Å | V Å | angle ° | phase ° | max abs diff | CTF(0) ours / torch-ctf |")
    print("|---:|---:|---:|---:|---:|---|")
    for u, v, ang, ps in [
        (15000, 12000, 30, 0),
        (15000, 12000, -50, 90),
        (20000, 20000, 0, 0),
        (12000, 15000, 30, 0),
    ]:
        ours = ctf_half_plane(
            64,
            1.2,
            dtype=torch.float64,
            defocus_u_A=u,
            defocus_v_A=v,
            defocus_angle_deg=ang,
            voltage_kv=300.0,
            cs_mm=2.7,
            amplitude_contrast=0.07,
            phase_shift_deg=ps,
        )[0]
        ref = torch_ctf.calculate_ctf_2d(
            defocus=(u + v) / 2e4,
            astigmatism=(u - v) / 2e4,
            astigmatism_angle=ang,
            voltage=300.0,
            spherical_aberration=2.7,
            amplitude_contrast=0.07,
            phase_shift=ps,
            pixel_size=1.2,
            image_shape=(64, 64),
            rfft=True,
            fftshift=False,
        ).double()
        diff = (ours - ref).abs().max().item()
        print(f"| {u} | {v} | {ang} | {ps} | {diff:.2g} | {ours[0, 0].item():.4f} / {ref[0, 0].item():.4f} |")


def compare_roma(roma, repeats: int) -> None:
    print("\n### Rotations: roma vs ours (float64 agreement; float32 speed, 100k rotations, CPU)\n")
    g = torch.Generator().manual_seed(0)
    n = 100_000
    ang = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [360.0, 180.0, 360.0], dtype=torch.float64
    )
    a = rotations.relion_angles_to_matrix(ang)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    m2 = torch.stack([x[:, :3], x[:, 3:]], dim=-1)
    qr = roma.quat_xyzw_to_wxyz(roma.rotmat_to_unitquat(a))
    rows = [
        (
            "RELION Euler -> matrix",
            (roma.euler_to_rotmat("ZYZ", ang, degrees=True) - a.transpose(-1, -2)).abs().max(),
            lambda t: rotations.relion_angles_to_matrix(t[0]),
            lambda t: roma.euler_to_rotmat("ZYZ", t[0], degrees=True),
            (ang,),
        ),
        (
            "quaternion -> matrix",
            (roma.unitquat_to_rotmat(roma.quat_wxyz_to_xyzw(q)) - rotations.quaternion_to_matrix(q))
            .abs()
            .max(),
            lambda t: rotations.quaternion_to_matrix(t[0]),
            lambda t: roma.unitquat_to_rotmat(t[1]),
            (q, roma.quat_wxyz_to_xyzw(q)),
        ),
        (
            "matrix -> quaternion",
            (qr * qr[:, :1].sign() - rotations.matrix_to_quaternion(a)).abs().max(),
            lambda t: rotations.matrix_to_quaternion(t[0]),
            lambda t: roma.rotmat_to_unitquat(t[0]),
            (a,),
        ),
        (
            "Gram-Schmidt (s2s2) fwd+bwd",
            (roma.special_gramschmidt(m2) - rotations.s2s2_to_matrix(x)).abs().max(),
            lambda t: rotations.s2s2_to_matrix(t[0]).sum().backward(),
            lambda t: roma.special_gramschmidt(t[1]).sum().backward(),
            (x, m2),
        ),
    ]
    print("| operation | max abs diff (float64) | ours ms | roma ms |")
    print("|---|---:|---:|---:|")
    cpu = torch.device("cpu")
    for name, diff, f_ours, f_roma, inputs in rows:
        inputs32 = tuple(t.float().requires_grad_(True) for t in inputs)
        t_ours, _ = timed(lambda f=f_ours, i=inputs32: f(i), cpu, repeats)
        t_roma, _ = timed(lambda f=f_roma, i=inputs32: f(i), cpu, repeats)
        print(f"| {name} | {diff.item():.1e} | {t_ours * 1e3:.1f} | {t_roma * 1e3:.1f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--box", type=int, nargs="+", default=[64, 128], help="box sizes in pixels")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--oversample", type=int, nargs="+", default=[2], help="Fourier padding factor(s)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up; best is reported")
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--compare", action="store_true", help="also accuracy and library comparisons")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"torch {torch.__version__}, device {device} ({name}), {torch.get_num_threads()} threads, "
        f"python {sys.version.split()[0]}"
    )
    bench_decoder(args, device)
    if args.compare:
        tfs = try_import("torch_fourier_slice")
        compare_accuracy(args, tfs)
        compare_speed(args, device, tfs)
        torch_ctf = try_import("torch_ctf")
        if torch_ctf is not None:
            compare_ctf(torch_ctf)
        roma = try_import("roma")
        if roma is not None:
            compare_roma(roma, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
