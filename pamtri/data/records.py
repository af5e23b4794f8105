"""One labelled image (``Record``), the path checks every reader uses, and the ``Problems`` collector."""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pamtri.common.errors import DataError

REAL = 0
SYNTHETIC = 1
DOMAIN_NAMES = {REAL: "real", SYNTHETIC: "synthetic"}
UNLABELLED = -1

VERI_NAME = re.compile(r"^(\d+)_c(\d+)_([^_]+)_(\d+)\.[A-Za-z]+$")

log = logging.getLogger(__name__)


@dataclass
class Record:
    """One image of a data set split. Class ids are 0-based; -1 (UNLABELLED) means no label.

    ``keypoints`` is (36, 3) float32: x, y in original-image pixels, then visibility (0/1, label files)
    or confidence (predictions); None when the split has no keypoints. ``track_id`` is the tracklet the
    image belongs to (the csv format's ``track`` column).
    """
    path: str
    vehicle_id: int = UNLABELLED
    camera_id: int = UNLABELLED
    color_id: int = UNLABELLED
    type_id: int = UNLABELLED
    orientation: float = math.nan
    domain: int = REAL
    keypoints: np.ndarray | None = None
    width: int = 0
    height: int = 0
    track_id: int = UNLABELLED

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def parse_veri_name(name: str) -> tuple[int, int] | None:
    """(vehicle id, camera id) from a VeRi-style name ``0002_c003_00084280_0.jpg``; None when not that form."""
    m = VERI_NAME.match(os.path.basename(name))
    if not m:
        return None
    return int(m.group(1)), int(m.group(2))


def resolve_image(root: str | os.PathLike, name: str, source: str | os.PathLike, line: int | None = None) -> Path:
    """Absolute path of ``name`` under ``root``, refusing absolute names and names that escape the root.

    The check is lexical (``..`` components), so image folders that are symlinks to elsewhere still work.
    """
    if not name:
        raise DataError(source, "empty image name", line)
    if os.path.isabs(name) or name.startswith(("\\", "/", "~")) or re.match(r"^[A-Za-z]:", name):
        raise DataError(source, f"image name {name!r} is an absolute path; names must be relative to the data set "
                                "root", line)
    norm = os.path.normpath(name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise DataError(source, f"image name {name!r} points outside the data set root {os.path.abspath(root)}", line)
    if norm == ".":
        raise DataError(source, f"image name {name!r} does not name a file", line)
    return Path(os.path.abspath(os.path.join(root, norm)))


def check_image(full: str | os.PathLike, name: str, source: str | os.PathLike, line: int | None = None) -> None:
    """Raise DataError (naming ``source`` and ``line``) when the image file is missing or empty."""
    try:
        size = os.stat(full).st_size
    except FileNotFoundError:
        raise DataError(source, f"image {name!r} not found at {full}; restore the file or drop it from the labels",
                        line) from None
    except NotADirectoryError:
        raise DataError(source, f"image {name!r} not found at {full}; restore the file or drop it from the labels",
                        line) from None
    if not os.path.isfile(full):
        raise DataError(source, f"image {name!r} at {full} is not a file; the labels must name image files", line)
    if size == 0:
        raise DataError(source, f"image {name!r} at {full} is empty (0 bytes); re-copy the file or drop it from "
                                "the labels", line)


class Problems:
    """Where readers send the problems they find: raised at once (strict) or collected (lenient).

    Every reader takes ``problems=None`` (strict: the first DataError is raised) or a ``Problems()``
    (lenient: errors are recorded, the bad row or item is skipped and reading goes on), so that
    ``pamtri data check`` can list every problem in one pass. Warnings never stop a reader; in strict
    mode they are logged.
    """

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.errors: list[DataError] = []
        self.warnings: list[DataError] = []

    @staticmethod
    def of(problems: Problems | None) -> Problems:
        """The collector to use: ``problems`` itself, or a strict one when None."""
        return Problems(strict=True) if problems is None else problems

    def error(self, err: DataError) -> None:
        """Raise ``err`` (strict) or record it (lenient)."""
        if self.strict:
            raise err
        self.errors.append(err)

    def warn(self, err: DataError) -> None:
        """Record a warning (a questionable but usable value); logged in strict mode."""
        if self.strict:
            log.warning("%s", err)
        self.warnings.append(err)
