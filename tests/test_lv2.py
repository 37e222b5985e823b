"""LV2 plugins as devices (``device --plugin lv2:...``), through lilv, with real plugins in
their own processes: Debian's x42-plugins, lsp-plugins-lv2 and swh-lv2, the LV2 builds of our
DPF instruments (DLSine, DLSine12) and the test bundles of plugins/lv2test (dltest.lv2 on the
LV2 path; the broken bundles in build/lv2-bad). Debian's own LV2 tools are the
reference: lv2file renders offline, lv2ls lists. conftest.py puts build/plugins/lv2 on
LV2_PATH for every process.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import helpers_ipc
import numpy as np
import pedalboard
import pytest
import soundfile as sf
from conftest import LV2_TEST_PATH, REPO
from helpers_ipc import peak_hz, send

from bridge.transport import Host, cmd
from bridge.transport.host import CommandError

PLUGINS = REPO / "build" / "plugins"
BAD = REPO / "build" / "lv2-bad"
RATE, BLOCK = 48000, 256
DLSINE = "lv2:DLSine"
PROBE = "lv2:urn:discolink-bridge:lv2test:worker-probe"
GAIN = "lv2:urn:discolink-bridge:lv2test:gain"
FILE_STATE = "lv2:urn:discolink-bridge:lv2test:file-state"
OPTIONS = "lv2:urn:discolink-bridge:lv2test:options-probe"
FIL4 = "http://gareus.org/oss/lv2/fil4#stereo"
SC4 = "http://plugin.org.uk/swh-plugins/sc4"
AMP = "http://plugin.org.uk/swh-plugins/amp"
ZCONV = "lv2:http://gareus.org/oss/lv2/zeroconvolv#Stereo"
TRANSPOSE = "lv2:http://gareus.org/oss/lv2/midifilter#miditranspose"

pytestmark = [
    pytest.mark.skipif(not (PLUGINS / "lv2" / "DLSine.lv2").exists(),
                       reason="run ./setup.sh: it builds the LV2 test plugins"),
    pytest.mark.skipif(shutil.which("lv2file") is None,
                       reason="run ./setup.sh: it installs Debian's LV2 tools and plugins"),
]


def lv2_device(spawn, *args: str, device_id: str, timeout: float = 60.0):
    return spawn.device(*args, "--blocksize", str(BLOCK), "--fixed-format", device_id=device_id,
                        timeout=timeout)


def read_blocks(host: Host, blocks: int, channels: int, feed=None) -> np.ndarray:
    return helpers_ipc.read_blocks(host, blocks, BLOCK, channels, feed=feed, slack=30)


def value(host: Host, name: str) -> float:
    return cmd.decode(host.request(cmd.get_parameter(name)))["value"]


# ---- parity with Debian's lv2file ------------------------------------------------------------


def input_signal(channels: int) -> np.ndarray:
    """1 s of test signal: an impulse, a decaying tone with noise, a high tone."""
    n = RATE
    t = np.arange(n) / RATE
    rng = np.random.default_rng(7)
    x = np.stack([0.5 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * t)
                  + 0.1 * rng.standard_normal(n),
                  0.3 * np.sin(2 * np.pi * 3000 * t)])[:channels].T.astype(np.float32)
    x[:10] = 0
    x[0] = 0.5
    return x


def lv2file(tmp_path: Path, uri: str, x: np.ndarray, params: dict[str, float]) -> np.ndarray:
    src, out = tmp_path / "lv2file-in.wav", tmp_path / "lv2file-out.wav"
    sf.write(src, x, RATE, subtype="FLOAT")
    argv = ["lv2file", "--ignore-clipping", "-b", str(BLOCK), "-i", str(src), "-o", str(out)]
    for name, v in params.items():
        argv += ["-p", f"{name}:{v}"]
    r = subprocess.run([*argv, uri], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return sf.read(out, dtype="float32", always_2d=True)[0]


@pytest.mark.parametrize("uri,channels,params", [
    (AMP, 1, {"gain": -6.0}),                                             # a gain (swh-lv2)
    (FIL4, 2, {"gain": 6.0, "freq1": 300.0, "gain1": 9.0, "q1": 1.5}),    # an EQ (x42-plugins)
    (SC4, 2, {"threshold": -20.0, "ratio": 6.0, "attack": 5.0}),         # a compressor (swh)
], ids=["swh-amp", "x42-fil4", "swh-sc4"])
def test_bridged_effect_equals_lv2file_sample_for_sample(spawn, tmp_path, uri, channels, params):
    """``host --send in.wav --record out.wav`` through ``device --plugin lv2:URI --param ...``
    equals lv2file's offline render of the same input with the same values, at the same
    block size. The device renders ``fill`` blocks of silence before the host's first block
    reaches it, so the reference is rendered from that much silence before the input (the
    plugins are deterministic: equality is exact). A recording with gaps (host underruns,
    when other processes load the machine) says nothing about parity: the run is repeated
    with a new device, at most three times."""
    x = input_signal(channels)
    src, rec = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, RATE, subtype="FLOAT")
    for attempt in range(3):
        dev = lv2_device(spawn, "--plugin", f"lv2:{uri}", "--fill", "3",
                         *(a for k, v in params.items() for a in ("--param", f"{k}={v}")),
                         device_id=f"Fx{attempt}")
        r = spawn.run("host", "--id", dev.id, "--send", str(src), "--record", str(rec),
                      "--json")
        dev.stop()
        assert r.returncode == 0, r.stderr
        underruns = json.loads(r.stdout.splitlines()[-1])["underruns"]
        if underruns == 0:
            break
    assert underruns == 0, "the host missed blocks in every run: the recordings have gaps"
    out = sf.read(rec, dtype="float32", always_2d=True)[0]
    assert out.shape[1] == channels
    # the device's silence before our input (our first sample is a 0.5 impulse; the EQ's
    # idle output is denormal noise, well below 1e-6)
    lead = int(np.nonzero(np.abs(out).max(axis=1) > 1e-3)[0][0])
    lead -= lead % BLOCK
    ref = lv2file(tmp_path, uri, np.concatenate([np.zeros((lead, channels), np.float32), x]),
                  params)
    assert np.abs(ref).max() > 0.1
    np.testing.assert_array_equal(out[:len(ref)], ref)


def test_an_lsp_limiter_holds_its_threshold_and_reports_its_lookahead(spawn):
    """lsp-plugins-lv2, the third package: lv2file can't be the reference for it (it leaves
    LSP's atom ports unconnected and crashes with SIGSEGV), so the test asserts what a
    limiter promises. LSP Limiter Stereo at a -12 dB threshold (0.25), its gain boost and
    level regulation off, gets noise peaking near 0 dB: nothing leaves above the threshold,
    loud passages come out at it, and its lookahead is the latency the Route reply gives."""
    dev = lv2_device(spawn, "--plugin", "lv2:http://lsp-plug.in/plugins/lv2/limiter_stereo",
                     "--param", "th=0.25", "--param", "boost=0", "--param", "alr=0",
                     device_id="Lsp")
    rng = np.random.default_rng(5)
    with Host() as host:
        host.connect(dev.id)

        def noise(k: int) -> None:
            block = np.clip(0.4 * rng.standard_normal((2, BLOCK)), -1, 1).astype(np.float32)
            assert host.send_return_audio(block)

        out = read_blocks(host, 200, 2, feed=noise)
        latency = json.loads(cmd.decode(host.request(cmd.route("")))["routing"])["latency"]
        reduction = value(host, "grlm_l")
    assert latency == 240  # 5 ms of lookahead at 48 kHz, as plugin info shows
    settled = out[:, 20 * BLOCK:]
    assert np.isfinite(settled).all()
    assert np.abs(settled).max() <= 0.25 * 1.001
    assert np.abs(settled).max() > 0.2  # limited, not silenced
    assert reduction < 0.9  # the plugin's own meter: it is reducing gain


# ---- an instrument ---------------------------------------------------------------------------


def test_dlsine_lv2_plays_note_69_at_440_hz_with_midi_on_the_exact_sample(spawn):
    """DLSine as LV2 (atom-sequence MIDI with frame offsets): notes start on the frame they
    were sent for, and the audio equals the VST3 build of the same source rendered offline by
    pedalboard with the same MIDI, sample for sample."""
    dev = lv2_device(spawn, "--plugin", DLSINE, "--param", "gain=0.75", device_id="LvSine")
    with Host() as host:
        host.connect(dev.id)
        lead = read_blocks(host, 3, 2)
        send(host, cmd.midi_note_on(0, 69, 100, 17), cmd.midi_note_on(0, 76, 90, 100))
        rec1 = read_blocks(host, 10, 2)
        send(host, cmd.midi_note_off(0, 69, 0, 50), cmd.midi_note_off(0, 76, 0, 50),
             cmd.midi_note_on(0, 69, 127, 200))
        rec2 = read_blocks(host, 40, 2)
    rec = np.concatenate([lead, rec1, rec2], axis=1)
    assert not lead.any()
    first = int(np.nonzero(rec[0])[0][0]) - 1  # the onset sample is sin(0) = 0
    assert first % BLOCK == 17, first
    b1 = first // BLOCK
    gap = int(np.nonzero(rec[0, first + 200:] == 0)[0][0]) + first + 200
    assert gap % BLOCK == 50, gap
    b2 = gap // BLOCK
    assert peak_hz(rec[0, (b2 + 2) * BLOCK:]) == pytest.approx(440, abs=2)
    events = [(b1 * BLOCK + 17, b"\x90\x45\x64"), (b1 * BLOCK + 100, b"\x90\x4c\x5a"),
              (b2 * BLOCK + 50, b"\x80\x45\x00"), (b2 * BLOCK + 50, b"\x80\x4c\x00"),
              (b2 * BLOCK + 200, b"\x90\x45\x7f")]
    vst3 = pedalboard.load_plugin(str(PLUGINS / "DLSine.vst3"))
    vst3.gain = 0.75
    ref = vst3([(data, (frame + 0.5) / RATE) for frame, data in events],
               duration=(rec.shape[1] + 0.5) / RATE, sample_rate=RATE, num_channels=2,
               buffer_size=BLOCK, reset=True)
    np.testing.assert_array_equal(rec, ref[:, :rec.shape[1]])


def test_live_midi_ports_play_an_lv2_instrument_beside_ipc_midi(spawn, jack):
    """jack_midiseq (Debian's JACK tools) loops C4 and E4 into `--midi-in seq:out` while the
    host holds A4 over IPC: DLSine as LV2 plays all three, merged into one atom sequence."""
    from test_midi_live import Lines, start_sequencer

    seq = start_sequencer(jack)
    try:
        dev = spawn.device("--plugin", DLSINE, "--midi-in", "seq:out", "--blocksize",
                           str(BLOCK), device_id="LiveLv2", timeout=60)
        Lines(dev.proc.stderr).wait_for("midi-in opened: MIDI input 'seq:out' (jack)", 10)
        with Host() as host:
            host.connect(dev.id)
            send(host, cmd.midi_note_on(0, 69, 100))
            rec = helpers_ipc.read_realtime(host, 2.5, 2, BLOCK)[0, RATE // 4:]
    finally:
        seq.terminate()
        seq.wait(timeout=5)
    spectrum = np.abs(np.fft.rfft(rec * np.hanning(len(rec))))
    hz = np.fft.rfftfreq(len(rec), 1 / RATE)

    def level(f: float) -> float:
        return float(spectrum[(hz > f - 3) & (hz < f + 3)].max())

    floor = float(np.median(spectrum))
    for f in (261.63, 329.63, 440.0):  # C4 and E4 from the live port, A4 over IPC
        assert level(f) > 100 * floor, (f, level(f), floor)
    played = min(level(f) for f in (261.63, 329.63, 440.0))
    assert level(392.0) < 0.05 * played  # G4: nobody played it (a 50th: on/off sidebands)


def test_dlsine12_lv2_carries_twelve_channels_and_its_taps(spawn):
    dev = lv2_device(spawn, "--plugin", "lv2:DLSine12", "--channels", "5-6", device_id="Lv12")
    assert "2 ch" in dev.ready_line and "tap out:5-6" in dev.ready_line
    with Host() as host:
        host.connect(dev.id)
        send(host, cmd.midi_note_on(0, 57, 127))
        rec = read_blocks(host, 40, 2)[:, 8 * BLOCK:]
    assert peak_hz(rec[0]) == pytest.approx(3 * 220, abs=2)  # pair 3: the 3rd harmonic
    np.testing.assert_array_equal(rec[0], rec[1])


def test_a_chain_mixes_an_lv2_midi_effect_an_lv2_instrument_a_vst3_and_a_builtin(spawn):
    """MIDI an LV2 plugin puts out goes on to the next stage: x42's MIDI transpose (+12)
    before DLSine makes note 57 sound at 440 Hz; then the VST3 Dragonfly plate and
    pedalboard's Gain, tapped anywhere."""
    dev = lv2_device(spawn, "--plugin", TRANSPOSE, "--plugin", DLSINE, "--plugin",
                     str(PLUGINS / "DragonflyPlateReverb.vst3"), "--plugin", "builtin:Gain",
                     "--param", "transpose=12", "--tap", "2", device_id="Mixed")
    with Host() as host:
        host.connect(dev.id)
        routing = json.loads(cmd.decode(host.request(cmd.route("")))["routing"])
        assert routing["taps"][:3] == ["out", "MIDI Chromatic Transpose", "DLSine"]
        send(host, cmd.midi_note_on(0, 57, 127))
        dry = read_blocks(host, 40, 2)[:, 8 * BLOCK:]
        host.request(cmd.route("out"))
        read_blocks(host, 4, 2)
        wet = read_blocks(host, 40, 2)
    assert peak_hz(dry[0]) == pytest.approx(440, abs=2)
    assert np.isfinite(wet).all() and np.abs(wet).max() > 0.01
    assert not np.allclose(wet[:, :dry.shape[1]], dry, atol=1e-3)


# ---- the worker -------------------------------------------------------------------------------


def test_worker_runs_on_its_own_thread_and_answers_on_the_audio_thread(spawn):
    """DL Worker Probe schedules work when its Request changes; work() sleeps 50 ms (a file
    load) and answers with the new level. The plugin itself reports the thread ids of run()
    and work() and how often work() ran on run()'s thread; the host's worker thread is
    named "lv2 worker" in /proc."""
    dev = lv2_device(spawn, "--plugin", PROBE, device_id="Probe")
    with Host() as host:
        host.connect(dev.id)
        ones = np.full((2, BLOCK), 0.5, np.float32)
        feed = lambda k: host.send_return_audio(ones)  # noqa: E731
        assert np.abs(read_blocks(host, 8, 2, feed=feed)[:, -BLOCK:] - 0.5).max() == 0
        host.request(cmd.set_parameter("request", 0.25))
        before = read_blocks(host, 4, 2, feed=feed)  # blocks go on while work() sleeps
        time.sleep(0.3)  # the device renders on demand: give the 50 ms work real time
        after = read_blocks(host, 8, 2, feed=feed)
        got = {name: value(host, name) for name in
               ("level", "responses", "work_on_audio_thread", "run_tid", "work_tid")}
    assert got["level"] == pytest.approx(0.25) and got["responses"] == 1, got
    np.testing.assert_array_equal(before[:, -BLOCK:], 0.5)  # not waiting for the work
    np.testing.assert_array_equal(after[:, -BLOCK:], 0.5 * 0.25)  # the response took effect
    levels = np.unique(np.concatenate([before, after], axis=1))
    assert set(levels) <= {0.5, 0.125}, levels  # whole blocks before or after, nothing between
    assert got["work_on_audio_thread"] == 0
    assert got["run_tid"] and got["work_tid"] and got["run_tid"] != got["work_tid"]
    comm = Path(f"/proc/{dev.pid}/task/{int(got['work_tid'])}/comm").read_text().strip()
    assert comm == "lv2 worker"


def test_x42_convolver_loads_its_impulse_response_through_the_worker(spawn):
    """x42's zero-latency convolver needs the worker: the preset names an impulse response
    file (a delta) that the plugin loads in work(). Once loaded, the output is the input,
    delayed by the latency the plugin reports (its latency port, in the Route reply)."""
    dev = lv2_device(spawn, "--plugin", ZCONV, "--preset", "No-OP Stereo", device_id="Conv")
    assert_convolver_passes_its_input(dev)
    tasks = [Path(f"/proc/{dev.pid}/task/{tid}/comm").read_text().strip()
             for tid in os.listdir(f"/proc/{dev.pid}/task")]
    assert "lv2 worker" in tasks


def assert_convolver_passes_its_input(dev) -> None:
    """With the delta impulse response loaded, x42's convolver gives back its input, late by
    the 64 frames it reports (and whole blocks of the device's queue)."""
    rng = np.random.default_rng(3)
    sent: list[np.ndarray] = []
    with Host() as host:
        host.connect(dev.id)

        def noise(k: int) -> None:
            block = (0.3 * rng.standard_normal((2, BLOCK))).astype(np.float32)
            sent.append(block)
            assert host.send_return_audio(block)

        out = read_blocks(host, 80, 2, feed=noise)
        latency = json.loads(cmd.decode(host.request(cmd.route("")))["routing"])["latency"]
    assert latency == 64
    x = np.concatenate(sent, axis=1)
    y = out[:, -40 * BLOCK:]
    lag = next(d for d in range(0, 16 * BLOCK + 1, 1)
               if np.allclose(y[:, : 20 * BLOCK], x[:, x.shape[1] - 40 * BLOCK - d:
                                                      x.shape[1] - 20 * BLOCK - d], atol=1e-6))
    assert (lag - 64) % BLOCK == 0, lag  # the IR's delta passes the input through


def test_the_convolver_state_keeps_its_impulse_response_file_across_a_restart(spawn, tmp_path):
    """The convolver stores its IR's path through the state:mapPath feature; --state brings it
    back after a restart without the preset, and the worker loads the file again."""
    state = tmp_path / "conv.json"
    dev = lv2_device(spawn, "--plugin", ZCONV, "--preset", "No-OP Stereo", "--state",
                     str(state), device_id="ConvState")
    assert_convolver_passes_its_input(dev)
    assert "stopped" in dev.stop()
    saved = json.loads(state.read_text())["chain"]["state"][0]["lv2_state"]
    assert "zeroconvolv#ir> <file:///usr/lib/lv2/zeroconvo.lv2/ir/delta-48k.wav>" in saved
    again = lv2_device(spawn, "--plugin", ZCONV, "--state", str(state), device_id="ConvState")
    assert "state restored" in again.ready_line
    assert_convolver_passes_its_input(again)


# ---- parameters, state and presets -------------------------------------------------------------


def test_control_ports_are_parameters_with_their_rules(spawn):
    dev = lv2_device(spawn, "--plugin", f"lv2:{FIL4}", device_id="Rules")
    with Host() as host:
        host.connect(dev.id)
        params = json.loads(cmd.decode(host.request(cmd.build("ParameterList")))["parameters"])
        by = {p["name"]: p for p in params}
        assert by["enable"]["toggled"] and by["HPfreq"]["logarithmic"]
        assert (by["gain"]["min"], by["gain"]["max"], by["gain"]["default"]) == (-18, 18, 0)
        assert by["gain"]["unit"] == "dB" and by["peak"]["output"]
        assert cmd.decode(host.request(cmd.set_parameter("enable", 0.7)))["value"] == 1.0
        with pytest.raises(CommandError, match=r"out of range -18\.\.18"):
            host.request(cmd.set_parameter("gain", 40))
        with pytest.raises(CommandError, match="is an output of the plugin"):
            host.request(cmd.set_parameter("peak", 0))
    dev2 = lv2_device(spawn, "--plugin", TRANSPOSE, "--plugin", DLSINE, device_id="Enum")
    with Host() as host:
        host.connect(dev2.id)
        got = cmd.decode(host.request(cmd.set_parameter("MIDI Chromatic Transpose.transpose",
                                                        3.4)))
        assert got["value"] == 3.0  # an integer port
        with pytest.raises(CommandError, match="is not one of 0 \\(Any\\)"):
            host.request(cmd.set_parameter("channelf", 17))


def test_a_parameter_change_lands_on_a_block_boundary(spawn):
    dev = lv2_device(spawn, "--plugin", DLSINE, device_id="Edge")
    with Host() as host:
        host.connect(dev.id)
        send(host, cmd.midi_note_on(0, 69, 127))
        before = read_blocks(host, 6, 2)
        assert cmd.decode(host.request(cmd.set_parameter("gain", 0.25)))["value"] == 0.25
        after = read_blocks(host, 12, 2)
    peaks = np.abs(np.concatenate([before, after], axis=1)[0].reshape(-1, BLOCK)).max(axis=1)
    loud = [p for p in peaks if p > 0.3]
    quiet = [p for p in peaks[len(peaks) - 6:]]
    assert loud and all(p == pytest.approx(0.5, abs=0.01) for p in loud[1:])
    assert all(p == pytest.approx(0.25, abs=0.01) for p in quiet)
    assert all(p < 0.26 or p > 0.49 for p in peaks[1:]), peaks  # no block holds both gains


def test_state_survives_a_restart_and_a_kill_9(spawn, tmp_path):
    state = tmp_path / "eq.json"
    dev = lv2_device(spawn, "--plugin", f"lv2:{FIL4}", "--state", str(state), device_id="Keep")
    with Host() as host:
        host.connect(dev.id)
        host.request(cmd.set_parameter("gain", -7.5))
        host.request(cmd.set_parameter("freq1", 500))
        read_blocks(host, 4, 2)

        def saved_values() -> dict:
            return json.loads(state.read_text())["chain"]["state"][0]["parameters"] \
                if state.exists() else {}

        helpers_ipc.wait_until(lambda: saved_values().get("gain") == -7.5
                               and saved_values().get("freq1") == 500, 5,
                               "the state file to follow both changes")
    dev.kill9()  # no chance to save on the way out
    saved = json.loads(state.read_text())
    assert "lv2:symbol \"gain\"" in saved["chain"]["state"][0]["lv2_state"]
    again = lv2_device(spawn, "--plugin", f"lv2:{FIL4}", "--state", str(state), device_id="Keep")
    assert again.id == "Keep:0" and "state restored" in again.ready_line
    with Host() as host:
        host.connect(again.id)
        assert value(host, "gain") == -7.5 and value(host, "freq1") == 500
        host.request(cmd.set_parameter("gain", 4.0))
    assert "stopped" in again.stop()
    third = lv2_device(spawn, "--plugin", f"lv2:{FIL4}", "--state", str(state), device_id="Keep")
    with Host() as host:
        host.connect(third.id)
        assert value(host, "gain") == 4.0


def saved_mark_file(state: Path) -> str:
    """The text of the file DL File State made for its state, as the --state file holds it
    ("" before the first save)."""
    if not state.exists():
        return ""
    saved = json.loads(state.read_text())["chain"]["state"][0]
    return base64.b64decode(saved.get("lv2_files", {}).get("take/mark.txt", "")).decode()


def file_state(dev) -> tuple[float, float]:
    """What DL File State read back from its file at its last restore: (status, mark)."""
    with Host() as host:
        host.connect(dev.id)
        read_blocks(host, 2, 2)
        return value(host, "file_status"), value(host, "restored")


def test_files_a_plugin_makes_for_its_state_survive_a_restart_and_a_kill_9(spawn, tmp_path):
    """DL File State keeps its state in a file it makes through state:makePath, in the
    instance's own folder, which goes when the device does. The --state file carries the
    file itself, so a new process gets it back: after a clean stop, and after a kill -9."""
    state = tmp_path / "file.json"
    dev = lv2_device(spawn, "--plugin", FILE_STATE, "--param", "mark=123", "--state",
                     str(state), device_id="Files")
    with Host() as host:
        host.connect(dev.id)
        read_blocks(host, 4, 2)
    assert "stopped" in dev.stop()
    assert saved_mark_file(state) == "mark=123\n"
    again = lv2_device(spawn, "--plugin", FILE_STATE, "--state", str(state), device_id="Files")
    assert "state restored" in again.ready_line
    assert file_state(again) == (1, 123)  # read from the file the state brought back
    with Host() as host:
        host.connect(again.id)
        host.request(cmd.set_parameter("mark", 456))
        read_blocks(host, 4, 2)
        helpers_ipc.wait_until(lambda: saved_mark_file(state) == "mark=456\n", 5,
                               "the state file to carry the new file")
    again.kill9()  # no chance to save on the way out
    third = lv2_device(spawn, "--plugin", FILE_STATE, "--state", str(state), device_id="Files")
    assert file_state(third) == (1, 456)


def test_a_state_whose_files_are_too_big_is_a_failed_save_said_and_exit_1(spawn, tmp_path):
    """DL File State pads its file to 33 MiB, past the 32 MiB a state carries: the autosave
    fails and says so on stderr, the file keeps the last state that fitted, and the device
    exits 1 at stop, saying the file is out of date. Nothing is cut short silently."""
    state = tmp_path / "big.json"
    dev = lv2_device(spawn, "--plugin", FILE_STATE, "--state", str(state), device_id="Big")
    with Host() as host:
        host.connect(dev.id)
        host.request(cmd.set_parameter("mark", 9))
        read_blocks(host, 4, 2)
        helpers_ipc.wait_until(lambda: saved_mark_file(state) == "mark=9\n",
                               5, "the first state")
        host.request(cmd.set_parameter("pad_mib", 33))
        read_blocks(host, 4, 2)
        time.sleep(1.5)  # past the autosave interval: the padded state was tried
    out = dev.stop()
    assert "stopped" in out and dev.proc.returncode == 1
    refusal = (f"could not save --state {state}: DL File State: the files of its state pass "
               "32 MiB, more than a state document carries")
    assert refusal in dev.stderr
    assert "the file is out of date" in dev.stderr
    assert "Traceback" not in dev.stderr
    assert saved_mark_file(state) == "mark=9\n"
    assert json.loads(state.read_text())["chain"]["state"][0]["parameters"]["pad_mib"] == 0


def test_the_folder_of_a_killed_lv2_device_is_removed_by_the_next_one(spawn, tmp_path,
                                                                      monkeypatch):
    """A device killed -9 can't remove its instance folder (the file its plugin made, in
    $TMPDIR). The next process that loads an LV2 plugin removes the folders whose process is
    gone, and a device stopped cleanly removes its own."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    state = tmp_path / "s.json"
    dev = lv2_device(spawn, "--plugin", FILE_STATE, "--state", str(state), device_id="Orphan")
    with Host() as host:
        host.connect(dev.id)
        host.request(cmd.set_parameter("mark", 8))
        read_blocks(host, 4, 2)  # the plugin's own state follows the mark when it runs
        helpers_ipc.wait_until(lambda: saved_mark_file(state) == "mark=8\n",
                               5, "the save of the plugin's file")
    [folder] = tmp_path.glob("discolink-lv2-*")
    assert folder.name.startswith(f"discolink-lv2-{dev.pid}-") and (folder / "take").is_dir()
    dev.kill9()
    assert folder.exists()
    after = lv2_device(spawn, "--plugin", GAIN, device_id="Next")
    assert not folder.exists()
    assert "stopped" in after.stop()
    again = lv2_device(spawn, "--plugin", FILE_STATE, "--state", str(state), device_id="Orphan")
    assert file_state(again) == (1, 8)  # the state carried the file; the folder wasn't needed
    assert "stopped" in again.stop()
    assert not list(tmp_path.glob("discolink-lv2-*"))


def test_set_state_brings_a_plugins_files_to_another_device_and_refuses_bad_paths(spawn):
    """GetState's document stands alone: another device, after the first one has gone (its
    folder with it), gets the file back through SetState. A document naming a file outside
    the plugin's folder is refused whole, and nothing is written."""
    first = lv2_device(spawn, "--plugin", FILE_STATE, "--param", "mark=77", device_id="From")
    with Host() as host:
        host.connect(first.id)
        read_blocks(host, 2, 2)
        blob = bytes(host.request(cmd.build("GetState")).payload)
    assert "stopped" in first.stop()
    doc = json.loads(blob)
    assert set(doc["state"][0]["lv2_files"]) == {"take/mark.txt"}
    second = lv2_device(spawn, "--plugin", FILE_STATE, device_id="To")
    assert file_state(second) == (-1, 0)  # only its default state: no file named
    with Host() as host:
        host.connect(second.id)
        for m in cmd.fragments("SetState", blob):  # no reply when it succeeds
            send(host, m)
        read_blocks(host, 8, 2)  # past the blocks rendered before the SetState
        assert (value(host, "file_status"), value(host, "restored")) == (1, 77)
        evil = json.loads(blob)
        evil["state"][0]["parameters"]["mark"] = 5
        evil["state"][0]["lv2_files"] = {"../escaped.txt": "bWFyaz0xCg=="}
        with pytest.raises(CommandError, match=re.escape(
                "'../escaped.txt', not a path inside the plugin's folder")):
            host.request(cmd.fragments("SetState", json.dumps(evil).encode()), timeout=10)
        assert value(host, "mark") == 77  # refused whole: nothing changed
    assert not (Path(tempfile.gettempdir()) / "escaped.txt").exists()


