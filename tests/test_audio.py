"""Audio between two OS processes: a device process and the test process as host."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_ipc import read_realtime

from bridge.transport import Host, cmd


@pytest.mark.parametrize("channels", [1, 2, 12])
def test_note_69_arrives_as_440_hz_on_every_channel_without_gaps(spawn, channels):
    # fill 4 (21 ms of slack) keeps a loaded CI machine from causing a gap; latency is
    # measured by bench/transport.py, not here.
    dev = spawn.device("--channels", str(channels), "--fill", "4")
    with Host() as host:
        host.set_local_buffer_info(48000, 256)
        conn = host.connect(dev.id)
        assert conn.channels == channels
        host.send_command(cmd.midi_note_on(0, 69, 100))
        rec = read_realtime(host, 200 * 256 / 48000, channels)  # ~1.07 s
        assert host.stats.underruns == 0
        assert host.counters()["overruns"] == 0
    # Skip the first blocks (the note starts after the queued fill), then analyse 1 s.
    start = int(np.flatnonzero(np.abs(rec[0]) > 1e-4)[0])
    seg = rec[:, start : start + 48000]
    assert seg.shape[1] == 48000, "less than 1 s of sound arrived"
    for c in range(channels):
        spectrum = np.abs(np.fft.rfft(seg[c] * np.hanning(seg.shape[1])))
        peak_hz = np.argmax(spectrum) * 48000 / seg.shape[1]
        assert abs(peak_hz - 440.0) <= 1.0, f"channel {c}: peak at {peak_hz} Hz"
        np.testing.assert_array_equal(seg[c], seg[0])
    # No gaps: a continuous sine never jumps by more than amplitude * 2*pi*f/fs per sample,
    # and never holds a run of zeros.
    amp = 0.25 * 100 / 127
    step = np.abs(np.diff(seg[0]))
    assert step.max() <= amp * 2 * np.pi * 440 / 48000 * 1.01
    window_rms = np.sqrt((seg[0, : 47872].reshape(-1, 256) ** 2).mean(axis=1))
    assert window_rms.min() > amp / np.sqrt(2) * 0.95
