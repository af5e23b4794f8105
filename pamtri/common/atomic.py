"""Crash-safe writing: every file goes to a temporary name in the same folder, then is renamed."""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import PamtriError, WriteError


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _file_mode()  # mkstemp creates 0600 files; written files get the usual umask-based mode


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync and rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` keeps its previous content. A failure to
    write (disk full, read-only file system, no permission) is raised as a ``WriteError`` naming ``path``.
    """
    path = Path(path)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(path, exc, existed) from exc
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # OSErrors about this file (a write, the flush, the rename) name it; others (a file the caller
        # reads inside the block) pass through unchanged.
        if isinstance(exc, OSError) and not isinstance(exc, PamtriError) and exc.filename in (None, tmp, str(path)):
            raise WriteError(path, exc, existed) from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


class RunLock:
    """An exclusive lock file in a run folder, so two processes never write the same run.

    The lock is a file created with O_EXCL that holds the owner's pid; a lock whose pid no longer
    exists is stale and is taken over.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self._held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._stale():
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    continue
                raise PamtriError(
                    f"{self.path.parent}: another pamtri process (pid {self._owner()}) is writing this run "
                    f"folder; wait for it or choose another --out (remove {self.path} if that process is gone)"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self._held = True
            return self
        raise PamtriError(f"{self.path}: could not take the run lock")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or -1)
        except (OSError, ValueError):
            return None

    def _stale(self) -> bool:
        pid = self._owner()
        if pid is None or pid <= 0:
            return True
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except OSError as exc:
            return exc.errno == errno.ESRCH
        return False

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
