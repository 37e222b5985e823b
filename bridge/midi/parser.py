"""A MIDI 1.0 byte-stream parser that survives anything a cable or a peer can send.

It follows the MIDI 1.0 specification's stream rules: running status (channel messages may
omit a repeated status byte), real-time bytes (F8..FF) that may appear anywhere, even inside
another message or a SysEx, and system common messages that cancel running status.
Damage is skipped and counted, never raised: stray data bytes, a message cut short by a new
status byte or by the end of a chunk, a SysEx that ends without F7, a SysEx longer than the
configured limit, and undefined status bytes (F4, F5, F9, FD).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from .event import CHANNEL_DATA_BYTES, SYSEX_END, SYSEX_START, SYSTEM_DATA_BYTES

DEFAULT_SYSEX_LIMIT = 65536  # bytes, F0 and F7 included


@dataclass
class ParseStats:
    """What the parser has seen, by kind. Every counter but ``messages`` is damage."""

    messages: int = 0  # complete messages delivered
    running_status: int = 0  # messages that used running status (legal, counted for insight)
    stray_data: int = 0  # data bytes with no status to belong to
    truncated: int = 0  # messages cut short (by a status byte or the end of a chunk)
    unterminated_sysex: int = 0  # SysEx ended by something other than F7
    sysex_overflow: int = 0  # SysEx longer than the limit (dropped whole)
    undefined: int = 0  # undefined status bytes F4 F5 F9 FD, and F7 without F0

    @property
    def damaged(self) -> int:
        return (self.stray_data + self.truncated + self.unterminated_sysex
                + self.sysex_overflow + self.undefined)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class MidiParser:
    """Stateful MIDI 1.0 parser: bytes in, complete messages (``bytes``) out.

    ``feed(chunk, out)`` appends every complete message to ``out``. With ``final=True``
    (the default) the chunk is a unit of its own, as an IPC MidiRaw payload is: a message
    still incomplete at its end is counted as truncated and dropped, while running status
    carries over to the next chunk as it would on a cable. ``last_error`` describes the
    most recent damage, and ``on_damage`` (optional) hears each one, for the debug monitor.
    """

    __slots__ = ("_expected", "_msg", "_running", "_sysex", "_sysex_dropping", "last_error",
                 "on_damage", "stats", "sysex_limit")

    def __init__(self, sysex_limit: int = DEFAULT_SYSEX_LIMIT,
                 on_damage: Callable[[str], None] | None = None) -> None:
        if sysex_limit < 2:
            raise ValueError(f"sysex_limit {sysex_limit} must be at least 2 bytes (F0 F7)")
        self.sysex_limit = sysex_limit
        self.stats = ParseStats()
        self.last_error = ""
        self.on_damage = on_damage  # hears each piece of damage, described
        self._running = 0  # running status byte, 0 = none
        self._msg = bytearray()  # message being assembled (status first)
        self._expected = 0  # data bytes still wanted by _msg
        self._sysex: bytearray | None = None
        self._sysex_dropping = False

    def reset(self) -> None:
        """Forget any partial message and the running status (counters are kept)."""
        self._running = 0
        self._msg.clear()
        self._expected = 0
        self._sysex = None
        self._sysex_dropping = False

    def _damage(self, counter: str, text: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self.last_error = text
        if self.on_damage is not None:
            self.on_damage(text)

    def _deliver(self, out: list[bytes], message: bytes) -> None:
        self.stats.messages += 1
        out.append(message)

    def _end_sysex(self, why: str) -> None:
        """A status byte other than F7 or real-time arrived inside a SysEx."""
        if self._sysex_dropping:
            self._sysex_dropping = False
        elif self._sysex is not None:
            self._damage("unterminated_sysex",
                         f"SysEx of {len(self._sysex)} bytes ended by {why} without F7; dropped")
        self._sysex = None

    def feed(self, data: bytes | bytearray | memoryview, out: list[bytes], *,
             final: bool = True) -> int:
        """Parse ``data``; append complete messages to ``out``. Returns how many were added."""
        before = len(out)
        data = bytes(data)
        if (not self._expected and self._sysex is None and not self._sysex_dropping
                and _all_three_byte_channel_messages(data)):
            # The common dense case, checked and split at C speed: whole 3-byte channel
            # messages, each with its own status byte.
            out.extend([data[i:i + 3] for i in range(0, len(data), 3)])
            self.stats.messages += len(data) // 3
            self._running = data[-3]
            return len(out) - before
        for b in data:
            if b >= 0xF8:  # real time: a message of its own, anywhere, changes no state
                if SYSTEM_DATA_BYTES[b] is None:
                    self._damage("undefined", f"undefined real-time status 0x{b:02X} skipped")
                else:
                    self._deliver(out, bytes((b,)))
                continue
            if self._sysex is not None or self._sysex_dropping:
                if b < 0x80:
                    if self._sysex is not None:
                        self._sysex.append(b)
                        if len(self._sysex) + 1 > self.sysex_limit:
                            self._damage("sysex_overflow", f"SysEx longer than the limit of "
                                         f"{self.sysex_limit} bytes; dropped")
                            self._sysex = None
                            self._sysex_dropping = True
                    continue
                if b == SYSEX_END:
                    if self._sysex is not None:
                        self._sysex.append(b)
                        self._deliver(out, bytes(self._sysex))
                    self._sysex = None
                    self._sysex_dropping = False
                    continue
                self._end_sysex(f"status 0x{b:02X}")
                # fall through: b starts a new message
            if b >= 0x80:
                if self._expected:
                    self._damage("truncated", f"message {bytes(self._msg).hex(' ')} cut short "
                                 f"by status 0x{b:02X}; dropped")
                    self._msg.clear()
                    self._expected = 0
                if b == SYSEX_START:
                    self._running = 0
                    self._sysex = bytearray((b,))
                    continue
                if b < 0xF0:
                    self._running = b
                    self._msg[:] = (b,)
                    self._expected = CHANNEL_DATA_BYTES[b & 0xF0]
                    continue
                # system common: cancels running status
                self._running = 0
                n = SYSTEM_DATA_BYTES.get(b)
                if n is None:
                    what = "F7 without a SysEx" if b == SYSEX_END else f"status 0x{b:02X}"
                    self._damage("undefined", f"undefined {what} skipped")
                elif n == 0:
                    self._deliver(out, bytes((b,)))
                else:
                    self._msg[:] = (b,)
                    self._expected = n
                continue
            # a data byte
            if not self._expected:
                if self._running:
                    self._msg[:] = (self._running,)
                    self._expected = CHANNEL_DATA_BYTES[self._running & 0xF0]
                    self.stats.running_status += 1
                else:
                    self._damage("stray_data", f"data byte 0x{b:02X} with no status; skipped")
                    continue
            self._msg.append(b)
            self._expected -= 1
            if not self._expected:
                self._deliver(out, bytes(self._msg))
                self._msg.clear()
        if final:
            self.end_chunk()
        return len(out) - before

    def end_chunk(self) -> None:
        """The chunk is over: drop (and count) a message or SysEx still incomplete."""
        if self._expected:
            self._damage("truncated", f"message {bytes(self._msg).hex(' ')} truncated at the "
                         "end of its chunk; dropped")
            self._msg.clear()
            self._expected = 0
        if self._sysex is not None:
            self._damage("unterminated_sysex", f"SysEx of {len(self._sysex)} bytes has no F7 "
                         "at the end of its chunk; dropped")
            self._sysex = None
        self._sysex_dropping = False


_THREE_BYTE_STATUSES = bytes(s for s in range(0x80, 0xF0) if s & 0xF0 not in (0xC0, 0xD0))


def _all_three_byte_channel_messages(data: bytes) -> bool:
    return (len(data) % 3 == 0 and len(data) > 0
            and not data[0::3].translate(None, _THREE_BYTE_STATUSES)
            and max(data[1::3]) < 0x80 and max(data[2::3]) < 0x80)


def parse(data: bytes | bytearray | memoryview,
          sysex_limit: int = DEFAULT_SYSEX_LIMIT) -> tuple[list[bytes], ParseStats]:
    """Parse one self-contained chunk: its messages and what was wrong with it."""
    parser = MidiParser(sysex_limit)
    out: list[bytes] = []
    parser.feed(data, out)
    return out, parser.stats
