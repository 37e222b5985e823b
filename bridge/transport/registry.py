"""The registry: a 16-slot bulletin board in shared memory where devices announce themselves.

Mutations (register, deregister, claim mirror, reclaim) happen under an exclusive
``flock`` on the registry segment: they are rare, never on the audio path, and the kernel
drops the lock if its holder is killed, so a crash can never wedge the registry. Slot
``state`` is additionally published with a release store after the other fields, so a
lock-free reader never sees a half-written slot as ACTIVE. The device's heartbeat is a
lock-free release store.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from . import _shm
from .layout import (
    HEARTBEAT_STALE_S,
    ID_INSTANCE_MAX,
    ID_NAME_MAX_BYTES,
    LINK_TAG_MAX_BYTES,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    REGISTRY_HEADER,
    REGISTRY_MAGIC,
    REGISTRY_SIZE,
    REGISTRY_SLOT,
    REGISTRY_SLOTS,
    Mode,
    SlotState,
    registry_slot_base,
)
from .shm import (
    Segment,
    SegmentError,
    SegmentSizeError,
    mapping_pids,
    namespace_from_env,
    namespace_names,
    open_fd,
    pid_alive,
    registry_name,
    transport_name,
    unlink,
)
from .shm import (
    shown as _shown,
)

_STATE = REGISTRY_SLOT.offset("state")
_HEARTBEAT = REGISTRY_SLOT.offset("heartbeat_ns")
_XRUNS = REGISTRY_SLOT.offset("xruns")
_NONFINITE = REGISTRY_SLOT.offset("nonfinite_blocks")
_FORMAT_OFFSETS = {name: REGISTRY_SLOT.offset(name) for name in ("sample_rate", "block_size",
                                                                 "mode")}
_INSTANCE_RE = re.compile(r"[0-9]{1,5}")  # ASCII digits only (str.isdigit takes others)
_CORRUPT = ("it is corrupt or another program's; 'discolink-bridge cleanup --force' removes "
            "it once no process maps it")


class RegistryError(Exception):
    """The registry cannot do what was asked (full, duplicate id, corrupt segment)."""


class RegistryFullError(RegistryError):
    pass


def validate_device_id(text: str) -> tuple[str, int | None]:
    """Split ``Name`` or ``Name:N`` into (name, N or None) by protocol.md §3.3's grammar;
    raise ValueError naming the fault. ``X:007`` gives ("X", 7): ids are canonical."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("device id is empty")
    name, colon, suffix = text.partition(":")
    shown = _shown(text)
    if colon:
        if not suffix:
            raise ValueError(f"device id {shown} ends with ':'; give NAME or NAME:N "
                             f"(N 0..{ID_INSTANCE_MAX})")
        if ":" in suffix:
            raise ValueError(f"device id {shown} has more than one ':'; a NAME may not "
                             "contain ':'")
        if not _INSTANCE_RE.fullmatch(suffix) or int(suffix) > ID_INSTANCE_MAX:
            raise ValueError(f"device id {shown}: instance {_shown(suffix)} is not a number "
                             f"0..{ID_INSTANCE_MAX}")
    if not name.strip():
        raise ValueError(f"device id {shown} has an empty NAME before ':'")
    _check_text(name, "device id", ID_NAME_MAX_BYTES, shown_as=shown)
    return name, int(suffix) if colon else None


def validate_link_tag(tag: str) -> str:
    if tag:
        _check_text(tag, "link tag", LINK_TAG_MAX_BYTES)
    return tag


def _check_text(text: str, what: str, max_bytes: int, shown_as: str | None = None) -> None:
    shown = shown_as or _shown(text)
    try:
        raw = text.encode("utf-8", errors="strict")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {shown} is not valid UTF-8") from None
    if len(raw) > max_bytes:
        part = " its NAME" if shown_as else ""
        raise ValueError(
            f"{what} {shown} is too long:{part} {len(raw)} bytes UTF-8, at most {max_bytes}")
    if "/" in text:
        raise ValueError(f"{what} {shown} contains '/'")
    for i, ch in enumerate(text):
        if unicodedata.category(ch) == "Cc":
            name = "NUL" if ch == "\0" else f"U+{ord(ch):04X}"
            raise ValueError(f"{what} {shown} contains a control character ({name}) at {i}")


