"""The command table: every discoLink command type, defined once.

Each row gives the type code, name, direction, the request and response payload layouts,
and whether the payload may be fragmented. Encoding, decoding, validation, the message
builders and the command list in docs/protocol.md are all derived from ``COMMANDS``.

Payload field types: u8, u16, u32, i32, u64, f32, char[N] (UTF-8, NUL-padded, fixed size)
and, as the last field only, ``bytes`` (raw, to the end of the payload) or ``utf8`` (text to
the end of the payload). Fixed fields come first, little-endian, packed without padding.
"""

from __future__ import annotations

import enum
import functools
import itertools
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from .layout import (
    FRAGMENT_LIMIT_BYTES,
    MESSAGE_HEADER,
    MESSAGE_HEADER_SIZE,
    MESSAGE_PAYLOAD_SIZE,
    OPEN_TRANSFERS_MAX,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    MessageFlag,
)
from .message import Message

_FIXED = {"u8": "B", "u16": "H", "u32": "I", "i32": "i", "u64": "Q", "f32": "f"}
_TAILS = ("bytes", "utf8")


class MalformedMessage(ValueError):
    """A message whose type is unknown or whose payload does not match its layout."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class ErrorCode(enum.IntEnum):
    """The ``code`` field of an Error response."""

    UNKNOWN_COMMAND = 1  # type code not in the table
    MALFORMED = 2  # payload shorter than its layout, bad field values, bad header
    VERSION_MISMATCH = 3  # Handshake with a different protocol major version
    NOT_SUPPORTED = 4  # the device cannot serve this command
    FRAGMENT_ERROR = 5  # missing, duplicate or oversized fragment
    WRONG_MODE = 6  # e.g. MIDI sent to an audio-only device
    INVALID_ARGUMENT = 7  # well-formed but unacceptable (unknown parameter, bad mode)
    INTERNAL = 8  # the device's handler failed


@dataclass(frozen=True)
class Layout:
    """A payload layout: fixed fields, then an optional tail."""

    fields: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for i, (name, kind) in enumerate(self.fields):
            if kind in _TAILS and i != len(self.fields) - 1:
                raise AssertionError(f"tail field {name} must be last")
            if kind not in _TAILS and kind not in _FIXED and not kind.startswith("char["):
                raise AssertionError(f"unknown field type {kind}")

    @functools.cached_property
    def _fixed(self) -> tuple[tuple[str, str], ...]:
        return tuple(f for f in self.fields if f[1] not in _TAILS)

    @functools.cached_property
    def tail(self) -> tuple[str, str] | None:
        return self.fields[-1] if self.fields and self.fields[-1][1] in _TAILS else None

    @functools.cached_property
    def struct(self) -> struct.Struct:
        fmt = "<"
        for _, kind in self._fixed:
            fmt += f"{kind[5:-1]}s" if kind.startswith("char[") else _FIXED[kind]
        return struct.Struct(fmt)

    @functools.cached_property
    def fixed_size(self) -> int:
        return self.struct.size

    def describe(self) -> str:
        """The layout as one line of doc text: ``u8 channel, u8 note, ...``."""
        if not self.fields:
            return "(empty)"
        return ", ".join(f"{kind} {name}" for name, kind in self.fields)

    def encode(self, values: dict) -> bytes:
        unknown = set(values) - {n for n, _ in self.fields}
        if unknown:
            raise TypeError(f"unknown field(s) {sorted(unknown)}; layout is {self.describe()}")
        args = []
        for name, kind in self._fixed:
            v = values.get(name, b"" if kind.startswith("char[") else 0)
            if kind.startswith("char["):
                raw = v.encode() if isinstance(v, str) else bytes(v)
                limit = int(kind[5:-1]) - 1  # keep room for the terminating NUL
                if len(raw) > limit:
                    raise ValueError(f"{name}: {len(raw)} bytes exceeds {limit}")
                v = raw
            args.append(v)
        try:
            out = self.struct.pack(*args)
        except struct.error as exc:
            raise ValueError(f"cannot encode {self.describe()}: {exc}") from None
        if self.tail:
            name, kind = self.tail
            v = values.get(name, b"" if kind == "bytes" else "")
            out += v.encode() if kind == "utf8" else bytes(v)
        return out

    def decode(self, payload: bytes | memoryview) -> dict:
        size = self.fixed_size
        if len(payload) < size:
            raise MalformedMessage(
                f"payload is {len(payload)} bytes, layout needs {size} ({self.describe()})",
                ErrorCode.MALFORMED,
            )
        values = self.struct.unpack_from(payload, 0)
        out = {}
        for (name, kind), v in zip(self._fixed, values, strict=True):
            if kind.startswith("char["):
                v = _cstr(v, name)
            out[name] = v
        if self.tail:
            name, kind = self.tail
            rest = bytes(payload[size:])
            if kind == "utf8":
                try:
                    rest = rest.decode()
                except UnicodeDecodeError:
                    raise MalformedMessage(f"{name} is not valid UTF-8",
                                           ErrorCode.MALFORMED) from None
            out[name] = rest
        return out


def _cstr(raw: bytes, name: str) -> str:
    try:
        return raw.split(b"\0", 1)[0].decode()
    except UnicodeDecodeError:
        raise MalformedMessage(f"{name} is not valid UTF-8", ErrorCode.MALFORMED) from None


@dataclass(frozen=True)
class Command:
    """One row of the command table."""

    code: int
    name: str
    direction: str  # "host→device" or "device→host"
    request: Layout
    response: Layout | None  # payload of a RESPONSE-flagged reply of the same type
    fragmentable: bool
    summary: str


def _l(*fields: tuple[str, str]) -> Layout:
    return Layout(tuple(fields))


_HANDSHAKE = _l(("version_major", "u16"), ("version_minor", "u16"), ("capabilities", "u32"),
                ("sample_rate", "u32"), ("block_size", "u32"), ("channels", "u32"),
                ("mode", "u32"), ("return_channels", "u32"))
_PARAM = _l(("index", "i32"), ("value", "f32"), ("name", "char[64]"))

COMMANDS: tuple[Command, ...] = (
    Command(0x0001, "Ping", "host→device", _l(("sent_ns", "u64")), None, False,
            "Liveness and latency probe; the device answers Pong."),
    Command(0x0002, "Pong", "device→host", _l(("ping_sent_ns", "u64"), ("received_ns", "u64")),
            None, False, "Answer to Ping: echoes sent_ns and adds the device's CLOCK_MONOTONIC."),
    Command(0x0003, "Handshake", "host→device", _HANDSHAKE, None, False,
            "Host's protocol version, capabilities and preferred format (0 = no preference)."),
    Command(0x0004, "HandshakeAck", "device→host", _HANDSHAKE, None, False,
            "Device's answer: the format and capabilities it accepts; in effect from now on."),
    Command(0x0005, "Error", "device→host",
            _l(("code", "u32"), ("request_type", "u16"), ("reserved", "u16"), ("text", "utf8")),
            None, False, "Failure report; request_seq names the failed request."),
    Command(0x0006, "Disconnect", "host→device", _l(("reason", "utf8")), None, False,
            "The host is leaving (it then releases its claim)."),
    Command(0x0007, "SetTransportMode", "host→device", _l(("mode", "u32")), _l(("mode", "u32")),
            False, "Switch among modes the segment supports; the response gives the mode now."),
    Command(0x0008, "Route", "host→device", _l(("tap", "utf8")), _l(("routing", "utf8")), False,
            "Select the link-routing tap; empty tap = query. Response: JSON {tap, taps}."),
    Command(0x0100, "MidiRaw", "host→device", _l(("data", "bytes")), None, False,
            "MIDI 1.0 bytes: one or more complete messages; running status allowed (§7.4)."),
    Command(0x0101, "NoteOn", "host→device",
            _l(("channel", "u8"), ("note", "u8"), ("velocity", "u8")), None, False,
            "Note on; channel 0..15, note and velocity 0..127."),
    Command(0x0102, "NoteOff", "host→device",
            _l(("channel", "u8"), ("note", "u8"), ("velocity", "u8")), None, False, "Note off."),
    Command(0x0103, "ControlChange", "host→device",
            _l(("channel", "u8"), ("controller", "u8"), ("value", "u8")), None, False,
            "Control change."),
    Command(0x0104, "PitchBend", "host→device",
            _l(("channel", "u8"), ("reserved", "u8"), ("value", "u16")), None, False,
            "14-bit pitch bend 0..16383, centre 8192."),
    Command(0x0105, "ProgramChange", "host→device", _l(("channel", "u8"), ("program", "u8")),
            None, False, "Program change."),
    Command(0x0106, "Aftertouch", "host→device",
            _l(("channel", "u8"), ("poly", "u8"), ("note", "u8"), ("pressure", "u8")), None,
            False, "Channel pressure (poly=0, note ignored) or polyphonic key pressure (poly=1)."),
    Command(0x0107, "SysEx", "host→device", _l(("data", "bytes")), None, True,
            "One complete SysEx message, F0 .. F7, fragmented when longer than one payload."),
    Command(0x0108, "UMP", "host→device", _l(("words", "bytes")), None, True,
            "Universal MIDI Packets: whole packets of uint32 words, little-endian (§7.4)."),
    Command(0x0200, "SetParameter", "host→device", _PARAM, _PARAM, False,
            "Set a parameter by index, or by name when index is -1; applies at the next block."),
    Command(0x0201, "GetParameter", "host→device",
            _l(("index", "i32"), ("name", "char[64]")), _PARAM, False,
            "Read a parameter by index, or by name when index is -1."),
    Command(0x0202, "ParameterList", "host→device", _l(), _l(("parameters", "utf8")), True,
            "Response: JSON list of {index, name, display_name, stage, min, max, default, "
            "value, unit}; min/max/default null when unknown."),
    Command(0x0203, "LoadPreset", "host→device", _l(("path", "utf8")), None, True,
            "Load a preset file (path on the device's machine)."),
    Command(0x0204, "GetState", "host→device", _l(), _l(("state", "bytes")), True,
            "Response: the device's opaque state blob."),
    Command(0x0205, "SetState", "host→device", _l(("state", "bytes")), None, True,
            "Restore an opaque state blob from GetState."),
    Command(0x0206, "FileTransfer", "host→device", _l(("name", "char[128]"), ("data", "bytes")),
            None, True, "Deliver a named file's bytes to the device."),
)

BY_CODE: dict[int, Command] = {c.code: c for c in COMMANDS}
BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}
assert len(BY_CODE) == len(COMMANDS) and len(BY_NAME) == len(COMMANDS)

MIDI_TYPES = frozenset(BY_NAME[n].code for n in (
    "MidiRaw", "NoteOn", "NoteOff", "ControlChange", "PitchBend", "ProgramChange", "Aftertouch",
    "SysEx", "UMP"))


T = enum.IntEnum("T", {c.name: c.code for c in COMMANDS})
T.__doc__ = "Command type codes by name, derived from the table (``T.NoteOn`` == 0x0101)."


def name_of(code: int) -> str:
    c = BY_CODE.get(code)
    return c.name if c else f"Unknown(0x{code:04x})"


Message.name_of = staticmethod(name_of)  # repr() names a message's type from this table


# ---- encoding and decoding --------------------------------------------------------------

_seq = itertools.count(1)
_transfer = itertools.count(1)


def next_seq() -> int:
    """A process-wide sequence number (wraps at 2^32, skipping 0)."""
    return next(_seq) % 0xFFFFFFFF or next(_seq)


def build(name: str, /, *, sample_offset: int = 0, response_to: Message | None = None,
          seq: int | None = None, **fields) -> Message:
    """Build one message of the named type. Raises ValueError for bad fields or sizes."""
    cmd = BY_NAME.get(name)
    if cmd is None:
        raise ValueError(f"unknown command {name!r}")
    layout = cmd.response if (response_to is not None and cmd.response) else cmd.request
    payload = layout.encode(fields)
    if len(payload) > MESSAGE_PAYLOAD_SIZE:
        hint = "; send it with fragments()" if cmd.fragmentable else ""
        raise ValueError(
            f"{name} payload of {len(payload)} bytes exceeds {MESSAGE_PAYLOAD_SIZE}{hint}")
    m = Message()
    m.type = cmd.code
    m.seq = next_seq() if seq is None else seq
    m.sample_offset = sample_offset
    m.set_payload(payload)
    if response_to is not None:
        m.flags = MessageFlag.RESPONSE
        m.request_seq = response_to.seq
    return m


def decode(msg: Message) -> dict:
    """Decode a message's payload into a dict, by its type and RESPONSE flag.

    Raises MalformedMessage for unknown types or short payloads.
    """
    cmd = BY_CODE.get(msg.type)
    if cmd is None:
        raise MalformedMessage(f"unknown command type 0x{msg.type:04x}", ErrorCode.UNKNOWN_COMMAND)
    layout = cmd.response if (msg.is_response and cmd.response) else cmd.request
    return layout.decode(msg.payload)


def fragments(name: str, data: bytes, *, response_to: Message | None = None,
              transfer_id: int | None = None) -> list[Message]:
    """Split a payload (already encoded) into messages; one message if it fits."""
    cmd = BY_NAME[name]
    if len(data) <= MESSAGE_PAYLOAD_SIZE:
        m = Message()
        m.type = cmd.code
        m.seq = next_seq()
        m.set_payload(data)
        if response_to is not None:
            m.flags = MessageFlag.RESPONSE
            m.request_seq = response_to.seq
        return [m]
    if not cmd.fragmentable:
        raise ValueError(f"{name} cannot be fragmented and its payload is {len(data)} bytes")
    tid = transfer_id if transfer_id is not None else next(_transfer) % 0xFFFFFFFF or 1
    count = (len(data) + MESSAGE_PAYLOAD_SIZE - 1) // MESSAGE_PAYLOAD_SIZE
    out = []
    for i in range(count):
        m = Message()
        m.type = cmd.code
        m.seq = next_seq()
        m.flags = MessageFlag.FRAGMENT | (MessageFlag.RESPONSE if response_to is not None else 0)
        m.request_seq = response_to.seq if response_to is not None else 0
        m.frag_index = i
        m.frag_count = count
        m.transfer_id = tid
        m.set_payload(data[i * MESSAGE_PAYLOAD_SIZE : (i + 1) * MESSAGE_PAYLOAD_SIZE])
        out.append(m)
    return out


def encode_payload(name: str, /, *, response: bool = False, **fields) -> bytes:
    """Encode a payload without the size limit (for fragmented transfers)."""
    cmd = BY_NAME[name]
    layout = cmd.response if (response and cmd.response) else cmd.request
    return layout.encode(fields)


class FragmentError(MalformedMessage):
    """A fragmented transfer went wrong: a missing, duplicate or oversized fragment."""


class Reassembler:
    """Joins fragments into whole payloads; several transfers may interleave.

    Fragments of one transfer arrive in order (the rings are FIFO and senders never drop a
    fragment), so a gap in ``frag_index`` means a fragment was lost. A fragment that breaks
    a rule of protocol.md §6.2 (a non-fragmentable type, flag and count that disagree,
    transfer id 0, a gap, a duplicate, a short fragment before the last, a change of type or
    count, a size over ``max_bytes``) raises FragmentError, and its open transfer, if any, is
    discarded. When ``max_transfers`` are open and another one starts, the one that advanced
    least recently (a sender died mid-transfer, or junk) is discarded to make room, and
    ``on_discard`` hears of it with its first fragment, so junk can never lock out later
    transfers. A whole transfer comes back with its last fragment's header (§6.2).
    """

    def __init__(self, max_bytes: int = FRAGMENT_LIMIT_BYTES,
                 max_transfers: int = OPEN_TRANSFERS_MAX,
                 on_discard: Callable[[Message, str], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_transfers = max_transfers
        self.on_discard = on_discard
        # id -> (count, next index, data, first fragment); oldest-advanced first
        self._open: dict[int, tuple[int, int, bytearray, Message]] = {}

    def feed(self, msg: Message) -> Message | None:
        """Add one message. Returns a whole message when complete, else None.

        An unfragmented message (no FRAGMENT flag, frag_count 0 or 1) is returned as it is.
        Raises FragmentError on a bad fragment.
        """
        count = msg.frag_count
        flagged = msg.is_fragment
        if not flagged and count <= 1:
            return msg
        tid, index = msg.transfer_id, msg.frag_index
        name = name_of(msg.type)
        if not flagged:
            self._fail(tid, f"{name} says {count} fragments but has no FRAGMENT flag")
        if count < 2:
            self._fail(tid, f"{name} has the FRAGMENT flag but frag_count {count} (needs 2 "
                       "or more)")
        command = BY_CODE.get(msg.type)
        if command is not None and not command.fragmentable:
            self._fail(tid, f"{name} cannot be fragmented")
        if tid == 0:
            raise FragmentError(f"{name} fragment {index} of {count} has transfer id 0",
                                ErrorCode.FRAGMENT_ERROR)
        if index >= count:
            self._fail(tid, f"fragment {index} of {count} is impossible")
        if count * MESSAGE_PAYLOAD_SIZE > self.max_bytes + MESSAGE_PAYLOAD_SIZE:
            self._fail(tid, f"{count} fragments exceed the limit of {self.max_bytes} bytes")
        state = self._open.pop(tid, None)  # re-inserted below: the dict stays in LRU order
        if state is None:
            if index != 0:
                raise FragmentError(f"transfer {tid}: missing fragment 0 of {count} "
                                    f"(first seen was {index})", ErrorCode.FRAGMENT_ERROR)
            if len(self._open) >= self.max_transfers:
                self._discard_stalest(tid)
            state = (count, 0, bytearray(), msg.copy())
        expected_count, expected, data, first = state
        if msg.type != first.type:
            raise FragmentError(f"transfer {tid}: fragment {index} is {name}, the transfer "
                                f"is {name_of(first.type)}", ErrorCode.FRAGMENT_ERROR)
        if count != expected_count or index != expected:
            if count != expected_count:
                text = (f"transfer {tid}: fragment {index} says {count} fragments, the "
                        f"transfer has {expected_count}")
            elif index < expected:
                text = (f"transfer {tid}: duplicate fragment {index} of {count} "
                        f"(expected {expected})")
            else:
                text = (f"transfer {tid}: missing fragment {expected} of {expected_count} "
                        f"(got {index})")
            raise FragmentError(text, ErrorCode.FRAGMENT_ERROR)
        if index + 1 < count and msg.payload_len != MESSAGE_PAYLOAD_SIZE:
            raise FragmentError(f"transfer {tid}: fragment {index} of {count} is short "
                                f"({msg.payload_len} bytes; every fragment but the last "
                                f"holds {MESSAGE_PAYLOAD_SIZE})", ErrorCode.FRAGMENT_ERROR)
        data += msg.payload
        if len(data) > self.max_bytes:
            raise FragmentError(f"transfer {tid}: more than the limit of {self.max_bytes} "
                                "bytes", ErrorCode.FRAGMENT_ERROR)
        if index + 1 == count:
            return msg.with_blob(bytes(data))
        self._open[tid] = (count, index + 1, data, first)
        return None

    def _fail(self, tid: int, text: str) -> None:
        """Refuse a fragment, and drop its transfer if one is open under its id."""
        open_transfer = self._open.pop(tid, None) if tid else None
        suffix = "; its transfer is discarded" if open_transfer is not None else ""
        raise FragmentError(f"transfer {tid}: {text}{suffix}", ErrorCode.FRAGMENT_ERROR)

    def _discard_stalest(self, new_tid: int) -> None:
        stale_tid = next(iter(self._open))
        count, got, _data, first = self._open.pop(stale_tid)
        if self.on_discard is not None:
            self.on_discard(first, f"transfer {stale_tid}: discarded after {got} of {count} "
                            f"fragments: {self.max_transfers} transfers were open and "
                            f"transfer {new_tid} started (this one advanced least recently)")

    @property
    def pending(self) -> int:
        return len(self._open)

    def reset(self) -> None:
        self._open.clear()


# ---- builders, in the style of upstream discoLink's cmd:: namespace ---------------------


def _midi_checks(channel: int, *values: int) -> None:
    if not 0 <= channel <= 15:
        raise ValueError(f"MIDI channel {channel} out of range 0..15")
    for v in values:
        if not 0 <= v <= 127:
            raise ValueError(f"MIDI data value {v} out of range 0..127")


def ping(sent_ns: int | None = None) -> Message:
    return build("Ping", sent_ns=time.monotonic_ns() if sent_ns is None else sent_ns)


def handshake(sample_rate: int = 0, block_size: int = 0, channels: int = 0, *, mode: int = 0,
              capabilities: int = 0, return_channels: int = 0,
              version: tuple[int, int] = (PROTOCOL_MAJOR, PROTOCOL_MINOR)) -> Message:
    return build("Handshake", version_major=version[0], version_minor=version[1],
                 capabilities=capabilities, sample_rate=sample_rate, block_size=block_size,
                 channels=channels, mode=mode, return_channels=return_channels)


# The MIDI builders are on hosts' hot paths (a dense stream is thousands of them a second),
# so they pack the header and the fixed payload directly instead of going through build().
_HEADER = struct.Struct(MESSAGE_HEADER.format)
# The order in which _small() packs the header positionally, and Device._dispatch_batch
# unpacks it; both follow this tuple, checked once against the layout here.
HEADER_FIELDS = ("type", "flags", "seq", "sample_offset", "payload_len", "frag_index",
                 "frag_count", "transfer_id", "request_seq")
assert tuple(f.name for f in MESSAGE_HEADER.fields) == HEADER_FIELDS, \
    "update commands._small() and Device._dispatch_batch() for the new message header"


def _small(name: str, offset: int, *values: int) -> Message:
    """A one-message command with a fixed layout, packed directly."""
    layout = BY_NAME[name].request.struct
    m = Message()
    _HEADER.pack_into(m.buf, 0, BY_NAME[name].code, 0, next_seq(), offset, layout.size,
                      0, 0, 0, 0)
    layout.pack_into(m.buf, MESSAGE_HEADER_SIZE, *values)
    return m


def _offset_check(offset: int) -> None:
    if not 0 <= offset <= 0xFFFFFFFF:
        raise ValueError(f"sample offset {offset} out of range 0..4294967295")


def midi_note_on(channel: int, note: int, velocity: int, offset: int = 0) -> Message:
    _midi_checks(channel, note, velocity)
    _offset_check(offset)
    return _small("NoteOn", offset, channel, note, velocity)


def midi_note_off(channel: int, note: int, velocity: int = 0, offset: int = 0) -> Message:
    _midi_checks(channel, note, velocity)
    _offset_check(offset)
    return _small("NoteOff", offset, channel, note, velocity)


def midi_cc(channel: int, controller: int, value: int, offset: int = 0) -> Message:
    _midi_checks(channel, controller, value)
    _offset_check(offset)
    return _small("ControlChange", offset, channel, controller, value)


def midi_pitch_bend(channel: int, value: int, offset: int = 0) -> Message:
    _midi_checks(channel)
    _offset_check(offset)
    if not 0 <= value <= 16383:
        raise ValueError(f"pitch bend {value} out of range 0..16383")
    return _small("PitchBend", offset, channel, 0, value)


def midi_program_change(channel: int, program: int, offset: int = 0) -> Message:
    _midi_checks(channel, program)
    _offset_check(offset)
    return _small("ProgramChange", offset, channel, program)


def midi_aftertouch(channel: int, pressure: int, note: int | None = None,
                    offset: int = 0) -> Message:
    _midi_checks(channel, pressure, note or 0)
    _offset_check(offset)
    return _small("Aftertouch", offset, channel, int(note is not None), note or 0, pressure)


def midi_raw(data: bytes, offset: int = 0) -> Message:
    if not data:
        raise ValueError("midi_raw needs at least one byte")
    return build("MidiRaw", sample_offset=offset, data=bytes(data))


def sysex(data: bytes, offset: int = 0) -> list[Message]:
    """A complete SysEx message (F0 .. F7) as one or more fragments."""
    if len(data) < 2 or data[0] != 0xF0 or data[-1] != 0xF7:
        raise ValueError("SysEx must start with F0 and end with F7")
    msgs = fragments("SysEx", bytes(data))
    for m in msgs:
        m.sample_offset = offset
    return msgs


def ump(words: list[int], offset: int = 0) -> list[Message]:
    raw = struct.pack(f"<{len(words)}I", *words)
    msgs = fragments("UMP", raw)
    for m in msgs:
        m.sample_offset = offset
    return msgs


def set_parameter(index_or_name: int | str, value: float) -> Message:
    if isinstance(index_or_name, str):
        return build("SetParameter", index=-1, value=value, name=index_or_name)
    return build("SetParameter", index=index_or_name, value=value)


def get_parameter(index_or_name: int | str) -> Message:
    if isinstance(index_or_name, str):
        return build("GetParameter", index=-1, name=index_or_name)
    return build("GetParameter", index=index_or_name)


def route(tap: str = "") -> Message:
    return build("Route", tap=tap)


def set_transport_mode(mode: int) -> Message:
    return build("SetTransportMode", mode=int(mode))


def disconnect(reason: str = "") -> Message:
    return build("Disconnect", reason=reason)


def error(request: Message | None, code: int, text: str) -> Message:
    """An Error response to ``request`` (text is cut to fit one message)."""
    raw = text.encode()[: MESSAGE_PAYLOAD_SIZE - 8].decode(errors="ignore")
    m = build("Error", code=int(code), request_type=request.type if request else 0, text=raw)
    m.flags = MessageFlag.RESPONSE
    m.request_seq = request.seq if request is not None else 0
    return m


def parameter_list_payload(params: list[dict]) -> bytes:
    return json.dumps(params).encode()
