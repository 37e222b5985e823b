"""Plugin devices (``device --plugin``) with real VST3 binaries loaded through pedalboard, in
their own processes, played by a host in this process. No mock of pedalboard.

The plugins come from plugins/build.sh (run by setup.sh): DLSine and DLSine12, the
project's own deterministic DPF instruments (formula in plugins/README.md), and Debian 13's
Dragonfly reverbs.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import helpers_ipc
import numpy as np
import pedalboard
import pytest
from conftest import REPO
from helpers_ipc import peak_hz, send

from bridge.transport import Host, cmd
from bridge.transport.host import CommandError
from bridge.transport.shm import namespace_names

PLUGINS = REPO / "build" / "plugins"
DLSINE = str(PLUGINS / "DLSine.vst3")
DLSINE12 = str(PLUGINS / "DLSine12.vst3")
PLATE = str(PLUGINS / "DragonflyPlateReverb.vst3")
RATE, BLOCK = 48000, 256

pytestmark = pytest.mark.skipif(not Path(DLSINE).exists(),
                                reason="run ./setup.sh: it builds the test plugins")


def plugin_device(spawn, *args: str, device_id: str | None = None, timeout: float = 60.0):
    extra = ["--id", device_id] if device_id else []
    return spawn.device(*args, "--blocksize", str(BLOCK), "--fixed-format", *extra,
                        device_id=device_id or "Plugin", timeout=timeout)


def read_blocks(host: Host, blocks: int, channels: int, feed=None) -> np.ndarray:
    """Whole blocks as the device delivers them; ``feed(k)`` may send return audio."""
    return helpers_ipc.read_blocks(host, blocks, BLOCK, channels, feed=feed, slack=30)


# ---- parity ---------------------------------------------------------------------------------

def test_bridge_audio_equals_pedalboard_offline_sample_for_sample(spawn):
    """device process -> shared memory -> host equals the same plugin rendered offline by
    pedalboard with the same MIDI, block size and sample rate."""
    dev = plugin_device(spawn, "--plugin", DLSINE, "--param", "gain=0.75")
    with Host() as host:
        host.connect(dev.id)
        lead = read_blocks(host, 3, 2)  # three blocks of silence first
        # batch 1: two notes at offsets 17 and 100 of one block
        send(host, cmd.midi_note_on(0, 60, 100, 17), cmd.midi_note_on(0, 64, 90, 100))
        rec1 = read_blocks(host, 10, 2)
        # batch 2: both notes stop at offset 50, a third starts at offset 200
        send(host, cmd.midi_note_off(0, 60, 0, 50), cmd.midi_note_off(0, 64, 0, 50),
             cmd.midi_note_on(0, 67, 127, 200))
        rec2 = read_blocks(host, 12, 2)
    rec = np.concatenate([lead, rec1, rec2], axis=1)
    assert not lead.any()
    # Where did each batch land? The notes start at phase 0 (first sample exactly 0), and
    # DLSine stops a note dead, so silence before a batch-1 onset and a gap of exact zeros
    # from the batch-2 note-offs locate both blocks.
    first = int(np.nonzero(rec[0])[0][0]) - 1  # the onset sample itself is sin(0) = 0
    assert first % BLOCK == 17, first
    b1 = first // BLOCK
    after = rec[0, first + 200:]
    gap = int(np.nonzero(after == 0)[0][0]) + first + 200
    assert gap % BLOCK == 50, gap
    b2 = gap // BLOCK
    events = [(b1 * BLOCK + 17, b"\x90\x3c\x64"), (b1 * BLOCK + 100, b"\x90\x40\x5a"),
              (b2 * BLOCK + 50, b"\x80\x3c\x00"), (b2 * BLOCK + 50, b"\x80\x40\x00"),
              (b2 * BLOCK + 200, b"\x90\x43\x7f")]
    offline = pedalboard.load_plugin(DLSINE)
    offline.gain = 0.75
    ref = offline([(data, (frame + 0.5) / RATE) for frame, data in events],
                  duration=rec.shape[1] / RATE, sample_rate=RATE, num_channels=2,
                  buffer_size=BLOCK, reset=True)
    assert ref.shape == rec.shape
    assert np.abs(ref).max() > 0.5
    np.testing.assert_array_equal(rec, ref)


# ---- routing --------------------------------------------------------------------------------

def test_multi_out_channels_and_taps_route_the_right_signals(spawn):
    dev = plugin_device(spawn, "--plugin", DLSINE12, "--channels", "3-4", device_id="Multi")
    assert "2 ch" in dev.ready_line and "tap out:3-4" in dev.ready_line
    with Host() as host:
        host.connect(dev.id)
        routing = json.loads(cmd.decode(host.request(cmd.route("")))["routing"])
        assert routing["tap"] == "out:3-4"
        assert {"out", "DLSine12", "DLSine12:1-2", "DLSine12:11-12"} <= set(routing["taps"])
        send(host, cmd.midi_note_on(0, 69, 127))
        rec = read_blocks(host, 40, 2)[:, 8 * BLOCK:]
        assert peak_hz(rec[0]) == pytest.approx(880, abs=2)  # pair 2 = the 2nd harmonic
        np.testing.assert_array_equal(rec[0], rec[1])
        routing = json.loads(cmd.decode(host.request(cmd.route("DLSine12:5-6")))["routing"])
        assert routing["tap"] == "DLSine12:5-6"
        read_blocks(host, 4, 2)
        rec = read_blocks(host, 32, 2)
        assert peak_hz(rec[0]) == pytest.approx(3 * 440, abs=2)
        with pytest.raises(CommandError, match="no tap 'nowhere'"):
            host.request(cmd.route("nowhere"))


def test_a_twelve_channel_device_carries_every_pair(spawn):
    dev = plugin_device(spawn, "--plugin", DLSINE12, device_id="Twelve")
    with Host() as host:
        conn = host.connect(dev.id)
        assert conn.channels == 12
        send(host, cmd.midi_note_on(0, 57, 127))  # 220 Hz: harmonics up to 1320 Hz
        rec = read_blocks(host, 40, 12)[:, 8 * BLOCK:]
    for k in range(6):
        assert peak_hz(rec[2 * k]) == pytest.approx(220 * (k + 1), abs=2), f"pair {k + 1}"
        np.testing.assert_array_equal(rec[2 * k], rec[2 * k + 1])


# ---- parameters -----------------------------------------------------------------------------

def test_a_parameter_change_takes_effect_at_the_next_block_boundary(spawn):
    dev = plugin_device(spawn, "--plugin", DLSINE, device_id="Params")
    with Host() as host:
        host.connect(dev.id)
        params = json.loads(cmd.decode(host.request(cmd.build("ParameterList")))["parameters"])
        by_name = {p["name"]: p for p in params}
        assert set(by_name) == {"gain", "tune_st", "fault"}  # DPF's 2,048 MIDI-CC params hidden
        assert (by_name["gain"]["min"], by_name["gain"]["max"]) == (0.0, 1.0)
        assert by_name["gain"]["default"] == pytest.approx(0.5)
        assert by_name["tune_st"]["unit"] == "st"
        assert by_name["tune_st"]["min"] == -12.0 and by_name["tune_st"]["max"] == 12.0

        send(host, cmd.midi_note_on(0, 69, 127))
        before = read_blocks(host, 6, 2)
        reply = cmd.decode(host.request(cmd.set_parameter("Gain", 0.25)))
        assert reply["name"] == "gain" and reply["value"] == pytest.approx(0.25)
        after = read_blocks(host, 12, 2)
    rec = np.concatenate([before, after], axis=1)[0]
    peaks = np.abs(rec.reshape(-1, BLOCK)).max(axis=1)
    loud = int(np.nonzero(peaks > 0.4)[0][0]) + 1  # the first whole block of the note
    assert peaks[loud] == pytest.approx(0.5, abs=0.01)
    assert peaks[-1] == pytest.approx(0.25, abs=0.01)
    # every block is wholly before or wholly after the change: it lands on a block boundary
    first = next(k for k in range(loud, len(peaks)) if peaks[k] < 0.4)
    assert all(peaks[k] < 0.26 for k in range(first, len(peaks)))
    block = rec[first * BLOCK:(first + 1) * BLOCK]
    assert np.abs(block).max() < 0.26  # no sample of that block still at the old gain


def test_parameters_by_index_and_errors(spawn):
    dev = plugin_device(spawn, "--plugin", DLSINE, "--param", "tune_st=3", device_id="Idx")
    with Host() as host:
        host.connect(dev.id)
        got = cmd.decode(host.request(cmd.get_parameter(1)))
        assert got["name"] == "tune_st" and got["value"] == pytest.approx(3, abs=0.03)
        with pytest.raises(CommandError, match=r"out of range 0\.\.1"):
            host.request(cmd.set_parameter("gain", 2.0))
        with pytest.raises(CommandError, match="no parameter 'nope'"):
            host.request(cmd.get_parameter("nope"))
        with pytest.raises(CommandError, match="no parameter 7"):
            host.request(cmd.get_parameter(7))


# ---- state ----------------------------------------------------------------------------------

def play_phrase(host: Host) -> np.ndarray:
    send(host, cmd.midi_cc(0, 123, 0))
    read_blocks(host, 2, 2)
    send(host, cmd.midi_note_on(0, 64, 100))
    rec = read_blocks(host, 16, 2)
    send(host, cmd.midi_note_off(0, 64))
    read_blocks(host, 2, 2)
    start = int(np.nonzero(rec[0])[0][0])
    return rec[:, start:start + 8 * BLOCK]


def test_state_survives_a_restart_through_the_state_file(spawn, tmp_path):
    state = tmp_path / "synth.json"
    dev = plugin_device(spawn, "--plugin", DLSINE, "--state", str(state), device_id="Keep")
    with Host() as host:
        host.connect(dev.id)
        host.request(cmd.set_parameter("gain", 0.8))
        host.request(cmd.set_parameter("tune_st", -5.0))
        read_blocks(host, 2, 2)
        phrase = play_phrase(host)
    assert "stopped" in dev.stop()
    saved = json.loads(state.read_text())
    assert saved["device_id"] == "Keep:0"

    again = spawn.device("--plugin", DLSINE, "--state", str(state), "--blocksize", str(BLOCK),
                         "--fixed-format", device_id="Keep")
    assert again.id == "Keep:0" and "state restored" in again.ready_line
    with Host() as host:
        host.connect(again.id)
        assert cmd.decode(host.request(cmd.get_parameter("gain")))["value"] == \
            pytest.approx(0.8, abs=1e-3)
        np.testing.assert_array_equal(play_phrase(host), phrase)
    assert np.abs(phrase).max() == pytest.approx(0.8 * 100 / 127, abs=1e-3)
    assert peak_hz(phrase[0]) == pytest.approx(440 * 2 ** ((64 - 69 - 5) / 12), abs=2)


def test_get_state_and_set_state_round_trip(spawn):
    dev = plugin_device(spawn, "--plugin", DLSINE, device_id="Blob")
    with Host() as host:
        host.connect(dev.id)
        host.request(cmd.set_parameter("gain", 0.3))
        read_blocks(host, 2, 2)
        blob = host.request(cmd.build("GetState")).payload
        original = play_phrase(host)
        host.request(cmd.set_parameter("gain", 0.9))
        read_blocks(host, 2, 2)
        assert np.abs(play_phrase(host)).max() > 0.6
        for m in cmd.fragments("SetState", bytes(blob)):
            send(host, m)
        read_blocks(host, 2, 2)
        np.testing.assert_array_equal(play_phrase(host), original)
        bad = cmd.fragments("SetState", b'{"format": "something else"}')
        with pytest.raises(CommandError, match="not a discolink-bridge plugin state"):
            host.request(bad)


# ---- effects --------------------------------------------------------------------------------

def test_dragonfly_processes_the_return_ring_and_its_tail_decays(spawn):
    dev = plugin_device(spawn, "--plugin", PLATE, device_id="Plate")
    t = np.arange(BLOCK) / RATE
    with Host() as host:
        conn = host.connect(dev.id)
        assert conn.return_channels == 2  # an effect device listens to the host by default
        sent = []

        def sine(k: int) -> None:
            block = np.tile(0.3 * np.sin(2 * np.pi * 330 * (t + k * BLOCK / RATE)), (2, 1))
            block = block.astype(np.float32)
            sent.append(block)
            assert host.send_return_audio(block)

        wet = read_blocks(host, 200, 2, feed=sine)

        def silence(k: int) -> None:
            assert host.send_return_audio(np.zeros((2, BLOCK), np.float32))

        tail = read_blocks(host, 3000, 2, feed=silence)  # 16 s of silence in
    dry = np.concatenate(sent, axis=1)
    assert np.abs(wet[:, -100 * BLOCK:]).max() > 0.01, "the reverb is silent"
    assert not np.allclose(wet, dry, atol=1e-3), "the output is just the dry input"
    rms = np.sqrt((tail.reshape(2, -1, BLOCK * 50) ** 2).mean(axis=(0, 2)))
    assert rms[0] > 1e-3, "no reverb tail after the input stopped"
    assert rms[-1] < rms[0] * 1e-3, f"the tail does not decay: {rms[[0, -1]]}"


def test_builtin_chain_runs_with_nothing_installed(spawn):
    dev = plugin_device(spawn, "--plugin", "builtin:Sine", "--plugin", "builtin:Reverb",
                        device_id="Builtin")
    with Host() as host:
        host.connect(dev.id)
        routing = json.loads(cmd.decode(host.request(cmd.route("")))["routing"])
        assert routing["taps"] == ["out", "Sine", "Reverb"]
        send(host, cmd.midi_note_on(0, 69, 100))
        wet = read_blocks(host, 40, 2)
        host.request(cmd.route("Sine"))
        read_blocks(host, 2, 2)
        dry = read_blocks(host, 40, 2)
    assert np.abs(wet).max() > 0.01 and np.abs(dry).max() > 0.1
    assert peak_hz(dry[0, 8 * BLOCK:]) == pytest.approx(440, abs=2)


# ---- safety ---------------------------------------------------------------------------------

def test_nan_from_a_plugin_never_reaches_the_link(spawn):
    dev = plugin_device(spawn, "--plugin", DLSINE, "--monitor", device_id="Nan")
    with Host() as host:
        host.connect(dev.id)
        send(host, cmd.midi_note_on(0, 69, 127))
        assert np.abs(read_blocks(host, 8, 2)).max() > 0.4
        host.request(cmd.set_parameter("fault", 1.0))  # DLSine now outputs NaN
        broken = read_blocks(host, 20, 2)
        host.request(cmd.set_parameter("fault", 0.0))
        read_blocks(host, 2, 2)
        healed = read_blocks(host, 8, 2)
    assert np.isfinite(broken).all()
    assert not broken[:, -10 * BLOCK:].any(), "NaN blocks must become silence"
    assert np.abs(healed).max() > 0.4
    dev.stop()
    assert "NaN or Inf in the plugin output" in dev.stderr


def test_nan_from_a_plugin_is_said_once_on_stderr_and_counted_without_monitor(spawn):
    dev = plugin_device(spawn, "--plugin", DLSINE, device_id="Nan")

    def listed() -> dict:
        r = spawn.run("list", "--json")
        return next(d for d in json.loads(r.stdout) if d["id"] == dev.id)

    with Host() as host:
        host.connect(dev.id)
        send(host, cmd.midi_note_on(0, 69, 127))
        read_blocks(host, 4, 2)
        assert listed()["nonfinite_blocks"] == 0
        host.request(cmd.set_parameter("fault", 1.0))  # DLSine now outputs NaN
        read_blocks(host, 150, 2)  # past a publication (every 64 blocks)
        counted = listed()["nonfinite_blocks"]
        assert counted >= 64, counted  # in the registry: `list` and the rack's `status`
        table = spawn.run("list").stdout
        assert re.search(rf"^{re.escape(dev.id)} .* {counted} +host ", table, re.M), table
    out = dev.stop()
    said = [ln for ln in dev.stderr.splitlines() if "NaN or Inf" in ln]
    assert said == [f"discolink-bridge device {dev.id}: DLSine: NaN or Inf in the plugin "
                    "output; such blocks are replaced by silence (counted in the stopped "
                    "line)"], dev.stderr
    silenced = re.search(r", (\d+) non-finite blocks silenced$", out.strip())
    assert silenced and int(silenced.group(1)) >= 10, out  # (the first few were queued)


def test_stdout_carries_only_the_bridge_lines_whatever_the_plugin_prints(spawn):
    dev = plugin_device(spawn, "--plugin", DLSINE, device_id="Quiet")
    with Host() as host:
        host.connect(dev.id)
        read_blocks(host, 4, 2)
    out = dev.stop()
    lines = [dev.ready_line, *out.splitlines()]
    assert all(line.startswith("device ") for line in lines if line.strip()), lines


@pytest.mark.parametrize("args,code,text", [
    (["--plugin", "/no/such/Synth.vst3"], 2, "/no/such/Synth.vst3: no such file"),
    (["--plugin", "builtin:Nope"], 2, "no such built-in; choose from Sine"),
    (["--plugin", "builtin:Reverb", "--plugin", DLSINE], 2,
     "DLSine is an instrument: it takes no audio input"),
    (["--plugin", DLSINE, "--channels", "3-4"], 2, "has 2 output channel(s), not 4"),
    (["--plugin", DLSINE, "--channels", "13"], 2, "1 to 12 channels"),
    (["--plugin", DLSINE, "--param", "gain=7"], 2, "out of range 0..1"),
    (["--plugin", DLSINE, "--param", "volume=1"], 2,  # nothing close: the CLI's hint alone
     f"no parameter 'volume' ('discolink-bridge plugin info {DLSINE}' lists them)"),
    (["--plugin", DLSINE, "--param", "gian=1"], 2,  # the CLI's way to list them, not a command
     f"no parameter 'gian'; did you mean gain? ('discolink-bridge plugin info {DLSINE}' lists"),
    (["--tap", "out"], 2, "--tap needs --plugin"),
])
def test_refusals_are_one_clear_line_with_the_right_exit_code(spawn, args, code, text):
    r = spawn.run("device", *args, timeout=120)
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("discolink-bridge device")]
    assert len(errors) == 1 and text in errors[0], r.stderr[-2000:]


def test_a_file_that_is_not_a_plugin_is_refused(spawn, tmp_path):
    fake = tmp_path / "Fake.vst3"
    fake.write_text("not a plugin")
    r = spawn.run("device", "--plugin", str(fake), timeout=120)
    assert r.returncode == 1
    assert f"{fake}: could not load the plugin" in r.stderr
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    r = spawn.run("device", "--plugin", str(txt), timeout=120)
    assert r.returncode == 2 and "not a plugin" in r.stderr  # a usage error


def test_builtin_effect_state_and_parameters_round_trip(spawn, tmp_path):
    state = tmp_path / "fx.json"
    dev = plugin_device(spawn, "--plugin", "builtin:Reverb", "--param", "room_size=0.9",
                        "--state", str(state), device_id="Room")
    with Host() as host:
        host.connect(dev.id)
        assert cmd.decode(host.request(cmd.get_parameter("room_size")))["value"] == \
            pytest.approx(0.9)
        host.request(cmd.set_parameter("wet_level", 0.7))
    dev.stop()
    again = spawn.device("--plugin", "builtin:Reverb", "--state", str(state), "--blocksize",
                         str(BLOCK), device_id="Room")
    with Host() as host:
        host.connect(again.id)
        for name, value in (("room_size", 0.9), ("wet_level", 0.7)):
            got = cmd.decode(host.request(cmd.get_parameter(name)))["value"]
            assert got == pytest.approx(value, abs=1e-6), name


def test_load_preset_loads_a_vstpreset_file(spawn, tmp_path):
    offline = pedalboard.load_plugin(DLSINE)
    offline.gain = 0.2
    offline([], duration=0.01, sample_rate=RATE, num_channels=2)  # DPF syncs on a render
    preset = tmp_path / "quiet.vstpreset"
    preset.write_bytes(offline.preset_data)
    dev = plugin_device(spawn, "--plugin", DLSINE, device_id="Preset")
    with Host() as host:
        host.connect(dev.id)
        for m in cmd.fragments("LoadPreset", str(preset).encode()):
            send(host, m)
        read_blocks(host, 2, 2)
        assert cmd.decode(host.request(cmd.get_parameter("gain")))["value"] == \
            pytest.approx(0.2, abs=1e-3)
        with pytest.raises(CommandError, match="no such preset file"):
            host.request(cmd.build("LoadPreset", path="/no/such.vstpreset"))


def test_an_effect_plays_a_looping_input_file(spawn, tmp_path):
    import soundfile

    wav = tmp_path / "in.wav"
    source = (0.5 * np.sin(2 * np.pi * 220 * np.arange(1000) / RATE)).astype(np.float32)
    soundfile.write(wav, np.stack([source, -source], axis=1), RATE, subtype="FLOAT")
    dev = plugin_device(spawn, "--plugin", "builtin:Invert", "--input", str(wav),
                        device_id="Loop")
    with Host() as host:
        conn = host.connect(dev.id)
        assert conn.return_channels == 0  # the file is the input: no return ring
        rec = read_blocks(host, 20, 2)
    looped = np.tile(source, 6)[:rec.shape[1]]
    np.testing.assert_array_equal(rec[0], -looped)  # Invert: exactly minus the input
    np.testing.assert_array_equal(rec[1], looped)


def test_a_mono_device_adapts_a_stereo_only_effect(spawn):
    """Dragonfly takes stereo only: mono in is copied to both inputs, and its stereo out is
    averaged down to the device's one channel (the documented channel mapping). The same
    plugin rendered here offline (pedalboard, the same blocks) gives the expected mix: the
    device's output is its L/R average, sample for sample, and not either channel alone."""
    dev = plugin_device(spawn, "--plugin", PLATE, "--channels", "1", device_id="Mono")
    blocks, max_lag = 100, 20 * BLOCK  # the input reaches the plugin a few blocks late
    x = (0.3 * np.sin(2 * np.pi * 330 * np.arange((blocks + 20) * BLOCK) / RATE)).astype(
        np.float32)
    with Host() as host:
        conn = host.connect(dev.id)
        assert conn.channels == 1 and conn.return_channels == 1

        def sine(k: int) -> None:
            assert host.send_return_audio(x[None, k * BLOCK:(k + 1) * BLOCK])

        wet = read_blocks(host, blocks, 1, feed=sine)[0]
    plate = pedalboard.load_plugin(PLATE)
    stereo = np.concatenate([plate.process(np.stack([x[k * BLOCK:(k + 1) * BLOCK]] * 2), RATE,
                                           buffer_size=BLOCK, reset=False)
                             for k in range(blocks + 20)], axis=1)
    level = float(np.sqrt(np.mean(wet[-40 * BLOCK:] ** 2)))
    assert level > 0.05, f"no wet signal from the device (RMS {level:.4f})"

    def misfit(expected: np.ndarray) -> tuple[float, int]:
        """Smallest RMS difference, relative to the level, over the device's delays."""
        return min((float(np.sqrt(np.mean((wet[lag:] - expected[:wet.size - lag]) ** 2)))
                    / level, lag) for lag in range(max_lag))

    average, _ = misfit(stereo.mean(axis=0))
    assert average < 1e-3, f"the device's output is not the L/R average (misfit {average:.4f})"
    for name, channel in (("left", stereo[0]), ("right", stereo[1])):
        alone, _ = misfit(channel)
        assert alone > 20 * max(average, 1e-4), (
            f"the {name} channel alone fits as well as the average ({alone:.4f})")


