"""POSIX shared-memory segments: names, creation, attachment, and process liveness.

Segments are opened with ``shm_open`` and mapped with ``mmap`` directly. We deliberately
do not use ``multiprocessing.shared_memory``: on Python 3.11 merely attaching registers the
segment with the attaching process's resource tracker, which unlinks it when that process
exits, so a host would destroy its device's memory (tests/test_lifecycle.py checks that a
host exiting leaves the device's segment alone).
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import sys

try:  # CPython's own binding of shm_open/shm_unlink; it does not touch any resource tracker.
    import _posixshmem
except ImportError:  # pragma: no cover - non-POSIX platforms
    _posixshmem = None

from .layout import NAMESPACE_MAX_CHARS

NAMESPACE_ENV = "DISCOLINK_NAMESPACE"
DEFAULT_NAMESPACE = "default"
_NAMESPACE_RE = re.compile(rf"^[A-Za-z0-9_.-]{{1,{NAMESPACE_MAX_CHARS}}}$")


class SegmentError(Exception):
    """A shared-memory segment is missing, unreadable, or not a valid discoLink segment."""


class SegmentSizeError(SegmentError):
    """An existing segment of another size than the one asked for (corrupt, or another
    program's): never resized."""

    def __init__(self, name: str, size: int, expected: int) -> None:
        super().__init__(f"segment {name} is {size} bytes, expected {expected}")
        self.name, self.size, self.expected = name, size, expected


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters: a 5,000-character id or
    namespace is named, not echoed in full."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


def namespace_from_env(namespace: str | None = None) -> str:
    """The namespace to use: the argument, else $DISCOLINK_NAMESPACE, else ``default``."""
    ns = namespace if namespace is not None else os.environ.get(NAMESPACE_ENV, DEFAULT_NAMESPACE)
    if not _NAMESPACE_RE.match(ns):
        raise ValueError(
            f"invalid namespace {shown(ns)}: use 1 to {NAMESPACE_MAX_CHARS} characters from "
            "A-Z a-z 0-9 _ . -"
        )
    return ns


def registry_name(namespace: str) -> str:
    """Name of the registry segment of a namespace for the current user."""
    return f"/discolink-{os.getuid()}-{namespace}-registry"


def transport_name(namespace: str, slot: int, device_pid: int) -> str:
    """Name of a device's transport segment, derived from its registry slot and pid."""
    return f"/discolink-{os.getuid()}-{namespace}-dev{slot}-{device_pid}"


def namespace_prefix(namespace: str) -> str:
    """Common prefix of every segment name in a namespace (for scratch names in tests). It
    also prefixes other namespaces' names (``a-`` starts ``a-b``'s): to find a namespace's
    segments, use :func:`namespace_names`."""
    return f"/discolink-{os.getuid()}-{namespace}-"


def namespace_names(namespace: str) -> list[str]:
    """The segments of exactly this namespace: its registry and its devices' segments."""
    own = re.compile(rf"^{re.escape(namespace_prefix(namespace))}(registry|dev\d+-\d+)$")
    return [n for n in list_names(namespace_prefix(namespace)) if own.match(n)]


def namespaces() -> list[str]:
    """The namespaces of the current user that have a registry segment."""
    head, tail = f"/discolink-{os.getuid()}-", "-registry"
    return [n[len(head):-len(tail)] for n in list_names(head) if n.endswith(tail)
            and _NAMESPACE_RE.match(n[len(head):-len(tail)])]


class Segment:
    """A mapped shared-memory object. ``buf`` is the writable mmap."""

    def __init__(self, name: str, buf: mmap.mmap, created: bool) -> None:
        self.name = name
        self.buf = buf
        self.created = created

    @property
    def size(self) -> int:
        return len(self.buf)

    @classmethod
    def create(cls, name: str, size: int, *, exclusive: bool = True) -> Segment:
        """Create (or, unless exclusive, open-or-create) a segment of ``size`` bytes, mode 0600."""
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if exclusive else 0)
        fd = open_fd(name, flags)
        try:
            os.fchmod(fd, 0o600)  # umask may have narrowed it; never let it be wider
            current = os.fstat(fd).st_size
            created = current == 0
            if created:
                os.ftruncate(fd, size)
            elif current != size:  # never resize what may be someone else's (§2)
                raise SegmentSizeError(name, current, size)
            buf = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, buf, created)

    @classmethod
    def open_sized(cls, name: str, size: int) -> Segment:
        """Map an existing segment of exactly ``size`` bytes, creating nothing: a reader's
        open. FileNotFoundError when it does not exist or was never sized (0 bytes),
        SegmentSizeError when it has another size."""
        fd = open_fd(name, os.O_RDWR)
        try:
            current = os.fstat(fd).st_size
            if current == 0:
                raise FileNotFoundError(errno.ENOENT, "segment never sized", name)
            if current != size:
                raise SegmentSizeError(name, current, size)
            buf = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, buf, False)

    @classmethod
    def attach(cls, name: str, min_size: int = 0) -> Segment:
        """Map an existing segment read-write; clear errors for missing or truncated ones."""
        try:
            fd = open_fd(name, os.O_RDWR)
        except FileNotFoundError:
            raise SegmentError(f"segment {name} does not exist") from None
        except PermissionError:
            raise SegmentError(f"segment {name}: permission denied") from None
        try:
            size = os.fstat(fd).st_size
            if size < max(min_size, 1):
                raise SegmentError(
                    f"segment {name} is truncated: {size} bytes, need at least {max(min_size, 1)}"
                )
            buf = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, buf, False)

    def close(self) -> None:
        try:
            self.buf.close()
        except BufferError:  # a view is still exported; the mapping dies with the process
            pass

    def unlink(self) -> None:
        unlink(self.name)