@dataclass(frozen=True)
class DeviceInfo:
    """A registered device, as a host sees it in the registry."""

    id: str
    pid: int
    channels: int
    sample_rate: int
    block_size: int
    mode: str
    claimed: bool  # claimed by a live host
    host_pid: int
    link_tag: str
    capabilities: int
    slot: int
    generation: int
    namespace: str
    xruns: int = 0
    nonfinite_blocks: int = 0  # output blocks silenced for NaN or infinity

    @property
    def name(self) -> str:
        return self.id.rsplit(":", 1)[0]

    @property
    def segment_name(self) -> str:
        return transport_name(self.namespace, self.slot, self.pid)

    def to_json(self) -> dict:
        """The public JSON form (``discolink-bridge list --json``)."""
        d = asdict(self)
        return {k: d[k] for k in ("id", "pid", "channels", "sample_rate", "block_size", "mode",
                                  "claimed", "host_pid", "link_tag", "xruns",
                                  "nonfinite_blocks")}


class Registry:
    """One namespace's registry segment, created on first use and shared by every process."""

    def __init__(self, namespace: str | None = None, *, create: bool = True) -> None:
        self.namespace = namespace_from_env(namespace)
        self.name = registry_name(self.namespace)
        self._create = create  # False: a reader, which never creates one (§2)
        self._thread_lock = threading.Lock()
        self._lock_fd = -1
        self._open()
        try:
            with self.locked():
                pass  # checks (or initialises) the header
        except BaseException:
            self.close()
            raise

    @classmethod
    def find(cls, namespace: str | None = None) -> Registry | None:
        """The namespace's registry if it exists, else None; unlike ``Registry()``, a look
        (a Host, ``list``, ``cleanup``) never leaves a new registry behind."""
        try:
            return cls(namespace, create=False)
        except FileNotFoundError:
            return None

    def _open(self) -> None:
        """Map the registry: open-or-create for a device, open only (FileNotFoundError when
        there is none, or only an empty object a creator never sized) for a reader."""
        try:
            if self._create:
                self.segment = Segment.create(self.name, REGISTRY_SIZE, exclusive=False)
            else:
                self.segment = Segment.open_sized(self.name, REGISTRY_SIZE)
        except SegmentSizeError as exc:
            raise SegmentError(
                f"registry {self.name} is {exc.size} bytes, expected {REGISTRY_SIZE}: "
                f"{_CORRUPT}") from None
        self.buf = self.segment.buf
        # A descriptor of our own for flock: the lock belongs to this open file description.
        self._lock_fd = open_fd(self.name, os.O_RDWR)
        self._header_checked = False

    def _reopen(self) -> bool:
        """Our registry was removed (a cleanup found it empty): open the one now under its
        name; False when a reader finds none. The old mapping is left to the garbage
        collector, as views of it may exist."""
        old = self._lock_fd
        try:
            self._open()
        except FileNotFoundError:  # a reader, and none now: it keeps looking at the old one
            self._lock_fd = old
            return False
        os.close(old)
        return True

    def _check_header(self) -> None:
        """Initialise a new registry, or refuse one that is not ours (naming the fault).
        Caller holds the lock."""
        header = REGISTRY_HEADER.unpack_from(self.buf)
        if header["magic"] == 0:
            REGISTRY_HEADER.pack_into(
                self.buf, 0, magic=REGISTRY_MAGIC, version_major=PROTOCOL_MAJOR,
                version_minor=PROTOCOL_MINOR, header_size=REGISTRY_HEADER.size,
                slot_size=REGISTRY_SLOT.size, slot_count=REGISTRY_SLOTS)
        elif header["magic"] != REGISTRY_MAGIC:
            raise SegmentError(f"registry {self.name} has bad magic 0x{header['magic']:08x}: "
                               f"{_CORRUPT}")
        elif header["version_major"] != PROTOCOL_MAJOR:
            raise SegmentError(
                f"registry {self.name} has protocol version {header['version_major']}."
                f"{header['version_minor']}; this program speaks {PROTOCOL_MAJOR}."
                f"{PROTOCOL_MINOR}")
        elif (header["slot_count"], header["slot_size"]) != (REGISTRY_SLOTS,
                                                             REGISTRY_SLOT.size):
            raise SegmentError(f"registry {self.name} has {header['slot_count']} slots of "
                               f"{header['slot_size']} bytes; expected {REGISTRY_SLOTS} of "
                               f"{REGISTRY_SLOT.size}: {_CORRUPT}")

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self.segment.close()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive registry lock: a process-wide flock plus a thread lock. A registry that
        was removed while we held it open (st_nlink 0) is replaced by the one under its name
        first, so nobody registers where no host will ever look."""
        with self._thread_lock:
            while True:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                if os.fstat(self._lock_fd).st_nlink:
                    break
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                if not self._reopen():  # removed, none since: a removed one holds no device
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                    break
            try:
                if not self._header_checked:
                    self._check_header()
                    self._header_checked = True
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- slot access -------------------------------------------------------------------
    def _slot(self, index: int) -> dict:
        return REGISTRY_SLOT.unpack_from(self.buf, registry_slot_base(index))

    def slot_state(self, index: int) -> int:
        return _shm.load_u32(self.buf, registry_slot_base(index) + _STATE)

    def heartbeat(self, index: int, now_ns: int | None = None) -> None:
        """Lock-free: the owning device stamps its slot (real-time safe)."""
        _shm.store_u64(self.buf, registry_slot_base(index) + _HEARTBEAT,
                       time.monotonic_ns() if now_ns is None else now_ns)

    def set_xruns(self, index: int, xruns: int) -> None:
        """Lock-free: the owning device publishes its audio clock's xrun count."""
        _shm.store_u64(self.buf, registry_slot_base(index) + _XRUNS, xruns)

    def set_nonfinite_blocks(self, index: int, blocks: int) -> None:
        """Lock-free: the owning device publishes how many output blocks it silenced."""
        _shm.store_u64(self.buf, registry_slot_base(index) + _NONFINITE, blocks)

    def heartbeat_ns(self, index: int) -> int:
        return _shm.load_u64(self.buf, registry_slot_base(index) + _HEARTBEAT)

    def owner(self, index: int) -> tuple[int, int, int]:
        """(state, device_pid, generation) of a slot, read without the lock."""
        base = registry_slot_base(index)
        state = _shm.load_u32(self.buf, base + _STATE)
        return (state, REGISTRY_SLOT.read_field(self.buf, base, "device_pid"),
                REGISTRY_SLOT.read_field(self.buf, base, "generation"))

    def _is_dead(self, slot: dict, now_ns: int) -> bool:
        if slot["state"] == SlotState.BUSY:
            return True  # only ever BUSY under the lock we now hold: its writer died
        if slot["state"] != SlotState.ACTIVE:
            return False
        if not pid_alive(slot["device_pid"]):
            return True
        return now_ns - slot["heartbeat_ns"] > HEARTBEAT_STALE_S * 1e9

    def _reclaim_dead(self) -> list[str]:
        """Free slots whose device is gone and unlink their segments. Caller holds the lock."""
        now = time.monotonic_ns()
        freed = []
        for i in range(REGISTRY_SLOTS):
            slot = self._slot(i)
            if self._is_dead(slot, now):
                if slot["device_pid"]:
                    unlink(transport_name(self.namespace, i, slot["device_pid"]))
                self._clear(i)
                freed.append(_cstr(slot["device_id"]))
        return freed

    def _clear(self, index: int) -> None:
        base = registry_slot_base(index)
        _shm.store_u32(self.buf, base + _STATE, SlotState.FREE)
        generation = REGISTRY_SLOT.read_field(self.buf, base, "generation")
        REGISTRY_SLOT.pack_into(self.buf, base, generation=generation)

    # -- public operations -------------------------------------------------------------
    def register(self, requested_id: str, *, pid: int, channels: int, sample_rate: int,
                 block_size: int, mode: Mode, capabilities: int,
                 prepare: Callable[[int, str, int], None] | None = None
                 ) -> tuple[int, str, int]:
        """Take a slot; returns (slot, device_id, generation).

        ``Name`` gets the lowest free instance ``Name:N``; ``Name:N`` gets exactly that or an
        error. Raises RegistryFullError when all 16 slots hold live devices.
        ``prepare(slot, device_id, generation)`` runs under the lock before the slot is
        published ACTIVE (the device creates its segment there, so that any host that sees
        the slot finds the segment); if it raises, the slot is freed and nothing is published.
        """
        name, wanted = validate_device_id(requested_id)
        with self.locked():
            self._reclaim_dead()
            slots = [self._slot(i) for i in range(REGISTRY_SLOTS)]
            taken = {}
            for s in slots:
                if s["state"] == SlotState.ACTIVE:
                    taken[_cstr(s["device_id"])] = s["device_pid"]
            if wanted is not None:
                instance = wanted
                device_id = f"{name}:{instance}"
                if device_id in taken:
                    raise RegistryError(f"device id {device_id!r} is already registered by "
                                        f"pid {taken[device_id]} in namespace "
                                        f"{self.namespace!r}")
            else:
                instance = 0
                while f"{name}:{instance}" in taken:
                    instance += 1
                device_id = f"{name}:{instance}"
            free = [i for i, s in enumerate(slots) if s["state"] == SlotState.FREE]
            if not free:
                running = ", ".join(sorted(taken))
                raise RegistryFullError(
                    f"registry full ({REGISTRY_SLOTS} slots) in namespace {self.namespace!r}: "
                    f"{running}")
            index = free[0]
            base = registry_slot_base(index)
            generation = (slots[index]["generation"] + 1) & 0xFFFFFFFF
            _shm.store_u32(self.buf, base + _STATE, SlotState.BUSY)
            REGISTRY_SLOT.pack_into(
                self.buf, base, state=SlotState.BUSY, device_pid=pid,
                heartbeat_ns=time.monotonic_ns(), channels=channels, sample_rate=sample_rate,
                block_size=block_size, mode=int(mode), capabilities=int(capabilities),
                instance=instance, host_pid=0, generation=generation,
                device_id=device_id.encode(), link_tag=b"")
            if prepare is not None:
                try:
                    prepare(index, device_id, generation)
                except BaseException:
                    self._clear(index)
                    raise
            _shm.store_u32(self.buf, base + _STATE, SlotState.ACTIVE)  # publish last
            return index, device_id, generation

    def deregister(self, index: int, pid: int, generation: int) -> bool:
        """Free our slot (only if it is still ours)."""
        with self.locked():
            s = self._slot(index)
            if s["device_pid"] != pid or s["generation"] != generation:
                return False
            self._clear(index)
            return True

    def update(self, index: int, pid: int, generation: int, **fields) -> bool:
        """Update fields of a slot under the lock, only while it still belongs to the device
        ``pid``/``generation`` (the claim mirror, at connect)."""
        with self.locked():
            return self._update_locked(index, pid, generation, fields)

    def _update_locked(self, index: int, pid: int, generation: int, fields: dict,
                       host_pid: int | None = None) -> bool:
        s = self._slot(index)
        if s["state"] != SlotState.ACTIVE or s["device_pid"] != pid or \
                s["generation"] != generation or \
                (host_pid is not None and s["host_pid"] != host_pid):
            return False
        base = registry_slot_base(index)
        for k, v in fields.items():
            REGISTRY_SLOT.write_field(self.buf, base, k, v.encode() if isinstance(v, str)
                                      else v)
        return True

    def release_claim(self, index: int, pid: int, generation: int, host_pid: int) -> bool:
        """Clear the slot's claim mirror, only if the slot still belongs to the device we
        claimed (pid, generation) and the mirror still names us (protocol.md §8.3)."""
        with self.locked():
            return self._update_locked(index, pid, generation, {"host_pid": 0}, host_pid)

    def update_format(self, index: int, pid: int, generation: int, **fields: int) -> bool:
        """Lock-free: the owning device mirrors its format (sample_rate, block_size, mode)
        into its slot with atomic stores, after checking the slot is still its own
        (protocol.md §3.2). Real-time safe: command dispatch calls it."""
        state, owner, owner_generation = self.owner(index)
        if state != SlotState.ACTIVE or owner != pid or owner_generation != generation:
            return False
        base = registry_slot_base(index)
        for name, value in fields.items():
            _shm.store_u32(self.buf, base + _FORMAT_OFFSETS[name], int(value))
        return True

    def scan(self) -> list[DeviceInfo]:
        """Reclaim dead slots, then list live devices (sorted by id)."""
        with self.locked():
            self._reclaim_dead()
            slots = [(i, self._slot(i)) for i in range(REGISTRY_SLOTS)]
        out = []
        for i, s in slots:
            if s["state"] != SlotState.ACTIVE:
                continue
            host = s["host_pid"]
            try:
                mode = Mode(s["mode"]).label
            except ValueError:
                mode = f"unknown({s['mode']})"
            out.append(DeviceInfo(
                id=_cstr(s["device_id"]), pid=s["device_pid"], channels=s["channels"],
                sample_rate=s["sample_rate"], block_size=s["block_size"], mode=mode,
                claimed=bool(host) and pid_alive(host), host_pid=host,
                link_tag=_cstr(s["link_tag"]), capabilities=s["capabilities"], slot=i,
                generation=s["generation"], namespace=self.namespace, xruns=s["xruns"],
                nonfinite_blocks=s["nonfinite_blocks"]))
        return sorted(out, key=lambda d: (d.name, int(d.id.rsplit(":", 1)[1])))

    def sweep(self, *, dry_run: bool = False) -> Sweep:
        """Free the slots of dead devices and remove every segment of the namespace that no
        live device owns (a killed device's, say); when no device is left, the registry goes
        too. ``dry_run`` only reports. The registry lock makes it safe beside running devices:
        one that opened this registry before it was removed follows to the new one."""
        with self.locked():
            now = time.monotonic_ns()
            freed, live, owned = [], [], {self.name}
            for i in range(REGISTRY_SLOTS):
                slot = self._slot(i)
                if self._is_dead(slot, now):
                    freed.append(_cstr(slot["device_id"]))
                    if not dry_run:
                        self._clear(i)
                elif slot["state"] == SlotState.ACTIVE:
                    live.append(_cstr(slot["device_id"]))
                    owned.add(transport_name(self.namespace, i, slot["device_pid"]))
            if not live:
                owned.discard(self.name)
            removed = [n for n in namespace_names(self.namespace) if n not in owned]
            if not dry_run:
                for name in removed:
                    unlink(name)
        return Sweep(self.namespace, sorted(live), freed, removed)

    def destroy(self) -> None:
        """Unlink the registry segment (tests only; see :meth:`sweep`)."""
        unlink(self.name)