def test_channel_mapping_rules():
    from bridge.adapters.stage import map_channels

    x = np.arange(8, dtype=np.float32).reshape(4, 2)  # channel k holds 2k, 2k+1
    np.testing.assert_array_equal(map_channels(x, 4), x)
    np.testing.assert_array_equal(map_channels(x[:1], 3), np.repeat(x[:1], 3, axis=0))
    np.testing.assert_array_equal(map_channels(x[:2], 4), x[[0, 1, 0, 1]])
    np.testing.assert_array_equal(map_channels(x, 2), [(x[0] + x[2]) / 2, (x[1] + x[3]) / 2])
    np.testing.assert_array_equal(map_channels(x, 1), [x.mean(axis=0)])


@pytest.mark.parametrize("tail", [[], ["--plugin", "builtin:Reverb", "--param",
                                       "Reverb.room_size=1", "--param", "Reverb.wet_level=1"]],
                         ids=["synth", "synth+reverb"])
def test_a_new_host_starts_in_silence_without_reloading_the_plugin(spawn, tail):
    """A note a previous host left sounding is released at the claim, and every stage of the
    chain is reset (protocol.md §8.2): with a long reverb after the synth, the old session's
    tail must not reach the new host either."""
    dev = plugin_device(spawn, "--plugin", DLSINE, *tail, device_id="Fresh")
    with Host() as host:
        host.connect(dev.id)
        send(host, cmd.midi_note_on(3, 60, 100), cmd.midi_note_on(5, 72, 100))
        assert np.abs(read_blocks(host, 6, 2)).max() > 0.5
        host.disconnect()  # leaves both notes on
    with Host() as host:
        host.connect(dev.id)
        rec = read_blocks(host, 8, 2)
    assert not rec.any(), "the previous host's notes are still sounding"


