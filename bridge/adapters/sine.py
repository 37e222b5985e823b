"""The built-in polyphonic sine synth: the instrument behind ``discolink-bridge device``.

Deterministic, so tests can predict every sample:

- note ``n`` on channel ``c`` sounds at ``440 * 2**((n - 69 + b) / 12)`` Hz, where
  ``b = (bend_c - 8192) / 8192 * range_c`` semitones from that channel's 14-bit pitch bend,
  plus the zone manager channel's bend on an MPE member channel (MPE's rule). ``range_c``
  is 2 semitones, or 48 on MPE member channels, or whatever RPN 0 set;
- its amplitude is ``0.25 * velocity / 127``, from phase 0 on the exact sample given by the
  event's sample offset; a pitch bend changes the frequency on its own sample with the
  phase continuous;
- note off (or note on with velocity 0) fades the voice out linearly over 5 ms;
- CC 120 (all sound off) and CC 123 (all notes off) silence the channel, CC 121 resets its
  bend. Every output channel carries the same mix.

So each MIDI channel's pitch is audible on its own, which is what the MPE tests listen for.
"""

from __future__ import annotations

import math

import numpy as np

from ..midi.event import MidiEvent
from ..midi.mpe import MpeZoneTracker

RELEASE_S = 0.005
MAX_VOICES = 32


def note_frequency(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


class _Voice:
    __slots__ = ("amp", "base_hz", "channel", "inc", "note", "phase", "release_left")

    def __init__(self) -> None:
        self.note = self.channel = -1
        self.phase = self.inc = self.amp = self.base_hz = 0.0
        self.release_left = -1  # -1: sustaining; >= 0: samples of release left


class SineSynth:
    """Polyphonic, multi-channel sine synth with sample-accurate MIDI 1.0 events."""

    def __init__(self, sample_rate: int, max_block: int = 8192) -> None:
        self.sample_rate = sample_rate
        self.voices = [_Voice() for _ in range(MAX_VOICES)]
        self.bend = [8192] * 16
        self.mpe = MpeZoneTracker()
        self._ramp = np.arange(max_block, dtype=np.float64)
        self._tmp = np.empty(max_block, dtype=np.float64)
        self._env = np.empty(max_block, dtype=np.float64)
        self._mix = np.zeros(max_block, dtype=np.float64)

    def all_notes_off(self) -> None:
        """Silence at once and forget every bend (a new host starts from a clean state)."""
        for v in self.voices:
            v.note = -1
        self.bend = [8192] * 16
        self.mpe = MpeZoneTracker()

    reset = all_notes_off  # nothing else to clear: the synth has no tails

    # -- audio --------------------------------------------------------------------------
    def render(self, out: np.ndarray, events: list[MidiEvent] | tuple = ()) -> None:
        """Fill ``out`` (channels, frames) with the next block; ``events`` are in offset
        order and apply on their own sample (offsets past the block: its last frame)."""
        frames = out.shape[1]
        mix = self._mix[:frames]
        mix.fill(0.0)
        pos = 0
        for event in events:
            at = min(max(event.offset, 0), frames - 1)
            if at > pos:
                self._render_span(mix, pos, at)
                pos = at
            if event.data:
                self._apply(event.data)
        if pos < frames:
            self._render_span(mix, pos, frames)
        out[:] = mix  # broadcast to every channel, converting to float32

    def _apply(self, data: bytes) -> None:
        status = data[0]
        if status >= 0xF0 or len(data) < 2:
            return
        kind, channel = status & 0xF0, status & 0x0F
        if kind == 0xB0:  # only control changes (RPN, MCM) can change MPE state
            self.mpe.feed(data)
        if kind == 0x90 and len(data) == 3 and data[2] > 0:
            self._note_on(channel, data[1], data[2])
        elif kind == 0x80 or kind == 0x90:
            self._note_off(channel, data[1])
        elif kind == 0xE0 and len(data) == 3:
            self.bend[channel] = data[1] | (data[2] << 7)
            self._retune(channel)
        elif kind == 0xB0 and len(data) == 3:
            controller = data[1]
            if controller in (120, 123):
                for v in self.voices:
                    if v.channel == channel:
                        v.note = -1
            elif controller == 121:
                self.bend[channel] = 8192
                self._retune(channel)
            elif controller in (6, 38):  # data entry may have changed a bend range (RPN 0)
                self._retune(-1)

    def _semitones(self, channel: int) -> float:
        mpe = self.mpe
        b = (self.bend[channel] - 8192) / 8192.0 * mpe.bend_range(channel)
        zone = mpe.zone_of(channel)
        if zone is not None and mpe.is_member(channel):
            manager = zone.manager_channel
            b += (self.bend[manager] - 8192) / 8192.0 * mpe.bend_range(manager)
        return b

    def _retune(self, channel: int) -> None:
        """Channel ``channel``'s bend changed (-1: any channel's range, or a manager's)."""
        for v in self.voices:
            if v.note >= 0 and (channel < 0 or v.channel == channel
                                or self.mpe.is_manager(channel)):
                v.inc = self._inc(v.base_hz, v.channel)

    def _inc(self, base_hz: float, channel: int) -> float:
        return 2.0 * math.pi * base_hz * 2.0 ** (self._semitones(channel) / 12.0) \
            / self.sample_rate

    def _note_on(self, channel: int, note: int, velocity: int) -> None:
        voices = self.voices
        v = next((v for v in voices if v.note == -1), None)
        if v is None:  # steal the quietest (releasing first) voice
            v = min(voices, key=lambda x: (x.release_left < 0, x.release_left))
        v.note, v.channel = note, channel
        v.phase = 0.0
        v.base_hz = note_frequency(note)
        v.inc = self._inc(v.base_hz, channel)
        v.amp = 0.25 * velocity / 127.0
        v.release_left = -1

    def _note_off(self, channel: int, note: int) -> None:
        release = max(1, int(RELEASE_S * self.sample_rate))
        for v in self.voices:
            if v.note == note and v.channel == channel and v.release_left < 0:
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
