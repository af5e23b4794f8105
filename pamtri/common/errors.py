"""The error types pamtri raises for bad input; the CLI prints them as one line."""
from __future__ import annotations

import errno
import os


def _worker_message(cls: type, text) -> str | None:
    """The original message when ``text`` is what torch's DataLoader passes on from a worker process.

    A worker's exception is re-raised in the main process as ``cls(text)``, ``text`` being "Caught <name> in
    DataLoader worker process N." plus the worker's whole traceback; its last entry is "<module>.<class>:
    <message>". Returns that message, or None when ``text`` is not such a re-raise.
    """
    if not (isinstance(text, str) and text.startswith("Caught ") and "Original Traceback" in text):
        return None
    marker = f"\n{cls.__module__}.{cls.__qualname__}: "
    at = text.rfind(marker)
    return text[at + len(marker):].rstrip("\n") if at >= 0 else None


class PamtriError(Exception):
    """Base class: an error the user can fix; the CLI prints it without a traceback."""

    def __init__(self, *args):
        # Raised in a DataLoader worker, the error comes back as cls(<traceback text>): keep one line.
        if len(args) == 1 and (original := _worker_message(type(self), args[0])) is not None:
            args = (original,)
        super().__init__(*args)


class DataError(PamtriError, ValueError):
    """Malformed data set input; names the file, the line or element, and what is wrong."""

    def __init__(self, path: str | os.PathLike | None, message: str | None = None, line: int | None = None,
                 element: str | None = None):
        if message is None:
            # One argument: a DataError re-raised from a DataLoader worker or unpickled; it is the full text.
            text = _worker_message(type(self), path) if isinstance(path, str) else None
            self.path, self.line, self.element = None, None, None
            self.reason = text if text is not None else str(path)
            Exception.__init__(self, self.reason)
            return
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

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.line, self.element))


class ConfigError(PamtriError, ValueError):
    """A bad configuration key, type or combination; names the key and the source file."""


class CheckpointError(PamtriError, RuntimeError):
    """A checkpoint or cache that cannot be used (wrong architecture, truncated, unsafe)."""


class WriteError(PamtriError, OSError):
    """Writing a file failed (disk full, read-only, no permission); what the file held before is unchanged."""

    def __init__(self, path: str | os.PathLike, cause: OSError | str | None = None, existed: bool = True):
        if not isinstance(cause, OSError):  # re-created from its text (a worker, unpickling)
            super().__init__(errno.EIO, str(path if cause is None else cause))
            self.message = str(path if cause is None else cause)
            return
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.filename = os.fspath(path)
        name = os.path.basename(self.filename)
        kept = f"the previous {name} is unchanged" if existed else f"no {name} was written"
        hint = "; free some disk space and run the command again" if cause.errno in (errno.ENOSPC, errno.EDQUOT) \
            else ""
        self.message = f"{self.filename}: cannot write ({cause.strerror or cause}); {kept}{hint}"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (type(self), (self.message,))
