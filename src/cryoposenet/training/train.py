"""Joint training of the pose encoder and the 3D map (the paper's Algorithm 1), plus baselines.

``poses``: ``encoder`` (CryoPoseNet: a CNN predicts each image's rotation), ``known`` (rotations
given: the paper's "tomo" baseline, i.e. reconstruction only) or ``free`` (one learnable rotation
per image: the paper's "AD" baseline). The library reads no files: images arrive as a tensor or
as a source that reads rows on demand (:class:`cryoposenet.training.data.StackImages`); batches are then
read one step ahead in a background thread. Under ``torchrun`` (``state.parallel``, see
:mod:`cryoposenet.training.distributed`) each process takes its share of every batch.

Convergence options beyond the paper (see docs/training.md for what each measured):
``kmax_start``/``kmax_steps`` (coarse-to-fine: the loss sees only a low-pass disc whose radius
grows linearly to Nyquist), ``symmetric`` (cryoAI's in-plane 180° loss), ``heads``
(winner-take-all over several pose hypotheses), ``map_init``/``mask_radius``, ``lr_map``,
``lr_decay_at``/``lr_decay`` (both learning rates ×0.1 for the last 20% of the steps),
``search_*`` (for the first ``search_steps`` the map learns from each image's pose posterior on
a grid over SO(3), :func:`cryoposenet.training.pose_search.marginal_misfit`, and the encoder is pulled onto
each image's best grid pose), ``shift_range`` (translations unknown to the data are searched with
the poses, :mod:`cryoposenet.training.shift_search`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ..model.encoder import PoseEncoder
from ..model.losses import (
    band_weights,
    candidate_spectra,
    chordal_to_deg,
    expand_hypotheses,
    flip_rotations,
    nearest_rotation_loss,
    octahedral_group,
    wta_loss,
)
from ..model.modes import eval_mode
from ..model.volume import LearnableVolume, initial_amplitude
from ..physics.fourier import image_to_fourier, shift_phase
from ..physics.projection import slice_volume
from ..physics.rotations import matrix_to_s2s2, random_rotations, s2s2_to_matrix
from .augment import draw_turns, every_turn_hypotheses, turned_hypotheses
from .data import ParticleData, Prefetcher, read_batch, read_chunks, sample_images
from .distributed import DataParallel, split_pose_rows
from .map_views import background_sigma, render_views, split_views, view_count, view_ctf, view_generator
from .pose_search import marginal_misfit
from .schedule import batch_rows, k_max_at, lr_scale_at, search_anneal_at, search_bands, searching_at
from .shift_search import candidate_shifts, shift_search_grid

__all__ = [
    "ParticleData",
    "TrainConfig",
    "StepInfo",
    "TrainState",
    "TrainResult",
    "train",
    "init_state",
    "predict_poses",
    "predict_fits",
    "BatchFit",
]

POSE_MODES = ("encoder", "known", "free")


@dataclass
class TrainConfig:
    """Explicit training settings; defaults are the recipe chosen in docs/training.md.

    The paper's plain recipe is ``lr_map=None, heads=1, symmetric=False, kmax_start=None,
    lr_decay_at=None``.
    """

    steps: int = 10000
    batch_size: int = 32
    lr: float = 5e-4  # encoder (and free poses)
    lr_map: float | None = 5e-3  # None: same as lr (the paper)
    rotation: str = "s2s2"
    poses: str = "encoder"
    heads: int = 8  # pose hypotheses per image, winner-take-all (the paper: 1)
    symmetric: bool = True  # also try each hypothesis turned 180° in-plane (the paper: False)
    pose_grid: bool = False  # also try the 24 cube rotations G·R of every hypothesis (winner-take-all)
    kmax_start: float | None = 4.0  # loss band radius at step 0, cycles/box; None: full band (paper)
    kmax_steps: int = 1500  # steps over which k_max grows linearly to N/2
    lr_decay_at: float | None = 0.8  # fraction of ``steps`` after which both rates drop; None: never
    lr_decay: float = 0.1  # factor on both learning rates from then on
    refine_steps: int = 40  # local refinement of the final encoder poses against the map (0: none)
    final_rounds: int = 2  # backprojections at the end; each after the first follows a refinement
    search_steps: int | None = 10**9  # steps with a global pose search (default: all); None: never
    search_grid: int = 4608  # rotations of the search's base grid (~15° apart)
    search_band: float = 0.25  # the search's band: |k| ≤ this × N (and ≤ the loss band)
    search_weight: float = 1.0  # weight of the pull of the nearest encoder head onto the searched pose
    search_anneal: float = 10.0  # pose posterior's noise inflation at step 0, down to 1 when the search ends
    search_top: int = 16  # grid poses per image in the pose posterior (the rest weigh nothing)
    search_local: float | None = 0.375  # posterior's band ≤ this × N, on local grids (None: grid's)
    shift_range: float = 0.0  # px: translations searched within this radius when the data carry none
    map_init: str = "uniform"
    mask_radius: float | None = None  # pixels; None: no support mask
    batchnorm: bool = False
    activation: str = "leaky_relu"  # the encoder's; "relu": the paper's, whose units can die under the pull
    length_penalty: float = 1.0  # weight of the encoder's s2s2 length penalty (0: none, as before it)
    encoder_turns: bool = True  # show the encoder each training image at a random quarter turn
    map_views: float = 0.5  # noisy views of the map at random poses per image, for the encoder (map_views.py)
    seed: int = 0
    device: str = "cpu"


@dataclass
class StepInfo:
    """What one step reports: loss is the mean squared pixel error of the band-limited images
    (normalised data, so ``loss`` is also the fraction of the data variance left unexplained)."""

    step: int
    loss: float
    images_per_s: float
    k_max: float
    search_gap_deg: float | None = None  # mean angle from the searched pose to the nearest encoder head


@dataclass
class TrainState:
    """Everything a run needs to continue: modules, optimiser, step counter, data scaling."""

    config: TrainConfig
    volume: LearnableVolume
    encoder: PoseEncoder | None
    free_params: torch.nn.Parameter | None
    optimizer: torch.optim.Optimizer
    scale: float  # images are multiplied by this before training (unit variance)
    step: int = 0
    extra: dict = field(default_factory=dict)
    parallel: DataParallel | None = None  # set under torchrun: this rank's share and DDP modules


@dataclass
class TrainResult:
    volume: torch.Tensor  # (N, N, N), in the input images' units
    state: TrainState
    rotations: torch.Tensor | None  # (M, 3, 3), one per training image (None: not asked for)


def init_state(data: ParticleData, config: TrainConfig) -> TrainState:
    """Fresh modules and optimiser for ``data`` (seeded by ``config.seed``)."""
    if config.poses not in POSE_MODES:
        raise ValueError(f"unknown poses mode {config.poses!r}; expected one of {POSE_MODES}")
    if config.poses == "known" and data.rotations is None:
        raise ValueError("poses='known' needs data.rotations")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    n = data.box
    sample = sample_images(data.images)  # a bounded read: streamed stacks are never loaded whole
    scale = 1.0 / sample.std().item()
    amp = initial_amplitude(sample * scale, config.map_init)
    volume = LearnableVolume(n, config.map_init, amp, config.mask_radius, generator=gen).to(config.device)
    encoder, free = None, None
    groups = [{"params": volume.parameters(), "lr": config.lr_map or config.lr}]
    if config.poses == "encoder":
        encoder = PoseEncoder(
            n, config.rotation, config.heads, batchnorm=config.batchnorm, activation=config.activation
        ).to(config.device)
        groups.append({"params": encoder.parameters(), "lr": config.lr})
    elif config.poses == "free":
        start = matrix_to_s2s2(random_rotations(len(data), generator=gen, dtype=torch.float32))
        free = torch.nn.Parameter(start.to(config.device))
        groups.append({"params": [free], "lr": config.lr})
    optimizer = torch.optim.Adam(groups, fused=True)  # one kernel for all parameters: 5× faster on CPU
    extra = {"view_sigma": background_sigma(sample * scale).mean().item()}  # the views' noise, training units
    return TrainState(config, volume, encoder, free, optimizer, scale, extra=extra)


def _set_learning_rates(state: TrainState) -> None:
    """Both parameter groups (map; encoder or free poses) at their base rate × :func:`lr_scale_at`."""
    cfg = state.config
    scale = lr_scale_at(cfg, state.step)
    for group, base in zip(state.optimizer.param_groups, (cfg.lr_map or cfg.lr, cfg.lr), strict=False):
        group["lr"] = base * scale


def _modules(state: TrainState, training: bool):
    """``(volume, encoder)`` to call: the DDP wrappers while training under torchrun, else the bare ones."""
    if training and state.parallel is not None:
        return state.parallel.volume, state.parallel.encoder
    return state.volume, state.encoder


def _hypotheses(
    state: TrainState, data: ParticleData, idx, images, encoder, training: bool, every_turn=False
):
    """Pose hypotheses ``(B, H, 3, 3)`` for the images ``idx`` ``(B,)`` (``images`` scaled, on device)
    and, when training the encoder, its weighted length penalty ``(B,)`` (else None). ``every_turn``
    (not training): the encoder's answers for all four quarter turns, ``(B, 4H, 3, 3)``."""
    dev, weight = state.config.device, state.config.length_penalty
    if encoder is not None:
        if every_turn and not training:
            return every_turn_hypotheses(encoder, images), None
        if training and state.config.encoder_turns:
            turns = draw_turns(idx, state.config.seed, state.step)  # views, after the rows, unturned
            turns = torch.nn.functional.pad(turns, (0, len(images) - len(idx)))
            rots, penalty = turned_hypotheses(encoder, images, turns)
        else:
            rots, penalty = encoder(images, with_penalty=True)
        return rots, weight * penalty if training and weight else None
    if state.free_params is not None:
        return s2s2_to_matrix(state.free_params[idx.to(dev)])[:, None], None
    return data.rotations[idx].to(dev, torch.float32)[:, None], None


