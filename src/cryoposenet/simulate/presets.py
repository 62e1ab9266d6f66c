"""The paper's data sets (Table 1): 4AKE, 128 px of 0.8 Å, 9,000 training + 1,000 held-out images.

| preset | SNR (dB) | CTF (µm)      |
|--------|----------|---------------|
| A      | –        | –             |
| B      | 10       | –             |
| C      | 5        | –             |
| D      | 0        | –             |
| E      | −5       | –             |
| F      | −10      | –             |
| G      | 0        | U(0.4, 1.2)   |

"–" for SNR means noiseless. The paper multiplies by "a 2D CTF image with given defocus d", so
preset G has no astigmatism.
"""

from __future__ import annotations

from ..errors import InputError

__all__ = ["PRESETS", "PAPER_BOX", "PAPER_APIX", "PAPER_N_IMAGES", "PAPER_HELDOUT", "preset_params"]

PAPER_BOX = 128
PAPER_APIX = 0.8
PAPER_N_IMAGES = 10_000
PAPER_HELDOUT = 1_000

_NO_CTF = {"ctf": False, "defocus_min_um": None, "defocus_max_um": None, "astigmatism": False}

PRESETS: dict[str, dict] = {
    "A": {"snr_db": None, **_NO_CTF},
    "B": {"snr_db": 10.0, **_NO_CTF},
    "C": {"snr_db": 5.0, **_NO_CTF},
    "D": {"snr_db": 0.0, **_NO_CTF},
    "E": {"snr_db": -5.0, **_NO_CTF},
    "F": {"snr_db": -10.0, **_NO_CTF},
    "G": {"snr_db": 0.0, "ctf": True, "defocus_min_um": 0.4, "defocus_max_um": 1.2, "astigmatism": False},
}


def preset_params(letter: str) -> dict:
    """Table 1 row ``letter`` (A..G, any case) as keyword values for ``simulate_dataset``.

    Keys: ``snr_db`` (None = noiseless), ``ctf``, ``defocus_min_um``, ``defocus_max_um`` (None
    without CTF), ``astigmatism``. The paper's box (128), pixel size (0.8 Å) and image counts
    (10,000 with 1,000 held out) are the module constants, not part of the row.
    """
    key = str(letter).strip().upper()
    if key not in PRESETS:
        raise InputError(f"unknown preset {letter!r}: choose one of {', '.join(PRESETS)} (Table 1)")
    return dict(PRESETS[key])
