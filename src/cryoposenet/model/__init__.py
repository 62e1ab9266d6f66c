"""CryoPoseNet's learnable parts: the pose encoder, the map, and the training loss."""

from .encoder import PoseEncoder, standardise
from .losses import band_weights, candidate_spectra, flip_rotations, wta_loss
from .volume import LearnableVolume, soft_sphere

__all__ = [
    "PoseEncoder",
    "standardise",
    "LearnableVolume",
    "soft_sphere",
    "band_weights",
    "candidate_spectra",
    "flip_rotations",
    "wta_loss",
]