def batch_targets(state: TrainState, data: ParticleData, idx, images=None):
    """``(images (B, N, N), spectra (B, N, N//2+1), ctf or None, shifts_px (B, 2) or None)`` of rows
    ``idx``, scaled as in training and on the run's device (``images``: the rows, when already read)."""
    dev = state.config.device
    images = data.images[idx] if images is None else images
    images = images.to(dev, non_blocking=True) * state.scale
    ctf = data.ctf_of(idx, dev)
    shifts = data.translations_px[idx].to(dev) if data.translations_px is not None else None
    return images, image_to_fourier(images), ctf, shifts


class BatchFit(NamedTuple):
    """What :func:`_batch_loss` returns for images ``idx`` ``(B,)``: the mean ``loss``, ``per_image``
    ``(B,)``, the WTA ``winner`` ``(B,)`` (None while searching), the encoder's ``hypotheses``
    ``(B, H, 3, 3)``, ``pull`` ``(B,)`` towards the searched poses (training while searching, else
    None), each candidate's searched shift ``shifts`` ``(B, C, 2)`` (None unless searched) and the
    encoder's length ``penalty`` ``(B,)`` (training only, else None)."""

    loss: torch.Tensor
    per_image: torch.Tensor
    winner: torch.Tensor | None
    hypotheses: torch.Tensor
    pull: torch.Tensor | None
    shifts: torch.Tensor | None
    penalty: torch.Tensor | None = None
    views: torch.Tensor | None = None  # (V,) the encoder's pull onto the map's views' poses