def test_state_is_saved_when_it_changes_so_a_crash_loses_nothing(spawn, tmp_path):
    state = tmp_path / "live.json"
    dev = plugin_device(spawn, "--plugin", DLSINE, "--state", str(state), device_id="Live")
    with Host() as host:
        host.connect(dev.id)
        host.request(cmd.set_parameter("gain", 0.35))
        read_blocks(host, 4, 2)  # the snapshot is taken between blocks, written aside

        def saved_gain():
            try:
                data = json.loads(state.read_text())
            except (OSError, ValueError):
                return None
            return data["chain"]["state"][0]["parameters"]["gain"] == pytest.approx(0.35)

        from helpers_ipc import wait_until
        wait_until(saved_gain, 5, "the state file to follow the change")
    dev.kill9()  # no chance to save on the way out
    again = spawn.device("--plugin", DLSINE, "--state", str(state), device_id="Live")
    with Host() as host:
        host.connect(again.id)
        assert cmd.decode(host.request(cmd.get_parameter("gain")))["value"] == \
            pytest.approx(0.35, abs=1e-3)


@pytest.mark.parametrize("clock", ["demand", "realtime"])
def test_a_change_made_while_no_host_reads_is_saved_before_a_kill_9(spawn, tmp_path, clock):
    """The host sets a parameter and reads nothing after it. The demand-clocked device, its
    ring full, has no block to render and saves the change from its idle loop; the realtime
    one renders on and saves it between blocks. Either way a kill -9 then loses nothing."""
    state = tmp_path / "idle.json"
    dev = plugin_device(spawn, "--plugin", DLSINE, "--state", str(state), "--clock", clock,
                        device_id="Idle")
    with Host() as host:
        host.connect(dev.id)
        time.sleep(0.2)  # the ring fills; the device then waits for the host
        host.request(cmd.set_parameter("gain", 0.45))

        def saved_gain() -> bool:
            try:
                data = json.loads(state.read_text())
            except (OSError, ValueError):
                return False
            return data["chain"]["state"][0]["parameters"]["gain"] == pytest.approx(0.45)

        helpers_ipc.wait_until(saved_gain, 5, "the state file to follow the change")
    dev.kill9()
    again = spawn.device("--plugin", DLSINE, "--state", str(state), device_id="Idle")
    with Host() as host:
        host.connect(again.id)
        assert cmd.decode(host.request(cmd.get_parameter("gain")))["value"] == \
            pytest.approx(0.45, abs=1e-3)