def test_a_state_file_naming_files_outside_the_plugins_folder_is_refused_at_start(spawn,
                                                                                  tmp_path):
    """A --state file edited by hand (or by anyone): file names that leave the instance's
    folder, or data that is not base64, are one line naming the file, exit 2, before any
    segment exists, and nothing is written."""
    state = tmp_path / "edited.json"
    target = tmp_path / "escaped.txt"
    for files, why in (({f"../../../..{target}": "eA=="}, "not a path inside the plugin's "
                        "folder"), ({"take/mark.txt": "not base64!"}, "is not base64 text")):
        state.write_text(json.dumps({"device_id": "Edited:0", "chain": {
            "format": "discolink-bridge plugin state", "version": 1, "stages": [FILE_STATE],
            "state": [{"name": "DL File State", "parameters": {"mark": 3},
                       "lv2_state": "<urn:discolink-bridge:state> a pset:Preset .",
                       "lv2_files": files}]}}))
        r = spawn.run("device", "--plugin", FILE_STATE, "--state", str(state))
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("discolink-bridge")]
        assert len(lines) == 1 and lines[0].startswith(
            f"discolink-bridge device: error: --state {state}: DL File State: lv2_files") \
            and lines[0].endswith(why), lines
        assert "Traceback" not in r.stderr
        assert not [n for n in os.listdir("/dev/shm") if spawn.namespace in n]
    assert not target.exists()


