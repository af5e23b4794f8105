"""The error types pamtri raises for bad input; the CLI prints them as one line."""
from __future__ import annotations

import os


class PamtriError(Exception):
    """Base class: an error the user can fix; the CLI prints it without a traceback."""


class DataError(PamtriError, ValueError):
    """Malformed data set input; names the file, the line or element, and what is wrong."""

    def __init__(self, path: str | os.PathLike | None, message: str, line: int | None = None,
                 element: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.element = element
        self.reason = message
        where = self.path or "<input>"
        if line is not None:
            where += f", line {line}"
        if element:
            where += f", {element}"
        super().__init__(f"{where}: {message}")


class ConfigError(PamtriError, ValueError):
    """A bad configuration key, type or combination; names the key and the source file."""


class CheckpointError(PamtriError, RuntimeError):
    """A checkpoint or cache that cannot be used (wrong architecture, truncated, unsafe)."""
