"""``pamtri weights convert``: the official PAMTRI checkpoints into self-describing pamtri checkpoints, by the
stages' weights modules (``pose.weights.convert_posestnet``, ``reid.weights.convert_pamtri_reid``)."""
from __future__ import annotations

import os

from pamtri.common.errors import ConfigError
from pamtri.pose.weights import convert_posestnet
from pamtri.reid.weights import convert_pamtri_reid

SOURCES = ("official-posestnet", "official-pamtri-reid")


def convert(source: str, src: str | os.PathLike, dst: str | os.PathLike, name: str | None = None) -> str:
    """Dispatch on ``source`` (one of SOURCES); returns the converter's summary."""
    if source == "official-posestnet":
        return convert_posestnet(src, dst, name)
    if source == "official-pamtri-reid":
        if name:
            raise ConfigError("--model applies to official-posestnet only (the ReID layout is read from the file)")
        return convert_pamtri_reid(src, dst)
    raise ConfigError(f"unknown weights source {source!r} (choose from {', '.join(SOURCES)})")
