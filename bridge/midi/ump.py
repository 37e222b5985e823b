"""Universal MIDI Packet (UMP) codec: encoders, a forgiving decoder and SysEx7 reassembly.

UMP (MIDI Association M2-104-UM, "Universal MIDI Packet (UMP) Format and MIDI 2.0 Protocol")
carries MIDI 1.0 and MIDI 2.0 messages in packets of one to four 32-bit words; the packet size
follows from the message type in the top nibble of its first word.  Devices on the bridge
receive UMP as little-endian uint32 words (the IPC "UMP" command), so this module turns words
into small immutable ``Packet`` objects and back.

Encoders validate their arguments and raise ``ValueError`` naming the argument and its range.
The decoder never raises: malformed input is skipped and counted in ``UmpStats``, because it
comes from other processes and must not take a device down.  Pure standard library; no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields

__all__ = [
    "MT_DATA64",
    "MT_DATA128",
    "MT_MIDI1",
    "MT_MIDI2",
    "MT_SYSTEM",
    "MT_UTILITY",
    "PACKET_WORDS",
    "PER_NOTE_DETACH",
    "PER_NOTE_RESET",
    "SYSEX_COMPLETE",
    "SYSEX_CONTINUE",
    "SYSEX_END",
    "SYSEX_START",
    "Packet",
    "SysEx7Reassembler",
    "UmpStats",
    "decode",
    "delta_clockstamp",
    "delta_clockstamp_tpq",
    "iter_packets",
    "jr_clock",
    "jr_timestamp",
    "mds_header",
    "mds_payload",
    "midi1_channel_pressure",
    "midi1_channel_voice",
    "midi1_control_change",
    "midi1_note_off",
    "midi1_note_on",
    "midi1_pitch_bend",
    "midi1_poly_pressure",
    "midi1_program_change",
    "midi2_assignable_per_note_controller",
    "midi2_channel_pressure",
    "midi2_control_change",
    "midi2_note_off",
    "midi2_note_on",
    "midi2_nrpn",
    "midi2_per_note_management",
    "midi2_per_note_pitch_bend",
    "midi2_pitch_bend",
    "midi2_poly_pressure",
    "midi2_program_change",
    "midi2_registered_per_note_controller",
    "midi2_relative_nrpn",
    "midi2_relative_rpn",
    "midi2_rpn",
    "mtc_quarter_frame",
    "noop",
    "packet_words",
    "song_position",
    "song_select",
    "sysex7_packet",
    "sysex7_packets",
    "sysex8_packet",
    "sysex8_packets",
    "system",
    "tune_request",
    "words_from_bytes",
    "words_to_bytes",
]

MT_UTILITY = 0x0
MT_SYSTEM = 0x1
MT_MIDI1 = 0x2
MT_DATA64 = 0x3
MT_MIDI2 = 0x4
MT_DATA128 = 0x5

# Words per packet, indexed by message type (M2-104-UM section 2.1.4). The one place sizes live.
PACKET_WORDS: tuple[int, ...] = (1, 1, 1, 2, 2, 4, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4)

_U32 = 0xFFFFFFFF

# MT 0x0 utility statuses.
_UTILITY_KINDS = {0x0: "noop", 0x1: "jr_clock", 0x2: "jr_timestamp",
                  0x3: "delta_clockstamp_tpq", 0x4: "delta_clockstamp"}

# MT 0x1 system statuses and the number of data bytes each carries.
_SYSTEM_KINDS = {0xF1: "mtc_quarter_frame", 0xF2: "song_position", 0xF3: "song_select",
                 0xF6: "tune_request", 0xF8: "timing_clock", 0xFA: "start", 0xFB: "continue",
                 0xFC: "stop", 0xFE: "active_sensing", 0xFF: "reset"}
_SYSTEM_DATA_BYTES = {0xF1: 1, 0xF2: 2, 0xF3: 1}

# Channel voice statuses (the high nibble of a MIDI 1.0 status byte).
_MIDI1_KINDS = {0x8: "note_off", 0x9: "note_on", 0xA: "poly_pressure", 0xB: "control_change",
                0xC: "program_change", 0xD: "channel_pressure", 0xE: "pitch_bend"}

# MT 0x4 opcodes (M2-104-UM section 7.4); 0x7 is reserved.
_MIDI2_KINDS = {0x0: "registered_per_note_controller", 0x1: "assignable_per_note_controller",
                0x2: "rpn", 0x3: "nrpn", 0x4: "relative_rpn", 0x5: "relative_nrpn",
                0x6: "per_note_pitch_bend", 0x8: "note_off", 0x9: "note_on",
                0xA: "poly_pressure", 0xB: "control_change", 0xC: "program_change",
                0xD: "channel_pressure", 0xE: "pitch_bend", 0xF: "per_note_management"}

SYSEX_COMPLETE = 0x0
SYSEX_START = 0x1
SYSEX_CONTINUE = 0x2
SYSEX_END = 0x3
_FORMS = {0x0: "complete", 0x1: "start", 0x2: "continue", 0x3: "end"}

_MDS_HEADER = 0x8
_MDS_PAYLOAD = 0x9

PER_NOTE_RESET = 0x01  # per-note management S flag: reset per-note controllers
PER_NOTE_DETACH = 0x02  # per-note management D flag: detach per-note controllers


# --------------------------------------------------------------------------------------------
# Packets and statistics


@dataclass(slots=True)
class UmpStats:
    """Counters for decoding: what was decoded, and what was skipped and why."""

    packets: int = 0  # packets decoded and yielded
    skipped_unknown: int = 0  # packets of a message type this codec does not decode (0x6-0xF)
    truncated: int = 0  # an incomplete final packet, or trailing bytes short of a word
    invalid: int = 0  # reserved status, bad field, or a word outside 0..2**32-1
    sysex_overflow: int = 0  # reassembled SysEx messages dropped for exceeding the limit
    sysex_unexpected: int = 0  # SysEx continue/end without a start, or a start interrupting one

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded UMP packet.

    ``words`` is the raw packet; ``kind`` names the message.  Channel voice kinds are shared by
    MIDI 1.0 (``mt`` 2: 7-bit values, 14-bit pitch bend) and MIDI 2.0 (``mt`` 4: 16-bit
    velocity, 32-bit values), so look at ``mt`` before reading ``value``.  Fields that do not
    apply to a kind are None.  For relative controllers ``value`` is the signed 32-bit delta.
    """

    mt: int
    group: int
    kind: str
    words: tuple[int, ...]
    status: int = 0  # MT0/3/5 status nibble, MT1 status byte, MT2/MT4 opcode nibble
    channel: int | None = None
    note: int | None = None
    velocity: int | None = None
    value: int | None = None
    index: int | None = None
    bank: int | None = None  # RPN/NRPN bank
    program: int | None = None
    bank_valid: bool = False
    bank_msb: int | None = None
    bank_lsb: int | None = None
    attr_type: int | None = None
    attr_data: int | None = None
    flags: int | None = None  # per-note management option flags
    data: bytes | None = None  # SysEx7/SysEx8/mixed data set bytes
    stream_id: int | None = None
    mds_id: int | None = None
    chunk_bytes: int | None = None  # mixed data set header: valid bytes in this chunk
    chunks: int | None = None
    chunk: int | None = None
    manufacturer: int | None = None
    device: int | None = None
    sub_id1: int | None = None
    sub_id2: int | None = None

    @property
    def detach(self) -> bool:
        """Per-note management D flag."""
        return bool((self.flags or 0) & PER_NOTE_DETACH)

    @property
    def reset_controllers(self) -> bool:
        """Per-note management S flag."""
        return bool((self.flags or 0) & PER_NOTE_RESET)


