"""The host endpoint: discovers devices, claims one, negotiates, sends commands, reads audio.

Real-time rules: ``receive_audio``, ``send_return_audio``, ``send_command`` and
``process_responses`` never raise, never block, and use only buffers allocated at connect.
When the device dies or stops, ``receive_audio`` zero-fills and ``connected`` turns False
within ``LINK_CHECK_INTERVAL_S`` of the next call (liveness is re-checked every 50 ms).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _shm
from . import commands as cmd
from .commands import Reassembler
from .layout import (
    HANDSHAKE_TIMEOUT_S,
    HEARTBEAT_INTERVAL_S,
    LINK_CHECK_INTERVAL_S,
    LINK_STALE_S,
    MESSAGE_RING_SLOTS,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    RING_CONTROL_SIZE,
    SEGMENT_MAGIC,
    TRANSPORT_HEADER,
    Capability,
    DeviceState,
    Mode,
    SlotState,
)
from .message import Message
from .monitor import DebugMonitor
from .registry import DeviceInfo, Registry, validate_link_tag
from .ring import CORRUPT, AudioRing, MessageRing
from .shm import Segment, SegmentError, namespace_from_env, pid_alive, pid_exists

ResponseHandler = Callable[[Message, "Host"], None]
_O = TRANSPORT_HEADER.offsets
# What this host may use (protocol.md §8.1): every group of commands, the return ring, UMP and
# fragments. FLEXIBLE_FORMAT is a device capability, so a host never offers it.
HOST_CAPABILITIES = int(Capability(sum(Capability)) & ~Capability.FLEXIBLE_FORMAT)
# Heartbeat age after which a host also looks for a zombie: twice the longest a running
# device may go without stamping it.
ZOMBIE_CHECK_NS = int(2 * HEARTBEAT_INTERVAL_S * 1e9)
_BLOCKS_READ = TRANSPORT_HEADER.offset("blocks_read")
_UNDERRUNS = TRANSPORT_HEADER.offset("underruns")
_FILL_BLOCKS = TRANSPORT_HEADER.offset("fill_blocks")
_LATENCY_FRAMES = TRANSPORT_HEADER.offset("latency_frames")


class HostError(Exception):
    """A host-side operation failed (not found, claimed, refused, timed out)."""


class DeviceNotFound(HostError):
    pass


class DeviceClaimed(HostError):
    """Another live host holds the device: ``holder_pid`` and its ``link_tag`` say which."""

    def __init__(self, text: str, device: str = "", holder_pid: int = 0,
                 link_tag: str = "") -> None:
        super().__init__(text)
        self.device, self.holder_pid, self.link_tag = device, holder_pid, link_tag


class HandshakeError(HostError):
    pass


class CommandError(HostError):
    """The device answered a request with an Error."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


@dataclass(frozen=True)
class Connection:
    """What the handshake settled: the format in effect from now on."""

    device: str
    sample_rate: int
    block_size: int
    channels: int
    mode: str
    capabilities: int
    return_channels: int
    version: str


@dataclass
class HostStats:
    blocks_read: int = 0
    underruns: int = 0
    commands_sent: int = 0
    commands_dropped: int = 0
    responses_received: int = 0
    errors_received: int = 0
    return_overruns: int = 0
    errors: int = 0
    last_error: str = ""


