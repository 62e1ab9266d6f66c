"""Can the encoder learn poses at all? Regress it onto a simulation's true poses (issue #12).

During a run the encoder never sees the map's loss while the pose search runs: its only
objective is the pull of its nearest head onto each image's searched pose
(:func:`cryoposenet.model.losses.nearest_rotation_loss`) plus its s2s2 length penalty
(:func:`cryoposenet.model.encoder.length_penalty`, weight 1 in the recipe). This benchmark isolates
that regression: a fresh :class:`~cryoposenet.model.PoseEncoder` pulled onto the *true* poses of
``train.star`` (the searched poses of a converged run are within a few degrees of them), Adam,
batch 32, for each ``--activations`` × ``--inits`` (``he``: the encoder's; ``torch``: PyTorch's
default, as before session 13) × ``--length-penalty``. Every ``--every`` steps it prints, on the first 256
held-out images: the nearest head's error (mean / median, degrees, the in-plane flip counted
as the same pose, as the pull counts it), the spread of the heads' outputs across images (0:
one rotation for every image) and the share of the MLP's hidden units that are above zero for
some image (the units still alive).

    python benchmarks/encoder_regression.py SIM/train.star SIM/heldout.star --steps 600
    # the two fixes of session 13, alone and together (docs/training.md)
    python benchmarks/encoder_regression.py SIM/train.star SIM/heldout.star --activations leaky_relu \
        --inits torch he --length-penalty 0 1

A dead encoder shows an output spread of 0 and an error stuck at ~47°, the best that 16 fixed
rotations (8 heads, each flipped) can do; ReLU units (the paper's) died so in one such
regression, not in another batch order (docs/training.md, "The encoder's units: leaky ReLU").
"""

from __future__ import annotations

import argparse
import time

import torch

from cryoposenet.io.particles import load_particles
from cryoposenet.model import PoseEncoder
from cryoposenet.model.losses import chordal_to_deg, nearest_rotation_loss
from cryoposenet.model.modes import eval_mode
from cryoposenet.training.inputs import particle_data


def load(star: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(M, N, N)`` and true rotations ``(M, 3, 3)`` of a STAR file with angles."""
    data = particle_data(load_particles(star))
    if data.rotations is None:
        raise SystemExit(f"{star}: no rlnAngleRot/Tilt/Psi to regress onto")
    return data.images[torch.arange(len(data))].float(), data.rotations.float()


def live_units(enc: PoseEncoder, images: torch.Tensor) -> float:
    """Share of the last hidden layer's units above zero for at least one of ``images``."""
    with torch.no_grad():
        hidden = enc.mlp(enc.features(enc.prepare(images)))
    return (hidden > 0).any(dim=0).float().mean().item()


def report(enc: PoseEncoder, images: torch.Tensor, rots: torch.Tensor) -> str:
    with eval_mode(enc), torch.no_grad():
        heads = enc(images)
        err = chordal_to_deg(nearest_rotation_loss(heads, rots))
        spread = heads.reshape(len(heads), -1).std(dim=0).mean().item()
    return f"{err.mean():6.1f} | {err.median():6.1f} | {spread:.3f} | {live_units(enc, images):.0%}"


def fresh_encoder(n: int, heads: int, act: str, init: str) -> PoseEncoder:
    """A new encoder; ``init="torch"`` resets its layers to PyTorch's default initialisation."""
    enc = PoseEncoder(n, heads=heads, activation=act)
    if init == "torch":
        for m in enc.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.reset_parameters()
    return enc


def regress(act: str, init: str, penalty: float, a, train, heldout) -> None:
    (x, r), (xh, rh) = train, heldout
    torch.manual_seed(a.seed)
    enc = fresh_encoder(x.shape[-1], a.heads, act, init)
    opt = torch.optim.Adam(enc.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()
    name = f"{act}, {init} init, penalty {penalty:g}"
    print(f"| {name} | 0 | {report(enc, xh, rh)} | 0 |", flush=True)
    for step in range(1, a.steps + 1):
        idx = torch.randint(len(x), (a.batch,), generator=gen)
        rots, lengths = enc(x[idx], with_penalty=True)
        loss = (nearest_rotation_loss(rots, r[idx]) + penalty * lengths).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % a.every == 0:
            print(f"| {name} | {step} | {report(enc, xh, rh)} | {time.perf_counter() - t0:.0f} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train", help="STAR file with true angles (e.g. a simulation's train.star)")
    p.add_argument("heldout", help="STAR file of held-out images with true angles")
    p.add_argument("--activations", nargs="+", default=["relu", "leaky_relu"])
    p.add_argument("--inits", nargs="+", default=["he"], choices=["he", "torch"])
    p.add_argument("--length-penalty", nargs="+", type=float, default=[1.0], help="the recipe's: 1")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4, help="the recipe's encoder rate")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    train, heldout = load(a.train), load(a.heldout)
    heldout = (heldout[0][:256], heldout[1][:256])  # no global scaling: the encoder standardises each image
    print("| encoder | step | held-out mean ° | median ° | output spread | live units | s |")
    print("|---|---|---|---|---|---|---|")
    for act in a.activations:
        for init in a.inits:
            for penalty in a.length_penalty:
                regress(act, init, penalty, a, train, heldout)


if __name__ == "__main__":
    main()
