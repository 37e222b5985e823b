"""Sample accuracy and MPE, heard in the audio of a device in its own process.

The device is ``discolink-bridge device`` (the built-in sine synth, whose output formula is
in bridge/adapters/sine.py); the host is this test process.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers_ipc import read_blocks, wait_until

from bridge.adapters.session import detect_onset
from bridge.adapters.sine import note_frequency
from bridge.midi import ipc, mpe
from bridge.midi.event import MidiEvent
from bridge.transport import Host

RATE = 48000


def send(host: Host, *events: MidiEvent) -> None:
    for m in ipc.encode_all(list(events)):
        assert host.send_command(m)


@pytest.mark.parametrize("block", [64, 256, 1024])
def test_a_note_starts_on_the_sample_offset_it_was_sent_for(spawn, block):
    dev = spawn.device("--channels", "1", "--blocksize", str(block), "--fixed-format",
                       device_id=f"Timing{block}")
    with Host() as host:
        host.connect(dev.id)
        for offset in sorted({0, 1, block // 3, block // 2, block - 2}):
            send(host, MidiEvent(0, b"\xb0\x78\x00"))  # all sound off: start from silence
            read_blocks(host, 4, block)
            send(host, MidiEvent(offset, b"\x90\x45\x64"))
            rec = read_blocks(host, 6, block)[0]
            onset = detect_onset(rec, 0, 1e-6)
            assert onset is not None, f"no note for offset {offset}"
            # sin(0) = 0 on the onset sample itself, so the first audible sample is k or k+1
            assert onset % block in (offset, offset + 1), \
                f"block {block}: note for offset {offset} began at {onset % block}"
            send(host, MidiEvent(0, b"\x80\x45\x00"))


def spectrum_peaks(x: np.ndarray, count: int) -> list[float]:
    """The ``count`` strongest spectral peaks in Hz (Hann window, zero-padded, interpolated)."""
    n = len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(n), 8 * n))
    freqs = np.fft.rfftfreq(8 * n, 1 / RATE)
    is_peak = (spec[1:-1] > spec[:-2]) & (spec[1:-1] >= spec[2:])
    idx = np.nonzero(is_peak)[0] + 1
    best = idx[np.argsort(spec[idx])[::-1][:count]]
    return sorted(float(freqs[i]) for i in best)


def test_mpe_three_notes_bend_on_their_own_channels(spawn):
    block = 256
    dev = spawn.device("--channels", "1", "--blocksize", str(block), "--fixed-format",
                       device_id="Mpe")
    sender = mpe.MpeSender("lower", 15)
    notes = {60: 1.0, 64: -1.0, 67: 0.5}  # note -> initial bend in semitones
    with Host() as host:
        host.connect(dev.id)
        send(host, *(MidiEvent(0, m) for m in sender.configure()))
        ids, channels = {}, set()
        for note, bend in notes.items():
            note_id, messages = sender.note_on(note, 100, bend=bend)
            ids[note] = note_id
            channels.add(messages[-1][0] & 0x0F)
            send(host, *(MidiEvent(0, m) for m in messages))
        assert len(channels) == 3 and 0 not in channels  # three member channels
        read_blocks(host, 8, block)  # let the onsets pass
        before = spectrum_peaks(read_blocks(host, 94, block)[0], 3)
        expected = [note_frequency(n + b) for n, b in notes.items()]
        assert before == pytest.approx(expected, abs=1.0)

        send(host, *(MidiEvent(0, m) for m in sender.bend(ids[64], 2.0)))
        read_blocks(host, 4, block)
        after = spectrum_peaks(read_blocks(host, 94, block)[0], 3)
        moved = [note_frequency(60 + 1.0), note_frequency(66), note_frequency(67.5)]
        assert after == pytest.approx(sorted(moved), abs=1.0)
        # the other two notes did not move at all
        assert after[0] == pytest.approx(before[0], abs=0.5)
        assert after[2] == pytest.approx(before[2], abs=0.5)


def test_a_device_survives_every_kind_of_bad_midi(spawn):
    """Garbage over IPC is dropped and counted; the next good note still plays on time."""
    block = 256
    dev = spawn.device("--channels", "1", "--blocksize", str(block), "--fixed-format",
                       "--monitor", device_id="Robust")
    from bridge.transport import commands as cmd

    bad = [cmd.build("MidiRaw", data=b"\x3c\x3c\x3c"),  # stray data
           cmd.build("MidiRaw", data=b"\x90\x3c"),  # truncated
           cmd.build("MidiRaw", data=b"\xf0\x01\x02\x03"),  # unterminated SysEx
           cmd.build("MidiRaw", data=b"\xf4\xf5\xfd"),  # undefined
           cmd.build("NoteOn", channel=40, note=1, velocity=1),  # out of range
           *cmd.fragments("SysEx", bytes([0xF0, *([5] * 70000), 0xF7])),  # over the limit
           *cmd.fragments("UMP", b"\x00\x00\x00\xd0\x01\x02")]  # cut-short flex data
    with Host() as host:
        host.connect(dev.id)
        for m in bad:
            while not host.send_command(m):
                read_blocks(host, 1, block)
        read_blocks(host, 8, block)
        host.process_responses()
        # the two refused commands (channel 40; SysEx over the limit) were answered with Error
        assert host.counters()["bad_messages"] == 2
        send(host, MidiEvent(100, b"\x90\x45\x64"))
        rec = read_blocks(host, 6, block)[0]
        assert detect_onset(rec, 0, 1e-6) % block in (100, 101)
        assert host.ping() > 0
    out = dev.stop()
    err = dev.stderr
    assert "MIDI events" in out
    for text in ("no status", "truncated", "no F7", "status 0xF4", "status 0xF5",
                 "status 0xFD", "out of range",
                 "over the limit", "UMP"):
        assert text in err, f"the debug monitor did not report {text!r}:\n{err[-3000:]}"


def test_host_side_messages_wait_until_the_device_handshake(spawn):
    """A claim clears MIDI queued for an earlier host: a new host starts in silence."""
    dev = spawn.device("--channels", "1", device_id="Fresh")
    with Host() as host:
        host.connect(dev.id)
        send(host, MidiEvent(0, b"\x90\x45\x64"))
        assert np.abs(read_blocks(host, 8, 256)).max() > 0.1
    with Host() as host:
        host.connect(dev.id)
        wait_until(lambda: host.available_frames() >= 256, 5, "audio")
        assert np.abs(read_blocks(host, 8, 256)).max() == 0.0
