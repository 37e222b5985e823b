"""The built-in polyphonic sine synth: the device behind ``discolink-bridge device``.

Deterministic, so tests can predict it: note ``n`` sounds at ``440 * 2**((n - 69) / 12)`` Hz,
with amplitude ``0.25 * velocity / 127``, starting at phase 0 on the exact sample given by
the command's ``sample_offset``. Note off (or note on with velocity 0) fades the voice out
linearly over 5 ms. Every output channel carries the same signal. CC 120/123 silence all.
"""

from __future__ import annotations

import math

import numpy as np

from ..transport import commands as cmd
from ..transport.device import Device
from ..transport.message import Message

RELEASE_S = 0.005
MAX_VOICES = 32
MAX_EVENTS = 1024


def note_frequency(note: int) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


class _Voice:
    __slots__ = ("amp", "inc", "note", "phase", "release_left")

    def __init__(self) -> None:
        self.note = -1
        self.phase = self.inc = self.amp = 0.0
        self.release_left = -1  # -1: sustaining; >= 0: samples of release left


class SineSynth:
    """Polyphonic sine synth with sample-accurate note events."""

    def __init__(self, sample_rate: int, max_block: int = 8192) -> None:
        self.sample_rate = sample_rate
        self.voices = [_Voice() for _ in range(MAX_VOICES)]
        self._events: list[tuple[int, int, int, int]] = []  # (offset, order, note, velocity)
        self._order = 0
        self._ramp = np.arange(max_block, dtype=np.float64)
        self._tmp = np.empty(max_block, dtype=np.float64)
        self._env = np.empty(max_block, dtype=np.float64)
        self._mix = np.zeros(max_block, dtype=np.float64)

    # -- MIDI ---------------------------------------------------------------------------
    def note_on(self, note: int, velocity: int, offset: int = 0) -> None:
        if len(self._events) < MAX_EVENTS:
            self._order += 1
            self._events.append((offset, self._order, note, velocity))

    def note_off(self, note: int, offset: int = 0) -> None:
        self.note_on(note, 0, offset)

    def all_notes_off(self) -> None:
        self._events.clear()
        for v in self.voices:
            v.note = -1

    def handle(self, msg: Message, device: Device) -> bool:
        """Command handler: take MIDI note messages, leave everything else to the device."""
        t = msg.type
        if t == cmd.T.NoteOn or t == cmd.T.NoteOff:
            f = cmd.decode(msg)
            self.note_on(f["note"] & 0x7F, f["velocity"] & 0x7F if t == cmd.T.NoteOn else 0,
                         msg.sample_offset)
            return True
        if t == cmd.T.ControlChange:
            f = cmd.decode(msg)
            if f["controller"] in (120, 123):
                self.all_notes_off()
            return True
        if t == cmd.T.MidiRaw:
            self._raw(bytes(msg.payload), msg.sample_offset)
            return True
        return False

    def _raw(self, data: bytes, offset: int) -> None:
        """Note on/off out of raw MIDI bytes; other messages are skipped (full parsing: issue 3)."""
        i, n = 0, len(data)
        while i < n:
            kind = data[i] & 0xF0
            if kind in (0x80, 0x90) and i + 2 < n:
                note, velocity = data[i + 1] & 0x7F, data[i + 2] & 0x7F
                self.note_on(note, velocity if kind == 0x90 else 0, offset)
                i += 3
            else:
                i += 1

    # -- audio --------------------------------------------------------------------------
    def render(self, out: np.ndarray) -> None:
        """Fill ``out`` (channels, frames) with the next block; events apply at their offsets."""
        frames = out.shape[1]
        mix = self._mix[:frames]
        mix.fill(0.0)
        events = self._events
        if events:
            events.sort()
        pos = 0
        k = 0
        while pos < frames:
            end = frames
            while k < len(events) and min(events[k][0], frames - 1) <= pos:
                _, _, note, velocity = events[k]
                self._apply(note, velocity)
                k += 1
            if k < len(events):
                end = max(pos + 1, min(events[k][0], frames))
            self._render_span(mix, pos, end)
            pos = end
        # Events with an offset past the block were applied at its last frame; drop them all.
        events.clear()
        out[:] = mix  # broadcast to every channel, converting to float32

    def _apply(self, note: int, velocity: int) -> None:
        voices = self.voices
        if velocity > 0:
            v = next((v for v in voices if v.note == -1), None)
            if v is None:  # steal the quietest (releasing first) voice
                v = min(voices, key=lambda x: (x.release_left < 0, x.release_left))
            v.note = note
            v.phase = 0.0
            v.inc = 2.0 * math.pi * note_frequency(note) / self.sample_rate
            v.amp = 0.25 * velocity / 127.0
            v.release_left = -1
        else:
            release = max(1, int(RELEASE_S * self.sample_rate))
            for v in voices:
                if v.note == note and v.release_left < 0:
                    v.release_left = release

    def _render_span(self, mix: np.ndarray, start: int, end: int) -> None:
        n = end - start
        ramp, tmp, env = self._ramp[:n], self._tmp[:n], self._env[:n]
        release_len = max(1, int(RELEASE_S * self.sample_rate))
        for v in self.voices:
            if v.note < 0:
                continue
            np.multiply(ramp, v.inc, out=tmp)
            tmp += v.phase
            np.sin(tmp, out=tmp)
            if v.release_left >= 0:
                # linear fade: gain = release_left / release_len, falling one step per sample
                np.subtract(v.release_left, ramp, out=env)
                np.clip(env, 0.0, None, out=env)
                env *= v.amp / release_len
                tmp *= env
                v.release_left = max(0, v.release_left - n)
                if v.release_left == 0:
                    v.note = -1
            else:
                tmp *= v.amp
            mix[start:end] += tmp
            v.phase = math.fmod(v.phase + v.inc * n, 2.0 * math.pi)