def unlink(name: str) -> bool:
    """Remove a segment name; existing mappings stay valid. False if it did not exist."""
    try:
        if _posixshmem is not None:
            _posixshmem.shm_unlink(name)
        else:  # pragma: no cover
            os.unlink("/dev/shm" + name)
        return True
    except FileNotFoundError:
        return False


def list_names(prefix: str) -> list[str]:
    """Segment names starting with ``prefix`` (Linux: read from /dev/shm)."""
    try:
        entries = os.listdir("/dev/shm")
    except FileNotFoundError:  # pragma: no cover - not Linux
        return []
    return sorted("/" + e for e in entries if ("/" + e).startswith(prefix))


def mapping_pids(name: str) -> list[int]:
    """The pids of live processes that map the segment ``name`` now (Linux: its inode in
    /proc/<pid>/maps; a removed object of the same name does not count). Processes whose maps
    we may not read are skipped: their segments are not ours to judge."""
    try:
        inode = os.stat("/dev/shm" + name).st_ino
    except FileNotFoundError:
        return []
    path = ("/dev/shm" + name).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/maps", "rb") as f:
                maps = f.read()
        except OSError:  # gone, or not ours
            continue
        for line in maps.splitlines():
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5] == path and fields[4] == str(inode).encode():
                pids.append(int(entry))
                break
    return pids


def open_fd(name: str, flags: int) -> int:
    """shm_open a segment name; returns a new file descriptor."""
    if _posixshmem is not None:
        return _posixshmem.shm_open(name, flags, mode=0o600)
    return os.open("/dev/shm" + name, flags, 0o600)  # pragma: no cover


def pid_exists(pid: int) -> bool:
    """True if ``pid`` exists (zombies included): one kill(pid, 0), no file access."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError as exc:  # pragma: no cover
        return exc.errno != errno.ESRCH
    return True


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process. Zombies (killed, not yet reaped) count as dead."""
    if not pid_exists(pid):
        return False
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            # The state letter follows the last ')' (the command name may contain spaces).
            state = stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3]
            return state not in (b"Z", b"X")
        except (OSError, ValueError):
            return False
    return True
