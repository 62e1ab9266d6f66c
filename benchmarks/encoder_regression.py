"""Can the encoder learn poses at all? Regress it onto a simulation's true poses (issue #12).

During a run the encoder never sees the map's loss while the pose search runs: its only
objective is the pull of its nearest head onto each image's searched pose
(:func:`cryoposenet.model.losses.nearest_rotation_loss`) plus its s2s2 length penalty
(:func:`cryoposenet.model.encoder.length_penalty`, weight 1 in the recipe). This benchmark isolates
that regression: a fresh :class:`~cryoposenet.model.PoseEncoder` pulled onto the *true* poses of
``train.star`` (the searched poses of a converged run are within a few degrees of them), Adam,
batch 32, for each ``--activations`` × ``--inits`` (``he``: the encoder's; ``torch``: PyTorch's
default, as before session 13) × ``--length-penalty`` × ``--turns`` (``on``: each image shown at
a random quarter turn, :mod:`cryoposenet.training.augment`, as training does since session 14)
× ``--extra-noise`` (fresh Gaussian noise added to each batch at that factor times each image's
own background σ, measured outside 0.45 of the box: 1 doubles the noise variance; meant for
noisy images, whose background is noise) × ``--sources`` (``images``: the training images;
``projections``: never the same image twice, projections of ``--map`` at rotations uniform on
SO(3) with fresh Gaussian noise at the images' background σ, scaled to their variance; turns
and extra noise do not apply: does unlimited data from a map close the gap on real images?).
Every ``--every`` steps it prints the nearest head's error (mean / median, degrees, the in-plane
flip counted as the same pose, as the pull counts it) on the first 256 training images and on
the first 256 held-out images (their gap: images learnt by heart), the spread of the heads'
outputs across images (0: one rotation for every image) and the share of the MLP's hidden units
that are above zero for some image (the units still alive).

    python benchmarks/encoder_regression.py SIM/train.star SIM/heldout.star --steps 600
    # the two fixes of session 13, alone and together (docs/training.md)
    python benchmarks/encoder_regression.py SIM/train.star SIM/heldout.star --activations leaky_relu \
        --inits torch he --length-penalty 0 1 --turns off
    # quarter turns (session 14)
    python benchmarks/encoder_regression.py SIM/train.star SIM/heldout.star --activations leaky_relu \
        --turns off on --steps 2000
    # fresh noise each step: do images that never repeat exactly close the held-out gap?
    python benchmarks/encoder_regression.py SIM/train.star SIM/heldout.star --activations leaky_relu \
        --extra-noise 0 1 --steps 1500 --every 250
    # trained on the map's projections only, scored on the images
    python benchmarks/encoder_regression.py SIM/train.star SIM/heldout.star --activations leaky_relu \
        --sources projections --map SIM/map.mrc --steps 1500 --every 250

A dead encoder shows an output spread of 0 and an error stuck at ~47°, the best that 16 fixed
rotations (8 heads, each flipped) can do; ReLU units (the paper's) died so in one such
regression, not in another batch order (docs/training.md, "The encoder's units: leaky ReLU").
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import torch

from cryoposenet.io.mrc import read_map
from cryoposenet.io.particles import load_particles
from cryoposenet.model import PoseEncoder
from cryoposenet.model.losses import chordal_to_deg, nearest_rotation_loss
from cryoposenet.model.modes import eval_mode
from cryoposenet.physics.fourier import fourier_to_image
from cryoposenet.physics.projection import slice_volume, volume_to_fourier
from cryoposenet.physics.rotations import random_rotations
from cryoposenet.training.augment import draw_turns, turned_hypotheses
from cryoposenet.training.inputs import particle_data
from cryoposenet.training.map_views import background_sigma


def load(star: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(M, N, N)`` and true rotations ``(M, 3, 3)`` of a STAR file with angles."""
    data = particle_data(load_particles(star))
    if data.rotations is None:
        raise SystemExit(f"{star}: no rlnAngleRot/Tilt/Psi to regress onto")
    return data.images[torch.arange(len(data))].float(), data.rotations.float()