def test_the_options_feature_gives_the_rate_and_block_lengths(spawn):
    """DL Options Probe shows the options it found at instantiate: the device's rate and
    block length, the largest block a host may ask for, and the atom buffers' size. After a
    handshake at another rate, the plugin is instantiated again and sees that rate."""
    dev = spawn.device("--plugin", OPTIONS, "--samplerate", "44100", "--blocksize", "128",
                       device_id="Opts")
    names = ("sample_rate", "nominal_block", "min_block", "max_block", "sequence_size")
    with Host() as host:
        host.set_local_buffer_info(44100, 128)
        host.connect(dev.id)
        helpers_ipc.read_blocks(host, 2, 128, 2, slack=30)
        got = {n: value(host, n) for n in names}
    assert got == {"sample_rate": 44100, "nominal_block": 128, "min_block": 1,
                   "max_block": 4096, "sequence_size": 32768}
    with Host() as host:
        host.set_local_buffer_info(48000, 128)
        assert host.connect(dev.id).sample_rate == 48000
        helpers_ipc.read_blocks(host, 2, 128, 2, slack=30)
        assert value(host, "sample_rate") == 48000


def test_get_state_and_set_state_round_trip_lv2_state(spawn):
    dev = lv2_device(spawn, "--plugin", DLSINE, device_id="Blob")
    with Host() as host:
        host.connect(dev.id)
        host.request(cmd.set_parameter("tune", -3.0))
        blob = bytes(host.request(cmd.build("GetState")).payload)
        assert "lv2_state" in json.loads(blob)["state"][0]
        host.request(cmd.set_parameter("tune", 5.0))
        for m in cmd.fragments("SetState", blob):
            send(host, m)
        read_blocks(host, 2, 2)
        assert value(host, "tune") == -3.0


