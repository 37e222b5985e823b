"""The discoLink DAW plugins (plugins/discolink, built by plugins/build.sh) inside real plugin
hosts, each in a process of its own: pedalboard as the DAW for the VST3 builds (run block by
block in real time by tests/pedalboard_daw.py), against `discolink-bridge device` and
`discolink-bridge host` processes in the test's namespace."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from helpers_ipc import by_id, peak_hz, wait_until
from native_helpers import AMPLITUDE, assert_440_without_gaps, read_wav
from proto_helpers import onset

PLUGINS = REPO / "build" / "plugins"
HOST_VST3 = PLUGINS / "discoLink Host.vst3"
HOST12_VST3 = PLUGINS / "discoLink Host 12.vst3"
DEVICE_VST3 = PLUGINS / "discoLink Device.vst3"
DAW = REPO / "tests" / "pedalboard_daw.py"
RATE, BLOCK = 48000, 256


@pytest.fixture(scope="module", autouse=True)
def plugins_built():
    """plugins/build.sh (what setup.sh runs): quick when the bundles are up to date."""
    done = subprocess.run(["bash", str(REPO / "plugins" / "build.sh"), "--no-dragonfly"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


class Daw:
    """tests/pedalboard_daw.py running one plugin in its own process."""

    def __init__(self, spawn, plugin: Path, record: Path, *args: str, env: dict | None = None):
        self.record = record
        self.channels = 12 if "12" in plugin.name else 2
        self.proc = subprocess.Popen(
            [sys.executable, str(DAW), str(plugin), "--record", str(record),
             "--channels", str(self.channels), *args],
            env=env or spawn.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        spawn.procs.append(self.proc)
        line = self.proc.stdout.readline()
        if not line.startswith("rendering"):
            raise AssertionError(f"the DAW did not start: {line!r} {self.proc.stderr.read()}")
        self.t0 = float(line.split("t0=")[1])

    def finish(self, timeout: float = 60.0) -> dict:
        out, err = self.proc.communicate(timeout=timeout)
        self.stderr = err
        code = self.proc.returncode
        assert code == 0, f"the DAW exited with {code}: {err[-3000:]}"
        return json.loads(out.strip().splitlines()[-1])

    def output(self) -> np.ndarray:
        return np.fromfile(self.record, dtype="<f4").reshape(-1, self.channels).T

    def frame_at(self, t: float) -> int:
        """The output frame the DAW was rendering at CLOCK_MONOTONIC time t (it is paced)."""
        return int((t - self.t0) * RATE)


def host_underruns(device_tail: str) -> int:
    match = re.search(r"(\d+) host underruns", device_tail)
    assert match, device_tail
    return int(match.group(1))


def last_connection(stderr: str) -> str:
    """The device of the plugin's last "connected to ID" line."""
    found = re.findall(r"discoLink Host: connected to (\S+)", stderr)
    assert found, stderr
    return found[-1]


def last_registration(stderr: str) -> str:
    found = re.findall(r"discoLink Device: registered as (\S+)", stderr)
    assert found, stderr
    return found[-1]


# ---- discoLink Host -------------------------------------------------------------------------

def test_host_plugin_in_pedalboard_plays_440_hz_from_a_python_device(spawn, tmp_path):
    dev = spawn.device("--fill", "4", device_id="Sine")
    daw = Daw(spawn, HOST_VST3, tmp_path / "out.raw", "--seconds", "2", "--note-on", "0.3")
    result = daw.finish()
    # the DAW hears fill x block as the plugin's latency (the handshake settled on 256)
    assert result["reported_latency_samples"] == 4 * BLOCK
    assert "connected to Sine:0 (48000 Hz, 256 frames, 2 channels" in daw.stderr
    rec = daw.output()
    assert rec.shape == (2, result["blocks"] * BLOCK)
    assert_440_without_gaps(rec, RATE, host_underruns(dev.stop()), seconds=1.0)


