"""Crash-safe writing: every file goes to a temporary name in the same folder, then is renamed."""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
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
    """An exclusive lock file, so two processes never write the same run folder (or index, ``path``).

    The lock is ``fcntl.flock`` on the file, which the kernel drops when its process dies, so a lock left by a
    dead process is taken over; the file holds the owner's pid for the refusal message. ``acquire(wait)`` waits
    up to ``wait`` seconds for the holder before refusing.
    """

    def __init__(self, folder: str | os.PathLike, path: str | os.PathLike | None = None, what: str = "run folder",
                 hint: str = "wait for it or choose another --out"):
        self.path = Path(path) if path is not None else Path(folder) / ".lock"
        self.folder, self.what, self.hint = Path(folder), what, hint
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> RunLock:
        """Take the lock, waiting up to ``wait`` seconds; PamtriError naming the holder's pid otherwise."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise PamtriError(
                    f"{self.folder}: another pamtri process (pid {self._owner()}) is writing this {self.what}; "
                    f"{self.hint} (remove {self.path} if that process is gone)") from None
            try:  # the holder we waited for may have removed the file: then our lock is on a dead inode
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fd = fd
            return self

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or -1)
        except (OSError, ValueError):
            return None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still locked: a waiter then sees a new inode and retries
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self if self.held else self.acquire()  # ``with lock.acquire(wait):`` takes it once

    def __exit__(self, *exc) -> None:
        self.release()
