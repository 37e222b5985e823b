"""The device endpoint: registers, owns a transport segment, writes audio, answers commands.

Real-time rules: ``send_audio``, ``receive_return_audio`` and ``process_commands`` never
raise, never block, and use only buffers allocated in ``start``. Failures return False or
zero-fill, and are reported to the debug monitor and counted in ``stats``.
"""

from __future__ import annotations

import os
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _shm
from . import commands as cmd
from .commands import ErrorCode, MalformedMessage, Reassembler
from .layout import (
    AUDIO_RING_FRAMES,
    BLOCK_SIZE_MAX,
    BLOCK_SIZE_MIN,
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_STALE_S,
    MAX_CHANNELS,
    MESSAGE_HEADER,
    MESSAGE_HEADER_SIZE,
    MESSAGE_PAYLOAD_SIZE,
    MESSAGE_RING_SLOTS,
    MESSAGE_SIZE,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    SAMPLE_RATE_MAX,
    SAMPLE_RATE_MIN,
    SEGMENT_MAGIC,
    TRANSPORT_HEADER,
    Capability,
    DeviceState,
    Mode,
    SegmentLayout,
    SlotState,
)
from .message import FRAGMENT, Message
from .monitor import DebugMonitor
from .registry import Registry
from .ring import CORRUPT, AudioRing, MessageRing
from .shm import Segment, pid_alive, pid_exists, transport_name, unlink

CommandHandler = Callable[[Message, "Device"], bool]
ClaimHandler = Callable[["Device"], None]
# (type, sample_offset, payload bytes 0..3) -> True when handled; see Device.on_small_command
SmallCommandHandler = Callable[[int, int, int, int, int, int], bool]
RawCommandHandler = Callable[[int, int, memoryview], bool]
HOST_CHECK_INTERVAL_NS = 250_000_000  # how often a device re-checks that its host lives
HEARTBEAT_EVERY_NS = int(HEARTBEAT_INTERVAL_S * 1e9) // 5  # stamp often, well inside the limit
_PING, _HANDSHAKE = int(cmd.T.Ping), int(cmd.T.Handshake)
_BLOCKS_WRITTEN = TRANSPORT_HEADER.offset("blocks_written")
_HOST_PID = TRANSPORT_HEADER.offset("host_pid")
_CLAIM_GENERATION = TRANSPORT_HEADER.offset("claim_generation")
_PING_PAYLOAD = cmd.BY_NAME["Ping"].request.struct  # derived from the command table
_PONG_PAYLOAD = cmd.BY_NAME["Pong"].request.struct

_O = TRANSPORT_HEADER.offsets
# One 256-byte ring slot as the small-command fast path reads it: the message header, the
# first four payload bytes, padding. Derived from the layout, so it follows any change there.
_SLOT = struct.Struct(MESSAGE_HEADER.format + "4B"
                      + f"{MESSAGE_SIZE - MESSAGE_HEADER_SIZE - 4}x")
BATCH_MESSAGES = 64  # messages popped per ring call
# Queued response fragments never take the last slots of the response ring, so that an
# answer to the host (Pong, HandshakeAck, Error) still finds room while a long transfer
# streams; native/discolink.h keeps the same headroom (DL__RESPONSE_HEADROOM).
RESPONSE_HEADROOM = 64
SAMPLE_RATE_RANGE = (SAMPLE_RATE_MIN, SAMPLE_RATE_MAX)
BLOCK_SIZE_RANGE = (BLOCK_SIZE_MIN, BLOCK_SIZE_MAX)


def check_format(channels: int, sample_rate: int, block_size: int, mode: Mode) -> None:
    """Validate a device format; raises ValueError naming the bad value and the range."""
    if mode != Mode.MIDI and not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be 1..{MAX_CHANNELS}, got {channels}")
    lo, hi = SAMPLE_RATE_RANGE
    if not lo <= sample_rate <= hi:
        raise ValueError(f"sample rate must be {lo}..{hi} Hz, got {sample_rate}")
    lo, hi = BLOCK_SIZE_RANGE
    if not lo <= block_size <= hi:
        raise ValueError(f"block size must be {lo}..{hi} frames, got {block_size}")