# --------------------------------------------------------------------------------------------
# Argument checking and packing helpers


def _check(name: str, value: int, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} {value} out of range {lo}..{hi}")
    return value


def _bytes_arg(name: str, data: bytes | bytearray | Iterable[int], hi: int) -> bytes:
    try:
        raw = bytes(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be bytes with values 0..{hi}") from exc
    for i, b in enumerate(raw):
        if b > hi:
            raise ValueError(f"{name}[{i}] {b} out of range 0..{hi}")
    return raw


def _words(raw: bytes | bytearray) -> tuple[int, ...]:
    return struct.unpack(f">{len(raw) // 4}I", raw)


def _head(mt: int, group: int, status: int, b2: int = 0, b3: int = 0) -> int:
    return (mt << 28) | (_check("group", group, 0, 15) << 24) | (status << 16) | (b2 << 8) | b3


def packet_words(word0: int) -> int:
    """Number of words in the packet whose first word is ``word0``."""
    return PACKET_WORDS[(word0 >> 28) & 0xF]


# --------------------------------------------------------------------------------------------
# MT 0x0 utility


def noop(*, group: int = 0) -> tuple[int, ...]:
    """Utility NOOP."""
    return (_head(MT_UTILITY, group, 0x00),)


def jr_clock(time: int, *, group: int = 0) -> tuple[int, ...]:
    """Jitter-reduction clock: 16-bit sender clock time in 1/31250 s units."""
    return (_head(MT_UTILITY, group, 0x10) | _check("time", time, 0, 0xFFFF),)


def jr_timestamp(time: int, *, group: int = 0) -> tuple[int, ...]:
    """Jitter-reduction timestamp: 16-bit sender clock time in 1/31250 s units."""
    return (_head(MT_UTILITY, group, 0x20) | _check("time", time, 0, 0xFFFF),)


def delta_clockstamp_tpq(ticks_per_quarter: int, *, group: int = 0) -> tuple[int, ...]:
    """Delta clockstamp ticks per quarter note (16 bits)."""
    return (_head(MT_UTILITY, group, 0x30) | _check("ticks_per_quarter", ticks_per_quarter,
                                                    0, 0xFFFF),)


def delta_clockstamp(ticks: int, *, group: int = 0) -> tuple[int, ...]:
    """Delta clockstamp: 20-bit ticks since the last event."""
    return ((MT_UTILITY << 28) | (_check("group", group, 0, 15) << 24) | (0x4 << 20)
            | _check("ticks", ticks, 0, 0xFFFFF),)


# --------------------------------------------------------------------------------------------
# MT 0x1 system common and real time


def system(status: int, data1: int = 0, data2: int = 0, *, group: int = 0) -> tuple[int, ...]:
    """A system common or real-time message (status 0xF1-0xF3, 0xF6, 0xF8, 0xFA-0xFC, 0xFE-0xFF)."""
    if status not in _SYSTEM_KINDS:
        raise ValueError(f"status {status:#x} is not a UMP system message "
                         "(0xF1-0xF3, 0xF6, 0xF8, 0xFA-0xFC, 0xFE, 0xFF)")
    n = _SYSTEM_DATA_BYTES.get(status, 0)
    _check("data1", data1, 0, 127 if n >= 1 else 0)
    _check("data2", data2, 0, 127 if n >= 2 else 0)
    return (_head(MT_SYSTEM, group, status, data1, data2),)


def mtc_quarter_frame(value: int, *, group: int = 0) -> tuple[int, ...]:
    """MIDI time code quarter frame (7-bit message type and value)."""
    return system(0xF1, _check("value", value, 0, 127), group=group)


def song_position(position: int, *, group: int = 0) -> tuple[int, ...]:
    """Song position pointer in MIDI beats (14 bits)."""
    _check("position", position, 0, 0x3FFF)
    return system(0xF2, position & 0x7F, position >> 7, group=group)


def song_select(song: int, *, group: int = 0) -> tuple[int, ...]:
    """Song select (7 bits)."""
    return system(0xF3, _check("song", song, 0, 127), group=group)


def tune_request(*, group: int = 0) -> tuple[int, ...]:
    """Tune request."""
    return system(0xF6, group=group)


# --------------------------------------------------------------------------------------------
# MT 0x2 MIDI 1.0 channel voice


def midi1_channel_voice(status: int, channel: int, data1: int = 0, data2: int = 0, *,
                        group: int = 0) -> tuple[int, ...]:
    """A MIDI 1.0 channel voice message; ``status`` is the opcode nibble 0x8..0xE."""
    if status not in _MIDI1_KINDS:
        raise ValueError(f"status {status:#x} out of range 0x8..0xe")
    _check("channel", channel, 0, 15)
    _check("data1", data1, 0, 127)
    _check("data2", data2, 0, 127 if status not in (0xC, 0xD) else 0)
    return ((MT_MIDI1 << 28) | (_check("group", group, 0, 15) << 24) | (status << 20)
            | (channel << 16) | (data1 << 8) | data2,)


def midi1_note_off(channel: int, note: int, velocity: int = 0, *,
                   group: int = 0) -> tuple[int, ...]:
    """MIDI 1.0 note off."""
    return midi1_channel_voice(0x8, channel, _check("note", note, 0, 127),
                               _check("velocity", velocity, 0, 127), group=group)


def midi1_note_on(channel: int, note: int, velocity: int, *, group: int = 0) -> tuple[int, ...]:
    """MIDI 1.0 note on."""
    return midi1_channel_voice(0x9, channel, _check("note", note, 0, 127),
                               _check("velocity", velocity, 0, 127), group=group)


def midi1_poly_pressure(channel: int, note: int, value: int, *,
                        group: int = 0) -> tuple[int, ...]:
    """MIDI 1.0 polyphonic key pressure."""
    return midi1_channel_voice(0xA, channel, _check("note", note, 0, 127),
                               _check("value", value, 0, 127), group=group)


def midi1_control_change(channel: int, index: int, value: int, *,
                         group: int = 0) -> tuple[int, ...]:
    """MIDI 1.0 control change."""
    return midi1_channel_voice(0xB, channel, _check("index", index, 0, 127),
                               _check("value", value, 0, 127), group=group)


def midi1_program_change(channel: int, program: int, *, group: int = 0) -> tuple[int, ...]:
    """MIDI 1.0 program change."""
    return midi1_channel_voice(0xC, channel, _check("program", program, 0, 127), group=group)


def midi1_channel_pressure(channel: int, value: int, *, group: int = 0) -> tuple[int, ...]:
    """MIDI 1.0 channel pressure."""
    return midi1_channel_voice(0xD, channel, _check("value", value, 0, 127), group=group)


def midi1_pitch_bend(channel: int, value: int, *, group: int = 0) -> tuple[int, ...]:
    """MIDI 1.0 pitch bend, 14-bit unsigned (centre 0x2000)."""
    _check("value", value, 0, 0x3FFF)
    return midi1_channel_voice(0xE, channel, value & 0x7F, value >> 7, group=group)


# --------------------------------------------------------------------------------------------
# MT 0x3 SysEx7


def sysex7_packet(status: int, data: bytes | Iterable[int], *, group: int = 0) -> tuple[int, ...]:
    """One SysEx7 packet: ``status`` 0 complete, 1 start, 2 continue, 3 end; up to 6 bytes."""
    _check("status", status, 0, 3)
    raw = _bytes_arg("data", data, 0x7F)
    if len(raw) > 6:
        raise ValueError(f"data length {len(raw)} out of range 0..6")
    buf = bytearray(8)
    buf[0] = (MT_DATA64 << 4) | _check("group", group, 0, 15)
    buf[1] = (status << 4) | len(raw)
    buf[2:2 + len(raw)] = raw
    return _words(buf)


def _strip_sysex(raw: bytes) -> bytes:
    if raw[:1] == b"\xf0":
        raw = raw[1:]
    if raw[-1:] == b"\xf7":
        raw = raw[:-1]
    return raw


def sysex7_packets(payload: bytes | Iterable[int], *, group: int = 0) -> list[tuple[int, ...]]:
    """Split a SysEx payload of any length into SysEx7 packets (a leading F0/trailing F7 are
    stripped)."""
    raw = _bytes_arg("payload", _strip_sysex(bytes(payload)), 0x7F)
    if len(raw) <= 6:
        return [sysex7_packet(SYSEX_COMPLETE, raw, group=group)]
    chunks = [raw[i:i + 6] for i in range(0, len(raw), 6)]
    out = [sysex7_packet(SYSEX_START, chunks[0], group=group)]
    out += [sysex7_packet(SYSEX_CONTINUE, c, group=group) for c in chunks[1:-1]]
    out.append(sysex7_packet(SYSEX_END, chunks[-1], group=group))
    return out


# --------------------------------------------------------------------------------------------
# MT 0x4 MIDI 2.0 channel voice


def _midi2(opcode: int, channel: int, b2: int, b3: int, word1: int, group: int) -> tuple[int, ...]:
    _check("channel", channel, 0, 15)
    return ((MT_MIDI2 << 28) | (_check("group", group, 0, 15) << 24) | (opcode << 20)
            | (channel << 16) | (b2 << 8) | b3, word1)


def _note(opcode: int, channel: int, note: int, velocity: int, attr_type: int, attr_data: int,
          group: int) -> tuple[int, ...]:
    _check("note", note, 0, 127)
    _check("velocity", velocity, 0, 0xFFFF)
    _check("attr_type", attr_type, 0, 0xFF)
    _check("attr_data", attr_data, 0, 0xFFFF)
    return _midi2(opcode, channel, note, attr_type, (velocity << 16) | attr_data, group)


def midi2_note_off(channel: int, note: int, velocity: int = 0, *, attr_type: int = 0,
                   attr_data: int = 0, group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 note off with 16-bit velocity and optional attribute."""
    return _note(0x8, channel, note, velocity, attr_type, attr_data, group)


def midi2_note_on(channel: int, note: int, velocity: int, *, attr_type: int = 0,
                  attr_data: int = 0, group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 note on with 16-bit velocity and optional attribute."""
    return _note(0x9, channel, note, velocity, attr_type, attr_data, group)


def midi2_poly_pressure(channel: int, note: int, value: int, *,
                        group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 polyphonic pressure (32 bits)."""
    return _midi2(0xA, channel, _check("note", note, 0, 127), 0,
                  _check("value", value, 0, _U32), group)


def midi2_registered_per_note_controller(channel: int, note: int, index: int, value: int, *,
                                         group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 registered per-note controller (8-bit index, 32-bit value)."""
    return _midi2(0x0, channel, _check("note", note, 0, 127), _check("index", index, 0, 255),
                  _check("value", value, 0, _U32), group)


def midi2_assignable_per_note_controller(channel: int, note: int, index: int, value: int, *,
                                         group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 assignable per-note controller (8-bit index, 32-bit value)."""
    return _midi2(0x1, channel, _check("note", note, 0, 127), _check("index", index, 0, 255),
                  _check("value", value, 0, _U32), group)


def midi2_per_note_management(channel: int, note: int, *, detach: bool = False,
                              reset: bool = False, group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 per-note management (D: detach, S: reset per-note controllers)."""
    flags = (PER_NOTE_DETACH if detach else 0) | (PER_NOTE_RESET if reset else 0)
    return _midi2(0xF, channel, _check("note", note, 0, 127), flags, 0, group)


def midi2_control_change(channel: int, index: int, value: int, *,
                         group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 control change (7-bit index, 32-bit value)."""
    return _midi2(0xB, channel, _check("index", index, 0, 127), 0,
                  _check("value", value, 0, _U32), group)


def _controller(opcode: int, channel: int, bank: int, index: int, word1: int,
                group: int) -> tuple[int, ...]:
    return _midi2(opcode, channel, _check("bank", bank, 0, 127), _check("index", index, 0, 127),
                  word1, group)


def midi2_rpn(channel: int, bank: int, index: int, value: int, *,
              group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 registered controller (RPN bank/index, 32-bit value)."""
    return _controller(0x2, channel, bank, index, _check("value", value, 0, _U32), group)


def midi2_nrpn(channel: int, bank: int, index: int, value: int, *,
               group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 assignable controller (NRPN bank/index, 32-bit value)."""
    return _controller(0x3, channel, bank, index, _check("value", value, 0, _U32), group)


def midi2_relative_rpn(channel: int, bank: int, index: int, delta: int, *,
                       group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 relative registered controller (signed 32-bit delta)."""
    _check("delta", delta, -(1 << 31), (1 << 31) - 1)
    return _controller(0x4, channel, bank, index, delta & _U32, group)


def midi2_relative_nrpn(channel: int, bank: int, index: int, delta: int, *,
                        group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 relative assignable controller (signed 32-bit delta)."""
    _check("delta", delta, -(1 << 31), (1 << 31) - 1)
    return _controller(0x5, channel, bank, index, delta & _U32, group)


def midi2_program_change(channel: int, program: int, *, bank: tuple[int, int] | None = None,
                         group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 program change; ``bank=(msb, lsb)`` sets the bank-valid flag."""
    _check("program", program, 0, 127)
    if bank is None:
        return _midi2(0xC, channel, 0, 0, program << 24, group)
    msb, lsb = bank
    _check("bank_msb", msb, 0, 127)
    _check("bank_lsb", lsb, 0, 127)
    return _midi2(0xC, channel, 0, 0x01, (program << 24) | (msb << 8) | lsb, group)


def midi2_channel_pressure(channel: int, value: int, *, group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 channel pressure (32 bits)."""
    return _midi2(0xD, channel, 0, 0, _check("value", value, 0, _U32), group)


def midi2_pitch_bend(channel: int, value: int, *, group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 pitch bend, 32-bit unsigned (centre 0x80000000)."""
    return _midi2(0xE, channel, 0, 0, _check("value", value, 0, _U32), group)


def midi2_per_note_pitch_bend(channel: int, note: int, value: int, *,
                              group: int = 0) -> tuple[int, ...]:
    """MIDI 2.0 per-note pitch bend, 32-bit unsigned (centre 0x80000000)."""
    return _midi2(0x6, channel, _check("note", note, 0, 127), 0,
                  _check("value", value, 0, _U32), group)


# --------------------------------------------------------------------------------------------
# MT 0x5 8-bit data: SysEx8 and mixed data sets


def sysex8_packet(status: int, stream_id: int, data: bytes | Iterable[int], *,
                  group: int = 0) -> tuple[int, ...]:
    """One SysEx8 packet: ``status`` 0 complete, 1 start, 2 continue, 3 end; up to 13 bytes."""
    _check("status", status, 0, 3)
    _check("stream_id", stream_id, 0, 255)
    raw = _bytes_arg("data", data, 0xFF)
    if len(raw) > 13:
        raise ValueError(f"data length {len(raw)} out of range 0..13")
    buf = bytearray(16)
    buf[0] = (MT_DATA128 << 4) | _check("group", group, 0, 15)
    buf[1] = (status << 4) | (len(raw) + 1)  # the byte count includes the stream id
    buf[2] = stream_id
    buf[3:3 + len(raw)] = raw
    return _words(buf)


def sysex8_packets(payload: bytes | Iterable[int], stream_id: int = 0, *,
                   group: int = 0) -> list[tuple[int, ...]]:
    """Split an 8-bit SysEx payload of any length into SysEx8 packets."""
    raw = _bytes_arg("payload", payload, 0xFF)
    if len(raw) <= 13:
        return [sysex8_packet(SYSEX_COMPLETE, stream_id, raw, group=group)]
    chunks = [raw[i:i + 13] for i in range(0, len(raw), 13)]
    out = [sysex8_packet(SYSEX_START, stream_id, chunks[0], group=group)]
    out += [sysex8_packet(SYSEX_CONTINUE, stream_id, c, group=group) for c in chunks[1:-1]]
    out.append(sysex8_packet(SYSEX_END, stream_id, chunks[-1], group=group))
    return out


def mds_header(mds_id: int, chunk_bytes: int, chunks: int, chunk: int, manufacturer: int,
               device: int, sub_id1: int, sub_id2: int, *, group: int = 0) -> tuple[int, ...]:
    """Mixed data set header packet (all counts and ids 16 bits)."""
    _check("mds_id", mds_id, 0, 15)
    vals = [_check(name, v, 0, 0xFFFF) for name, v in (
        ("chunk_bytes", chunk_bytes), ("chunks", chunks), ("chunk", chunk),
        ("manufacturer", manufacturer), ("device", device), ("sub_id1", sub_id1),
        ("sub_id2", sub_id2))]
    head = bytes(((MT_DATA128 << 4) | _check("group", group, 0, 15),
                  (_MDS_HEADER << 4) | mds_id))
    return _words(head + struct.pack(">7H", *vals))


def mds_payload(mds_id: int, data: bytes | Iterable[int], *, group: int = 0) -> tuple[int, ...]:
    """Mixed data set payload packet carrying up to 14 bytes (zero padded)."""
    _check("mds_id", mds_id, 0, 15)
    raw = _bytes_arg("data", data, 0xFF)
    if len(raw) > 14:
        raise ValueError(f"data length {len(raw)} out of range 0..14")
    head = bytes(((MT_DATA128 << 4) | _check("group", group, 0, 15),
                  (_MDS_PAYLOAD << 4) | mds_id))
    return _words(head + raw.ljust(14, b"\0"))


# --------------------------------------------------------------------------------------------
# Decoding


def _decode_utility(w: tuple[int, ...], group: int) -> Packet | None:
    status = (w[0] >> 20) & 0xF
    kind = _UTILITY_KINDS.get(status)
    if kind is None:
        return None
    value = w[0] & (0xFFFFF if status == 0x4 else 0xFFFF)
    return Packet(MT_UTILITY, group, kind, w, status=status,
                  value=None if status == 0 else value)


def _decode_system(w: tuple[int, ...], group: int) -> Packet | None:
    status = (w[0] >> 16) & 0xFF
    kind = _SYSTEM_KINDS.get(status)
    if kind is None:
        return None
    d1, d2 = (w[0] >> 8) & 0xFF, w[0] & 0xFF
    n = _SYSTEM_DATA_BYTES.get(status, 0)
    if (n >= 1 and d1 > 0x7F) or (n >= 2 and d2 > 0x7F):
        return None
    value = None
    if status == 0xF2:
        value = d1 | (d2 << 7)
    elif n == 1:
        value = d1
    return Packet(MT_SYSTEM, group, kind, w, status=status, value=value)


def _decode_midi1(w: tuple[int, ...], group: int) -> Packet | None:
    status, channel = (w[0] >> 20) & 0xF, (w[0] >> 16) & 0xF
    kind = _MIDI1_KINDS.get(status)
    d1, d2 = (w[0] >> 8) & 0xFF, w[0] & 0xFF
    if kind is None or d1 > 0x7F or (d2 > 0x7F and status not in (0xC, 0xD)):
        return None
    base = {"status": status, "channel": channel}
    if status in (0x8, 0x9):
        return Packet(MT_MIDI1, group, kind, w, note=d1, velocity=d2, **base)
    if status == 0xA:
        return Packet(MT_MIDI1, group, kind, w, note=d1, value=d2, **base)
    if status == 0xB:
        return Packet(MT_MIDI1, group, kind, w, index=d1, value=d2, **base)
    if status == 0xC:
        return Packet(MT_MIDI1, group, kind, w, program=d1, **base)
    if status == 0xD:
        return Packet(MT_MIDI1, group, kind, w, value=d1, **base)
    return Packet(MT_MIDI1, group, kind, w, value=d1 | (d2 << 7), **base)


def _decode_sysex7(w: tuple[int, ...], group: int) -> Packet | None:
    raw = struct.pack(">2I", *w)
    status, count = raw[1] >> 4, raw[1] & 0xF
    if status > 3 or count > 6:
        return None
    data = raw[2:2 + count]
    if any(b > 0x7F for b in data):
        return None
    return Packet(MT_DATA64, group, "sysex7_" + _FORMS[status], w, status=status, data=data)


def _decode_midi2(w: tuple[int, ...], group: int) -> Packet | None:
    op, channel = (w[0] >> 20) & 0xF, (w[0] >> 16) & 0xF
    kind = _MIDI2_KINDS.get(op)
    if kind is None:
        return None
    b2, b3, v = (w[0] >> 8) & 0xFF, w[0] & 0xFF, w[1]
    base = {"status": op, "channel": channel}
    if op in (0x8, 0x9):
        if b2 > 0x7F:
            return None
        return Packet(MT_MIDI2, group, kind, w, note=b2, velocity=v >> 16, attr_type=b3,
                      attr_data=v & 0xFFFF, **base)
    if op in (0x0, 0x1):
        if b2 > 0x7F:
            return None
        return Packet(MT_MIDI2, group, kind, w, note=b2, index=b3, value=v, **base)
    if op in (0x2, 0x3, 0x4, 0x5):
        if b2 > 0x7F or b3 > 0x7F:
            return None
        if op >= 0x4:
            v = v - (1 << 32) if v & 0x80000000 else v
        return Packet(MT_MIDI2, group, kind, w, bank=b2, index=b3, value=v, **base)
    if op in (0x6, 0xA):
        if b2 > 0x7F:
            return None
        return Packet(MT_MIDI2, group, kind, w, note=b2, value=v, **base)
    if op == 0xF:
        if b2 > 0x7F:
            return None
        return Packet(MT_MIDI2, group, kind, w, note=b2, flags=b3, **base)
    if op == 0xB:
        if b2 > 0x7F:
            return None
        return Packet(MT_MIDI2, group, kind, w, index=b2, value=v, **base)
    if op == 0xC:
        program, msb, lsb = v >> 24, (v >> 8) & 0xFF, v & 0xFF
        valid = bool(b3 & 0x01)
        if program > 0x7F or (valid and (msb > 0x7F or lsb > 0x7F)):
            return None
        return Packet(MT_MIDI2, group, kind, w, program=program, bank_valid=valid,
                      bank_msb=msb if valid else None, bank_lsb=lsb if valid else None, **base)
    return Packet(MT_MIDI2, group, kind, w, value=v, **base)  # 0xD, 0xE


def _decode_data128(w: tuple[int, ...], group: int) -> Packet | None:
    raw = struct.pack(">4I", *w)
    status, low = raw[1] >> 4, raw[1] & 0xF
    if status <= 3:
        if not 1 <= low <= 14:
            return None
        return Packet(MT_DATA128, group, "sysex8_" + _FORMS[status], w, status=status,
                      stream_id=raw[2], data=raw[3:3 + low - 1])
    if status == _MDS_HEADER:
        vals = struct.unpack(">7H", raw[2:])
        return Packet(MT_DATA128, group, "mds_header", w, status=status, mds_id=low,
                      chunk_bytes=vals[0], chunks=vals[1], chunk=vals[2], manufacturer=vals[3],
                      device=vals[4], sub_id1=vals[5], sub_id2=vals[6])
    if status == _MDS_PAYLOAD:
        return Packet(MT_DATA128, group, "mds_payload", w, status=status, mds_id=low,
                      data=raw[2:])
    return None


_DECODERS = {MT_UTILITY: _decode_utility, MT_SYSTEM: _decode_system, MT_MIDI1: _decode_midi1,
             MT_DATA64: _decode_sysex7, MT_MIDI2: _decode_midi2, MT_DATA128: _decode_data128}


def _is_word(w: object) -> bool:
    return isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= _U32


def iter_packets(words: Sequence[int], stats: UmpStats | None = None) -> Iterator[Packet]:
    """Decode a word sequence into packets, skipping and counting whatever is malformed."""
    if stats is None:
        stats = UmpStats()
    i, n = 0, len(words)
    while i < n:
        w0 = words[i]
        if not _is_word(w0):
            stats.invalid += 1
            i += 1
            continue
        mt = w0 >> 28
        size = PACKET_WORDS[mt]
        if i + size > n:
            stats.truncated += 1
            return
        w = tuple(words[i:i + size])
        i += size
        if not all(_is_word(x) for x in w):
            stats.invalid += 1
            continue
        decoder = _DECODERS.get(mt)
        if decoder is None:
            stats.skipped_unknown += 1
            continue
        packet = decoder(w, (w0 >> 24) & 0xF)
        if packet is None:
            stats.invalid += 1
            continue
        stats.packets += 1
        yield packet


def decode(words: Sequence[int]) -> Packet:
    """Decode exactly one packet, raising ValueError if it is not one well-formed packet."""
    stats = UmpStats()
    packets = list(iter_packets(words, stats))
    if len(packets) != 1 or stats != UmpStats(packets=1):
        raise ValueError(f"not exactly one decodable UMP packet: {stats.as_dict()}")
    return packets[0]


# --------------------------------------------------------------------------------------------
# Transport


def words_from_bytes(data: bytes | bytearray | memoryview,
                     stats: UmpStats | None = None) -> list[int]:
    """Little-endian uint32 words from bytes; trailing bytes short of a word count as truncated."""
    n, rest = divmod(len(data), 4)
    if rest and stats is not None:
        stats.truncated += 1
    return list(struct.unpack_from(f"<{n}I", data))


def words_to_bytes(words: Iterable[int]) -> bytes:
    """Little-endian uint32 bytes from words (ValueError for a word outside 0..2**32-1)."""
    ws = list(words)
    for i, w in enumerate(ws):
        if not _is_word(w):
            raise ValueError(f"words[{i}] {w!r} out of range 0..{_U32}")
    return struct.pack(f"<{len(ws)}I", *ws)


# --------------------------------------------------------------------------------------------
# SysEx7 reassembly


class SysEx7Reassembler:
    """Joins SysEx7 packets back into whole messages, one stream per group, with a size limit.

    ``feed`` returns the payload (without F0/F7) when a message completes.  A message longer
    than ``max_bytes`` is dropped and counted in ``stats.sysex_overflow``; its remaining packets
    are ignored.  A continue/end with no message in progress, or a start/complete that cuts off
    one in progress, is counted in ``stats.sysex_unexpected``.
    """

    def __init__(self, max_bytes: int = 65536, stats: UmpStats | None = None) -> None:
        self.max_bytes = _check("max_bytes", max_bytes, 0, 1 << 31)
        self.stats = stats if stats is not None else UmpStats()
        self._pending: dict[int, bytearray] = {}
        self._discarding: set[int] = set()

    def pending(self, group: int) -> int:
        """Bytes held for an unfinished message in ``group``."""
        return len(self._pending.get(group, b""))

    def reset(self) -> None:
        """Forget every unfinished message."""
        self._pending.clear()
        self._discarding.clear()

    def _interrupt(self, group: int) -> None:
        if group in self._pending or group in self._discarding:
            self.stats.sysex_unexpected += 1
            self._pending.pop(group, None)
            self._discarding.discard(group)

    def feed(self, packet: Packet) -> bytes | None:
        """Add one SysEx7 packet; return the whole payload when a message completes."""
        if packet.mt != MT_DATA64 or packet.data is None:
            raise ValueError(f"not a SysEx7 packet: {packet.kind}")
        group, data, status = packet.group, packet.data, packet.status
        if status in (SYSEX_COMPLETE, SYSEX_START):
            self._interrupt(group)
            if len(data) > self.max_bytes:
                self.stats.sysex_overflow += 1
                if status == SYSEX_START:
                    self._discarding.add(group)
                return None
            if status == SYSEX_COMPLETE:
                return bytes(data)
            self._pending[group] = bytearray(data)
            return None
        if group in self._discarding:
            if status == SYSEX_END:
                self._discarding.discard(group)
            return None
        buf = self._pending.get(group)
        if buf is None:
            self.stats.sysex_unexpected += 1
            return None
        if len(buf) + len(data) > self.max_bytes:
            self.stats.sysex_overflow += 1
            del self._pending[group]
            if status == SYSEX_CONTINUE:
                self._discarding.add(group)
            return None
        buf += data
        if status == SYSEX_END:
            del self._pending[group]
            return bytes(buf)
        return None
