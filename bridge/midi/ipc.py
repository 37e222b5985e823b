"""MIDI events as discoLink IPC commands (the host side; a device decodes them in
:mod:`bridge.midi.stream`).

Each MIDI 1.0 message goes out as the most specific command in the table: NoteOn, NoteOff,
ControlChange, PitchBend (14-bit), ProgramChange, Aftertouch (channel or poly), SysEx
(fragmented when longer than one payload). System common and real-time messages go as
MidiRaw. A UMP event goes as one UMP command. Every message carries the event's sample
offset.
"""

from __future__ import annotations

from ..transport import commands as cmd
from ..transport.message import Message
from .event import SYSEX_START, MidiEvent, message_length


def encode(event: MidiEvent) -> list[Message]:
    """The command(s) that carry ``event``; ValueError names what is wrong with it."""
    offset = event.offset
    if offset < 0 or offset > 0xFFFFFFFF:
        raise ValueError(f"sample offset {offset} out of range 0..2^32-1")
    if event.words:
        return cmd.ump(list(event.words), offset)
    data = event.data
    if not data:
        raise ValueError("empty MIDI event")
    status = data[0]
    if status == SYSEX_START:
        return cmd.sysex(data, offset)
    if status < 0x80:
        raise ValueError(f"MIDI message must start with a status byte, got 0x{status:02X}")
    expected = message_length(status)
    if expected is None:
        raise ValueError(f"undefined MIDI status 0x{status:02X}")
    if len(data) != expected or any(b >= 0x80 for b in data[1:]):
        raise ValueError(f"MIDI message {data.hex(' ')} is malformed: status 0x{status:02X} "
                         f"takes {expected - 1} data bytes below 0x80")
    if status >= 0xF0:
        return [cmd.midi_raw(data, offset)]
    kind, channel = status & 0xF0, status & 0x0F
    if kind == 0x90:
        return [cmd.midi_note_on(channel, data[1], data[2], offset)]
    if kind == 0x80:
        return [cmd.midi_note_off(channel, data[1], data[2], offset)]
    if kind == 0xB0:
        return [cmd.midi_cc(channel, data[1], data[2], offset)]
    if kind == 0xE0:
        return [cmd.midi_pitch_bend(channel, data[1] | (data[2] << 7), offset)]
    if kind == 0xC0:
        return [cmd.midi_program_change(channel, data[1], offset)]
    if kind == 0xD0:
        return [cmd.midi_aftertouch(channel, data[1], None, offset)]
    return [cmd.midi_aftertouch(channel, data[2], data[1], offset)]  # 0xA0 poly pressure


def encode_all(events: list[MidiEvent]) -> list[Message]:
    """Every event's commands, in order."""
    out: list[Message] = []
    for e in events:
        out.extend(encode(e))
    return out