def test_presets_load_by_name_or_uri_at_start_and_over_ipc(spawn):
    dev = lv2_device(spawn, "--plugin", GAIN, "--preset", "Half", device_id="Pre")
    with Host() as host:
        host.connect(dev.id)
        assert value(host, "gain") == 0.5
        host.request(cmd.set_parameter("gain", 2.0))
        for m in cmd.fragments("LoadPreset", b"half"):  # labels match ignoring case
            send(host, m)
        read_blocks(host, 2, 2)
        assert value(host, "gain") == 0.5
        host.request(cmd.set_parameter("gain", 2.0))
        for m in cmd.fragments("LoadPreset", b"urn:discolink-bridge:lv2test:gain#half"):
            send(host, m)  # by its URI, as lv2ls -p / plugin info show it
        read_blocks(host, 2, 2)
        assert value(host, "gain") == 0.5
        with pytest.raises(CommandError, match="has no preset 'Loud'"):
            host.request(cmd.build("LoadPreset", path="Loud"))


def test_optional_descriptor_functions_may_be_null(spawn):
    """DL Null Gain leaves activate, deactivate and extension_data NULL: the host checks each
    before calling it, so the plugin runs, and stops, without a crash."""
    dev = lv2_device(spawn, "--plugin", GAIN, "--param", "gain=2", device_id="Null")
    with Host() as host:
        host.connect(dev.id)
        ones = np.full((2, BLOCK), 0.25, np.float32)
        out = read_blocks(host, 8, 2, feed=lambda k: host.send_return_audio(ones))
    assert out[:, -BLOCK:].tolist() == np.full((2, BLOCK), 0.5).tolist()
    assert "stopped" in dev.stop() and dev.proc.returncode == 0