@dataclass
class DeviceStats:
    """A snapshot of a device's counters (shared ones are read from the segment header)."""

    blocks_written: int = 0
    overruns: int = 0
    underruns: int = 0  # counted by the host
    commands_received: int = 0
    responses_sent: int = 0
    responses_dropped: int = 0
    bad_messages: int = 0
    commands_dropped: int = 0  # counted by the host
    return_underruns: int = 0
    errors: int = 0
    last_error: str = ""


class Device:
    """A discoLink device. Use as ``with Device() as dev: dev.start("Synth", ...)``.

    Add command handlers with ``@dev.on_command``; a handler returns True when it handled the
    message, False to fall through to later handlers and then to the default handling
    (Handshake, Ping, SetTransportMode, Disconnect, and Error answers for the rest).
    """

    def __init__(self, namespace: str | None = None, *,
                 monitor: DebugMonitor | None = None) -> None:
        self.registry = Registry(namespace)
        self.namespace = self.registry.namespace
        self.monitor = monitor
        self.id = ""
        self.slot = -1
        self.generation = 0
        self.segment: Segment | None = None
        self._audio_out: AudioRing | None = None
        self._handlers: list[CommandHandler] = []
        self._claim_handlers: list[ClaimHandler] = []
        self._host_lost_handlers: list[ClaimHandler] = []
        self._small: SmallCommandHandler | None = None
        self._small_min_len: dict[int, int] = {}  # type -> fixed payload bytes
        self._raw: RawCommandHandler | None = None
        self._raw_types: frozenset[int] = frozenset()
        self._batch = bytearray(BATCH_MESSAGES * MESSAGE_SIZE)
        self._batch_view = memoryview(self._batch)
        self._label = "device"
        self._running = False
        self.errors = 0
        self.last_error = ""
        self.registered = False

    # -- lifetime ----------------------------------------------------------------------
    def start(self, name: str, channels: int = 2, sample_rate: int = 48000,
              block_size: int = 256, mode: Mode | str = Mode.AUDIO_MIDI, *,
              capabilities: int = 0, return_audio: bool = False) -> str:
        """Register and create the transport segment; returns the assigned id ``Name:N``.

        ``name`` is ``Name`` (lowest free instance) or ``Name:N`` (exactly that, for session
        recall). ``capabilities`` adds flags beyond the ones the segment implies.
        Raises ValueError for a bad id or format, RegistryError when it cannot register.
        """
        if self._running:
            raise RuntimeError(f"device {self.id} is already started")
        mode = Mode.parse(mode) if isinstance(mode, str) else Mode(mode)
        check_format(channels, sample_rate, block_size, mode)
        audio_channels = 0 if mode == Mode.MIDI else channels
        return_channels = audio_channels if return_audio else 0
        caps = Capability(capabilities) | Capability.FRAGMENTS
        if audio_channels:
            caps |= Capability.AUDIO
        if mode != Mode.AUDIO:
            caps |= Capability.MIDI
        if return_channels:
            caps |= Capability.RETURN_AUDIO
        layout = SegmentLayout.compute(audio_channels, return_channels)
        pid = os.getpid()

        def create_segment(slot: int, device_id: str, generation: int) -> None:
            # Runs under the registry lock, before the slot is published: a host that sees
            # the device always finds its segment, initialised.
            name = transport_name(self.namespace, slot, pid)
            unlink(name)  # a leftover of an earlier process that had our pid
            self.segment = Segment.create(name, layout.total_size)
            TRANSPORT_HEADER.pack_into(
                self.segment.buf, 0, magic=SEGMENT_MAGIC, version_major=PROTOCOL_MAJOR,
                version_minor=PROTOCOL_MINOR, header_size=TRANSPORT_HEADER.size,
                total_size=layout.total_size, sample_rate=sample_rate, block_size=block_size,
                channels=audio_channels, mode=int(mode), capabilities=int(caps),
                audio_frames=AUDIO_RING_FRAMES, message_slots=MESSAGE_RING_SLOTS,
                return_channels=return_channels, audio_ring_offset=layout.audio_ring_offset,
                return_ring_offset=layout.return_ring_offset,
                command_ring_offset=layout.command_ring_offset,
                response_ring_offset=layout.response_ring_offset, device_pid=pid,
                device_state=DeviceState.STARTING)
            _shm.store_u32(self.segment.buf, _O["device_state"], DeviceState.RUNNING)

        try:
            slot, device_id, generation = self.registry.register(
                name, pid=pid, channels=audio_channels, sample_rate=sample_rate,
                block_size=block_size, mode=mode, capabilities=int(caps),
                prepare=create_segment)
        except BaseException:
            if self.segment is not None:  # created, then publication failed
                self.segment.unlink()
                self.segment.close()
                self.segment = None
            raise
        buf = self.segment.buf

        self.id, self.slot, self.generation = device_id, slot, generation
        self.registered = True  # False once a scan has reclaimed our slot
        self.channels, self.return_channels = audio_channels, return_channels
        self.sample_rate, self.block_size, self.mode = sample_rate, block_size, mode
        self.capabilities = caps
        self.negotiated_capabilities = caps
        self._buf = buf
        self._pid = pid
        self._commands = MessageRing(buf, layout.command_ring_offset)
        self._responses = MessageRing(buf, layout.response_ring_offset)
        self._audio = AudioRing(buf, layout.audio_ring_offset, audio_channels) \
            if audio_channels else None
        self._return = AudioRing(buf, layout.return_ring_offset, return_channels) \
            if return_channels else None
        self._audio_out = self._audio if mode != Mode.MIDI else None  # None: send no audio
        self._rx = Message()
        self._reassembler = Reassembler(on_discard=self._transfer_discarded)
        self._outbox: deque[Message] = deque()  # fragments waiting for room in the ring
        self._pong_msg = cmd.build("Pong", response_to=self._rx, ping_sent_ns=0, received_ns=0)
        self._next_heartbeat = 0
        self._next_host_check = 0
        self._host_alive = False
        self._claimed_by = 0  # host pid as of the last claim this device processed
        self._claim_generation = 0
        self.commands_received = 0
        self.responses_sent = 0
        self._label = f"device {device_id}"
        self._running = True
        self.registry.heartbeat(slot)
        return device_id

    def stop(self) -> None:
        """Deregister and remove the segment. Hosts see ``stopped`` at once. Idempotent."""
        if not self._running:
            return
        self._running = False
        self._audio_out = None
        try:
            _shm.store_u32(self._buf, _O["device_state"], DeviceState.STOPPED)
            self.registry.deregister(self.slot, self._pid, self.generation)
        finally:
            if self.segment is not None:
                self.segment.unlink()
                self.segment.close()
                self.segment = None
            self._report_connection("stopped", "deregistered")

    def close(self) -> None:
        self.stop()
        self.registry.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._running

    # -- handlers ----------------------------------------------------------------------
    def on_command(self, handler: CommandHandler) -> CommandHandler:
        """Add a command handler (usable as a decorator). Called on the real-time path."""
        self._handlers.append(handler)
        return handler

    def on_small_command(self, handler: SmallCommandHandler, types: list[int]) -> None:
        """Install the fast path for small fixed-layout commands (MIDI note, CC, bend, ...).

        Commands of ``types`` whose fixed payload is at most 4 bytes go to
        ``handler(type, sample_offset, b0, b1, b2, b3)`` straight from the batch read of the
        ring, without building a Message, before any ``on_command`` handler. It returns True
        when it took the command; False sends the command down the normal path (so a handler
        can leave a bad value to be refused with an Error there). Not used while a debug
        monitor is installed, which must see every command, nor in audio-only mode.
        """
        sizes = {}
        for t in types:
            size = cmd.BY_CODE[t].request.fixed_size
            if size > 4 or cmd.BY_CODE[t].request.tail is not None:
                raise ValueError(f"{cmd.name_of(t)} is not a small fixed-layout command")
            sizes[int(t)] = size
        self._small, self._small_min_len = handler, sizes

    def on_raw_command(self, handler: RawCommandHandler, types: list[int]) -> None:
        """Install the fast path for unfragmented commands whose payload is one raw ``bytes``
        field (MidiRaw): ``handler(type, sample_offset, payload)`` gets a memoryview of the
        payload, valid during the call only, straight from the batch read of the ring. The
        rules are those of :meth:`on_small_command` (False falls back to the normal path;
        not used with a debug monitor, nor in audio-only mode)."""
        for t in types:
            layout = cmd.BY_CODE[t].request
            if layout.fields != (layout.tail,) or layout.tail[1] != "bytes":
                raise ValueError(f"{cmd.name_of(t)} does not carry one raw bytes field")
        self._raw, self._raw_types = handler, frozenset(int(t) for t in types)

    def on_host_lost(self, handler: ClaimHandler) -> ClaimHandler:
        """Add a callback for the claiming host's death (it left without a Disconnect), to
        end the notes it left sounding (protocol.md §8.2). Called from ``process_commands``
        within about ``HOST_CHECK_INTERVAL_NS`` of the death."""
        self._host_lost_handlers.append(handler)
        return handler

    def on_claim(self, handler: ClaimHandler) -> ClaimHandler:
        """Add a callback for a new host claim (e.g. to silence notes a dead host left on).

        Called from ``process_commands`` when ``claim_generation`` changes.
        """
        self._claim_handlers.append(handler)
        return handler

    # -- claim state -------------------------------------------------------------------
    @property
    def host_pid(self) -> int:
        return _shm.load_u32(self._buf, _O["host_pid"]) if self._running else 0

    @property
    def claimed(self) -> bool:
        """True while a host holds a claim (its pid is set; liveness not checked here)."""
        return self._running and _shm.load_u32(self._buf, _O["host_pid"]) != 0

    def host_alive(self) -> bool:
        """True when claimed by a live host process (not for the audio path: it reads /proc)."""
        pid = self.host_pid
        return pid != 0 and pid_alive(pid)

    @property
    def link_tag(self) -> str:
        if not self._running:
            return ""
        raw = TRANSPORT_HEADER.read_field(self._buf, 0, "link_tag")
        return raw.split(b"\0", 1)[0].decode(errors="replace")

    def fill(self) -> int:
        """Frames queued in the output ring and not yet read by the host."""
        return self._audio.fill() if (self._running and self._audio) else 0

    # -- real-time path ----------------------------------------------------------------
    def send_audio(self, block: np.ndarray) -> bool:
        """Write one (channels, frames) float32 C-contiguous block. Never raises or blocks.

        Returns False when the ring is full (an overrun, counted while a live host holds the
        claim), when the device sends no audio (midi mode), or when the block has the wrong
        shape or type.
        """
        try:
            audio = self._audio_out
            if audio is None:
                return False
            if _shm.load_u32(self._buf, _CLAIM_GENERATION) != self._claim_generation:
                # A new host claimed us after this block was rendered: it holds the previous
                # session's sound, so it is not written (§8.2); the next process_commands
                # resets for the new host and the block is rendered again.
                return False
            if block.ndim != 2 or block.shape[0] != audio.channels:
                self._error("send_audio", f"block shape {block.shape} does not match "
                            f"({audio.channels}, frames)")
                return False
            n = audio.write(block, _BLOCKS_WRITTEN)  # the C call also counts the block
            if n > 0:
                if self.monitor is not None:
                    self._monitor_audio("out", n, audio.channels)
                return True
            if n == 0:
                # Only a live reader whose claim this device has seen counts: between a new
                # host's claim and its discard of the ring, a full ring is the old state.
                claimed_by = self._claimed_by
                if self._host_alive and claimed_by and \
                        _shm.load_u32(self._buf, _HOST_PID) == claimed_by:
                    _shm.add_u64(self._buf, _O["overruns"], 1)
                return False
            # Only the consumer may repair a ring; the host discards it when it sees this.
            self._error("send_audio", "audio ring indices are corrupt")
            return False
        except Exception as exc:  # never raise on the audio path
            self._error("send_audio", f"{type(exc).__name__}: {exc}")
            return False

    def receive_return_audio(self, out: np.ndarray) -> int:
        """Read the host's return audio into ``out`` (return_channels, frames); zero-fills
        what is missing. Returns frames read (0 when there is no return ring)."""
        try:
            if not self._running or self._return is None:
                out.fill(0)
                return 0
            n = self._return.read(out)
            if n == CORRUPT:
                self._error("receive_return_audio", "return ring indices are corrupt")
                self._return.discard()
                return 0
            if n < out.shape[-1] and _shm.load_u32(self._buf, _O["host_pid"]):
                _shm.add_u64(self._buf, _O["return_underruns"], 1)
            if self.monitor is not None and n:
                self._monitor_audio("in", n, self.return_channels)
            return n
        except Exception as exc:
            self._error("receive_return_audio", f"{type(exc).__name__}: {exc}")
            try:
                out.fill(0)
            except Exception:
                pass
            return 0

    def process_commands(self, max_messages: int = MESSAGE_RING_SLOTS) -> int:
        """Handle up to ``max_messages`` queued commands. Never raises. Returns the count."""
        if not self._running:
            return 0
        handled = 0
        try:
            now = time.monotonic_ns()
            if now >= self._next_heartbeat:
                self._stamp_heartbeat(now)
                self._next_heartbeat = now + HEARTBEAT_EVERY_NS
            if now >= self._next_host_check:
                # kill(pid, 0) only: no /proc on the audio path (a zombie host still counts as
                # alive here, which only means its overruns are counted a little longer).
                was_alive = self._host_alive
                self._host_alive = pid_exists(self.host_pid)
                if was_alive and not self._host_alive and self._claimed_by:
                    self._on_host_lost()
                self._next_host_check = now + HOST_CHECK_INTERVAL_NS
                self._check_registration()
            if self._outbox:
                self._flush_outbox()
            self._check_claim()
            while handled < max_messages:
                got = self._commands.pop_many(self._batch, min(BATCH_MESSAGES,
                                                               max_messages - handled))
                if got == 0:
                    break
                if got == CORRUPT:
                    self._error("process_commands", "command ring indices are corrupt; "
                                "discarding queued commands")
                    self._commands.discard()
                    break
                handled += got
                self.commands_received += got
                self._dispatch_batch(got)
        except Exception as exc:
            self._error("process_commands", f"{type(exc).__name__}: {exc}")
        return handled

    def _dispatch_batch(self, count: int) -> None:
        """Dispatch ``count`` popped messages in order: small ones by the fast path when one
        is installed, the rest as Messages."""
        view, rx = self._batch_view, self._rx
        fast = self.monitor is None and self.mode != Mode.AUDIO
        small = self._small if fast else None
        raw = self._raw if fast else None
        if small is None and raw is None:
            for i in range(count):
                rx.buf[:] = view[i * MESSAGE_SIZE:(i + 1) * MESSAGE_SIZE]
                # The host bumps claim_generation before pushing its Handshake, and our
                # acquire pop makes that store visible: checking before each dispatch means
                # a new claim is seen before the first command of its host, never after it.
                self._check_claim()
                self._dispatch(rx)
            return
        min_len = self._small_min_len if small is not None else {}
        raw_types = self._raw_types if raw is not None else ()
        i = -1
        # Unpacked in cmd.HEADER_FIELDS order (checked against the layout), then payload 0..3
        for (t, flags, _seq, offset, payload_len, _fi, frag_count, _tid, _rseq,
             b0, b1, b2, b3) in _SLOT.iter_unpack(view[:count * MESSAGE_SIZE]):
            i += 1
            if not flags and frag_count <= 1:
                need = min_len.get(t)
                if need is not None:
                    if payload_len >= need:
                        try:
                            if small(t, offset, b0, b1, b2, b3):
                                continue
                        except Exception as exc:  # the normal path handles (and reports) it
                            self._error("small command handler", f"{type(exc).__name__}: {exc}")
                elif t in raw_types and 0 < payload_len <= MESSAGE_PAYLOAD_SIZE:
                    start = i * MESSAGE_SIZE + MESSAGE_HEADER_SIZE
                    try:
                        if raw(t, offset, view[start:start + payload_len]):
                            continue
                    except Exception as exc:  # as above
                        self._error("raw command handler", f"{type(exc).__name__}: {exc}")
            rx.buf[:] = view[i * MESSAGE_SIZE:(i + 1) * MESSAGE_SIZE]
            self._check_claim()  # as above; a new host's first command is never small
            self._dispatch(rx)

    def set_fill_blocks(self, blocks: int) -> None:
        """Publish the demand clock's queue length (0: own or external clock), §12."""
        if self._running:
            _shm.store_u32(self._buf, _O["fill_blocks"], blocks)

    def set_latency_frames(self, frames: int) -> None:
        """Publish the processing latency the audio carries beyond the queue (§4.1).
        Real-time safe: one atomic store."""
        if self._running:
            _shm.store_u32(self._buf, _O["latency_frames"], frames)

    def set_nonfinite_blocks(self, blocks: int) -> None:
        """Publish, in our registry slot, how many output blocks were silenced for NaN or
        infinity (``list`` and the rack's ``status`` show it). Real-time safe: atomic loads
        and a store, only while the slot is still ours."""
        if not self.registered:
            return
        state, pid, generation = self.registry.owner(self.slot)
        if state == SlotState.ACTIVE and pid == self._pid and generation == self.generation:
            self.registry.set_nonfinite_blocks(self.slot, blocks)

    def heartbeat(self) -> None:
        """Refresh the registry heartbeat (call it from idle loops that skip process_commands)."""
        if self._running:
            self._stamp_heartbeat(time.monotonic_ns())

    def _stamp_heartbeat(self, now_ns: int) -> None:
        """Stamp our slot, only while it is still ours (state, pid and generation): a slot
        reclaimed after a stall may hold another device now, whose heartbeat is not ours to
        keep fresh. Real-time safe: three atomic loads and a store."""
        if not self.registered:
            return
        state, pid, generation = self.registry.owner(self.slot)
        if state == SlotState.ACTIVE and pid == self._pid and generation == self.generation:
            self.registry.heartbeat(self.slot, now_ns)
        else:
            self._check_registration()

    def respond(self, message: Message) -> bool:
        """Queue a response to the host. False (and counted) when the response ring is full."""
        got = self._push_response(message)
        if got == 1:
            return True
        _shm.add_u64(self._buf, _O["responses_dropped"], 1)
        self._error("respond", "response ring full; response dropped" if got == 0
                    else "response ring indices are corrupt")
        return False

    def respond_blob(self, request: Message, name: str, payload: bytes) -> bool:
        """Send a (possibly fragmented) response payload for ``request``.

        Fragments that do not fit in the response ring now wait in an outbox and go out on
        later ``process_commands`` calls as the host drains the ring: a fragment is never
        dropped, since one lost fragment loses the whole transfer. They leave the last
        RESPONSE_HEADROOM slots free, so that answers (a Pong) still go out meanwhile.
        """
        messages = cmd.fragments(name, payload, response_to=request)
        if len(messages) == 1 and not self._outbox:
            return self.respond(messages[0])
        self._outbox.extend(messages)
        self._flush_outbox()
        return True

    def _push_response(self, message: Message) -> int:
        """Push one response and account for it when it went out; returns the ring's answer."""
        got = self._responses.push(message.buf)
        if got == 1:
            self.responses_sent += 1
            if self.monitor is not None:
                self._safe_monitor("on_response", self._label, "out", message)
        return got

    def _flush_outbox(self) -> None:
        outbox, ring = self._outbox, self._responses
        while outbox:
            if ring.slots - ring.fill() <= RESPONSE_HEADROOM:
                return  # the rest waits: the last slots are kept for answers
            got = self._push_response(outbox[0])
            if got != 1:
                if got == CORRUPT:
                    self._error("respond", "response ring indices are corrupt")
                    outbox.clear()
                return
            outbox.popleft()

    def reply_error(self, request: Message | None, code: int, text: str) -> bool:
        return self.respond(cmd.error(request, code, text))

    # -- dispatch ----------------------------------------------------------------------
    def _dispatch(self, rx: Message) -> None:
        try:
            if rx.flags & FRAGMENT or rx.frag_count > 1:
                msg = self._reassembler.feed(rx)
                if msg is None:
                    return
            else:
                msg = rx
            if msg.payload_len > 224:
                raise MalformedMessage(f"payload_len {msg.payload_len} exceeds 224",
                                       ErrorCode.MALFORMED)
            if self.monitor is not None:
                self._safe_monitor("on_command", self._label, "in", msg)
            if msg.type not in cmd.BY_CODE:
                raise MalformedMessage(f"unknown command type 0x{msg.type:04x}",
                                       ErrorCode.UNKNOWN_COMMAND)
            if msg.type in cmd.MIDI_TYPES and self.mode == Mode.AUDIO:
                self.reply_error(msg, ErrorCode.WRONG_MODE,
                                 f"{cmd.name_of(msg.type)} refused: device is in audio-only mode")
                return
            for handler in self._handlers:
                if handler(msg, self):
                    return
            self._default(msg)
        except MalformedMessage as exc:
            _shm.add_u64(self._buf, _O["bad_messages"], 1)
            self._error("process_commands", str(exc))
            self.reply_error(rx, exc.code or ErrorCode.MALFORMED, str(exc))
        except Exception as exc:  # a handler failed: answer, count, carry on
            self._error("command handler", f"{cmd.name_of(rx.type)}: {type(exc).__name__}: {exc}")
            self.reply_error(rx, ErrorCode.INTERNAL,
                             f"{cmd.name_of(rx.type)} failed: {type(exc).__name__}: {exc}")

    def _transfer_discarded(self, first: Message, text: str) -> None:
        """A stale transfer made room for a new one: answered and counted as a bad one."""
        _shm.add_u64(self._buf, _O["bad_messages"], 1)
        self._error("process_commands", text)
        self.reply_error(first, ErrorCode.FRAGMENT_ERROR, text)

    def _default(self, msg: Message) -> None:
        t = msg.type
        T = cmd.T
        if t == _PING:
            self._pong(msg)
        elif t == _HANDSHAKE:
            self._handshake(msg)
        elif t == T.SetTransportMode:
            self._set_mode(msg)
        elif t == T.Disconnect:
            self._report_connection("disconnect", cmd.decode(msg)["reason"] or "host left")
        elif t in cmd.MIDI_TYPES:
            cmd.decode(msg)  # validate; a device without a MIDI handler ignores MIDI
        elif t in (T.Pong, T.Error, T.HandshakeAck):
            cmd.decode(msg)  # informational when sent to a device
        else:
            self.reply_error(msg, ErrorCode.NOT_SUPPORTED,
                             f"{cmd.name_of(t)} is not supported by device {self.id}")

    def _pong(self, ping: Message) -> None:
        """Answer a Ping from a preallocated message: the latency probe stays cheap."""
        if ping.payload_len < _PING_PAYLOAD.size:
            raise MalformedMessage(f"Ping payload is {ping.payload_len} bytes, needs "
                                   f"{_PING_PAYLOAD.size}", ErrorCode.MALFORMED)
        (sent,) = _PING_PAYLOAD.unpack_from(ping.buf, MESSAGE_HEADER_SIZE)
        pong = self._pong_msg
        pong.seq = cmd.next_seq()
        pong.request_seq = ping.seq
        _PONG_PAYLOAD.pack_into(pong.buf, MESSAGE_HEADER_SIZE, sent, time.monotonic_ns())
        self.respond(pong)

    def _handshake(self, msg: Message) -> None:
        req = cmd.decode(msg)
        if req["version_major"] != PROTOCOL_MAJOR:
            self.reply_error(
                msg, ErrorCode.VERSION_MISMATCH,
                f"protocol version mismatch: host speaks {req['version_major']}."
                f"{req['version_minor']}, device {self.id} speaks "
                f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}")
            return
        if self.capabilities & Capability.FLEXIBLE_FORMAT:
            # Each value in range is taken; one out of range is ignored, never refused: the
            # ack tells the host the format in effect (protocol.md §8.2).
            rate, block = req["sample_rate"], req["block_size"]
            if not SAMPLE_RATE_MIN <= rate <= SAMPLE_RATE_MAX:
                rate = self.sample_rate
            if not BLOCK_SIZE_MIN <= block <= BLOCK_SIZE_MAX:
                block = self.block_size
            if (rate, block) != (self.sample_rate, self.block_size):
                self._set_format(rate, block)
        offered = req["capabilities"]
        self.negotiated_capabilities = Capability(self.capabilities & offered) if offered \
            else self.capabilities
        self.respond(cmd.build(
            "HandshakeAck", response_to=msg, version_major=PROTOCOL_MAJOR,
            version_minor=PROTOCOL_MINOR, capabilities=int(self.negotiated_capabilities),
            sample_rate=self.sample_rate, block_size=self.block_size, channels=self.channels,
            mode=int(self.mode),
            return_channels=self.return_channels
            if self.negotiated_capabilities & Capability.RETURN_AUDIO else 0))
        self._report_connection("handshake", f"host pid {self.host_pid}: {self.sample_rate} Hz, "
                                f"{self.block_size} frames, {self.channels} ch")

    def _set_format(self, sample_rate: int, block_size: int) -> None:
        """The header (release stores) and the slot's mirror (lock-free, §3.2), before the
        HandshakeAck goes out."""
        self.sample_rate, self.block_size = sample_rate, block_size
        _shm.store_u32(self._buf, _O["sample_rate"], sample_rate)
        _shm.store_u32(self._buf, _O["block_size"], block_size)
        self.registry.update_format(self.slot, self._pid, self.generation,
                                    sample_rate=sample_rate, block_size=block_size)

    def _set_mode(self, msg: Message) -> None:
        value = cmd.decode(msg)["mode"]
        try:
            mode = Mode(value)
        except ValueError:
            self.reply_error(msg, ErrorCode.INVALID_ARGUMENT, f"unknown transport mode {value}")
            return
        # The rings fixed at creation decide (protocol.md §10): audio segments do audio+midi
        # and audio, a segment without audio rings only midi.
        if (mode == Mode.MIDI) != (self._audio is None):
            why = ("was started in midi mode and has no audio rings" if self._audio is None
                   else "has audio rings; midi mode needs a device started in midi mode")
            self.reply_error(msg, ErrorCode.INVALID_ARGUMENT,
                             f"cannot switch to {mode.label}: device {self.id} {why}")
            return
        self.mode = mode
        _shm.store_u32(self._buf, _O["mode"], int(mode))
        self.registry.update_format(self.slot, self._pid, self.generation, mode=int(mode))
        self.respond(cmd.build("SetTransportMode", response_to=msg, mode=int(mode)))

    def _check_registration(self) -> None:
        """Notice when a scan reclaimed our slot (our heartbeat stalled past
        HEARTBEAT_STALE_S, e.g. the process was stopped): hosts can no longer find us."""
        state, pid, generation = self.registry.owner(self.slot)
        if self.registered and (state != SlotState.ACTIVE or pid != self._pid
                                or generation != self.generation):
            self.registered = False
            self._error("registry", f"device {self.id} lost its registry slot (reclaimed after "
                        f"its heartbeat stalled for over {HEARTBEAT_STALE_S:.0f} s); hosts "
                        "can no longer find it: restart it")

    def _check_claim(self) -> None:
        generation = _shm.load_u32(self._buf, _O["claim_generation"])
        if generation != self._claim_generation:
            self._claim_generation = generation
            self._on_new_claim()

    def _on_new_claim(self) -> None:
        self._reassembler.reset()
        self._outbox.clear()  # half-sent transfers belonged to the previous host
        self._claimed_by = self.host_pid
        self._host_alive = pid_exists(self._claimed_by)
        if self._return is not None:
            self._return.discard()
        if self._audio_out is not None:  # the new host's audio starts here (§8.2)
            _shm.store_u32(self._buf, _O["session_start"], self._audio_out.write_index())
        for handler in self._claim_handlers:
            handler(self)
        self._report_connection("claimed", f"host pid {self.host_pid}, link tag "
                                f"{self.link_tag!r}")

    def _on_host_lost(self) -> None:
        for handler in self._host_lost_handlers:
            handler(self)
        self._report_connection("host lost", f"host pid {self._claimed_by} died")

    # -- reporting ---------------------------------------------------------------------
    @property
    def stats(self) -> DeviceStats:
        if self.segment is None:
            return DeviceStats(errors=self.errors, last_error=self.last_error)
        h = TRANSPORT_HEADER.unpack_from(self._buf)
        return DeviceStats(
            blocks_written=h["blocks_written"], overruns=h["overruns"], underruns=h["underruns"],
            commands_received=self.commands_received, responses_sent=self.responses_sent,
            responses_dropped=h["responses_dropped"], bad_messages=h["bad_messages"],
            commands_dropped=h["commands_dropped"], return_underruns=h["return_underruns"],
            errors=self.errors, last_error=self.last_error)

    def report_error(self, where: str, text: str) -> None:
        """Count a failure and tell the debug monitor; for adapters' real-time code."""
        self._error(where, text)

    def _error(self, where: str, text: str) -> None:
        self.errors += 1
        self.last_error = f"{where}: {text}"
        if self.monitor is not None:
            self._safe_monitor("on_error", self._label, where, text)

    def _report_connection(self, event: str, detail: str) -> None:
        if self.monitor is not None:
            self._safe_monitor("on_connection", self._label, event, detail)

    def _monitor_audio(self, direction: str, frames: int, channels: int) -> None:
        self._safe_monitor("on_audio", self._label, direction, frames, channels)

    def _safe_monitor(self, method: str, *args) -> None:
        try:
            getattr(self.monitor, method)(*args)
        except Exception:
            self.errors += 1
