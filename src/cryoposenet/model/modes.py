"""Modules' train/eval mode, switched for a block and restored after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(*modules: torch.nn.Module | None) -> Iterator[None]:
    """The modules (None skipped) in eval mode inside the block, back to their own mode after it."""
    present = [m for m in modules if m is not None]
    was_training = [m.training for m in present]
    for m in present:
        m.eval()
    try:
        yield
    finally:
        for m, t in zip(present, was_training, strict=True):
            m.train(t)