def sweep_namespace(namespace: str | None = None, *, dry_run: bool = False,
                    force: bool = False) -> Sweep | None:
    """:meth:`Registry.sweep` of the namespace's registry, or None when it has none. A
    corrupt registry (protocol.md §3.6) is reported in ``Sweep.corrupt``; with ``force`` it
    and the namespace's other segments go, each only if no live process maps it."""
    namespace = namespace_from_env(namespace)
    try:
        registry = Registry.find(namespace)
    except SegmentError as exc:
        return _sweep_corrupt(namespace, str(exc), dry_run=dry_run, force=force)
    if registry is None:
        return None
    try:
        return registry.sweep(dry_run=dry_run)
    finally:
        registry.close()


def _sweep_corrupt(namespace: str, reason: str, *, dry_run: bool, force: bool) -> Sweep:
    """A namespace whose registry cannot be read: nothing is touched unless ``force``, and
    then only what no live process has mapped (a registry in use must not vanish under its
    user, §3.6)."""
    removed, mapped = [], {}
    for name in namespace_names(namespace):
        pids = mapping_pids(name)
        if pids:
            mapped[name] = pids
        elif force:
            removed.append(name)
            if not dry_run:
                unlink(name)
    return Sweep(namespace, [], [], removed, corrupt=reason, mapped=mapped)


