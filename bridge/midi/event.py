"""The bridge's one timed MIDI event: a sample offset within a block plus one message.

A :class:`MidiEvent` carries either one complete MIDI 1.0 message (``data``) or one
Universal MIDI Packet (``words``). Inside a device everything is MIDI 1.0 by the time it
reaches an instrument (plugins take MIDI 1.0 through pedalboard); UMP events exist at the
edges, for hosts that speak MIDI 2.0. Conversion to and from ``mido.Message`` is here too.
"""

from __future__ import annotations

from typing import NamedTuple

import mido

# Data bytes that follow each status: one table for every MIDI 1.0 parser in the bridge.
# Channel voice by high nibble; system common by status; None = undefined status.
CHANNEL_DATA_BYTES = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
SYSTEM_DATA_BYTES: dict[int, int | None] = {
    0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF4: None, 0xF5: None, 0xF6: 0,
    0xF8: 0, 0xF9: None, 0xFA: 0, 0xFB: 0, 0xFC: 0, 0xFD: None, 0xFE: 0, 0xFF: 0,
}
SYSEX_START, SYSEX_END = 0xF0, 0xF7


def message_length(status: int) -> int | None:
    """Total length in bytes of a message with this status (None: undefined or SysEx)."""
    if 0x80 <= status < 0xF0:
        return 1 + CHANNEL_DATA_BYTES[status & 0xF0]
    n = SYSTEM_DATA_BYTES.get(status)
    return None if n is None else 1 + n


class MidiEvent(NamedTuple):
    """One timed event: ``offset`` frames into its block, then MIDI 1.0 bytes or UMP words."""

    offset: int
    data: bytes = b""
    words: tuple[int, ...] = ()

    @property
    def is_ump(self) -> bool:
        return bool(self.words)

    @property
    def status(self) -> int:
        """The MIDI 1.0 status byte (0 for a UMP event)."""
        return self.data[0] if self.data else 0

    @property
    def channel(self) -> int:
        """Channel 0..15 of a channel-voice message, else -1."""
        s = self.status
        return s & 0x0F if 0x80 <= s < 0xF0 else -1

    def to_mido(self) -> mido.Message:
        """The event as a ``mido.Message`` (its ``time`` is the sample offset)."""
        if self.words:
            raise ValueError("a UMP event has no mido form; translate it to MIDI 1.0 first "
                             "(bridge.midi.translate)")
        return mido.Message.from_bytes(list(self.data), time=self.offset)

    def __repr__(self) -> str:
        body = (" ".join(f"{w:08X}" for w in self.words) if self.words
                else " ".join(f"{b:02X}" for b in self.data))
        return f"MidiEvent(@{self.offset}: {body})"


def from_mido(message: mido.Message, offset: int = 0) -> MidiEvent:
    """A MIDI 1.0 event from a ``mido.Message`` (meta messages have no bytes: refused)."""
    if getattr(message, "is_meta", False):
        raise ValueError(f"{message.type} is a MIDI file meta message, not MIDI bytes")
    if offset < 0:
        raise ValueError(f"sample offset {offset} is negative")
    return MidiEvent(offset, bytes(message.bytes()))


def parse_mido_text(text: str) -> mido.Message:
    """mido's message text format (``note_on channel=0 note=60 velocity=100``), with errors
    that name the bad text."""
    try:
        return mido.Message.from_str(text)
    except (ValueError, TypeError, LookupError) as exc:
        raise ValueError(f"{text!r} is not a MIDI message in mido's text format "
                         f"(e.g. 'note_on channel=0 note=60 velocity=100'): {exc}") from None
