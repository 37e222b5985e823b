"""Live MIDI input (``device --midi-in``) from a MIDI source no one here wrote: jack_midiseq,
on a real jackd (dummy backend). python-rtmidi uses its JACK API here: these machines have
no /dev/snd/seq for ALSA."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time

import numpy as np
from helpers_ipc import read_realtime, wait_until

from bridge.adapters.session import detect_onset
from bridge.adapters.sine import note_frequency
from bridge.transport import Host

RATE = 48000
# jack_midiseq NAME LOOP_SAMPLES [START NOTE LENGTH]...: a 1 s loop at 48 kHz with
# C4 (60) for 0.25 s from 0, and E4 (64) for 0.25 s from 0.5 s, velocity 64.
SEQUENCE = ["48000", "0", "60", "12000", "24000", "64", "12000"]
AMPLITUDE = 0.25 * 64 / 127


class Lines:
    """Collects a process's stderr lines as they come."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> str:
        return wait_until(lambda: next((ln for ln in self.lines if text in ln), None),
                          timeout, f"{text!r} on the device's stderr (got {self.lines})")


def start_sequencer(jack, name: str = "seq") -> subprocess.Popen:
    proc = subprocess.Popen(["jack_midiseq", name, *SEQUENCE], env=jack.client_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: f"{name}:out" in (jack.ports() or []), 10, "jack_midiseq's port")
    return proc