@dataclass(frozen=True)
class Sweep:
    """What :meth:`Registry.sweep` found: live device ids, dead ones freed, names removed;
    for a corrupt registry, why, and which of its names live processes map (name -> pids)."""

    namespace: str
    live: list[str]
    freed: list[str]
    removed: list[str]
    corrupt: str = ""
    mapped: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The public JSON form (``cleanup --json``): ``corrupt`` is null for a sound one."""
        return {**asdict(self), "corrupt": self.corrupt or None}


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def live_heartbeats(namespace: str | None = None) -> dict[int, int]:
    """``{device pid: heartbeat_ns}`` of every ACTIVE slot, read lock-free from a fresh
    mapping. A supervisor's watchdog uses it: it never waits for the registry lock (a stopped
    device may hold it) and never reclaims anything. Empty when there is no valid registry."""
    try:
        seg = Segment.attach(registry_name(namespace_from_env(namespace)), REGISTRY_SIZE)
    except SegmentError:
        return {}
    try:
        if REGISTRY_HEADER.unpack_from(seg.buf)["magic"] != REGISTRY_MAGIC:
            return {}
        beats = {}
        for i in range(REGISTRY_SLOTS):
            base = registry_slot_base(i)
            if _shm.load_u32(seg.buf, base + _STATE) == SlotState.ACTIVE:
                pid = REGISTRY_SLOT.read_field(seg.buf, base, "device_pid")
                beats[pid] = _shm.load_u64(seg.buf, base + _HEARTBEAT)
        return beats
    finally:
        seg.close()