def validate_segment(seg: Segment, device_pid: int | None = None) -> dict:
    """Check a transport segment's header (protocol.md §4.2); raise SegmentError naming the
    segment and the fault. ``device_pid``: the pid of the registry slot it was found
    through, which the segment must belong to."""
    name, size = seg.name, seg.size
    if size < TRANSPORT_HEADER.size:
        raise SegmentError(f"segment {name} is truncated: {size} bytes, the header alone is "
                           f"{TRANSPORT_HEADER.size}")
    h = TRANSPORT_HEADER.unpack_from(seg.buf)
    if h["magic"] != SEGMENT_MAGIC:
        raise SegmentError(f"segment {name} has bad magic 0x{h['magic']:08x} (expected "
                           f"0x{SEGMENT_MAGIC:08x}): not a discoLink transport segment")
    if h["version_major"] != PROTOCOL_MAJOR:
        raise SegmentError(f"segment {name} has protocol version {h['version_major']}."
                           f"{h['version_minor']}; this host speaks {PROTOCOL_MAJOR}."
                           f"{PROTOCOL_MINOR}")
    if h["total_size"] > size:
        raise SegmentError(f"segment {name} is truncated: {size} bytes, header says "
                           f"{h['total_size']}")
    frames, slots = h["audio_frames"], h["message_slots"]
    if frames <= 0 or frames & (frames - 1) or slots <= 0 or slots & (slots - 1):
        raise SegmentError(f"segment {name}: ring sizes {frames}/{slots} are not powers of two")
    regions = [(h["command_ring_offset"], slots * 256), (h["response_ring_offset"], slots * 256)]
    if h["audio_ring_offset"]:
        regions.append((h["audio_ring_offset"], h["channels"] * frames * 4))
    if h["return_ring_offset"]:
        regions.append((h["return_ring_offset"], h["return_channels"] * frames * 4))
    for offset, data in regions:
        if offset < h["header_size"] or offset % 64 or offset + RING_CONTROL_SIZE + data > size:
            raise SegmentError(f"segment {name}: ring at offset {offset} lies outside the "
                               f"{size}-byte segment")
    state = _shm.load_u32(seg.buf, _O["device_state"])
    if state != DeviceState.RUNNING:
        what = DeviceState(state).name.lower() if state in DeviceState._value2member_map_ \
            else f"in unknown state {state}"
        raise SegmentError(f"segment {name}: the device is {what}, not running")
    if device_pid is not None and h["device_pid"] != device_pid:
        raise SegmentError(f"segment {name} belongs to pid {h['device_pid']}, not to the "
                           f"registered device's pid {device_pid}")
    return h