def test_host_plugin_negotiates_the_daws_format_and_plays_midi_at_its_frame_offset(spawn,
                                                                                   tmp_path):
    """A DAW at 44.1 kHz and 128 frames against a device started at 48 kHz and 256 frames:
    the plugin's handshake moves the device to the DAW's format (440 Hz at 44.1 kHz, latency
    fill x 128), and a note-on 46 frames into its DAW block starts 46 frames into the block
    the device renders it in (an underrun can only delay it by whole blocks)."""
    rate, block, fill = 44100, 128, 4
    dev = spawn.device("--fill", str(fill), device_id="Sine")
    note_frame = round(0.3 * rate)
    assert note_frame % block == 46
    daw = Daw(spawn, HOST_VST3, tmp_path / "out.raw", "--seconds", "2", "--note-on", "0.3",
              "--rate", str(rate), "--block", str(block))
    result = daw.finish()
    assert f"connected to Sine:0 ({rate} Hz, {block} frames, 2 channels" in daw.stderr
    assert result["reported_latency_samples"] == fill * block
    info = by_id(spawn.namespace)["Sine:0"]
    assert (info.sample_rate, info.block_size) == (rate, block)
    rec = daw.output()
    start = onset(rec[0])
    late = start - (note_frame + fill * block)
    assert 0 <= late and late % block <= 1, (start, note_frame, late)  # 0 when no underrun
    assert_440_without_gaps(rec, rate, host_underruns(dev.stop()), seconds=1.0)