def test_cv_ports_get_silence_stay_out_of_the_audio_and_latency_is_reported(spawn):
    """No installed plugin has a CV port (swh's "CV" plugins take their CV on audio ports),
    so DL Options Probe has one of each: its input must get a buffer of silence (the plugin
    reports the block's peak, -1 for no buffer), and its output, which it fills with 0.5,
    must not reach the link, whose two channels stay the stereo pass-through. x42's dpl
    reports its lookahead on the latency port, which the Route reply carries."""
    dev = lv2_device(spawn, "--plugin", "lv2:http://gareus.org/oss/lv2/dpl#stereo",
                     device_id="Dpl")
    with Host() as host:
        host.connect(dev.id)
        read_blocks(host, 4, 2)
        routing = json.loads(cmd.decode(host.request(cmd.route("")))["routing"])
        assert routing["latency"] == value(host, "latency") > 0
    cv = lv2_device(spawn, "--plugin", OPTIONS, device_id="Cv")
    assert cv.ready_line and "2 ch" in cv.ready_line, cv.ready_line
    with Host() as host:
        host.connect(cv.id)
        quarter = np.full((2, BLOCK), 0.25, np.float32)
        out = read_blocks(host, 8, 2, feed=lambda k: host.send_return_audio(quarter))
        assert value(host, "cv_peak") == 0
    np.testing.assert_array_equal(out[:, -BLOCK:], quarter)
    assert not (out == 0.5).any()