def _batch_loss(
    state: TrainState, data: ParticleData, idx, k_max, images=None, training=False, every_turn=False
):
    """A :class:`BatchFit` for images ``idx``; ``images`` ``(B, N, N)``: the rows ``idx`` when
    already read (else they are read here). Unknown shifts are searched per candidate; ``every_turn``:
    see :func:`_hypotheses`."""
    cfg, dev, n = state.config, state.config.device, data.box
    images, target, ctf, shifts = batch_targets(state, data, idx, images)
    volume, encoder = _modules(state, training)
    fvol = volume()
    views, view_rots = _views(state, data, fvol, k_max, training and encoder is not None)
    shown = images if views is None else torch.cat([images, views])
    hypotheses = _hypotheses(state, data, idx, shown, encoder, training, every_turn)
    rots, penalty, view_pull = split_views(*hypotheses, view_rots)
    grid = shift_search_grid(cfg, data, dev)
    if cfg.pose_grid and cfg.poses != "known":
        rots = expand_hypotheses(rots, octahedral_group(rots.dtype, rots.device))
    if training and searching_at(cfg, state.step):  # the map learns from the pose search alone
        anneal, bands = search_anneal_at(cfg, state.step), search_bands(cfg, n, k_max)
        per_image, found, _ = marginal_misfit(
            fvol, target, ctf, shifts, grid_size=cfg.search_grid, anneal=anneal, top=cfg.search_top,
            shift_grid_px=grid, **bands,
        )  # fmt: skip
        pull = cfg.search_weight * nearest_rotation_loss(rots, found)
        return BatchFit(per_image.mean(), per_image, None, rots, pull, None, penalty, view_pull)
    b, h = rots.shape[:2]
    slices = slice_volume(fvol, rots.reshape(b * h, 3, 3), radius=k_max).reshape(b, h, n, n // 2 + 1)
    symmetric = cfg.symmetric and cfg.poses != "known"
    cands = candidate_spectra(slices, symmetric, ctf, shifts)
    weights = band_weights(n, k_max, device=dev)
    found = None if grid is None else candidate_shifts(target, cands.detach(), weights, grid)
    if found is not None:
        cands = cands * shift_phase(found, n)
    loss, per_image, winner = wta_loss(target, cands, weights)
    return BatchFit(loss, per_image, winner, rots, None, found, penalty, view_pull)


def _views(state: TrainState, data: ParticleData, fvol, k_max: float, training: bool):
    """This process's share of the step's :func:`.view_count` noisy views ``(V, N, N)`` of the map
    (:mod:`.map_views`; with the CTF of random rows when the data have one) and their poses
    ``(V, 3, 3)``, drawn alike on every rank; ``(None, None)`` when not training or none."""
    cfg, par = state.config, state.parallel
    count = view_count(cfg.map_views, cfg.batch_size) if training else 0
    if count == 0:
        return None, None
    gen = view_generator(cfg.seed, state.step)
    ctf = view_ctf(data, count, gen, cfg.device)
    views = render_views(fvol, count, state.extra["view_sigma"], k_max, gen, ctf)
    return views if par is None else tuple(torch.tensor_split(t, par.world)[par.rank] for t in views)


def _pick(rots: torch.Tensor, winner: torch.Tensor) -> torch.Tensor:
    """The winning rotation ``(B, 3, 3)``: candidate ``c < H`` is head c, else head ``c - H`` flipped."""
    h = rots.shape[1]
    head = winner % h
    chosen = rots[torch.arange(len(rots), device=rots.device), head]
    return torch.where((winner >= h)[:, None, None], flip_rotations(chosen), chosen)


@torch.no_grad()
def predict_fits(
    state: TrainState, data: ParticleData, batch_size=256, rows: torch.Tensor | None = None, every_turn=False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotations ``(R, 3, 3)`` for the images ``rows`` (default: all) of ``data`` (may be held out)
    and, when shifts are searched (:mod:`~cryoposenet.training.shift_search`), their translations
    ``(R, 2)`` px.

    With several candidates per image the one that best explains the image under the current map
    (full band) is chosen; ``every_turn``: the encoder is shown each image at its four quarter turns
    and every answer is a candidate. Images are read a chunk ahead in a background thread.
    """
    rows = torch.arange(len(data)) if rows is None else rows
    pin = state.config.device.startswith("cuda")
    out = torch.empty(len(rows), 3, 3)  # filled in place: per-chunk outputs fragment the heap
    shifts = torch.empty(len(rows), 2) if shift_search_grid(state.config, data) is not None else None
    with eval_mode(state.volume, state.encoder):
        for positions, images in read_chunks(data.images, rows, batch_size, pin):
            fit = _batch_loss(state, data, rows[positions], data.box / 2, images, every_turn=every_turn)
            out[positions] = _pick(fit.hypotheses, fit.winner).cpu()
            if shifts is not None:
                shifts[positions] = fit.shifts[torch.arange(len(positions)), fit.winner.cpu()].cpu()
    return out, shifts


def predict_poses(state: TrainState, data: ParticleData, batch_size: int = 256, rows=None) -> torch.Tensor:
    """The rotations ``(R, 3, 3)`` of :func:`predict_fits`."""
    return predict_fits(state, data, batch_size, rows)[0]


def _local_rows(state: TrainState, m: int, step: int) -> torch.Tensor:
    """This process's rows of ``step``'s batch (all of it without torchrun)."""
    rows = batch_rows(state.config, m, step)
    return state.parallel.shard(rows) if state.parallel is not None else rows


def _step(state: TrainState, data: ParticleData, images: torch.Tensor | None = None) -> StepInfo:
    """One Adam step on the batch of ``state.step`` (``images``: its rows, when read ahead).

    Under torchrun each rank's loss is its share of the global batch mean, so DDP's gradient
    average is the gradient of the global mean; the reported loss is the global mean.
    """
    cfg, par = state.config, state.parallel
    idx = _local_rows(state, len(data), state.step)
    k_max = k_max_at(cfg, data.box, state.step)
    t0 = time.perf_counter()
    fit = _batch_loss(state, data, idx, k_max, images, training=True)
    per_image, pull = fit.per_image, fit.pull
    objective = sum((t for t in (pull, fit.penalty) if t is not None), per_image)
    loss = objective.mean() if par is None else objective.sum() * (par.world / cfg.batch_size)
    if fit.views is not None:  # as the images: DDP's average of the shares is the global mean
        world = 1 if par is None else par.world
        loss = loss + fit.views.sum() * (world / view_count(cfg.map_views, cfg.batch_size))
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _set_learning_rates(state)
    if par is not None and state.free_params is not None:
        par.average_grad(state.free_params)
    state.optimizer.step()
    state.step += 1
    reported = per_image.mean().item() if par is None else par.sum(per_image.sum()).item() / cfg.batch_size
    rate = cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
    gap = None if pull is None else chordal_to_deg(pull.detach() / cfg.search_weight).mean().item()
    return StepInfo(state.step, reported, rate, k_max, gap)


def final_poses(state: TrainState, data: ParticleData) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`predict_fits` for every image; under torchrun each rank predicts its share, all gather."""
    return split_pose_rows(state.parallel, len(data), lambda rows: predict_fits(state, data, rows=rows))


def train(
    data: ParticleData,
    config: TrainConfig,
    on_step: Callable[[StepInfo, TrainState], None] | None = None,
    on_eval: Callable[[TrainState], None] | None = None,
    eval_every: int = 0,
    state: TrainState | None = None,
    poses: bool = True,
) -> TrainResult:
    """Train map and poses on ``data`` for ``config.steps`` steps (from ``state.step`` if resuming).

    ``on_step`` is called after every step, ``on_eval`` every ``eval_every`` steps and at the end.
    Returns the map in the input images' units, the state, and a rotation per training image
    (``poses=False``: none, the final pose pass is skipped). Each step's images are read one step
    ahead in a background thread.
    """
    state = state or init_state(data, config)
    pin = config.device.startswith("cuda")
    with Prefetcher(lambda step: read_batch(data.images, _local_rows(state, len(data), step), pin)) as loader:
        while state.step < config.steps:
            ahead = state.step + 1 if state.step + 1 < config.steps else None
            info = _step(state, data, loader.get(state.step, ahead))
            if on_step is not None:
                on_step(info, state)
            if on_eval is not None and eval_every and state.step % eval_every == 0:
                on_eval(state)
    if on_eval is not None and not (eval_every and state.step % eval_every == 0):
        on_eval(state)
    with torch.no_grad():
        volume = state.volume.volume().detach().cpu() / state.scale
    return TrainResult(volume, state, final_poses(state, data)[0] if poses else None)
