"""Attribute vocabularies (0-based class ids) and StRDAN's orientation bins."""
from __future__ import annotations

import numpy as np

# VeRi-776 list_color.txt / list_type.txt order (files are 1-based; records are 0-based).
VERI_COLORS = ("yellow", "orange", "green", "gray", "red", "blue", "white", "golden", "brown", "black")
VERI_TYPES = ("sedan", "suv", "van", "hatchback", "mpv", "pickup", "bus", "truck", "estate")
# AI City 2020 synthetic (VehicleX) train_label.xml, 0-based in the file.
VEHICLEX_COLORS = ("yellow", "orange", "green", "gray", "red", "blue", "white", "golden", "brown", "black",
                   "purple", "pink")
VEHICLEX_TYPES = ("sedan", "suv", "van", "hatchback", "mpv", "pickup", "bus", "truck", "estate", "sportscar", "rv")

DEFAULT_ORIENTATION_BINS = 6


def orientation_bin(degrees, bins: int = DEFAULT_ORIENTATION_BINS) -> np.ndarray:
    """Bin index of orientations in degrees: (0, w] -> 0, ..., (360 - w, 360] -> bins - 1 (w = 360 / bins).

    0 degrees falls in the last bin (it equals 360). NaN (no label) gives -1.
    """
    d = np.asarray(degrees, dtype=np.float64)
    width = 360.0 / bins
    finite = np.isfinite(d)
    wrapped = np.mod(np.where(finite, d, 0.0), 360.0)  # NaN replaced before the cast: no invalid-cast warning
    wrapped = np.where(wrapped == 0.0, 360.0, wrapped)
    out = np.clip(np.ceil(wrapped / width).astype(np.int64) - 1, 0, bins - 1)
    return np.where(finite, out, -1)