# ---- naming -------------------------------------------------------------------------------------


def test_unknown_and_ambiguous_names_are_one_line_and_exit_2(spawn, tmp_path):
    r = spawn.run("device", "--plugin", "lv2:DLSinee", timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("discolink-bridge device")]
    assert len(lines) == 1 and "no such LV2 plugin (did you mean lv2:DLSine?)" in lines[0]
    # a second bundle that also calls its plugin "DL Null Gain"
    twin = tmp_path / "lv2" / "twin.lv2"
    twin.mkdir(parents=True)
    (twin / "manifest.ttl").write_text(textwrap.dedent("""\
        @prefix lv2: <http://lv2plug.in/ns/lv2core#> .
        @prefix doap: <http://usefulinc.com/ns/doap#> .
        <urn:test:twin> a lv2:Plugin ; doap:name "DL Null Gain" ;
            lv2:binary <../../none.so> .
        """))
    env = {"LV2_PATH": f"{tmp_path / 'lv2'}{os.pathsep}{LV2_TEST_PATH}"}
    r = subprocess.run([sys.executable, "-m", "bridge", "device", "--plugin",
                        "lv2:dl null gain"], env={**spawn.env(), **env}, capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2, r.stderr
    assert "2 LV2 plugins are named 'dl null gain'" in r.stderr
    assert "lv2:urn:test:twin" in r.stderr and f"{GAIN}" in r.stderr


def test_a_plugin_that_needs_a_missing_feature_is_refused_naming_it(spawn):
    env = {**spawn.env(), "LV2_PATH": str(BAD)}
    r = subprocess.run([sys.executable, "-m", "bridge", "device", "--plugin",
                        "lv2:DLNeedsFeature"], env=env, capture_output=True, text=True,
                       errors="replace", timeout=120, cwd=REPO)
    assert r.returncode == 1
    assert "needs the LV2 feature http://example.org/ns/imaginary#feature" in r.stderr
    assert "Traceback" not in r.stderr


def test_relative_lv2_path_entries_are_resolved_against_the_working_directory(spawn):
    """lilv crashes (SIGSEGV) on a relative $LV2_PATH entry, the way a README line such as
    ``LV2_PATH=build/plugins/lv2 ...`` sets it; the bridge hands lilv absolute folders."""
    rel = os.path.relpath(LV2_TEST_PATH.split(os.pathsep)[0], REPO)
    assert not os.path.isabs(rel)
    r = subprocess.run([sys.executable, "-m", "bridge", "plugin", "info", "lv2:DLSine"],
                       env={**spawn.env(), "LV2_PATH": rel}, capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode == 0, (r.returncode, r.stderr[-400:])
    assert "urn:discolink-bridge:dlsine" in r.stdout
    assert f"{REPO / rel / 'DLSine.lv2'}" in r.stdout


# ---- scan and info -----------------------------------------------------------------------------


def scan_env(tmp_path: Path) -> dict[str, str]:
    """A cache and home of the test's own; on the LV2 path only our test plugins and the LV2
    core specification (which names the plugin classes), as a folder of links."""
    path = tmp_path / "lv2path"
    path.mkdir(exist_ok=True)
    for bundle in [*(PLUGINS / "lv2").iterdir(), Path("/usr/lib/lv2/core.lv2")]:
        if not (path / bundle.name).exists():
            (path / bundle.name).symlink_to(bundle)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "HOME": str(tmp_path / "home"), "LV2_PATH": str(path),
            "TMPDIR": str(tmp_path / "tmp")}


def test_scan_reports_broken_bundles_and_lists_the_rest(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bridge", "plugin", "scan", "--json",
                        str(BAD)], env=scan_env(tmp_path), capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    by = {e["name"]: e for e in json.loads(r.stdout)}
    assert by["DLCrashInstantiate"]["error"] == "crashed with signal 11 (SIGSEGV) in " \
        "instantiate()"
    assert by["DLCrashRun"]["error"] == "crashed with signal 11 (SIGSEGV) in run()"
    assert by["DLBrokenTurtle"]["error"].startswith("broken Turtle, bundle skipped: "
                                                    "DLBrokenTurtle.ttl:7:")
    assert "imaginary#feature" in by["DLNeedsFeature"]["error"]
    sine = by["DLSine"]
    assert sine["error"] is None and sine["uri"] == "urn:discolink-bridge:dlsine"
    assert (sine["format"], sine["plugin_class"], sine["is_instrument"]) == \
        ("LV2", "Instrument Plugin", True)
    assert (sine["inputs"], sine["outputs"], sine["midi_inputs"], sine["midi_outputs"]) == \
        (0, 2, 1, 0)
    assert sine["parameter_count"] == 3
    assert by["DL Worker Probe"]["parameter_count"] == 6
    # No probe left a folder behind: not the plugins that crashed or failed in instantiate
    # (an instance's folder is made only when the plugin first needs one), nor the rest.
    assert not list((tmp_path / "tmp").glob("discolink-lv2-*"))
    table = subprocess.run([sys.executable, "-m", "bridge", "plugin", "scan", str(BAD)],
                           env=scan_env(tmp_path), capture_output=True, text=True,
                           timeout=300, cwd=REPO).stdout.splitlines()  # from the cache
    assert table[0].split()[:4] == ["NAME", "TYPE", "CLASS", "IN"]
    rows = {ln.split("  ")[0]: ln.split() for ln in table[1:-1]}
    assert rows["DLSine"][1:9] == ["instrument", "Instrument", "0", "2", "1/0", "3", "LV2",
                                   "discolink-bridge"]
    assert rows["DL Null Gain"][3:6] == ["effect", "Amplifier", "2"]


def test_scan_of_every_installed_lv2_plugin_matches_lv2ls_and_is_cached(tmp_path):
    env = {**scan_env(tmp_path), "LV2_PATH": LV2_TEST_PATH}
    listed = subprocess.run(["lv2ls"], env=env, capture_output=True, text=True,
                            timeout=60).stdout.split()
    argv = [sys.executable, "-m", "bridge", "plugin", "scan", "--json"]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    entries = [e for e in json.loads(r.stdout) if e["format"] == "LV2"]
    assert sorted(e["uri"] for e in entries) == sorted(listed)
    # Every plugin of x42, LSP and swh loads and runs, but two: Debian 12's swh-lv2 builds
    # mbeq and pitchScaleHQ without linking libfftw3f, so their library can't be opened (lilv
    # says "undefined symbol: fftwf_execute"); the scan reports lilv's reason.
    failed = {e["uri"]: e["error"] for e in entries if e["error"]}
    assert set(failed) <= {"http://plugin.org.uk/swh-plugins/mbeq",
                           "http://plugin.org.uk/swh-plugins/pitchScaleHQ"}, failed
    assert all("undefined symbol: fftwf_" in error for error in failed.values()), failed
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300,
                           cwd=REPO)
    cached = json.loads(again.stdout)
    assert all(not e["probed"] for e in cached)
    assert len(cached) == len(json.loads(r.stdout))


