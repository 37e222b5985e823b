"""Files a device or a rack keeps between runs: atomic writes and exclusive locks.

Plugin states, a rack's saved ids and the plugin cache are rewritten while the bridge runs, so
each write goes to a temporary file in the same folder, is fsynced, renamed over the old one,
and the folder is fsynced: after a crash or a power cut the file is the old version or the new
one, never a torn mix.

Two processes must not write the same state: :class:`FileLock` is an ``flock`` on a lock file
held for the writer's life. The kernel drops it when the process ends however it ends (kill -9
included), so a lock is never stale. Lock files are left in place: unlinking one would let two
processes lock two different files of the same name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["FileLock", "InUseError", "atomic_write_text"]


class InUseError(RuntimeError):
    """The lock is held by another live process (a runtime conflict, exit 1 at the CLI)."""


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably: a temporary file in the same
    folder, fsync, rename over ``path``, fsync of the folder. OSError when it can't."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(OSError):  # keep the old file's permissions (mkstemp: 0600)
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


class FileLock:
    """An exclusive, non-blocking ``flock`` on ``path`` (created if missing), holding the
    owner's pid so that a refusal can name it. ``acquire`` raises :class:`InUseError` when
    another process holds it, OSError when the file can't be created (a missing or read-only
    folder)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, what: str) -> FileLock:
        """Take the lock; ``what`` names the locked thing in the refusal ("state folder
        /x/y")."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            by = f"process {holder}" if holder else "another process"
            raise InUseError(f"{what} is in use by {by} (lock {self.path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (the file stays; see the module's docstring)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None