class Projections:
    """Noisy projections of a map at uniform random rotations, matched to a stack of images.

    The noise σ is the images' mean background σ; the projections are scaled so that their
    variance plus σ² is the images' variance (the simulation's SNR).
    """

    def __init__(self, map_path: str, images: torch.Tensor, gen: torch.Generator) -> None:
        self.fvol = volume_to_fourier(torch.from_numpy(read_map(map_path)[0]).float())
        self.sigma = background_sigma(images).mean().item()
        self.scale = 1.0
        signal_var = max(images.var().item() - self.sigma**2, 0.0)
        self.scale = math.sqrt(signal_var / self.clean(512, gen)[0].var().item())

    def clean(self, b: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections ``(b, N, N)`` at rotations ``(b, 3, 3)`` drawn from ``gen``, no noise."""
        rots = random_rotations(b, gen).float()
        return self.scale * fourier_to_image(slice_volume(self.fvol, rots), self.fvol.n), rots

    def draw(self, b: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A noisy batch ``(b, N, N)`` and its rotations ``(b, 3, 3)``."""
        images, rots = self.clean(b, gen)
        return images + self.sigma * torch.randn(images.shape, generator=gen), rots


def live_units(enc: PoseEncoder, images: torch.Tensor) -> float:
    """Share of the last hidden layer's units above zero for at least one of ``images``."""
    with torch.no_grad():
        hidden = enc.mlp(enc.features(enc.prepare(images)))
    return (hidden > 0).any(dim=0).float().mean().item()


def nearest_error(enc: PoseEncoder, images: torch.Tensor, rots: torch.Tensor) -> torch.Tensor:
    """The nearest head's error (degrees) ``(M,)`` on ``images`` shown as they are."""
    with eval_mode(enc), torch.no_grad():
        return chordal_to_deg(nearest_rotation_loss(enc(images), rots))


def report(enc: PoseEncoder, train, heldout) -> str:
    """Table cells: training-image error, held-out error (mean / median), spread, live units."""
    (x, r), (xh, rh) = train, heldout
    seen, err = nearest_error(enc, x[: len(xh)], r[: len(xh)]), nearest_error(enc, xh, rh)
    with eval_mode(enc), torch.no_grad():
        heads = enc(xh)
    spread = heads.reshape(len(heads), -1).std(dim=0).mean().item()
    return (
        f"{seen.mean():6.1f} / {seen.median():6.1f} | {err.mean():6.1f} / {err.median():6.1f} | "
        f"{spread:.3f} | {live_units(enc, xh):.0%}"
    )


def fresh_encoder(n: int, heads: int, act: str, init: str) -> PoseEncoder:
    """A new encoder; ``init="torch"`` resets its layers to PyTorch's default initialisation."""
    enc = PoseEncoder(n, heads=heads, activation=act)
    if init == "torch":
        for m in enc.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.reset_parameters()
    return enc


def batch_outputs(enc, x, r, sigma, step: int, turns: str, noise: float, projections, a, gen):
    """The encoder's hypotheses and length penalties on one batch, and the batch's true rotations.

    ``sigma`` ``(M,)``: each image's background σ, for ``noise`` > 0.
    """
    if projections is not None:
        batch, target = projections.draw(a.batch, gen)
        return (*enc(batch, with_penalty=True), target)
    idx = torch.randint(len(x), (a.batch,), generator=gen)
    batch = x[idx]
    if noise > 0:
        batch = batch + noise * sigma[idx, None, None] * torch.randn(batch.shape, generator=gen)
    if turns == "on":  # as training does (TrainConfig.encoder_turns)
        return (*turned_hypotheses(enc, batch, draw_turns(idx, a.seed, step)), r[idx])
    return (*enc(batch, with_penalty=True), r[idx])


def regress(act: str, init: str, penalty: float, turns: str, noise: float, source: str, a, train, heldout):
    x, r = train
    sigma = background_sigma(x) if noise > 0 else None
    torch.manual_seed(a.seed)
    enc = fresh_encoder(x.shape[-1], a.heads, act, init)
    opt = torch.optim.Adam(enc.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed)
    projections = Projections(a.map, x, gen) if source == "projections" else None
    t0 = time.perf_counter()
    name = f"{act}, {init} init, penalty {penalty:g}, turns {turns}, noise {noise:g}"
    if projections is not None:
        name = f"{act}, {init} init, penalty {penalty:g}, projections of the map"
    print(f"| {name} | 0 | {report(enc, train, heldout)} | 0 |", flush=True)
    for step in range(1, a.steps + 1):
        rots, lengths, target = batch_outputs(enc, x, r, sigma, step, turns, noise, projections, a, gen)
        loss = (nearest_rotation_loss(rots, target) + penalty * lengths).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % a.every == 0:
            cells = report(enc, train, heldout)
            print(f"| {name} | {step} | {cells} | {time.perf_counter() - t0:.0f} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train", help="STAR file with true angles (e.g. a simulation's train.star)")
    p.add_argument("heldout", help="STAR file of held-out images with true angles")
    p.add_argument("--activations", nargs="+", default=["relu", "leaky_relu"])
    p.add_argument("--inits", nargs="+", default=["he"], choices=["he", "torch"])
    p.add_argument("--length-penalty", nargs="+", type=float, default=[1.0], help="the recipe's: 1")
    p.add_argument("--turns", nargs="+", default=["on"], choices=["on", "off"], help="recipe: on")
    p.add_argument("--extra-noise", nargs="+", type=float, default=[0.0], help="× background σ; 0: none")
    p.add_argument("--sources", nargs="+", default=["images"], choices=["images", "projections"])
    p.add_argument("--map", help="the map whose projections --sources projections draws")
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
    print("| encoder | step | training mean / median ° | held-out mean / median ° | spread | live | s |")
    print("|---|---|---|---|---|---|---|")
    if "projections" in a.sources and a.map is None:
        p.error("--sources projections needs --map")
    grid = itertools.product(a.activations, a.inits, a.length_penalty, a.turns, a.extra_noise, a.sources)
    for act, init, penalty, turns, noise, source in grid:
        if source == "projections" and (turns, noise) != (a.turns[0], a.extra_noise[0]):
            continue  # neither applies to projections: one run
        regress(act, init, penalty, turns, noise, source, a, train, heldout)


if __name__ == "__main__":
    main()
