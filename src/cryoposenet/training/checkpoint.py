"""Checkpoints of a training run: everything :class:`~cryoposenet.training.train.TrainState` holds.

Written atomically (temporary file + rename), so a kill mid-write leaves the previous one intact.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from ..errors import InputError
from ..io.atomic import atomic_path
from .train import ParticleData, TrainConfig, TrainState, init_state

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "state_payload", "restore"]


def state_payload(state: TrainState) -> dict:
    """Everything needed to resume, as plain tensors and numbers (for :func:`torch.save`)."""
    return {
        "step": state.step,
        "scale": state.scale,
        "volume": state.volume.state_dict(),
        "encoder": state.encoder.state_dict() if state.encoder is not None else None,
        "free_params": state.free_params.detach().clone() if state.free_params is not None else None,
        "optimizer": state.optimizer.state_dict(),
    }


def restore(data: ParticleData, config: TrainConfig, ckpt: dict) -> TrainState:
    """A :class:`TrainState` rebuilt from :func:`state_payload`'s output; training continues exactly."""
    state = init_state(data, config)
    state.volume.load_state_dict(ckpt["volume"])
    if state.encoder is not None:
        state.encoder.load_state_dict(ckpt["encoder"])
    if state.free_params is not None:
        with torch.no_grad():
            state.free_params.copy_(ckpt["free_params"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step, state.scale = ckpt["step"], ckpt["scale"]
    return state


def save_checkpoint(
    path: str | os.PathLike,
    state: TrainState,
    extra: dict | None = None,
    final_map: torch.Tensor | None = None,
) -> None:
    """Save modules, optimiser, step, data scaling, config and torch's RNG state to ``path`` atomically.

    ``final_map`` ``(N, N, N)`` (images' units): the finished run's map, beside the trained one
    (which training resumes from); :func:`load_checkpoint` can put it in the state's place.
    """
    payload = {
        **state_payload(state),  # modules, optimiser, step, data scaling (the train module's own fields)
        "format": 1,
        "config": dataclasses.asdict(state.config),
        "torch_rng": torch.get_rng_state(),  # batches are seeded per step; this covers the rest
        "extra": {**state.extra, **(extra or {})},
        "final_map": final_map.detach().cpu().float() if final_map is not None else None,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dictionary; a clear error when it is missing or unreadable."""
    if not os.path.isfile(path):
        raise InputError("no checkpoint here", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types on a damaged file
        raise InputError(f"unreadable checkpoint ({type(exc).__name__})", path) from None


def load_checkpoint(
    payload: dict, data: ParticleData, device: str = "cpu", final_map: bool = False, **overrides
) -> TrainState:
    """Rebuild the :class:`TrainState` of a checkpoint for ``data`` (the same set, or new images).

    ``overrides`` replace config fields (e.g. ``steps`` for a longer run, ``device``). With
    ``final_map`` the state's map is the finished run's final map where the checkpoint has one
    (for poses of new images; training resumes from the trained map).
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # checkpoints from before these fields: the paper's ReLU, no length penalty, no quarter turns, no views
    before = {"activation": "relu", "length_penalty": 0.0, "encoder_turns": False, "map_views": 0.0}
    saved = {**before, **payload["config"]}
    config = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
    config = dataclasses.replace(config, device=device, **overrides)
    if (
        payload["free_params"] is not None
        and config.poses == "free"
        and len(payload["free_params"]) != len(data)
    ):
        raise InputError("checkpoint has free poses for a different number of particles")
    state = restore(data, config, payload)
    if final_map and payload.get("final_map") is not None:
        with torch.no_grad():
            state.volume.data.copy_(payload["final_map"].to(state.volume.data) * state.scale)
    state.extra = {**state.extra, **payload.get("extra", {})}  # init_state's view_sigma unless saved
    if payload.get("torch_rng") is not None:
        torch.set_rng_state(payload["torch_rng"])
    return state