def test_master_runs_a_plugin_with_its_display_and_saves_state_on_stop(spawn, namespace,
                                                                     tmp_path):
    """`master --plugin`: the live display names the plugin, a host plays it, SIGTERM prints
    the stopped line and writes --state, and a second master restores it."""
    import signal

    state = tmp_path / "master.json"

    def run_master() -> tuple[str, int, float]:
        with helpers_ipc.on_a_terminal(spawn, "master", "--id", "Desk", "--plugin", DLSINE,
                                       "--state", str(state), "--blocksize", str(BLOCK),
                                       "--fixed-format") as (proc, chunks):
            helpers_ipc.wait_until(lambda: b"DLSine, tap out" in b"".join(chunks), 60,
                                   "the display's plugins row")
            with Host() as host:
                host.connect("Desk:0")
                before = cmd.decode(host.request(cmd.get_parameter("gain")))["value"]
                host.request(cmd.set_parameter("gain", 0.6))
                assert np.abs(play_phrase(host)).max() == pytest.approx(0.6 * 100 / 127,
                                                                         abs=1e-3)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        out = b"".join(chunks).decode(errors="replace")
        assert "Traceback" not in out, out
        assert "device Desk:0 stopped:" in out, out
        return out, code, before

    out, code, before = run_master()
    assert code == 0 and "state restored" not in out
    assert before != pytest.approx(0.6)
    saved = json.loads(state.read_text())
    assert saved["device_id"] == "Desk:0"
    out, code, before = run_master()  # the second one starts from the saved state
    assert code == 0 and "state restored" in out
    assert before == pytest.approx(0.6, abs=1e-3)


