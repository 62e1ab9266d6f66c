"""File formats: MRC maps and stacks, RELION STAR particle tables, atomic output."""

from .atomic import atomic_path, write_text_atomic
from .mrc import StackWriter, read_map, write_map
from .particles import ParticleStack, load_particles, optics_for
from .star import ParticleTable, default_optics, read_star, write_star

__all__ = [
    "atomic_path",
    "write_text_atomic",
    "StackWriter",
    "read_map",
    "write_map",
    "ParticleStack",
    "load_particles",
    "optics_for",
    "ParticleTable",
    "default_optics",
    "read_star",
    "write_star",
]
