"""Translation between MIDI 2.0 (UMP) and MIDI 1.0 byte messages, with the spec's scaling.

Devices on the bridge may speak either protocol, so the bridge translates following the MIDI
2.0 specification's Default Translation (M2-104-UM Appendix D: D.2 MIDI 2.0 -> MIDI 1.0, D.3
MIDI 1.0 -> MIDI 2.0) and the value scaling of M2-115-U "MIDI 2.0 Bit Scaling and Resolution":
down-scaling is a plain bit shift; up-scaling is Min-Center-Max (centre maps to centre, values
above it are filled by bit repetition) except for RPNs with index 0-31, which are zero-extended
(M2-115-U section 4.1), so that e.g. pitch bend sensitivity survives a round trip exactly.

Messages with no MIDI 1.0 equivalent are dropped and counted in ``TranslateStats.dropped``,
keyed by packet kind or reason; nothing here raises on bad input.  Pure standard library.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import ump
from .ump import Packet, UmpStats

__all__ = [
    "Midi1ToUmp",
    "TranslateStats",
    "Translator",
    "midi1_to_ump",
    "scale_down",
    "scale_up",
    "ump_to_midi1",
    "zero_extend",
]


# --------------------------------------------------------------------------------------------
# Scaling (M2-115-U)


def _check_scale(value: int, src_bits: int, dst_bits: int) -> None:
    if not 1 <= src_bits <= 32 or not 1 <= dst_bits <= 32:
        raise ValueError(f"bit widths {src_bits}, {dst_bits} out of range 1..32")
    if not 0 <= value < (1 << src_bits):
        raise ValueError(f"value {value} out of range 0..{(1 << src_bits) - 1}")


def scale_up(value: int, src_bits: int, dst_bits: int) -> int:
    """Min-Center-Max up-scaling of an unsigned value (M2-115-U section 3.3)."""
    _check_scale(value, src_bits, dst_bits)
    if dst_bits < src_bits:
        raise ValueError(f"cannot scale up from {src_bits} to {dst_bits} bits")
    if src_bits == 1:  # on/off expands to the full range
        return (1 << dst_bits) - 1 if value else 0
    shift = dst_bits - src_bits
    scaled = value << shift
    if value <= 1 << (src_bits - 1):  # at or below centre: a plain shift keeps centre exact
        return scaled
    repeat_bits = src_bits - 1  # above centre: repeat all but the top bit into the low bits
    repeat = value & ((1 << repeat_bits) - 1)
    repeat = repeat << (shift - repeat_bits) if shift > repeat_bits else (
        repeat >> (repeat_bits - shift))
    while repeat:
        scaled |= repeat
        repeat >>= repeat_bits
    return scaled


def scale_down(value: int, src_bits: int, dst_bits: int) -> int:
    """Down-scaling by dropping low bits (M2-115-U section 3.4)."""
    _check_scale(value, src_bits, dst_bits)
    if dst_bits > src_bits:
        raise ValueError(f"cannot scale down from {src_bits} to {dst_bits} bits")
    return value >> (src_bits - dst_bits)


def zero_extend(value: int, src_bits: int, dst_bits: int) -> int:
    """Zero-extension up-scaling for fixed-point RPN values (M2-115-U section 4.3)."""
    _check_scale(value, src_bits, dst_bits)
    if dst_bits < src_bits:
        raise ValueError(f"cannot scale up from {src_bits} to {dst_bits} bits")
    return value << (dst_bits - src_bits)


def _rpn_up(index: int, value14: int) -> int:
    """RPN data 14 -> 32 bits: zero extension for index 0-31, Min-Center-Max otherwise."""
    return zero_extend(value14, 14, 32) if index < 32 else scale_up(value14, 14, 32)


# --------------------------------------------------------------------------------------------
# Statistics


@dataclass(slots=True)
class TranslateStats:
    """What a translation produced, and what it dropped and why (kind or reason -> count)."""

    messages: int = 0  # messages or packets produced
    dropped: Counter[str] = field(default_factory=Counter)
    ump: UmpStats = field(default_factory=UmpStats)  # decoding and SysEx reassembly counters

    @property
    def total_dropped(self) -> int:
        """All dropped items together."""
        return sum(self.dropped.values())


# --------------------------------------------------------------------------------------------
# MIDI 2.0 (UMP) -> MIDI 1.0


def _cc(channel: int, index: int, value: int) -> bytes:
    return bytes((0xB0 | channel, index, value))


def _bend(channel: int, value14: int) -> bytes:
    return bytes((0xE0 | channel, value14 & 0x7F, value14 >> 7))


class Translator:
    """Stateful UMP -> MIDI 1.0 translator (M2-104-UM Appendix D.2, Default Translation).

    - MT 0x2 MIDI 1.0 channel voice passes straight through; MT 0x1 system messages become
      their MIDI 1.0 bytes; MT 0x3 SysEx7 is reassembled per group into one ``F0 .. F7``
      message (limit ``sysex_limit`` payload bytes, see ``ump.SysEx7Reassembler``).
    - MIDI 2.0 note on/off: velocity 16 -> 7 bits; a note on whose velocity scales to 0 is sent
      with velocity 1.  The note attribute (e.g. pitch 7.9) has no MIDI 1.0 form and is ignored.
    - Poly/channel pressure and control change: 32 -> 7 bits.  Pitch bend: 32 -> 14 bits.
    - RPN / NRPN: always the full four control changes, 101/100 (99/98 for NRPN), 6 and 38
      carrying the top 14 bits of the value; no selection is cached across messages.
    - Program change with the bank-valid flag: CC 0, CC 32, then the program change.
    - Relative RPN/NRPN and per-note management have no MIDI 1.0 equivalent (D.2): dropped
      and counted.
    - With ``mpe=False`` per-note pitch bend and per-note controllers are also dropped and
      counted.  With ``mpe=True`` (each note on its own MPE member channel) per-note pitch
      bend becomes channel pitch bend on the packet's channel, registered or assignable
      per-note controller 74 becomes CC 74 (timbre) there, and poly pressure becomes channel
      pressure; other per-note controllers are still dropped.
    - Utility (JR timestamps, clockstamps), SysEx8/mixed data sets and the message types
      ``ump.iter_packets`` skips are not MIDI 1.0 messages: dropped and counted.
    """

    def __init__(self, *, mpe: bool = False, sysex_limit: int = 65536,
                 stats: TranslateStats | None = None) -> None:
        self.mpe = mpe
        self.stats = stats if stats is not None else TranslateStats()
        self._sysex = ump.SysEx7Reassembler(sysex_limit, self.stats.ump)

    def reset(self) -> None:
        """Forget unfinished SysEx messages."""
        self._sysex.reset()

    def translate(self, packets: Packet | Sequence[int],
                  group: int | None = None) -> list[tuple[int, bytes]]:
        """Translate one packet or a word sequence to ``(group, MIDI 1.0 message)`` pairs.

        With ``group`` set, packets of other groups are skipped (not counted as dropped).
        """
        items: Iterable[Packet]
        if isinstance(packets, Packet):
            items = (packets,)
        else:
            items = ump.iter_packets(packets, self.stats.ump)
        out: list[tuple[int, bytes]] = []
        for p in items:
            if group is not None and p.group != group:
                continue
            msgs = self._one(p)
            if msgs is None:
                self.stats.dropped[p.kind] += 1
                continue
            self.stats.messages += len(msgs)
            out.extend((p.group, m) for m in msgs)
        return out

    def _one(self, p: Packet) -> list[bytes] | None:
        if p.mt == ump.MT_MIDI1:
            return [_midi1_bytes(p)]
        if p.mt == ump.MT_SYSTEM:
            return [bytes((p.status, *_system_data(p)))]
        if p.mt == ump.MT_DATA64:
            payload = self._sysex.feed(p)
            return [] if payload is None else [b"\xf0" + payload + b"\xf7"]
        if p.mt == ump.MT_MIDI2:
            return self._midi2(p)
        return None

    def _midi2(self, p: Packet) -> list[bytes] | None:
        ch = p.channel or 0
        kind = p.kind
        if kind in ("note_on", "note_off"):
            assert p.note is not None and p.velocity is not None
            vel = scale_down(p.velocity, 16, 7)
            if kind == "note_on":
                return [bytes((0x90 | ch, p.note, vel or 1))]
            return [bytes((0x80 | ch, p.note, vel))]
        if kind in ("poly_pressure", "control_change", "channel_pressure"):
            assert p.value is not None
            value = scale_down(p.value, 32, 7)
            if kind == "control_change":
                assert p.index is not None
                return [_cc(ch, p.index, value)]
            if kind == "channel_pressure" or self.mpe:
                return [bytes((0xD0 | ch, value))]
            assert p.note is not None
            return [bytes((0xA0 | ch, p.note, value))]
        if kind == "pitch_bend":
            assert p.value is not None
            return [_bend(ch, scale_down(p.value, 32, 14))]
        if kind in ("rpn", "nrpn"):
            assert p.value is not None and p.bank is not None and p.index is not None
            v14 = scale_down(p.value, 32, 14)
            msb, lsb = (101, 100) if kind == "rpn" else (99, 98)
            return [_cc(ch, msb, p.bank), _cc(ch, lsb, p.index), _cc(ch, 6, v14 >> 7),
                    _cc(ch, 38, v14 & 0x7F)]
        if kind == "program_change":
            assert p.program is not None
            out = []
            if p.bank_valid:
                assert p.bank_msb is not None and p.bank_lsb is not None
                out = [_cc(ch, 0, p.bank_msb), _cc(ch, 32, p.bank_lsb)]
            return [*out, bytes((0xC0 | ch, p.program))]
        if self.mpe and kind == "per_note_pitch_bend":
            assert p.value is not None
            return [_bend(ch, scale_down(p.value, 32, 14))]
        if self.mpe and kind.endswith("per_note_controller") and p.index == 74:
            assert p.value is not None
            return [_cc(ch, 74, scale_down(p.value, 32, 7))]
        return None  # relative controllers, per-note messages, per-note management


def _midi1_bytes(p: Packet) -> bytes:
    w = p.words[0]
    status, d1, d2 = (w >> 16) & 0xFF, (w >> 8) & 0x7F, w & 0x7F
    if p.status in (0xC, 0xD):
        return bytes((status, d1))
    return bytes((status, d1, d2))


def _system_data(p: Packet) -> tuple[int, ...]:
    if p.status == 0xF2:
        assert p.value is not None
        return (p.value & 0x7F, p.value >> 7)
    if p.status in (0xF1, 0xF3):
        assert p.value is not None
        return (p.value,)
    return ()


def ump_to_midi1(packet_or_words: Packet | Sequence[int], state: Translator | None = None, *,
                 group: int | None = None) -> list[bytes]:
    """Translate UMP to complete MIDI 1.0 messages (see ``Translator`` for the rules).

    Pass a ``Translator`` as ``state`` to keep SysEx reassembly and statistics across calls;
    ``group`` restricts output to one UMP group.
    """
    translator = state if state is not None else Translator()
    return [m for _, m in translator.translate(packet_or_words, group)]


# --------------------------------------------------------------------------------------------
# MIDI 1.0 bytes -> UMP

_DATA_BYTES = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}
_SYSTEM_COMMON_BYTES = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0}
_REALTIME = frozenset((0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF))


def _walk(data: bytes, stats: TranslateStats) -> list[bytes]:
    """Split a MIDI 1.0 byte string into complete messages, counting whatever is not one.

    Handles running status and real-time bytes interleaved anywhere (including inside SysEx).
    Stray data bytes, undefined status bytes (F4, F5, F9, FD), a SysEx cut off by another
    status byte and an incomplete final message are dropped and counted.
    """
    out: list[bytes] = []
    running = 0  # channel status in force for running status
    msg = bytearray()  # message being collected (status first)
    need = 0  # data bytes still missing for msg
    sysex: bytearray | None = None
    for b in data:
        if b in _REALTIME:
            out.append(bytes((b,)))
            continue
        if sysex is not None:
            if b < 0x80:
                sysex.append(b)
                continue
            if b == 0xF7:
                out.append(bytes(sysex) + b"\xf7")
                sysex = None
                continue
            stats.dropped["unterminated_sysex"] += 1
            sysex = None  # the new status byte is handled below
        if b >= 0x80:
            if need:
                stats.dropped["incomplete"] += 1
            msg, need = bytearray(), 0
            if b == 0xF0:
                sysex, running = bytearray(b"\xf0"), 0
            elif b in _SYSTEM_COMMON_BYTES:
                running = 0
                msg, need = bytearray((b,)), _SYSTEM_COMMON_BYTES[b]
            elif b >= 0xF0:  # F4, F5, F7 on its own, F9, FD
                stats.dropped["undefined_status"] += 1
                running = 0
            else:
                running = b
                msg, need = bytearray((b,)), _DATA_BYTES[b >> 4]
        else:
            if not need:
                if not running:
                    stats.dropped["stray_data"] += 1
                    continue
                msg, need = bytearray((running,)), _DATA_BYTES[running >> 4]
            msg.append(b)
            need -= 1
        if not need and msg:
            out.append(bytes(msg))
            msg = bytearray()
    if need or sysex is not None:
        stats.dropped["incomplete"] += 1
    return out


def _to_midi1_ump(msg: bytes, group: int) -> list[tuple[int, ...]]:
    status = msg[0]
    if status == 0xF0:
        return ump.sysex7_packets(msg[1:-1], group=group)
    if status >= 0xF0:
        return [ump.system(status, *msg[1:], group=group)]
    return [ump.midi1_channel_voice(status >> 4, status & 0xF, *msg[1:], group=group)]


class Midi1ToUmp:
    """Stateful MIDI 1.0 -> UMP translator (M2-104-UM Appendix D.3, Default Translation).

    With ``protocol=1`` every message maps one-to-one onto MT 0x2/0x1/0x3 packets.  With
    ``protocol=2`` channel voice messages become MIDI 2.0 (MT 0x4) with up-scaled values and:

    - note on with velocity 0 becomes a note off with velocity 0;
    - CC 99/98 and 101/100 (parameter number) and CC 6 (data entry MSB) are held per channel
      until CC 38 (data entry LSB) arrives, which emits one NRPN/RPN message with the 14-bit
      value up-scaled (zero-extended for RPN index 0-31).  A CC 38 with no CC 6 held, or with
      the null RPN 127/127 or no parameter selected, is dropped and counted.  A CC 6 never
      followed by CC 38 emits nothing, as the spec's holding rule implies;
    - CC 0/32 (bank select) are held and never sent alone; a program change carries the held
      bank with the bank-valid flag (a missing half is 0), or bank-valid 0 if none was seen;
    - CC 96/97 (increment/decrement) and all other CCs become MIDI 2.0 control changes.

    System messages and SysEx become MT 0x1 and MT 0x3 packets in both protocols.
    """

    def __init__(self, group: int = 0, *, protocol: int = 2,
                 stats: TranslateStats | None = None) -> None:
        if protocol not in (1, 2):
            raise ValueError(f"protocol {protocol} out of range 1..2")
        if not 0 <= group <= 15:
            raise ValueError(f"group {group} out of range 0..15")
        self.group = group
        self.protocol = protocol
        self.stats = stats if stats is not None else TranslateStats()
        self._param: dict[int, tuple[str, int | None, int | None]] = {}  # ch -> kind, msb, lsb
        self._data_msb: dict[int, int] = {}
        self._bank: dict[int, tuple[int | None, int | None]] = {}

    def reset(self) -> None:
        """Forget held parameter numbers, data entry and bank select values."""
        self._param.clear()
        self._data_msb.clear()
        self._bank.clear()

    def feed(self, data: bytes) -> list[tuple[int, ...]]:
        """Translate MIDI 1.0 bytes (complete messages only) to UMP packets."""
        out: list[tuple[int, ...]] = []
        for msg in _walk(bytes(data), self.stats):
            if self.protocol == 1 or msg[0] >= 0xF0:
                out += _to_midi1_ump(msg, self.group)
            else:
                out += self._midi2(msg)
        self.stats.messages += len(out)
        return out

    def _midi2(self, msg: bytes) -> list[tuple[int, ...]]:
        op, ch, g = msg[0] >> 4, msg[0] & 0xF, self.group
        if op == 0xB:
            return self._control_change(ch, msg[1], msg[2])
        if op == 0xC:
            msb, lsb = self._bank.get(ch, (None, None))
            bank = None if msb is None and lsb is None else (msb or 0, lsb or 0)
            return [ump.midi2_program_change(ch, msg[1], bank=bank, group=g)]
        return [_midi2_simple(msg, g)]

    def _control_change(self, ch: int, index: int, value: int) -> list[tuple[int, ...]]:
        g = self.group
        if index in (0, 32):
            msb, lsb = self._bank.get(ch, (None, None))
            self._bank[ch] = (value, lsb) if index == 0 else (msb, value)
            return []
        if index in (99, 98, 101, 100):
            kind = "nrpn" if index in (99, 98) else "rpn"
            old_kind, msb, lsb = self._param.get(ch, (kind, None, None))
            if old_kind != kind:
                msb = lsb = None
            if index in (99, 101):
                msb = value
            else:
                lsb = value
            self._param[ch] = (kind, msb, lsb)
            return []
        if index == 6:
            self._data_msb[ch] = value
            return []
        if index == 38:
            kind, msb, lsb = self._param.get(ch, ("rpn", None, None))
            data_msb = self._data_msb.get(ch)
            if data_msb is None or msb is None or lsb is None or (
                    kind == "rpn" and msb == 127 and lsb == 127):
                self.stats.dropped["data_entry_without_parameter"] += 1
                return []
            v14 = (data_msb << 7) | value
            if kind == "rpn":
                return [ump.midi2_rpn(ch, msb, lsb, _rpn_up(lsb, v14), group=g)]
            return [ump.midi2_nrpn(ch, msb, lsb, scale_up(v14, 14, 32), group=g)]
        return [ump.midi2_control_change(ch, index, scale_up(value, 7, 32), group=g)]


def _midi2_simple(msg: bytes, group: int) -> tuple[int, ...]:
    """One MIDI 1.0 channel voice message as MIDI 2.0, without any held state."""
    op, ch = msg[0] >> 4, msg[0] & 0xF
    if op == 0x9 and msg[2] == 0:
        return ump.midi2_note_off(ch, msg[1], 0, group=group)
    if op in (0x8, 0x9):
        note = ump.midi2_note_on if op == 0x9 else ump.midi2_note_off
        return note(ch, msg[1], scale_up(msg[2], 7, 16), group=group)
    if op == 0xA:
        return ump.midi2_poly_pressure(ch, msg[1], scale_up(msg[2], 7, 32), group=group)
    if op == 0xB:
        return ump.midi2_control_change(ch, msg[1], scale_up(msg[2], 7, 32), group=group)
    if op == 0xC:
        return ump.midi2_program_change(ch, msg[1], group=group)
    if op == 0xD:
        return ump.midi2_channel_pressure(ch, scale_up(msg[1], 7, 32), group=group)
    return ump.midi2_pitch_bend(ch, scale_up(msg[1] | (msg[2] << 7), 14, 32), group=group)


def midi1_to_ump(data: bytes, group: int = 0, *, protocol: int = 1,
                 stats: TranslateStats | None = None) -> list[tuple[int, ...]]:
    """Translate MIDI 1.0 bytes (complete messages only) to UMP packets, without held state.

    ``protocol=1`` gives MT 0x2 channel voice, MT 0x1 system and MT 0x3 SysEx7 packets.
    ``protocol=2`` gives MT 0x4 MIDI 2.0 channel voice with up-scaled values, message by
    message: every CC (including 0/32/6/38/98-101) becomes a MIDI 2.0 control change and
    program change has no bank.  Use ``Midi1ToUmp`` for the spec's RPN and bank handling.
    """
    if protocol not in (1, 2):
        raise ValueError(f"protocol {protocol} out of range 1..2")
    if not 0 <= group <= 15:
        raise ValueError(f"group {group} out of range 0..15")
    stats = stats if stats is not None else TranslateStats()
    out: list[tuple[int, ...]] = []
    for msg in _walk(bytes(data), stats):
        if protocol == 1 or msg[0] >= 0xF0:
            out += _to_midi1_ump(msg, group)
        else:
            out.append(_midi2_simple(msg, group))
    stats.messages += len(out)
    return out
