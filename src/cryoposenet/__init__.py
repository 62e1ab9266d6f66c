"""cryoposenet: ab initio cryo-EM reconstruction with CryoPoseNet (Nashed et al., ICCV-W 2021).

Public API (import from here; submodules are implementation detail unless listed):
"""

from .errors import CryoPoseNetError, InputError

__version__ = "0.1.0"

__all__ = ["__version__", "CryoPoseNetError", "InputError"]