class Host:
    """A discoLink host. Use as ``with Host() as host: host.connect("Synth:0")``."""

    def __init__(self, namespace: str | None = None, *,
                 monitor: DebugMonitor | None = None) -> None:
        self.namespace = namespace_from_env(namespace)
        # A host only looks: it opens the namespace's registry once one exists, and never
        # leaves a new one behind in a namespace where no device ever ran.
        self._registry: Registry | None = Registry.find(self.namespace)
        self.monitor = monitor
        self.pid = os.getpid()
        self.sample_rate = 0
        self.block_size = 0
        self.channels = 0
        self.link_tag = ""
        self.device: DeviceInfo | None = None
        self.connection: Connection | None = None
        self.disconnect_reason = ""
        self._stats = HostStats()
        self._base = (0, 0)  # header blocks_read, underruns at connect
        self._segment: Segment | None = None
        self._connected = False
        self._handlers: list[ResponseHandler] = []
        self._waiting: dict[int, Message | None] = {}
        self._label = f"host {self.pid}"
        self._rx = Message()
        self._reassembler = Reassembler(
            on_discard=lambda _first, text: self._error("process_responses", text))

    def set_local_buffer_info(self, sample_rate: int, block_size: int, channels: int = 0) -> None:
        """The format this host would like; sent in the Handshake (0 = no preference)."""
        self.sample_rate, self.block_size, self.channels = sample_rate, block_size, channels

    @property
    def registry(self) -> Registry | None:
        """The namespace's registry, or None while no device has ever made one."""
        if self._registry is None:
            self._registry = Registry.find(self.namespace)
        return self._registry

    def available_devices(self) -> list[DeviceInfo]:
        """Live devices in the namespace (a scan also reclaims dead slots)."""
        registry = self.registry
        return registry.scan() if registry is not None else []

    def find(self, device_id: str) -> DeviceInfo:
        """Look up ``Name:N`` (or a bare ``Name``: its lowest instance)."""
        devices = self.available_devices()
        for d in devices:
            if d.id == device_id:
                return d
        same_name = [d for d in devices if d.name == device_id]
        if same_name:
            return same_name[0]
        running = ", ".join(d.id for d in devices) or "none"
        raise DeviceNotFound(f"no device {device_id!r} in namespace {self.namespace!r}; "
                             f"running: {running}")

    # -- connect and disconnect (not real-time) ----------------------------------------
    def connect(self, device: DeviceInfo | str, link_tag: str = "", *, force: bool = False,
                timeout: float = HANDSHAKE_TIMEOUT_S, capabilities: int = HOST_CAPABILITIES,
                version: tuple[int, int] = (PROTOCOL_MAJOR, PROTOCOL_MINOR),
                prime_timeout: float = 0.5) -> Connection:
        """Claim a device, run the handshake, and wait up to ``prime_timeout`` for the first
        block of audio.

        Refuses a device held by another live host unless ``force``. A stale claim (its host
        is dead) is taken over silently. Raises DeviceNotFound, DeviceClaimed, SegmentError,
        HandshakeError.
        """
        if self._connected or self._segment is not None:
            self.disconnect()
        info = self.find(device) if isinstance(device, str) else device
        link_tag = validate_link_tag(link_tag or self.link_tag)
        seg = Segment.attach(info.segment_name, TRANSPORT_HEADER.size)
        try:
            h = validate_segment(seg, info.pid)
            self._claim(seg, info, force)
        except BaseException:
            seg.close()
            raise
        buf = seg.buf
        TRANSPORT_HEADER.write_field(buf, 0, "link_tag", link_tag.encode())
        if h["audio_ring_offset"]:  # we are the consumer now: start from fresh audio, before
            # the device sees the claim, so it never takes a stale full ring for an overrun
            AudioRing(buf, h["audio_ring_offset"], h["channels"], h["audio_frames"]).discard()
        _shm.store_u32(buf, _O["claim_generation"],
                       (_shm.load_u32(buf, _O["claim_generation"]) + 1) & 0xFFFFFFFF)
        self.registry.update(info.slot, info.pid, info.generation, host_pid=self.pid,
                             link_tag=link_tag)
        self._segment, self._buf, self.device, self.link_tag = seg, buf, info, link_tag
        self._stats = HostStats()
        self._base = self._ring_counters()
        self._commands = MessageRing(buf, h["command_ring_offset"], h["message_slots"])
        self._responses = MessageRing(buf, h["response_ring_offset"], h["message_slots"])
        self._audio = AudioRing(buf, h["audio_ring_offset"], h["channels"], h["audio_frames"]) \
            if h["audio_ring_offset"] else None
        self._return = AudioRing(buf, h["return_ring_offset"], h["return_channels"],
                                 h["audio_frames"]) if h["return_ring_offset"] else None
        # The audio ring was discarded before claim_generation moved (above); discarding it
        # again now could drop blocks of our own session, which step 7 keeps.
        self._responses.discard()
        self._reassembler.reset()
        self._waiting.clear()
        self._connected = True
        self.disconnect_reason = ""
        self._next_check = 0.0
        self._label = f"host {self.pid} -> {info.id}"
        self._report_connection("claimed", f"{info.id} with link tag {link_tag!r}")
        try:
            ack = self.request(cmd.handshake(self.sample_rate, self.block_size, self.channels,
                                             capabilities=capabilities, version=version),
                               timeout=timeout)
        except CommandError as exc:
            self.disconnect(notify=False)
            raise HandshakeError(f"device {info.id} refused the handshake: {exc}") from None
        except HostError as exc:
            self.disconnect(notify=False)
            raise HandshakeError(f"handshake with {info.id} failed: {exc}") from None
        a = cmd.decode(ack)
        self.connection = Connection(
            device=info.id, sample_rate=a["sample_rate"], block_size=a["block_size"],
            channels=a["channels"], mode=Mode(a["mode"]).label, capabilities=a["capabilities"],
            return_channels=a["return_channels"],
            version=f"{a['version_major']}.{a['version_minor']}")
        if not a["capabilities"] & Capability.RETURN_AUDIO:
            self._return = None  # not negotiated: this host must not write the return ring
        if self._audio is not None:
            # §8.1 step 7: the device saw our claim before it answered, and published where
            # our audio starts: what it wrote before (not yet knowing of us) is the previous
            # session's sound, and what it wrote after is ours. A 1.0 device publishes no
            # start: drop all it queued before the ack.
            if (a["version_major"], a["version_minor"]) >= (1, 1):
                self._audio.discard_to(_shm.load_u32(buf, _O["session_start"]))
            else:
                self._audio.discard()
        self._report_connection("handshake", f"{self.connection}")
        # Give the device a moment to queue its first block, so that the first real-time
        # read does not underrun. A device on a DAW's clock may take longer: no error then.
        if self._audio is not None and self.connection.mode != "midi":
            deadline = time.monotonic() + prime_timeout
            while self._audio.fill() < self.connection.block_size and \
                    time.monotonic() < deadline:
                time.sleep(0.0002)
        return self.connection

    def _claim(self, seg: Segment, info: DeviceInfo, force: bool) -> None:
        for _ in range(8):
            ok, current = _shm.cas_u32(seg.buf, _O["host_pid"], 0, self.pid)
            if ok or current == self.pid:
                return
            if pid_alive(current) and not force:
                tag = TRANSPORT_HEADER.read_field(seg.buf, 0, "link_tag").split(b"\0")[0]
                tag = tag.decode(errors="replace")
                raise DeviceClaimed(
                    f"device {info.id} is claimed by host pid {current} (link tag {tag!r}); "
                    "disconnect that host, or connect with force=True", info.id, current, tag)
            ok, _ = _shm.cas_u32(seg.buf, _O["host_pid"], current, self.pid)
            if ok:
                return
        raise DeviceClaimed(f"device {info.id}: could not take the claim (contended)")

    def recall(self, link_tag: str, device_id: str | None = None, **kwargs) -> Connection:
        """Session recall: reconnect to the device last paired under ``link_tag``.

        Prefers a device whose registry entry carries the tag and is unclaimed (a stale claim
        counts as unclaimed) or already ours; otherwise connects to ``device_id`` (for a
        device that was restarted under the id saved with the session).
        """
        devices = self.available_devices()
        for d in devices:
            if d.link_tag == link_tag and (not d.claimed or d.host_pid == self.pid):
                return self.connect(d, link_tag, **kwargs)
        if device_id is not None:
            for d in devices:
                if d.id == device_id:
                    return self.connect(d, link_tag, **kwargs)
        raise DeviceNotFound(f"no device with link tag {link_tag!r}"
                             + (f" or id {device_id!r}" if device_id else "")
                             + f" in namespace {self.namespace!r}")

    def disconnect(self, notify: bool = True) -> None:
        """Release the claim (the link tag stays, for recall) and unmap. Idempotent."""
        seg = self._segment
        if seg is None:
            return
        try:
            if notify and self._connected:
                self._commands.push(cmd.disconnect("host disconnect").buf)
            ok, _ = _shm.cas_u32(seg.buf, _O["host_pid"], self.pid, 0)
            if ok and self.device is not None:  # only our own claim's mirror (§8.3)
                self.registry.release_claim(self.device.slot, self.device.pid,
                                            self.device.generation, self.pid)
        finally:
            self._sync_stats()  # keep this connection's numbers after the segment is gone
            was = self._connected
            self._connected = False
            self._segment = None
            self._audio = self._return = None
            seg.close()
            if was:
                self.disconnect_reason = self.disconnect_reason or "host disconnected"
                self._report_connection("disconnected", self.disconnect_reason)

    def close(self) -> None:
        self.disconnect()
        if self._registry is not None:
            self._registry.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- liveness ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the claimed device is alive, running and still ours."""
        if self._connected:
            self._check_link(time.monotonic())
        return self._connected

    @property
    def status(self) -> str:
        return "connected" if self.connected else "disconnected"

    def _check_link(self, now: float) -> None:
        self._next_check = now + LINK_CHECK_INTERVAL_S
        buf, dev = self._buf, self.device
        reason = ""
        if _shm.load_u32(buf, _O["device_state"]) == DeviceState.STOPPED:
            reason = "device stopped"
        elif (owner := _shm.load_u32(buf, _O["host_pid"])) != self.pid:
            reason = f"claim taken over by host pid {owner}" if owner else "claim released"
        else:
            state, pid, generation = self.registry.owner(dev.slot)
            silent_ns = time.monotonic_ns() - self.registry.heartbeat_ns(dev.slot)
            if state != SlotState.ACTIVE or pid != dev.pid or generation != dev.generation:
                reason = "device left the registry"
            elif not pid_exists(dev.pid) or (silent_ns > ZOMBIE_CHECK_NS and
                                            not pid_alive(dev.pid)):
                # kill(pid, 0) always; /proc (to see a zombie) only once the heartbeat has
                # stalled, so a healthy link never reads /proc on the audio path.
                reason = f"device process {dev.pid} died"
            elif silent_ns > LINK_STALE_S * 1e9:
                reason = f"device silent for more than {LINK_STALE_S:.1f} s"
        if reason and not reason.startswith("claim") and \
                _shm.load_u32(buf, _O["device_state"]) == DeviceState.STOPPED:
            # A device stores STOPPED before it deregisters and exits: if it stopped while
            # we were looking, what we saw afterwards is the stop itself.
            reason = "device stopped"
        if reason:
            self._connected = False
            self.disconnect_reason = reason
            self._report_connection("disconnected", reason)

    # -- real-time path ----------------------------------------------------------------
    def receive_audio(self, out: np.ndarray) -> int:
        """Read one block into ``out`` (channels, frames), float32 C-contiguous.

        Zero-fills whatever the device has not provided; returns frames read. Never raises.
        """
        try:
            if self._connected:
                now = time.monotonic()
                if now >= self._next_check:
                    self._check_link(now)
            audio = self._audio
            if not self._connected or audio is None:
                out.fill(0)
                return 0
            if out.ndim != 2 or out.shape[0] != audio.channels:
                out.fill(0)
                self._error("receive_audio", f"buffer shape {out.shape} does not match "
                            f"({audio.channels}, frames)")
                return 0
            # The C call also counts the read, and an underrun when it comes up short.
            n = audio.read(out, _BLOCKS_READ, _UNDERRUNS)
            if n == CORRUPT:
                self._error("receive_audio", "audio ring indices are corrupt; discarding")
                audio.discard()
                return 0
            if self.monitor is not None:
                self._safe_monitor("on_audio", self._label, "in", n, audio.channels)
            return n
        except Exception as exc:
            self._error("receive_audio", f"{type(exc).__name__}: {exc}")
            try:
                out.fill(0)
            except Exception:
                pass
            return 0

    def available_frames(self) -> int:
        """Frames the device has queued for us."""
        return self._audio.fill() if (self._connected and self._audio is not None) else 0

    def latency_frames(self) -> int:
        """The latency the device's audio carries, in frames (protocol.md §12): its demand
        clock's queue (``fill_blocks`` x ``block_size``) plus its processing latency
        (``latency_frames``, a plugin's). 0 for an unknown queue (a 1.0 device, or one on its
        own or an external clock) adds nothing. Re-read it whenever latency is reported:
        a device's processing latency may change with its state."""
        if self._segment is None:
            return 0
        buf = self._buf
        return (_shm.load_u32(buf, _FILL_BLOCKS) * _shm.load_u32(buf, _O["block_size"])
                + _shm.load_u32(buf, _LATENCY_FRAMES))

    def free_command_slots(self) -> int:
        """Commands that fit in the command ring now (0 when disconnected). A sender with
        more to send waits for room here rather than counting refusals as drops."""
        if not self._connected:
            return 0
        return max(0, self._commands.slots - self._commands.fill())

    def send_return_audio(self, block: np.ndarray) -> bool:
        """Write one block to the device's return ring (effect insert). Never raises."""
        try:
            if not self._connected or self._return is None:
                return False
            if block.ndim != 2 or block.shape[0] != self._return.channels:
                self._error("send_return_audio", f"block shape {block.shape} does not match "
                            f"({self._return.channels}, frames)")
                return False
            n = self._return.write(block)
            if n > 0:
                if self.monitor is not None:
                    self._safe_monitor("on_audio", self._label, "out", n, self._return.channels)
                return True
            if n == 0:
                self._stats.return_overruns += 1
                _shm.add_u64(self._buf, _O["return_overruns"], 1)
            else:
                self._error("send_return_audio", "return ring indices are corrupt")
            return False
        except Exception as exc:
            self._error("send_return_audio", f"{type(exc).__name__}: {exc}")
            return False

    def send_command(self, message: Message) -> bool:
        """Queue one 256-byte command. False when disconnected or the ring is full."""
        try:
            if not self._connected:
                return False
            got = self._commands.push(message.buf)
            if got == 1:
                self._stats.commands_sent += 1
                if self.monitor is not None:
                    self._safe_monitor("on_command", self._label, "out", message)
                return True
            if got == 0:
                self._stats.commands_dropped += 1
                _shm.add_u64(self._buf, _O["commands_dropped"], 1)
                self._error("send_command", "command ring full; command dropped")
            else:
                self._error("send_command", "command ring indices are corrupt")
            return False
        except Exception as exc:
            self._error("send_command", f"{type(exc).__name__}: {exc}")
            return False

    def on_response(self, handler: ResponseHandler) -> ResponseHandler:
        """Add a handler for responses (usable as a decorator). Called on the real-time path."""
        self._handlers.append(handler)
        return handler

    def process_responses(self, max_messages: int = MESSAGE_RING_SLOTS) -> int:
        """Handle queued responses: reassemble, match to requests, call handlers."""
        handled = 0
        try:
            if not self._connected:
                return 0
            rx = self._rx
            while handled < max_messages:
                got = self._responses.pop(rx.buf)
                if got == 0:
                    break
                if got == CORRUPT:
                    self._error("process_responses", "response ring indices are corrupt")
                    self._responses.discard()
                    break
                handled += 1
                self._stats.responses_received += 1
                try:
                    msg = self._reassembler.feed(rx)
                except cmd.MalformedMessage as exc:
                    self._error("process_responses", str(exc))
                    continue
                if msg is None:
                    continue
                if msg.type == cmd.T.Error:
                    self._stats.errors_received += 1
                if self.monitor is not None:
                    self._safe_monitor("on_response", self._label, "in", msg)
                if msg.request_seq in self._waiting:
                    self._waiting[msg.request_seq] = msg.copy()
                for handler in self._handlers:
                    handler(msg, self)
        except Exception as exc:
            self._error("process_responses", f"{type(exc).__name__}: {exc}")
        return handled

    # -- requests (not real-time) ------------------------------------------------------
    def request(self, message: Message | list[Message], timeout: float = 2.0) -> Message:
        """Send a command (or its fragments) and wait for the response to it.

        Raises CommandError if the device answers with an Error, HostError on timeout or
        disconnection.
        """
        parts = message if isinstance(message, list) else [message]
        last = parts[-1]
        self._waiting[last.seq] = None
        deadline = time.monotonic() + timeout
        try:
            for part in parts:
                while True:  # fragments must never be dropped: wait for room
                    if not self._connected:
                        raise HostError(f"disconnected: {self.disconnect_reason}")
                    got = self._commands.push(part.buf)
                    if got == 1:
                        break
                    if got == CORRUPT:
                        raise HostError("command ring indices are corrupt")
                    if time.monotonic() > deadline:
                        raise HostError(f"command ring stayed full for {timeout:.1f} s")
                    self.process_responses()
                    time.sleep(0.0005)
                self._stats.commands_sent += 1
                if self.monitor is not None:
                    self._safe_monitor("on_command", self._label, "out", part)
            spin_until = time.monotonic() + 0.002  # spin briefly: answers usually take µs
            while True:
                self.process_responses()
                reply = self._waiting.get(last.seq)
                if reply is not None:
                    if reply.type == cmd.T.Error:
                        e = cmd.decode(reply)
                        raise CommandError(e["code"], e["text"])
                    return reply
                if not self._connected:
                    raise HostError(f"disconnected: {self.disconnect_reason}")
                now = time.monotonic()
                if now >= self._next_check:
                    self._check_link(now)
                if now > deadline:
                    name = cmd.name_of(last.type)
                    raise HostError(f"no answer to {name} within {timeout:.1f} s")
                if now > spin_until:
                    time.sleep(0.0002)
        finally:
            self._waiting.pop(last.seq, None)

    @property
    def stats(self) -> HostStats:
        """This host's counters for the current (or last) connection."""
        if self._segment is not None:
            self._sync_stats()
        return self._stats

    def _ring_counters(self) -> tuple[int, int]:
        """(blocks_read, underruns) as the C ring code keeps them in the header."""
        return (TRANSPORT_HEADER.read_field(self._buf, 0, "blocks_read"),
                TRANSPORT_HEADER.read_field(self._buf, 0, "underruns"))

    def _sync_stats(self) -> None:
        """Per-connection values of the counters the C ring code keeps in the header."""
        blocks, underruns = self._ring_counters()
        self._stats.blocks_read = blocks - self._base[0]
        self._stats.underruns = underruns - self._base[1]

    def ping(self, timeout: float = 1.0) -> float:
        """Round trip of a Ping, in seconds."""
        t0 = time.monotonic_ns()
        self.request(cmd.ping(t0), timeout=timeout)
        return (time.monotonic_ns() - t0) / 1e9

    def counters(self) -> dict:
        """The shared counters of the connected device's segment header."""
        if self._segment is None:
            return {}
        h = TRANSPORT_HEADER.unpack_from(self._buf)
        return {k: h[k] for k in ("underruns", "overruns", "commands_dropped",
                                  "responses_dropped", "bad_messages", "return_underruns",
                                  "return_overruns", "blocks_written", "blocks_read")}

    # -- reporting ---------------------------------------------------------------------
    def _error(self, where: str, text: str) -> None:
        self._stats.errors += 1
        self._stats.last_error = f"{where}: {text}"
        if self.monitor is not None:
            self._safe_monitor("on_error", self._label, where, text)

    def _report_connection(self, event: str, detail: str) -> None:
        if self.monitor is not None:
            self._safe_monitor("on_connection", self._label, event, detail)

    def _safe_monitor(self, method: str, *args) -> None:
        try:
            getattr(self.monitor, method)(*args)
        except Exception:
            self._stats.errors += 1
