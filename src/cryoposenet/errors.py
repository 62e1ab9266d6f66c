"""Project error types. The CLI turns :class:`InputError` into exit code 2 and one line."""

from __future__ import annotations

__all__ = ["CryoPoseNetError", "InputError", "TrainingDiverged"]


class CryoPoseNetError(Exception):
    """Base class of the errors this package raises on purpose."""


class InputError(CryoPoseNetError):
    """Bad input or usage: a missing or malformed file, a bad flag value.

    The message is one line naming the file (when there is one) and what is wrong.
    """

    def __init__(self, message: str, path=None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class TrainingDiverged(CryoPoseNetError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""
