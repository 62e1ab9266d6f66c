"""Differentiable image-formation physics: rotations, Fourier slices, CTF, shifts."""