def test_host_plugin_goes_silent_when_its_device_is_killed_and_plays_again_when_it_returns(
        spawn, tmp_path):
    dev = spawn.device("--fill", "2", device_id="Sine")
    daw = Daw(spawn, HOST_VST3, tmp_path / "out.raw", "--seconds", "6", "--note-on", "0.3")
    time.sleep(max(0.0, daw.t0 + 2.0 - time.monotonic()))
    t_kill = time.monotonic()
    dev.kill9()
    time.sleep(max(0.0, daw.t0 + 3.0 - time.monotonic()))
    back = spawn.device("--fill", "2", device_id=dev.id)  # the same id, a new process
    t_back = time.monotonic()
    assert back.id == dev.id
    daw.finish()  # the hosting process did not crash (exit 0)
    assert f"lost {dev.id}" in daw.stderr, daw.stderr
    mono = daw.output()[0]
    kill, restart = daw.frame_at(t_kill), daw.frame_at(t_back)
    before = mono[int(0.6 * RATE):kill - RATE // 10]
    assert abs(peak_hz(before) - 440) <= 2 and np.abs(before).max() > 0.9 * AMPLITUDE
    # zero-filled within 500 ms of the kill, until the device is back
    assert not np.any(mono[kill + RATE // 2:restart]), "sound while the device was dead"
    # the held note sounds again within a second of the restart, and to the end
    after = mono[restart + RATE:]
    assert after.size > RATE
    assert abs(peak_hz(after) - 440) <= 2 and np.abs(after).max() > 0.9 * AMPLITUDE
    window = RATE // 10
    rms = np.sqrt((after[:after.size // window * window].reshape(-1, window) ** 2).mean(axis=1))
    assert rms.min() > 0.5 * AMPLITUDE / np.sqrt(2), "the returned sound has a gap"
    back.stop()


def test_host_plugin_takes_discolink_device_then_the_first_free_one_and_recalls_its_state(
        spawn, tmp_path):
    mono = spawn.device("--channels", "1", device_id="Mono")    # Mono:0, first in the registry
    stereo = spawn.device("--channels", "2", device_id="Wide")  # Wide:0
    state = tmp_path / "session.vststate"
    # $DISCOLINK_DEVICE picks Wide:0, and the saved session remembers it
    env = dict(spawn.env(), DISCOLINK_DEVICE=stereo.id)
    daw = Daw(spawn, HOST_VST3, tmp_path / "a.raw", "--seconds", "1", "--note-on", "0.2",
              "--state-out", str(state), env=env)
    daw.finish()
    assert f"connected to {stereo.id}" in daw.stderr
    right = daw.output()[1]
    assert np.abs(right).max() > 0.9 * AMPLITUDE  # a stereo device: both channels sound
    # no state, no variable: the first free device
    daw = Daw(spawn, HOST_VST3, tmp_path / "b.raw", "--seconds", "1", "--note-on", "0.2")
    daw.finish()
    assert f"connected to {mono.id}" in daw.stderr
    out = daw.output()
    assert np.abs(out[0]).max() > 0.9 * AMPLITUDE and not np.any(out[1])  # mono: one channel
    # the reloaded session (no variable) goes back to Wide:0, not to the first free device
    daw = Daw(spawn, HOST_VST3, tmp_path / "c.raw", "--seconds", "1", "--note-on", "0.2",
              "--state-in", str(state))
    daw.finish()
    # pedalboard can set raw_state only once load_plugin has activated the plugin, so the
    # plugin may have taken the first free device for a moment before the state arrived
    assert last_connection(daw.stderr) == stereo.id
    assert np.abs(daw.output()[1]).max() > 0.9 * AMPLITUDE


def test_twelve_output_host_plugin_carries_a_twelve_channel_device(spawn, tmp_path):
    dev = spawn.device("--channels", "12", "--fill", "4", device_id="Wall")
    daw = Daw(spawn, HOST12_VST3, tmp_path / "out.raw", "--seconds", "1.5", "--note-on", "0.2")
    daw.finish()
    rec = daw.output()
    assert rec.shape[0] == 12
    assert_440_without_gaps(rec, RATE, host_underruns(dev.stop()), seconds=0.8)


# ---- discoLink Device -----------------------------------------------------------------------

def noise_wav(path: Path, seconds: float) -> np.ndarray:
    """Stereo noise with no sample exactly 0, so that zero-filled frames stand out."""
    import soundfile as sf

    rng = np.random.default_rng(12)
    shape = (int(seconds * RATE), 2)
    data = rng.uniform(0.05, 0.5, shape) * rng.choice([-1, 1], shape)
    data = data.astype(np.float32)
    sf.write(str(path), data, RATE, subtype="FLOAT")
    return data.T


def test_device_plugin_passes_audio_through_and_a_python_host_records_it_sample_for_sample(
        spawn, tmp_path):
    source = noise_wav(tmp_path / "in.wav", 5.0)
    daw = Daw(spawn, DEVICE_VST3, tmp_path / "out.raw", "--seconds", "4.5",
              "--input", str(tmp_path / "in.wav"))
    wait_until(lambda: by_id(spawn.namespace).get("Track:0"), 5.0, "the plugin's device")
    wait_until(lambda: by_id(spawn.namespace)["Track:0"].sample_rate == RATE, 5.0,
               "the device at the DAW's rate")
    done = spawn.run("host", "--id", "Track:0", "--seconds", "2", "--record",
                     str(tmp_path / "rec.wav"), "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    result = daw.finish()
    assert "registered as Track:0 (48000 Hz, 256 frames)" in daw.stderr
    # the plugin's own output is its input, sample for sample
    out = daw.output()
    n = result["blocks"] * BLOCK
    np.testing.assert_array_equal(out, source[:, :n])
    assert_recording_is_the_track(tmp_path / "rec.wav", source, stats["underruns"])


def assert_recording_is_the_track(path: Path, source: np.ndarray, underruns: int) -> None:
    """The recording is the track's audio: after the stated latency (the device reports none:
    the DAW's call is its clock, fill 0, latency 0) a contiguous stretch of the input, sample
    for sample; only a short read (an underrun, counted) is zero-filled."""
    rec, rate = read_wav(path)
    assert rate == RATE
    zero = np.all(rec == 0.0, axis=0)
    stretches = int(np.count_nonzero(np.diff(zero.astype(np.int8)) == 1))
    assert stretches <= underruns, (stretches, underruns)
    heard = rec[:, ~zero]
    assert heard.shape[1] >= RATE  # at least a second of the track arrived
    start = int(np.flatnonzero(np.all(source == heard[:, :1], axis=0))[0])
    np.testing.assert_array_equal(heard, source[:, start:start + heard.shape[1]])


def test_device_plugin_registers_again_under_the_id_kept_in_its_state(spawn, tmp_path):
    source = tmp_path / "in.wav"
    noise_wav(source, 2.0)
    squatter = spawn.device(device_id="Track")  # Track:0 is taken, so the plugin gets Track:1
    state = tmp_path / "project.vststate"
    daw = Daw(spawn, DEVICE_VST3, tmp_path / "a.raw", "--seconds", "1", "--input", str(source),
              "--state-out", str(state))
    daw.finish()
    assert last_registration(daw.stderr) == "Track:1"
    squatter.stop()
    # the project reloads: Track:1 again, though Track:0 is free now
    daw = Daw(spawn, DEVICE_VST3, tmp_path / "b.raw", "--seconds", "1.5", "--input", str(source),
              "--state-in", str(state))
    wait_until(lambda: "Track:1" in by_id(spawn.namespace), 5.0, "Track:1")
    daw.finish()
    assert last_registration(daw.stderr) == "Track:1"


# ---- LV2 builds in Debian's LV2 hosts --------------------------------------------------------

def test_host_plugin_in_jalv_plays_what_jack_midiseq_sends_and_jack_rec_records_it(
        spawn, jack, tmp_path):
    """jalv (the LV2 reference host) runs discoLink Host on a private dummy jackd;
    jack_midiseq loops A4 for 0.75 s of every second into it; jack_rec records its outputs."""
    dev = spawn.device("--fill", "2", device_id="Sine")
    env = jack.client_env(spawn.env())
    jalv = subprocess.Popen(["jalv", "-x", "-n", "dlhost", "urn:discolink-bridge:discolink-host"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    spawn.procs.append(jalv)
    wait_until(lambda: "dlhost:lv2_events_in" in (jack.ports() or []), 10, "jalv's ports")
    wait_until(lambda: by_id(spawn.namespace)[dev.id].claimed, 10, "the plugin's claim")
    seq = subprocess.Popen(["jack_midiseq", "seq", "48000", "0", "69", "36000"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spawn.procs.append(seq)
    wait_until(lambda: "seq:out" in (jack.ports() or []), 10, "jack_midiseq's port")
    subprocess.run(["jack_connect", "seq:out", "dlhost:lv2_events_in"], env=env, check=True,
                   timeout=10)
    wav = tmp_path / "rec.wav"
    done = subprocess.run(["jack_rec", "-f", str(wav), "-d", "3", "-b", "32",
                           "dlhost:lv2_audio_out_1", "dlhost:lv2_audio_out_2"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    seq.terminate()
    jalv.terminate()
    log = jalv.communicate(timeout=10)[0]
    assert "discoLink Host: connected to Sine:0 (48000 Hz, 256 frames" in log, log
    audio, _ = read_wav(wav)
    x = audio[0]
    velocity_64 = 0.25 * 64 / 127
    frame = 96  # 2 ms RMS frames
    rms = np.sqrt((x[:x.size // frame * frame].reshape(-1, frame) ** 2).mean(axis=1))
    on = rms > 0.5 * velocity_64 / np.sqrt(2)
    edges = np.flatnonzero(np.diff(on.astype(np.int8)))
    starts = [e + 1 for e in edges if not on[e]]
    stops = [e + 1 for e in edges if on[e]]
    assert len(starts) >= 2 and len(stops) >= 2, "the notes did not come and go"
    # each note lasts what jack_midiseq says (0.75 s), one a second: MIDI at its frame offset
    lengths = [(b - a) * frame for a in starts for b in stops if b > a][:1]
    assert abs(lengths[0] - 36000) <= 3 * frame, lengths
    assert abs((starts[1] - starts[0]) * frame - 48000) <= 3 * frame
    sounding = x[starts[0] * frame:(starts[0] * frame) + 24000]
    assert abs(peak_hz(sounding) - 440) <= 2
    assert np.abs(sounding).max() == pytest.approx(velocity_64, abs=0.005)


def test_device_plugin_in_lv2file_passes_a_wav_through_while_a_python_host_records_it(
        spawn, tmp_path):
    """lv2file renders offline; it reads its input from a FIFO that this test fills in real
    time, so the render runs at the pace of a DAW and a host can follow it."""
    wav = tmp_path / "in.wav"
    source = noise_wav(wav, 5.0)
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.wav"
    render = subprocess.Popen(["lv2file", "-i", str(fifo), "-o", str(out), "-b", "256",
                               "urn:discolink-bridge:discolink-device"], env=spawn.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    spawn.procs.append(render)
    feeder = threading.Thread(target=feed_in_real_time, args=(wav, fifo), daemon=True)
    feeder.start()
    wait_until(lambda: by_id(spawn.namespace).get("Track:0"), 5.0, "the plugin's device")
    done = spawn.run("host", "--id", "Track:0", "--seconds", "2", "--record",
                     str(tmp_path / "rec.wav"), "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    feeder.join(timeout=20)
    log = render.communicate(timeout=20)[0]
    assert render.returncode == 0, log
    assert "discoLink Device: registered as Track:0 (48000 Hz, 256 frames)" in log, log
    passed, rate = read_wav(out)
    assert rate == RATE
    np.testing.assert_array_equal(passed, source)
    assert_recording_is_the_track(tmp_path / "rec.wav", source, stats["underruns"])


def feed_in_real_time(wav: Path, fifo: Path, chunk_frames: int = 480) -> None:
    """Write a float32 stereo WAV into a FIFO: its header at once, then its frames no faster
    than real time."""
    data = wav.read_bytes()
    start = data.index(b"data") + 8
    frame_bytes = 2 * 4
    with open(fifo, "wb") as pipe:
        pipe.write(data[:start])
        t0 = time.monotonic()
        for k, at in enumerate(range(start, len(data), chunk_frames * frame_bytes)):
            due = t0 + k * chunk_frames / RATE
            time.sleep(max(0.0, due - time.monotonic()))
            pipe.write(data[at:at + chunk_frames * frame_bytes])
            pipe.flush()


# ---- the effect insert ------------------------------------------------------------------------

def test_host_fx_plugin_sends_the_track_through_the_return_ring_and_plays_the_wet_return(
        spawn, tmp_path):
    """discoLink Host FX on an audio track: the track's input goes to the device through the
    return ring, and the device's audio comes back in its place. The sine device with
    --return mixes the return into its (here silent) synth, so what comes back is the
    track's audio itself, a latency later, sample for sample."""
    source = noise_wav(tmp_path / "in.wav", 3.0)
    dev = spawn.device("--return", "--fill", "2", device_id="Wet")
    daw = Daw(spawn, PLUGINS / "discoLink Host FX.vst3", tmp_path / "out.raw", "--seconds",
              "2.5", "--input", str(tmp_path / "in.wav"))
    result = daw.finish()
    assert last_connection(daw.stderr) == dev.id
    counters = device_counters(spawn.namespace, dev.id)
    # a short read on either ring (the Host's read of the audio ring, the device's of the
    # return ring) zero-fills, and is counted; on a loaded machine they happen
    shortfalls = counters["underruns"] + counters["return_underruns"]
    out = daw.output()
    heard = np.flatnonzero(np.any(out != 0.0, axis=0))
    assert heard.size > RATE, "nothing came back"
    first = int(heard[0])
    # where in the input the first returned frame comes from: the insert's latency
    start = int(np.flatnonzero(np.all(source == out[:, first:first + 1], axis=0))[0])
    latency = first - start
    assert 0 < latency <= result["reported_latency_samples"] + 2 * BLOCK, latency
    # between the counted gaps, each stretch is the track sample for sample, in order (the
    # device may have caught up after a gap, which shortens the latency again)
    wet = out[:, first:]
    sounding = np.any(wet != 0.0, axis=0).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], sounding, [0]))))
    stretches = list(zip(edges[0::2], edges[1::2], strict=True))
    assert len(stretches) - 1 <= shortfalls, (len(stretches), counters)
    previous_end = 0
    for begin, end in stretches:
        at = int(np.flatnonzero(np.all(source == wet[:, begin:begin + 1], axis=0))[0])
        assert at >= previous_end, "the track came back out of order"
        np.testing.assert_array_equal(wet[:, begin:end], source[:, at:at + end - begin])
        previous_end = at + end - begin
    assert sum(end - begin for begin, end in stretches) > 0.9 * (wet.shape[1] - 2 * BLOCK)


def device_counters(namespace: str, device_id: str) -> dict:
    """The transport header's shared counters of a device running in another process."""
    from proto_helpers import header

    from bridge.transport import shm

    info = by_id(namespace)[device_id]
    segment = shm.Segment.attach(shm.transport_name(namespace, info.slot, info.pid))
    try:
        return dict(header(segment.buf))
    finally:
        segment.close()


def test_host_plugin_vst3_forwards_pitch_bend_and_controllers_of_midi_channel_1(spawn, tmp_path):
    """VST3 carries CC, pitch bend and channel pressure as parameter changes (IMidiMapping);
    the plugin maps those of MIDI channel 1 (plugins/build.sh, patch 3), so a full bend up
    reaches the device: A4 sounds two semitones higher."""
    spawn.device("--fill", "4", device_id="Bend")
    daw = Daw(spawn, HOST_VST3, tmp_path / "out.raw", "--seconds", "1.5", "--note-on", "0.3",
              "--bend", "0.3")
    daw.finish()
    mono = daw.output()[0]
    sounding = mono[int(0.5 * RATE):int(1.4 * RATE)]
    assert abs(peak_hz(sounding) - 440 * 2 ** (2 / 12)) <= 2, peak_hz(sounding)


def test_device_plugin_in_jalv_puts_its_hosts_midi_on_its_midi_output(spawn, jack, tmp_path):
    """jalv runs discoLink Device LV2 on a private jackd; `discolink-bridge host` claims it and
    plays A4; jack_midi_dump, on the plugin's MIDI output port, sees the NoteOn and the
    NoteOff, at the DAW's (JACK's) rate and period."""
    env = jack.client_env(spawn.env())
    dump = subprocess.Popen(["jack_midi_dump", "dump"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    spawn.procs.append(dump)
    wait_until(lambda: "dump:input" in (jack.ports() or []), 10, "jack_midi_dump's port")
    jalv = subprocess.Popen(["jalv", "-x", "-n", "dldev", "urn:discolink-bridge:discolink-device"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    spawn.procs.append(jalv)
    wait_until(lambda: "dldev:lv2_events_out" in (jack.ports() or []), 10, "jalv's ports")
    subprocess.run(["jack_connect", "dldev:lv2_events_out", "dump:input"], env=env, check=True,
                   timeout=10)
    wait_until(lambda: by_id(spawn.namespace).get("Track:0"), 10, "the plugin's device")
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(dump.stdout.readline, "")),
                     daemon=True).start()
    done = spawn.run("host", "--id", "Track:0", "--seconds", "1", "--note", "69", "--json")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: any("80 45" in ln.lower() for ln in lines), 10,
               f"the NoteOff on the plugin's MIDI output (got {lines})")
    jalv.terminate()
    log = jalv.communicate(timeout=10)[0]
    assert "discoLink Device: registered as Track:0 (48000 Hz, 256 frames)" in log, log
    text = " ".join(lines).lower()
    assert "90 45 64" in text, lines  # NoteOn A4, velocity 100
    assert text.index("90 45 64") < text.index("80 45"), lines
