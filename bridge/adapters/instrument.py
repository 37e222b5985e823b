"""Wiring shared by every instrument device: Device + MidiStream + live input + renderer.

An *instrument* is anything with ``sample_rate``, ``render(out, events)``,
``all_notes_off()`` and ``reset()``: the built-in sine synth, or a chain of plugins. This
module gives it the device's merged MIDI stream, one ``take`` per block, keeps its sample
rate in step with the handshake, resets it when a new host claims the device (so the new
host hears nothing of the previous session, protocol.md §8.2), and ends its notes when the
claiming host dies. The host's return audio is
mixed in after rendering, or, for an instrument with ``takes_input = True`` (an effect
chain), handed to ``render(out, events, return_audio)`` as its input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..midi.event import MidiEvent
from ..midi.parser import DEFAULT_SYSEX_LIMIT
from ..midi.stream import MidiStream
from ..transport.device import Device

# Blocks between two reads of a plugin chain's latency (§12 of protocol.md: the header's
# latency_frames) and of its count of silenced NaN blocks (the registry's nonfinite_blocks):
# often enough to follow a plugin that changes them, rare enough to cost nothing per block.
LATENCY_POLL_BLOCKS = 64


class Instrument(Protocol):
    sample_rate: int

    def render(self, out: np.ndarray, events: list[MidiEvent]) -> None: ...

    def all_notes_off(self) -> None: ...

    def reset(self) -> None: ...


class InstrumentDevice:
    """The render function of an instrument device, for a DeviceRunner.

    Owns the device's :class:`MidiStream` (registered as its command handler) and, with
    ``midi_in`` patterns, a :class:`~bridge.adapters.rtmidi_in.LiveMidiInputs` feeding it.
    ``on_events`` (optional) sees each block's events, with the block number: the MIDI
    monitor uses it.
    """

    def __init__(self, device: Device, instrument: Instrument | None, *,
                 midi_in: list[str] | None = None, sysex_limit: int = DEFAULT_SYSEX_LIMIT,
                 on_events: Callable[[int, list[MidiEvent]], None] | None = None,
                 on_port_event: Callable[[str, str], None] | None = None) -> None:
        self.device = device
        self.instrument = instrument
        # an effect chain takes the return audio as its input instead of having it mixed in
        self._takes_input = bool(getattr(instrument, "takes_input", False))
        self.stream = MidiStream(device.sample_rate, sysex_limit=sysex_limit,
                                 report=device.report_error)
        self.on_events = on_events
        self.blocks = 0
        self.stream.attach(device, on_claim=self._on_claim)
        device.on_host_lost(self._on_host_lost)
        self._return = np.zeros((device.return_channels, device.block_size), np.float32)
        self._latency = -1  # the processing latency last published in the header
        # An instrument with latency() (a plugin chain) is polled every LATENCY_POLL_BLOCKS.
        self._latency_of = getattr(instrument, "latency", None)
        self._nonfinite = 0  # the silenced-block count last published in the registry
        self.live = None
        if midi_in:
            from .rtmidi_in import LiveMidiInputs

            self.live = LiveMidiInputs(midi_in, self.stream, report=on_port_event).start()

    def _on_claim(self, _device: Device) -> None:
        if self.instrument is not None:
            self.instrument.reset()  # a new host starts in silence, with no tails

    def _on_host_lost(self, _device: Device) -> None:
        if self.instrument is not None:
            self.instrument.all_notes_off()  # no note a killed host left on sounds on

    def __call__(self, block: np.ndarray) -> None:
        """Render one block: this block's MIDI, the instrument, then the return audio."""
        device = self.device
        rate = device.sample_rate
        if self.stream.sample_rate != rate:  # the handshake changed the rate
            self.stream.sample_rate = rate
        events = self.stream.take(block.shape[1])
        if self.on_events is not None and events:
            self.on_events(self.blocks, events)
        self.blocks += 1
        ret = None
        if device.return_channels:
            if self._return.shape[1] != block.shape[1]:  # only after a handshake's new size
                self._return = np.zeros((device.return_channels, block.shape[1]), np.float32)
            device.receive_return_audio(self._return)
            ret = self._return
        instrument = self.instrument
        if instrument is None:
            block.fill(0.0)
            return
        if self.blocks % LATENCY_POLL_BLOCKS == 1 and self._latency_of is not None:
            latency = self._latency_of()  # a plugin may report another latency at any time
            if latency != self._latency:  # hosts read it for the latency they report (§12)
                self._latency = latency
                device.set_latency_frames(latency)
        if self.blocks % LATENCY_POLL_BLOCKS == 1:  # NaN blocks a plugin chain silenced
            nonfinite = getattr(instrument, "nonfinite_blocks", 0)
            if nonfinite != self._nonfinite:
                self._nonfinite = nonfinite
                device.set_nonfinite_blocks(nonfinite)
        if instrument.sample_rate != rate:
            instrument.sample_rate = rate
        if self._takes_input:
            instrument.render(block, events, ret)
            return
        instrument.render(block, events)
        if ret is not None:
            block += ret  # the sine synth mixes the host's return audio in

    def close(self) -> None:
        if self.live is not None:
            self.live.close()
            self.live = None