def test_plugin_info_describes_one_lv2_plugin(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bridge", "plugin", "info", "--json",
                        f"lv2:{FIL4}"], env={**scan_env(tmp_path), "LV2_PATH": LV2_TEST_PATH},
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["uri"] == FIL4 and info["format"] == "LV2" and info["is_effect"]
    assert info["plugin_class"] == "Parametric EQ Plugin"
    assert (info["inputs"], info["outputs"]) == (2, 2)
    enable = next(p for p in info["parameters"] if p["key"] == "enable")
    assert enable["toggled"] and enable["default"] == 1
    r = subprocess.run([sys.executable, "-m", "bridge", "plugin", "info", "lv2:fil4"],
                       env=scan_env(tmp_path), capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 2 and "no such LV2 plugin" in r.stderr


# ---- racks ---------------------------------------------------------------------------------------


def test_rack_reports_unknown_uris_at_file_line_column_with_did_you_mean(tmp_path):
    rack = tmp_path / "rack.yaml"
    rack.write_text(textwrap.dedent(f"""\
        name: lv2
        devices:
          - id: Eq
            kind: plugin
            plugin: "lv2:{FIL4.replace('stereo', 'sterio')}"
          - id: Gain
            kind: plugin
            plugin: {GAIN}
            preset: Hlaf
          - id: Odd
            kind: plugin
            plugin: lv2:DLNeedsFeature
        """))
    env = {**os.environ, "LV2_PATH": f"{LV2_TEST_PATH}{os.pathsep}{BAD}"}
    r = subprocess.run([sys.executable, "-m", "bridge", "rack", "check", str(rack)], env=env,
                       capture_output=True, text=True, errors="replace", timeout=120, cwd=REPO)
    assert r.returncode == 2
    assert f"{rack}:5:13: devices[0].plugin: no such LV2 plugin (did you mean lv2:{FIL4}?)" \
        in r.stderr
    assert f"{rack}:9:13: devices[1].preset: DL Null Gain has no preset 'Hlaf' (did you " \
           "mean 'Half'?)" in r.stderr
    assert f"{rack}:12:13: devices[2].plugin: DLNeedsFeature needs the LV2 feature " \
           "http://example.org/ns/imaginary#feature, which this host does not provide" \
        in r.stderr


def test_rack_survives_plugins_that_crash_in_instantiate_and_in_run(spawn, tmp_path):
    """A device whose LV2 plugin crashes in instantiate() dies at start, one whose plugin
    crashes in run() dies at its first block (when a host claims it); both are reported,
    and the rack and its other device go on."""
    bad = tmp_path / "bad"
    for name in ("DLCrashRun", "DLCrashInstantiate"):
        shutil.copytree(BAD / f"{name}.lv2", bad / f"{name}.lv2")
    rack = tmp_path / "rack.yaml"
    rack.write_text(textwrap.dedent(f"""\
        name: crashy
        devices:
          - id: Good
            kind: plugin
            plugin: {DLSINE}
          - id: Crashy
            kind: plugin
            plugin: lv2:DLCrashRun
            restart: never
          - id: Early
            kind: plugin
            plugin: lv2:DLCrashInstantiate
            restart: never
        """))
    env = {**spawn.env(), "LV2_PATH": f"{bad}{os.pathsep}{LV2_TEST_PATH}"}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "rack", str(rack)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    spawn.procs.append(proc)
    try:
        def status() -> dict:
            r = subprocess.run([sys.executable, "-m", "bridge", "status", "--json"], env=env,
                               capture_output=True, text=True, timeout=30, cwd=REPO)
            return json.loads(r.stdout) if r.returncode == 0 else {}

        def states() -> dict:
            return {d["name"]: d["state"] for d in status().get("devices", [])}

        helpers_ipc.wait_until(lambda: states().get("Good") == "running"
                               and states().get("Crashy") == "running"
                               and states().get("Early") == "stopped", 60,
                               "two devices to run and one to die at start")
        with Host() as host:  # the first block kills the device
            host.connect("Crashy:0")
            buf = np.zeros((2, BLOCK), np.float32)
            deadline = time.monotonic() + 10
            while host.connected and time.monotonic() < deadline:
                host.receive_audio(buf)
                time.sleep(0.005)
        helpers_ipc.wait_until(lambda: states().get("Crashy") == "stopped", 30,
                               "the crash to be reported")
        with Host() as host:
            host.connect("Good:0")
            send(host, cmd.midi_note_on(0, 69, 100))
            assert np.abs(read_blocks(host, 20, 2)).max() > 0.3
        devices = {d["name"]: d for d in status()["devices"]}
        assert devices["Crashy"]["last_exit"] == "killed by signal 11", devices
        assert devices["Early"]["last_exit"] == "killed by signal 11", devices
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out


def test_a_host_at_another_sample_rate_gets_the_plugin_instantiated_at_its_rate(spawn):
    """LV2 fixes the sample rate at instantiation: after a handshake at 44.1 kHz the plugin
    runs again at 44.1 kHz, its parameters kept, so note 69 is still 440 Hz."""
    dev = spawn.device("--plugin", DLSINE, "--param", "gain=0.3", "--blocksize", str(BLOCK),
                       device_id="Rate")
    with Host() as host:
        host.set_local_buffer_info(44100, BLOCK)
        conn = host.connect(dev.id)
        assert conn.sample_rate == 44100
        send(host, cmd.midi_note_on(0, 69, 127))
        rec = read_blocks(host, 40, 2)[0, 8 * BLOCK:]
        assert value(host, "gain") == pytest.approx(0.3)
    assert peak_hz(rec, 44100) == pytest.approx(440, abs=2)
    assert np.abs(rec).max() == pytest.approx(0.3, abs=1e-3)


def lv2info_controls(uri: str) -> dict[str, dict]:
    """Control ports as Debian's lv2info prints them: symbol -> name, range, properties."""
    text = subprocess.run(["lv2info", uri], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LV2_PATH": LV2_TEST_PATH}).stdout
    ports: dict[str, dict] = {}
    for block in text.split("\n\tPort ")[1:]:
        if "#ControlPort" not in block:
            continue
        fields: dict = {"properties": set()}
        last = ""
        for line in block.splitlines()[1:]:
            key, _, rest = line.strip().partition(":")
            if line.strip().startswith("http"):  # a continuation of the field above
                if last == "Properties":
                    fields["properties"].add(line.strip())
                if "#OutputPort" in line:
                    fields["output"] = True
                continue
            last, rest = key, rest.strip()
            if key in ("Symbol", "Name"):
                fields[key.lower()] = rest
            elif key in ("Minimum", "Maximum", "Default"):
                fields[key.lower()] = float(rest)
            elif key == "Type":
                fields["output"] = False
            elif key == "Properties":
                fields["properties"].add(rest)
            if "#OutputPort" in line:
                fields["output"] = True
        ports[fields["symbol"]] = fields
    return ports


@pytest.mark.parametrize("uri", [FIL4, "http://lsp-plug.in/plugins/lv2/compressor_stereo",
                                 SC4])
def test_plugin_info_agrees_with_lv2info_on_every_control_port(tmp_path, uri):
    r = subprocess.run([sys.executable, "-m", "bridge", "plugin", "info", "--json",
                        f"lv2:{uri}"], env={**scan_env(tmp_path), "LV2_PATH": LV2_TEST_PATH},
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    ours = {p["key"]: p for p in json.loads(r.stdout)["parameters"]}
    theirs = lv2info_controls(uri)
    assert set(ours) == set(theirs)
    for key, p in theirs.items():
        mine = ours[key]
        assert mine["name"] == p["name"] and mine["output"] == p["output"], key
        for field in ("min", "max", "default"):
            want = p.get({"min": "minimum", "max": "maximum"}.get(field, field))
            assert mine[field] == pytest.approx(want, abs=1e-4), (key, field)
        props = p["properties"]
        assert mine["toggled"] == any(x.endswith("#toggled") for x in props), key
        assert mine["logarithmic"] == any(x.endswith("#logarithmic") for x in props), key
        assert bool(mine["choices"]) == any(x.endswith("#enumeration") for x in props), key


def test_a_mono_lv2_effect_in_a_stereo_device_follows_the_channel_mapping(spawn):
    """swh's amp has one input and one output: a stereo device averages its two inputs into
    the plugin and copies the plugin's output to both channels (the rules VST3 stages
    follow)."""
    dev = lv2_device(spawn, "--plugin", f"lv2:{AMP}", "--param", "gain=6", "--channels", "2",
                     device_id="Mono")
    stereo = np.stack([np.full(BLOCK, 0.2), np.full(BLOCK, 0.4)]).astype(np.float32)
    with Host() as host:
        conn = host.connect(dev.id)
        assert (conn.channels, conn.return_channels) == (2, 2)
        out = read_blocks(host, 8, 2, feed=lambda k: host.send_return_audio(stereo))
    gain = 10 ** (6 / 20)
    np.testing.assert_allclose(out[:, -BLOCK:], 0.3 * gain, rtol=1e-5)


def test_the_example_lv2_rack_config_loads():
    from bridge.rack.config import load_rack

    rack = load_rack(REPO / "configs" / "lv2.yaml", environ={})
    by_id = {d.id: d for d in rack.devices}
    assert by_id["Eq"].stages() == [f"lv2:{FIL4}"]
    assert by_id["Convolver"].preset == "No-OP Stereo"
    assert by_id["Keys"].stages()[1] == DLSINE
