"""`host` (and `demo --record`) as a user runs them, with faults: the take is streamed to disk
and survives signals and kill -9, memory stays flat over a day-long session, a stalled or
restarted device is waited for and reattached, and what the device cannot take is refused
with one line and the right exit code. Every host and device is a real OS process."""

from __future__ import annotations

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
from proto_helpers import REPO, device_time, peak_hz, tone_amplitude

from bridge.transport import shm


def start_host(spawn, *args: str) -> subprocess.Popen:
    """`host ARGS` in the background; returns once it has connected (its first line)."""
    proc = spawn.popen("host", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    line = proc.stdout.readline()
    assert line.startswith("connected to "), (line, proc.stderr.read() if proc.poll() else "")
    return proc


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def tone_wav(path: Path, seconds: float, channels: int = 1, hz: float = 1000.0) -> Path:
    t = np.arange(int(seconds * 48000)) / 48000
    tone = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    sf.write(str(path), np.repeat(tone[:, None], channels, axis=1), 48000, subtype="FLOAT")
    return path


def assert_holds_the_note(wav: Path, at_least_s: float) -> np.ndarray:
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    assert rate == 48000 and data.shape[1] == 2
    assert data.shape[0] >= at_least_s * rate, f"only {data.shape[0] / rate:.2f} s kept"
    sound = device_time(data[:, 0])
    assert abs(peak_hz(sound[: rate // 2], rate) - 440.0) < 2.5
    return data


# ---- the take is written as it comes ---------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_host_record_is_closed_properly_on_a_signal_and_exits_128_plus_it(spawn, tmp_path,
                                                                          sig):
    dev = spawn.device()
    wav = tmp_path / "k.wav"
    proc = start_host(spawn, "--id", dev.id, "--seconds", "86400", "--record", str(wav))
    time.sleep(1.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and err == "", err
    assert f"to {wav}" in out and "recorded " in out
    data = assert_holds_the_note(wav, 1.2)
    assert sf.info(str(wav)).frames == data.shape[0]  # the header was fixed on close


def test_host_record_under_timeout_keeps_the_take(spawn, tmp_path):
    dev = spawn.device()
    wav = tmp_path / "k.wav"
    r = subprocess.run(["timeout", "2.5", sys.executable, "-m", "bridge", "host", "--id",
                        dev.id, "--seconds", "86400", "--record", str(wav)],
                       env=spawn.env(), cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 124, r.stderr  # timeout's own code: it sent SIGTERM
    assert "Traceback" not in r.stderr
    assert_holds_the_note(wav, 1.0)


def test_host_record_after_kill_9_opens_and_holds_all_but_about_the_last_second(spawn,
                                                                                tmp_path):
    dev = spawn.device()
    wav = tmp_path / "k.wav"
    proc = start_host(spawn, "--id", dev.id, "--seconds", "86400", "--record", str(wav))
    connected = time.monotonic()
    time.sleep(3.0)
    proc.kill()
    elapsed = time.monotonic() - connected
    proc.wait(timeout=10)
    data = assert_holds_the_note(wav, elapsed - 1.2)
    assert data.shape[0] <= (elapsed + 0.5) * 48000


def test_host_memory_does_not_grow_with_a_day_long_session(spawn, tmp_path):
    """--seconds 86400 used to allocate the whole take up front (30.9 GiB at 48 kHz stereo
    float): the host's resident memory now stays what a short session needs."""
    dev = spawn.device()
    wav = tmp_path / "day.wav"
    proc = start_host(spawn, "--id", dev.id, "--seconds", "86400", "--record", str(wav))

    def rss_kib() -> int:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1])

    time.sleep(1.0)
    early = rss_kib()
    time.sleep(3.0)
    late = rss_kib()
    assert late < 200 * 1024, f"{late} KiB resident"
    assert late - early < 16 * 1024, f"grew from {early} to {late} KiB in 3 s"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM
    assert_holds_the_note(wav, 3.5)


def test_host_streams_a_long_send_wav_instead_of_loading_it(spawn, tmp_path):
    """A --send WAV used to be read whole (and copied per channel): a 200 s file now costs
    the host what a 2 s one does."""
    dev = spawn.device("--return")

    def rss_kib_with(src: Path) -> int:
        proc = start_host(spawn, "--id", dev.id, "--send", str(src), "--seconds", "30")
        time.sleep(1.5)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1])

    short = rss_kib_with(tone_wav(tmp_path / "short.wav", 2.0))
    long = rss_kib_with(tone_wav(tmp_path / "long.wav", 200.0))  # 38 MB of float32
    assert long - short < 12 * 1024, f"{short} KiB with 2 s, {long} KiB with 200 s"


def test_demo_record_is_kept_when_the_demo_is_stopped_with_sigterm(spawn, namespace,
                                                                   tmp_path):
    wav = tmp_path / "demo.wav"
    proc = spawn.popen("demo", "--record", str(wav), "--seconds", "60",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("connected to Pad:0"):
            break
    assert seen and seen[-1].startswith("connected to Pad:0"), (seen, proc.stderr.read())
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "rack stopped" in out
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    assert data.shape[0] >= 1.5 * rate and np.abs(data).max() > 0.05
    assert shm.list_names(shm.namespace_prefix(namespace)) == []


# ---- a stall does not end a session ----------------------------------------------------


def test_host_keeps_recording_through_a_stall_and_reattaches_when_the_device_resumes(
        spawn, tmp_path):
    src = tone_wav(tmp_path / "tone.wav", 12.0)
    dev = spawn.device("--return")
    wav = tmp_path / "stall.wav"
    proc = start_host(spawn, "--id", dev.id, "--send", str(src), "--seconds", "9",
                      "--record", str(wav))
    time.sleep(1.5)
    os.kill(dev.pid, signal.SIGSTOP)
    time.sleep(2.5)
    os.kill(dev.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lost, back = err.strip().splitlines()
    assert lost.startswith("discolink-bridge: peer lost: device Sine:0 went away (device "
                           "silent for more than 1.0 s); recording silence"), lost
    assert back.startswith("discolink-bridge: peer back: reattached to Sine:0 after "), back
    assert "recorded 9.00 s" in out and "disconnected" not in out, out
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    assert data.shape[0] >= 8.9 * rate  # the whole session, the stall included
    quiet = data[int(3.5 * rate):int(4.0 * rate), 0]
    assert not quiet.any(), "the stall is recorded as silence"
    tail = data[-int(1.5 * rate):, 0]
    assert abs(tone_amplitude(tail, rate, 1000) - 0.3) < 0.05, "nothing after the reattach"


def test_host_reattaches_to_a_device_killed_and_restarted_under_the_same_id(spawn,
                                                                            tmp_path):
    src = tone_wav(tmp_path / "tone.wav", 12.0)
    dev = spawn.device("--return", device_id="Fx")
    wav = tmp_path / "restart.wav"
    proc = start_host(spawn, "--id", "Fx:0", "--send", str(src), "--seconds", "8",
                      "--record", str(wav))
    time.sleep(1.5)
    dev.kill9()
    time.sleep(1.0)
    again = spawn.device("--return", device_id="Fx")
    assert again.id == "Fx:0"
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lost, back = err.strip().splitlines()
    assert lost.startswith(f"discolink-bridge: peer lost: device Fx:0 went away (device "
                           f"process {dev.pid} died)"), lost
    assert back.startswith("discolink-bridge: peer back: reattached to Fx:0"), back
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    tail = data[-int(1.5 * rate):, 0]
    assert abs(tone_amplitude(tail, rate, 1000) - 0.3) < 0.05, "nothing after the reattach"


def test_host_that_never_sees_its_device_again_exits_1_with_the_take_kept(spawn, tmp_path):
    dev = spawn.device()
    wav = tmp_path / "gone.wav"
    proc = start_host(spawn, "--id", dev.id, "--seconds", "3", "--record", str(wav))
    time.sleep(1.0)
    dev.kill9()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert f"disconnected: device process {dev.pid} died" in out
    assert err.strip().splitlines()[0].startswith("discolink-bridge: peer lost: ")
    assert sf.info(str(wav)).frames >= 2.9 * 48000  # silence recorded to the planned end


# ---- nothing dropped without a word ------------------------------------------------------


def test_record_from_a_midi_only_device_exits_2_and_writes_nothing(spawn, tmp_path):
    spawn.device("--mode", "midi", device_id="Mon")
    wav = tmp_path / "m.wav"
    r = spawn.run("host", "--id", "Mon:0", "--seconds", "0.5", "--record", str(wav))
    assert r.returncode == 2
    assert one_line(r.stderr) == (f"discolink-bridge host: error: device Mon:0 is MIDI-only: "
                                  f"it has no audio to record to {wav}")
    assert not wav.exists()


def test_send_of_a_wav_with_more_channels_than_the_return_ring_exits_2(spawn, tmp_path):
    six = tone_wav(tmp_path / "six.wav", 0.2, channels=6)
    dev = spawn.device("--return")
    r = spawn.run("host", "--id", dev.id, "--send", str(six), "--seconds", "0.3")
    assert r.returncode == 2
    assert one_line(r.stderr) == (f"discolink-bridge host: error: {six} has 6 channels but "
                                  "the device's return ring has 2; give a mono file or one "
                                  "of at most 2 channels")


def test_midi_sent_to_an_audio_only_device_is_reported_as_refused_with_exit_1(spawn):
    spawn.device("--mode", "audio", device_id="Fx")
    r = spawn.run("send", "--id", "Fx:0", "note_on note=60")
    assert r.returncode == 1
    assert one_line(r.stderr) == ("discolink-bridge send: device Fx:0 refused 1 of 1 "
                                  "command(s) (WRONG_MODE: NoteOn refused: device is in "
                                  "audio-only mode)")
    r = spawn.run("host", "--id", "Fx:0", "--note", "60", "--seconds", "2")
    assert r.returncode == 1
    assert one_line(r.stderr) == ("discolink-bridge host: device Fx:0 refused the MIDI sent "
                                  "to it (WRONG_MODE: NoteOn refused: device is in audio-only "
                                  "mode)")
    # without --note, a host of an audio-only device plays no note, and so is not refused
    r = spawn.run("host", "--id", "Fx:0", "--seconds", "0.3", "--json")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_send_at_an_offset_past_the_block_is_refused_and_the_last_frame_is_accepted(spawn):
    dev = spawn.device("--blocksize", "256", "--fixed-format")
    r = spawn.run("send", "--id", dev.id, "--at-offset", "256", "note_on note=60")
    assert r.returncode == 2
    assert one_line(r.stderr) == ("discolink-bridge send: error: sample offset 256 is past "
                                  f"the end of {dev.id}'s 256-frame block (offsets 0..255)")
    r = spawn.run("send", "--id", dev.id, "--at-offset", "255", "note_on note=60")
    assert r.returncode == 0 and "at offset 255" in r.stdout, r.stderr


def test_a_claimed_device_names_the_force_flag(spawn):
    dev = spawn.device()
    holder = start_host(spawn, "--id", dev.id, "--seconds", "30", "--link-tag", "mine")
    try:
        for verb, extra in (("host", ("--seconds", "0.2")), ("send", ("note_on note=60",))):
            r = spawn.run(verb, "--id", dev.id, *extra)
            assert r.returncode == 1
            assert one_line(r.stderr) == (
                f"discolink-bridge {verb}: device {dev.id} is claimed by host pid "
                f"{holder.pid} (link tag 'mine'); stop that host, or pass --force to take "
                "the device over")
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.communicate(timeout=20)


def test_record_to_dev_full_fails_at_runtime_with_one_line_and_exit_1(spawn):
    dev = spawn.device()
    r = spawn.run("host", "--id", dev.id, "--seconds", "0.5", "--record", "/dev/full")
    assert r.returncode == 1
    assert one_line(r.stderr) == ("discolink-bridge host: cannot write recording /dev/full: "
                                  "No space left on device")


# ---- inputs checked before connecting --------------------------------------------------


def test_a_truncated_midi_file_is_refused_before_connecting_naming_why(spawn, namespace,
                                                                       tmp_path):
    mid = mido.MidiFile()
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for _ in range(50):
        track.append(mido.Message("note_on", note=60, time=10))
    whole = tmp_path / "whole.mid"
    mid.save(str(whole))
    cut = tmp_path / "cut.mid"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    r = spawn.run("host", "--id", "Nobody", "--midi-file", str(cut))
    assert r.returncode == 2
    assert one_line(r.stderr) == (f"discolink-bridge host: error: cannot read MIDI file "
                                  f"{cut}: it ends early (truncated?)")
    assert shm.list_names(shm.namespace_prefix(namespace)) == []


@pytest.mark.parametrize("kind", ["random bytes", "empty"])
def test_an_unreadable_send_wav_is_refused_before_connecting(spawn, namespace, tmp_path,
                                                             kind):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(os.urandom(100) if kind == "random bytes" else b"")
    r = spawn.run("host", "--id", "Nobody", "--send", str(bad))
    assert r.returncode == 2
    assert one_line(r.stderr).startswith(f"discolink-bridge host: error: cannot read audio "
                                         f"file {bad}: ")
    assert shm.list_names(shm.namespace_prefix(namespace)) == []


def test_a_bad_record_path_is_refused_before_the_device_is_touched(spawn, tmp_path):
    """The device is running: the refusal must come before the claim (its host_pid stays 0
    and the registry shows no host)."""
    dev = spawn.device()
    for path in (tmp_path / "out.txt", tmp_path, tmp_path / "nope" / "k.wav"):
        r = spawn.run("host", "--id", dev.id, "--record", str(path))
        assert r.returncode == 2, r.stderr
        assert one_line(r.stderr).startswith(f"discolink-bridge host: error: --record {path}")
        assert r.stdout == ""  # no "connected to" line
    assert not (tmp_path / "out.txt").exists()
