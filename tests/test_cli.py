"""The command-line tool, run for real: help, list --json, host, demo, master, and the exit
codes (0 ok, 1 runtime failure, 2 usage or configuration error with one line on stderr)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
from helpers_ipc import by_id, on_a_terminal
from proto_helpers import (
    NOTE_AMPLITUDE_V100,
    REPO,
    TIMEOUT,
    device_time,
    peak_hz,
    tone_amplitude,
    wait_until,
)

from bridge.transport import Host, Registry, shm

C4, G4 = 261.6256, 391.9954


def registered(namespace: str) -> list[str]:
    registry = Registry(namespace)
    try:
        return [d.id for d in registry.scan()]
    finally:
        registry.close()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


# ---- help --------------------------------------------------------------------------------

# Every verb's --help, word for word, against tests/cli_help/*.txt (generated from the code,
# reviewed like code). COLUMNS fixes argparse's wrapping. After a deliberate change to a help
# text, rewrite them with: DISCOLINK_WRITE_HELP=1 .venv/bin/python -m pytest tests/test_cli.py
HELP_DIR = REPO / "tests" / "cli_help"
VERBS = [(), ("device",), ("master",), ("list",), ("cleanup",), ("host",), ("send",),
         ("midi-monitor",), ("jack-device",), ("jack-host",), ("plugin",), ("plugin", "scan"),
         ("plugin", "info"), ("rack",), ("status",), ("demo",)]


def help_env() -> dict:
    return dict(os.environ, COLUMNS="100")


@pytest.mark.parametrize("verb", VERBS, ids=[" ".join(v) or "top-level" for v in VERBS])
def test_help_of_each_verb_is_exactly_its_golden_text_and_exits_0(verb):
    r = subprocess.run([sys.executable, "-m", "bridge", *verb, "--help"], capture_output=True,
                       text=True, env=help_env(), cwd=REPO, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    golden = HELP_DIR / f"{'-'.join(('discolink-bridge', *verb))}.txt"
    if os.environ.get("DISCOLINK_WRITE_HELP"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(r.stdout)
    assert r.stdout == golden.read_text(), f"{' '.join(verb)} --help differs from {golden}"


def test_the_installed_command_is_the_same_tool_as_python_m_bridge():
    """The console script (pyproject's bridge.cli:main) prints the same top-level help."""
    script = Path(sys.executable).parent / "discolink-bridge"
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                       env=help_env(), cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (HELP_DIR / "discolink-bridge.txt").read_text()


def test_help_loads_no_adapter_rack_or_plugin_library():
    """--help stays quick: each verb imports its adapters, the rack, pedalboard, JACK, rich,
    yaml and soundfile inside its handler, never when the parsers are built."""
    probe = ("import sys\nfrom bridge.cli import main\ntry:\n    main(['--help'])\n"
             "except SystemExit:\n    pass\nprint(' '.join(sorted(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       env=help_env(), cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    loaded = r.stdout.strip().splitlines()[-1].split()
    heavy = [m for m in loaded if m.startswith(("bridge.adapters", "bridge.rack")) or
             m.split(".")[0] in {"pedalboard", "jack", "rich", "yaml", "soundfile", "pydantic",
                                 "rtmidi"}]
    assert heavy == []


# ---- list --------------------------------------------------------------------------------


def test_list_json_prints_objects_with_exactly_the_documented_keys(spawn):
    a = spawn.device("--channels", "3", device_id="Alpha")
    b = spawn.device("--mode", "midi", "--samplerate", "44100", device_id="Synthé")
    with Host() as host:
        host.connect(a.id, "session-7", timeout=TIMEOUT)
        r = spawn.run("list", "--json")
    assert r.returncode == 0, r.stderr
    devices = json.loads(r.stdout)
    assert isinstance(devices, list) and len(devices) == 2
    keys = {"id", "pid", "channels", "sample_rate", "block_size", "mode", "claimed",
            "host_pid", "link_tag", "xruns", "nonfinite_blocks"}
    for d in devices:
        assert set(d) == keys
    by_id = {d["id"]: d for d in devices}
    assert by_id["Alpha:0"] == {"id": "Alpha:0", "pid": a.pid, "channels": 3,
                                "sample_rate": 48000, "block_size": 256, "mode": "audio+midi",
                                "claimed": True, "host_pid": os.getpid(),
                                "link_tag": "session-7", "xruns": 0,
                                "nonfinite_blocks": 0}
    assert by_id["Synthé:0"] == {"id": "Synthé:0", "pid": b.pid, "channels": 0,
                                 "sample_rate": 44100, "block_size": 256, "mode": "midi",
                                 "claimed": False, "host_pid": 0, "link_tag": "", "xruns": 0,
                                 "nonfinite_blocks": 0}


def test_list_json_of_an_empty_namespace_is_an_empty_list(spawn):
    r = spawn.run("list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_the_namespace_option_reaches_every_command_over_the_environment(spawn, namespace):
    """$DISCOLINK_NAMESPACE names one namespace, --namespace another: each command works in
    the one --namespace names (`host` used to look in the environment's)."""
    other = f"{namespace}o"
    proc = spawn.popen("--namespace", other, "device", "--id", "Far",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("device Far:0 ready"), proc.stderr
        r = spawn.run("--namespace", other, "list", "--json")
        assert [d["id"] for d in json.loads(r.stdout)] == ["Far:0"], r.stderr
        r = spawn.run("--namespace", other, "host", "--id", "Far:0", "--seconds", "0.2",
                      "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["device"] == "Far:0", r.stderr
        r = spawn.run("--namespace", other, "send", "--id", "Far:0", "note_on note=60")
        assert r.returncode == 0, r.stderr
        assert json.loads(spawn.run("list", "--json").stdout) == []  # the environment's
        r = spawn.run("--namespace", other, "cleanup", "--json")
        assert json.loads(r.stdout)[0]["live"] == ["Far:0"], r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        for name in shm.namespace_names(other):
            shm.unlink(name)


# ---- host --------------------------------------------------------------------------------


def _assert_counters_match_the_recording(stats: dict, x: np.ndarray, rate: int, block: int,
                                         note_s: float) -> int:
    """`host --json`'s underruns and note_to_sound_ms say what the recording ``x`` shows.

    The note is sent with the first block and sounds after the demand clock's queue
    (rendered before it arrived: silence) and any block the host read short; from then on an
    underrun is a block the host zero-filled, a run of exact zeros, which the sounding note
    never has. The note sounds for ``note_s`` (--seconds less the 0.25 s release lead), then
    fades to exact silence, where an underrun can no longer be seen: those blocks, and the
    ones before the onset, bound the count from above. Returns the underruns seen."""
    onset = int(np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())[0])
    assert stats["note_to_sound_ms"] == pytest.approx(onset / rate * 1000, abs=0.001), (
        f"note_to_sound_ms {stats['note_to_sound_ms']}, the recording's onset is at frame "
        f"{onset}")
    n_blocks = len(x) // block
    first, off = onset // block + 1, (onset + int(note_s * rate)) // block
    blocks = x[: n_blocks * block].reshape(n_blocks, block)
    zero_run = (blocks[:, 1:] == 0) & (blocks[:, :-1] == 0)
    short = int(np.count_nonzero(zero_run[first:off].any(axis=1)))
    assert isinstance(stats["underruns"], int)
    assert short <= stats["underruns"] <= short + first + (n_blocks - off), (
        f"underruns {stats['underruns']}, but the recording shows {short} zero-filled blocks "
        f"while the note sounds (blocks {first}..{off - 1})")
    return short


def test_host_json_counts_the_underruns_of_a_device_stalled_mid_session(spawn, tmp_path):
    """The device is stopped (SIGSTOP) for 150 ms while the note sounds: the host keeps
    reading, zero-fills, and its --json underruns count those blocks."""
    dev = spawn.device("--channels", "1", "--blocksize", "128", "--fixed-format")
    wav = tmp_path / "out.wav"
    host = spawn.popen("host", "--id", dev.id, "--json", "--seconds", "2", "--record",
                       str(wav), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: by_id(spawn.namespace)[dev.id].claimed, 20, "the host to connect")
    time.sleep(0.5)
    os.kill(dev.pid, signal.SIGSTOP)
    time.sleep(0.15)
    os.kill(dev.pid, signal.SIGCONT)
    out, err = host.communicate(timeout=30)
    assert host.returncode == 0, err
    stats = json.loads(out)
    data, rate = sf.read(str(wav), dtype="float32")
    seen = _assert_counters_match_the_recording(stats, data, rate, 128, 1.75)
    assert seen >= 20, f"the 150 ms stall left only {seen} zero-filled blocks"


def test_host_json_record_writes_the_negotiated_format_and_a_440_hz_tone(spawn, tmp_path):
    dev = spawn.device("--channels", "3", "--samplerate", "44100", "--blocksize", "128",
                       "--fixed-format")
    wav = tmp_path / "out.wav"
    r = spawn.run("host", "--id", dev.id, "--json", "--seconds", "1", "--record", str(wav))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print only one JSON object:\n{r.stdout}"
    stats = json.loads(lines[0])
    assert {"device", "sample_rate", "block_size", "channels", "blocks", "underruns",
            "note_to_sound_ms"} <= set(stats)
    assert stats["device"] == dev.id
    assert (stats["sample_rate"], stats["block_size"], stats["channels"]) == (44100, 128, 3)
    n_blocks = int(np.ceil(44100 / 128))
    assert stats["blocks"] == n_blocks
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    assert rate == 44100 and data.shape == (n_blocks * 128, 3)
    _assert_counters_match_the_recording(stats, data[:, 0], 44100, 128, 0.75)
    for c in range(3):
        np.testing.assert_array_equal(data[:, c], data[:, 0])
    seg = device_time(data[:, 0])[: 44100 * 4 // 10]
    assert seg.shape[0] == 44100 * 4 // 10, "less than 0.4 s of sound arrived"
    assert abs(peak_hz(seg, 44100) - 440.0) < 2.5
    assert abs(np.abs(seg).max() - NOTE_AMPLITUDE_V100) < 0.02


def test_host_with_an_unknown_device_exits_1_naming_it_and_the_running_ones(spawn, namespace):
    spawn.device(device_id="A")
    r = spawn.run("host", "--id", "X:0", "--seconds", "0.5")
    assert r.returncode == 1
    assert one_line(r.stderr) == (f"discolink-bridge host: no device 'X:0' in namespace "
                                  f"'{namespace}'; running: A:0")


def test_host_midi_file_plays_both_notes_in_time(spawn, tmp_path):
    mid = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: 480 ticks = 0.5 s
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.Message("note_on", note=60, velocity=100, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=384))  # 0.4 s
    track.append(mido.Message("note_on", note=67, velocity=100, time=0))
    track.append(mido.Message("note_off", note=67, velocity=0, time=384))
    path = tmp_path / "two.mid"
    mid.save(str(path))
    dev = spawn.device()
    wav = tmp_path / "midi.wav"
    r = spawn.run("host", "--id", dev.id, "--midi-file", str(path), "--record", str(wav),
                  "--json")
    assert r.returncode == 0, r.stderr
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    assert rate == 48000
    assert data.shape[0] >= int(1.3 * rate), "the recording lasts the file plus 0.5 s"
    x = device_time(data[:, 0])
    first = x[int(0.03 * rate) : int(0.35 * rate)]
    second = x[int(0.45 * rate) : int(0.75 * rate)]
    assert abs(peak_hz(first, rate) - C4) < 3.0
    assert abs(peak_hz(second, rate) - G4) < 3.0
    assert tone_amplitude(first, rate, G4) < 0.01, "the second note sounded too early"
    assert tone_amplitude(second, rate, C4) < 0.01, "the first note did not stop"
    assert 0.78 * rate < x.shape[0] < 0.85 * rate, "two notes of 0.4 s each, then silence"
    assert not data[-int(0.2 * rate) :].any(), "the notes must end"


def test_host_send_streams_a_wav_through_a_return_device(spawn, tmp_path):
    rate = 48000
    t = np.arange(rate) / rate
    src = tmp_path / "in.wav"
    sf.write(str(src), (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), rate,
             subtype="FLOAT")
    dev = spawn.device("--return")
    wav = tmp_path / "out.wav"
    r = spawn.run("host", "--id", dev.id, "--send", str(src), "--seconds", "1", "--record",
                  str(wav), "--json")
    assert r.returncode == 0, r.stderr
    data, got_rate = sf.read(str(wav), dtype="float32", always_2d=True)
    assert got_rate == rate
    for c in range(2):
        seg = device_time(data[:, c])[int(0.15 * rate) : int(0.6 * rate)]
        assert abs(tone_amplitude(seg, rate, 1000) - 0.3) < 0.05, "the sent WAV is missing"
        assert abs(tone_amplitude(seg, rate, 440) - NOTE_AMPLITUDE_V100) < 0.04, "no note"


def test_host_send_to_a_device_without_return_ring_exits_1(spawn, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(str(src), np.zeros(4800, np.float32), 48000)
    dev = spawn.device()
    r = spawn.run("host", "--id", dev.id, "--send", str(src), "--seconds", "0.2")
    assert r.returncode == 1
    assert "--return" in one_line(r.stderr)


def test_host_with_a_missing_input_file_exits_2(spawn, tmp_path):
    dev = spawn.device()
    r = spawn.run("host", "--id", dev.id, "--midi-file", str(tmp_path / "nope.mid"))
    assert r.returncode == 2
    assert "nope.mid" in one_line(r.stderr)


# ---- usage errors ------------------------------------------------------------------------


@pytest.mark.parametrize("args,problem", [
    (("device", "--channels", "13"), "channels"),
    (("device", "--blocksize", "5"), "block size"),
    (("device", "--samplerate", "1000"), "sample rate"),
    (("device", "--fill", "9"), "fill"),
    (("device", "--mode", "bogus"), "mode"),
    (("device", "--channels", "two"), "channels"),
    (("host", "--id", "A", "--note", "200"), "note"),
    (("host", "--id", "A", "--seconds", "0"), "seconds"),
], ids=["channels-13", "blocksize-5", "samplerate-1000", "fill-9", "mode-bogus",
        "channels-two", "note-200", "seconds-0"])
def test_bad_option_values_exit_2_with_a_single_clear_line(spawn, namespace, args, problem):
    r = spawn.run(*args)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert line.startswith(f"discolink-bridge {args[0]}: error:")
    assert problem in line
    assert registered(namespace) == []


BAD_IDS = [("", "empty"), ("x" * 64, "too long"), ("é" * 32, "too long"), ("a/b", "'/'"),
           ("a\nb", "U+000A"), ("a\x7fb", "U+007F"), ("a\x1bb", "U+001B")]


@pytest.mark.parametrize("bad,problem", BAD_IDS, ids=[p for _, p in BAD_IDS])
def test_device_with_a_bad_id_exits_2_with_one_line(spawn, namespace, bad, problem):
    r = spawn.run("device", "--id", bad)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "device id" in line and problem in line
    assert registered(namespace) == []


def test_device_with_a_non_utf8_id_exits_2_naming_the_device_id(spawn, namespace):
    argv = [os.fsencode(sys.executable), b"-m", b"bridge", b"device", b"--id", b"Synth\xff"]
    r = subprocess.run(argv, capture_output=True, env=spawn.env(), timeout=60, cwd=REPO)
    assert r.returncode == 2
    line = one_line(r.stderr.decode(errors="replace"))
    assert "device id" in line, line
    assert registered(namespace) == []


# One case per way in which each verb refuses its input: (arguments, exit code, how the one
# line on stderr begins). Cases tested elsewhere with their own setup are not repeated here
# (an unknown --id: test_host_with_an_unknown_device..., test_cleanup.py; a bad MIDI message:
# test_midi_cli.py; plugin scan of a missing folder: test_plugin_scan.py; a missing or bad
# rack file: test_rack.py; status with no rack: test_rack.py).
REFUSALS = [
    ((), 2, "discolink-bridge: error: the following arguments are required: COMMAND"),
    (("bogus",), 2, "discolink-bridge: error: argument COMMAND: invalid choice: 'bogus'"),
    (("list", "--bogus"), 2, "discolink-bridge: error: unrecognized arguments: --bogus"),
    (("status", "--json", "extra"), 2, "discolink-bridge: error: unrecognized arguments: extra"),
    (("--namespace", "a/b", "list"), 2, "discolink-bridge list: error: invalid namespace 'a/b'"),
    (("--namespace", "x" * 33, "cleanup"), 2,
     f"discolink-bridge cleanup: error: invalid namespace '{'x' * 33}'"),
    (("device", "--fill", "0"), 2,
     "discolink-bridge device: error: argument --fill: 0 must be positive"),
    (("device", "--param", "gain=1"), 2, "discolink-bridge device: error: --param needs --plugin"),
    (("master", "--tap", "out"), 2, "discolink-bridge master: error: --tap needs --plugin"),
    (("device", "--rt-priority", "100"), 2,
     "discolink-bridge device: error: --rt-priority must be 0..99, got 100"),
    (("host",), 2, "discolink-bridge host: error: the following arguments are required: --id"),
    (("host", "--id", "A", "--velocity", "x"), 2,
     "discolink-bridge host: error: argument --velocity: 'x' is not an integer"),
    (("host", "--id", "A", "--link-tag", "a\nb"), 2,
     "discolink-bridge host: error: link tag 'a\\nb' contains a control character"),
    (("host", "--id", "A", "--rt-priority", "-1"), 2,
     "discolink-bridge host: error: --rt-priority must be 0..99, got -1"),
    (("host", "--id", "A", "--blocksize", "8"), 2,
     "discolink-bridge host: error: argument --blocksize: block size 8 is out of range 16..4096"),
    (("device", "--samplerate", "100000000"), 2,
     "discolink-bridge device: error: argument --samplerate: sample rate 100000000 is out of "
     "range 8000..384000"),
    (("send", "--id", "X"), 2,
     "discolink-bridge send: error: the following arguments are required: MESSAGE"),
    (("midi-monitor", "--id", "a/b"), 2,
     "discolink-bridge midi-monitor: error: device id 'a/b' contains '/'"),
    (("midi-monitor", "--blocksize", "0"), 2,
     "discolink-bridge midi-monitor: error: argument --blocksize: 0 must be positive"),
    (("jack-device",), 2,
     "discolink-bridge jack-device: error: the following arguments are required: --id"),
    (("jack-device", "--id", "a/b"), 2,
     "discolink-bridge jack-device: error: device id 'a/b' contains '/'"),
    (("jack-device", "--id", "J", "--client-name", "c" * 300), 2,  # not "cannot reach JACK"
     f"discolink-bridge jack-device: error: JACK client name '{'c' * 40}'... (300 chars) is "
     "300 bytes; JACK takes at most 64"),
    (("jack-host", "--id", "J", "--client-name", "c" * 300), 2,
     f"discolink-bridge jack-host: error: JACK client name '{'c' * 40}'... (300 chars)"),
    (("jack-host", "--id", "X", "--seconds", "0"), 2,
     "discolink-bridge jack-host: error: argument --seconds: 0.0 s is out of range"),
    (("plugin",), 2, "discolink-bridge plugin: error: the following arguments are required: "
                     "ACTION"),
    (("plugin", "info"), 2,
     "discolink-bridge plugin info: error: the following arguments are required: PLUGIN"),
    (("plugin", "info", "/nope.vst3"), 2,
     "discolink-bridge plugin: error: /nope.vst3: no such file or directory"),
    (("device", "--plugin", "/nope.vst3"), 2,
     "discolink-bridge device: error: /nope.vst3: no such file or directory"),
    (("device", "--plugin", "builtin:Reverb", "--plugin-name", "Nope"), 2,
     "discolink-bridge device: error: builtin:Reverb: --plugin-name 'Nope' is for a bundle"),
    (("plugin", "scan", "--timeout", "0"), 2,
     "discolink-bridge plugin scan: error: argument --timeout: 0.0 s is out of range"),
    (("rack",), 2, "discolink-bridge rack: error: the following arguments are required: "
                   "FILE|check|schema|reload"),
    (("rack", "check"), 2, "discolink-bridge rack: error: rack check needs a FILE"),
    (("rack", "a.yaml", "b.yaml"), 2,
     "discolink-bridge rack: error: unexpected b.yaml: give one rack FILE (or check FILE)"),
    (("rack", "reload"), 1, "discolink-bridge rack: no rack is running in namespace"),
    (("demo", "--seconds", "0"), 2,
     "discolink-bridge demo: error: argument --seconds: 0.0 s is out of range"),
    # a --record, --send or --midi-file that can't work is refused before connecting
    (("host", "--id", "A", "--record", "out.txt"), 2,
     "discolink-bridge host: error: --record out.txt: takes are written as WAV"),
    (("host", "--id", "A", "--record", "/tmp"), 2,
     "discolink-bridge host: error: --record /tmp is a folder"),
    (("host", "--id", "A", "--record", "/nonexistent-dir/k.wav"), 2,
     "discolink-bridge host: error: --record /nonexistent-dir/k.wav: folder /nonexistent-dir "
     "does not exist"),
    (("host", "--id", "A", "--record", "/sys/k.wav"), 2,
     "discolink-bridge host: error: --record /sys/k.wav: cannot write there: "),
    (("host", "--id", "A", "--send", "/tmp"), 2,
     "discolink-bridge host: error: --send /tmp is a folder, not an audio file"),
    (("host", "--id", "A", "--send", "/etc/passwd"), 2,
     "discolink-bridge host: error: cannot read audio file /etc/passwd: "),
    (("host", "--id", "A", "--midi-file", "/etc/passwd"), 2,
     "discolink-bridge host: error: cannot read MIDI file /etc/passwd: MThd not found"),
    (("host", "--id", "A", "--note", "-1"), 2,
     "discolink-bridge host: error: argument --note: -1 is out of the MIDI range 0..127"),
    (("send", "--id", "A", ""), 2,
     "discolink-bridge send: error: message 1 is empty; write one in mido's text format"),
    (("demo", "--record", "demo.txt"), 2,
     "discolink-bridge demo: error: --record demo.txt: takes are written as WAV"),
]


@pytest.mark.parametrize("args,code,begins", REFUSALS,
                         ids=[" ".join(a)[:40] or "no-verb" for a, _, _ in REFUSALS])
def test_each_verb_refuses_bad_input_with_its_exit_code_and_one_line(spawn, namespace, args,
                                                                      code, begins):
    r = spawn.run(*args)
    assert (r.returncode, r.stdout) == (code, ""), r.stderr
    assert one_line(r.stderr).startswith(begins)
    assert shm.list_names(shm.namespace_prefix(namespace)) == []


# ---- demo and master ---------------------------------------------------------------------


def test_demo_runs_the_demo_rack_records_a_phrase_and_leaves_nothing(spawn, namespace,
                                                                      tmp_path):
    wav = tmp_path / "demo.wav"
    r = spawn.run("demo", "--record", str(wav), "--seconds", "2", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("rack demo ready: 2 device(s)"), r.stdout
    assert "Pad:0: " in r.stdout and " underruns" in r.stdout  # the session's stats line
    # (how many: a real-time host on a shared machine; bench/transport.py measures that)
    assert "DEVICE" in r.stdout and "rack stopped" in r.stdout  # the status table, then stop
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    assert rate == 48000 and data.shape[1] == 2 and data.shape[0] >= 2 * 48000
    sound = device_time(data[:, 0])
    assert sound.shape[0] >= rate, "less than 1 s of sound arrived"
    # The phrase is C4 E4 G4 C5 ..., a quarter second each, through chorus and reverb: in
    # each quarter the note played must carry more energy than its neighbours a tone away.
    spectrum_hz = np.fft.rfftfreq(rate // 4, 1 / rate)
    for k, note in enumerate((60, 64, 67)):
        quarter = sound[k * rate // 4 + rate // 40:(k + 1) * rate // 4]
        spec = np.abs(np.fft.rfft(quarter * np.hanning(len(quarter)), rate // 4))

        def band(n: float, spec=spec) -> float:
            f = 440 * 2 ** ((n - 69) / 12)
            return float(spec[np.abs(spectrum_hz - f) < f * 0.03].max())

        assert band(note) > 2 * max(band(note - 2), band(note + 2)), f"note {note}"
    assert shm.list_names(shm.namespace_prefix(namespace)) == []  # (before registered(),
    assert registered(namespace) == []  # which opens, and so creates, the registry)


def test_master_registers_shows_its_status_on_a_terminal_and_stops_cleanly_on_sigterm(
        spawn, namespace):
    with on_a_terminal(spawn, "master", "--id", "Master") as (proc, chunks):
        # The display appears once the device is fully started (waiting for it, rather than
        # for the registry entry, keeps this test clear of the race covered by
        # test_segments.py::test_a_device_visible_in_the_registry_always_has_a_valid_segment).
        wait_until(lambda: b"Master:0" in b"".join(chunks), 20.0, "the status display")
        assert "Master:0" in registered(namespace)
        with Host() as host:
            host.connect("Master:0", timeout=TIMEOUT)
            assert host.ping(timeout=TIMEOUT) > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert "Master:0" not in registered(namespace)
    out = b"".join(chunks).decode(errors="replace")
    assert "Traceback" not in out, out


LONG = "A" * 5000


@pytest.mark.parametrize("args", [
    ("device", "--id", LONG), ("host", "--id", LONG), ("send", "--id", LONG, "start"),
    ("jack-device", "--id", LONG), ("midi-monitor", "--id", LONG),
    ("host", "--id", "X", "--link-tag", LONG), ("--namespace", LONG, "list"),
    ("device", "--plugin", "builtin:Reverb", "--tap", LONG),
    ("device", "--plugin", "builtin:Reverb", "--param", f"{LONG}=1"),
    ("send", "--id", "X:0", LONG), ("device", "--plugin", LONG),
], ids=lambda a: " ".join(x if len(x) < 20 else "LONG" for x in a))
def test_a_5000_character_value_is_named_in_an_error_not_echoed_in_full(spawn, args):
    r = spawn.run(*args)
    assert r.returncode in (1, 2) and r.stdout == ""
    assert r.stderr.count("\n") == 1 and len(r.stderr) < 500, r.stderr[:300]
    assert "AAAA" in r.stderr  # still named