def segments(rec: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample ranges where the synth sounds, from 2 ms RMS frames."""
    frame = 96
    n = len(rec) // frame
    rms = np.sqrt((rec[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    on = rms > 0.2 * AMPLITUDE
    out, start = [], None
    for i, flag in enumerate(on):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start * frame, i * frame))
            start = None
    return out


def pitch(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), 8 * len(x)))
    return float(np.fft.rfftfreq(8 * len(x), 1 / RATE)[np.argmax(spec)])


class JackClock:
    """A JACK client of our own that notes, every period, the wall clock and JACK's frame
    time: how late the (non-real-time, dummy-backend) server runs, which moves the arrival
    of jack_midiseq's events by as much."""

    def __init__(self, jack, periods: int = 4096) -> None:
        import jack as jackmod

        self.stamps = np.zeros((periods, 2), np.float64)
        self.count = 0
        self.client = jackmod.Client("clock", servername=jack.name, no_start_server=True)

        @self.client.set_process_callback
        def process(frames: int) -> None:
            if self.count < len(self.stamps):
                self.stamps[self.count] = (time.monotonic(), self.client.last_frame_time)
                self.count += 1

        self.client.activate()

    def lateness(self, since: float, until: float) -> float:
        """The spread (max - min) of the server's lateness against the wall clock over
        [since, until], in seconds; 0 for a server on time."""
        wall, frames = self.stamps[: self.count].T
        late = wall - frames / RATE
        window = late[(wall >= since) & (wall <= until)]
        return float(window.max() - window.min()) if window.size else 0.0

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def read_realtime_delivered(host: Host, seconds: float, block: int = 256
                            ) -> tuple[np.ndarray, np.ndarray, float]:
    """Read in real time like a DAW, keeping only what the device delivered: a block the
    host read short (an underrun, on a loaded machine) is zero-filled, and a gap in the
    middle of a note would split it in two. Returns the device's audio (channel 0), for each
    of its samples how many frames the host had zero-filled before it (the device's lag
    behind the wall clock), and the wall time of the first read."""
    blocks = int(np.ceil(seconds * RATE / block))
    out = np.zeros((1, block), np.float32)
    audio = np.zeros(blocks * block, np.float32)
    lag = np.zeros(blocks * block, np.int64)
    got = missing = 0
    period = block / RATE
    start = time.monotonic()
    for k in range(blocks):
        n = host.receive_audio(out)
        audio[got:got + n] = out[0, :n]
        lag[got:got + n] = missing
        got += n
        missing += block - n
        delay = start + (k + 1) * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return audio[:got], lag[:got], start


def test_jack_midiseq_plays_the_device_in_time(spawn, jack):
    """Notes alternate C4 E4 C4 ..., 0.5 s apart and 0.25 s long, as sequenced. On a
    loaded machine two things move them that are not the device's doing, and both are
    measured and allowed for, nothing more: the host's underruns (zero-filled reads, left
    out of the recording, their length added back for timing) and the JACK server running
    late on the wall clock (JackClock)."""
    seq = start_sequencer(jack)
    clock = JackClock(jack)
    try:
        dev = spawn.device("--channels", "1", "--midi-in", "seq:out", device_id="Live")
        err = Lines(dev.proc.stderr)
        err.wait_for("midi-in opened: MIDI input 'seq:out' (jack)", 10)
        with Host() as host:
            host.connect(dev.id)
            rec, lag, t0 = read_realtime_delivered(host, 3.2)
    finally:
        clock.close()
        seq.terminate()
        seq.wait(timeout=5)
    whole = [s for s in segments(rec) if s[0] > 0 and s[1] < len(rec)]  # not cut by the ends
    assert len(whole) >= 4, f"expected the looped notes, got segments {whole}"
    pitches = [pitch(rec[a + 480:b - 480]) for a, b in whole]
    c4, e4 = note_frequency(60), note_frequency(64)
    kinds = ["C4" if abs(p - c4) < 3 else "E4" if abs(p - e4) < 3 else f"{p:.1f} Hz"
             for p in pitches]
    assert set(kinds) == {"C4", "E4"}, kinds
    assert all(a != b for a, b in itertools.pairwise(kinds)), (
        f"notes must alternate: {kinds} (segments {whole}, lag {[int(lag[a]) for a, _ in whole]})")
    onsets = [a - 96 + detect_onset(rec[a - 96:b], 0, 1e-4) for a, b in whole]
    for (_, b), onset, nxt in zip(whole, onsets, onsets[1:], strict=False):
        # 0.5 s apart and 0.25 s long, as sequenced, within the live-input jitter of a couple
        # of JACK periods (rtmidi hears JACK MIDI once per 256-frame period), plus what the
        # server's lateness moved (wall clock: the device's own samples plus its lag).
        wall_on, wall_next = onset + lag[onset], nxt + lag[nxt]
        late = clock.lateness(t0 + wall_on / RATE - 0.1, t0 + wall_next / RATE)
        slack = 1024 + round(late * RATE)
        assert abs((wall_next - wall_on) - 24000) <= slack, (
            f"onsets {onsets}, lag {[int(lag[o]) for o in onsets]}, server lateness "
            f"{late * 1000:.1f} ms")
        assert abs((b + lag[b - 1] - wall_on) - 12000) <= slack, f"note {onset}..{b}"
    peak = max(float(np.abs(rec[a:b]).max()) for a, b in whole)
    assert abs(peak - AMPLITUDE) < 0.01


def test_a_vanished_port_is_reported_and_reopened_when_it_returns(spawn, jack):
    dev = spawn.device("--channels", "1", "--midi-in", "seq*", device_id="Reopen")
    err = Lines(dev.proc.stderr)
    seq = start_sequencer(jack)  # appears after the device started: found by the rescan
    err.wait_for("midi-in opened: MIDI input 'seq:out'", 10)
    seq.kill()
    seq.wait(timeout=5)
    err.wait_for("vanished", 10)
    seq = start_sequencer(jack)
    try:
        err.wait_for("midi-in reopened: MIDI input 'seq:out'", 10)
        with Host() as host:
            host.connect(dev.id)
            rec = read_realtime(host, 1.2, channels=1)[0]
        assert len(segments(rec)) >= 1, "no audio after the port came back"
    finally:
        seq.kill()
        seq.wait(timeout=5)
    assert dev.proc.poll() is None, "the device must survive its MIDI source going away"


def test_no_jack_server_is_reported_and_the_device_keeps_running(spawn, monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "dl-no-such-server")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    dev = spawn.device("--channels", "1", "--midi-in", "anything", device_id="NoJack")
    err = Lines(dev.proc.stderr)
    with Host() as host:
        host.connect(dev.id)
        assert host.ping() > 0
    time.sleep(2.5)  # two rescans
    assert dev.proc.poll() is None
    out = dev.stop()
    assert "stopped" in out
    said = [ln for ln in err.lines if ln.startswith("discolink-bridge: midi-in")]
    assert said == ["discolink-bridge: midi-in error: no JACK server 'dl-no-such-server' is "
                    "running; waiting for it\n"], err.lines  # once, not once per rescan
    assert not any("Cannot connect" in ln for ln in err.lines), "libjack noise on stderr"