def test_a_plugin_name_the_bundle_does_not_hold_is_refused_naming_what_it_holds(spawn,
                                                                                namespace):
    """pedalboard ignores a wrong plugin_name for a one-plugin file: we don't."""
    r = spawn.run("device", "--plugin", DLSINE, "--plugin-name", "Nope")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (f"discolink-bridge device: error: {DLSINE}: no plugin named 'Nope' "
                        "(--plugin-name); the file holds one plugin, 'DLSine'\n")
    assert namespace_names(namespace) == []
    r = spawn.run("device", "--plugin", "lv2:DLSine", "--plugin-name", "DLSine")
    assert r.returncode == 2 and "an LV2 URI or name already names one" in r.stderr
    # plugin info says it the same way (its probe runs in a child process), with exit 2 too
    r = spawn.run("plugin", "info", DLSINE, "--plugin-name", "Nope")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"discolink-bridge plugin: error: {DLSINE}: no plugin named 'Nope' "
                        "(--plugin-name); the file holds one plugin, 'DLSine'\n")


def test_dlsine_starts_plays_and_stops_without_dpf_noise_on_stderr(spawn):
    """pedalboard re-activates a plugin on each prepare and releases the component first;
    our DPF build (plugins/build.sh, patch 4) takes both quietly."""
    dev = plugin_device(spawn, "--plugin", DLSINE, device_id="Hush")
    with Host() as host:
        host.connect(dev.id)
        send(host, cmd.midi_note_on(0, 69, 100))
        assert np.abs(read_blocks(host, 8, 2)).max() > 0.01
    dev.stop()
    assert dev.proc.returncode == 0, dev.stderr
    for noise in ("fIsActive", "assertion failure", "DPF warning"):
        assert noise not in dev.stderr, dev.stderr
