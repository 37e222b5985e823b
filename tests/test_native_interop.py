"""The C SDK's tools against the Python implementation, and against each other, as separate
OS processes: 440 Hz without gaps both ways, kill -9 of either side (zero-fill, the reason
reported, the slot reclaimed as protocol.md says), session recall by link tag, and the 1.1
rules seen from outside (a Python host against the C device and the Python device alike)."""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest
from helpers_ipc import by_id, scan, wait_until
from native_helpers import (
    assert_440_without_gaps,
    build_native,
    c_device,
    cli_host,
    cli_host_popen,
    json_line,
    read_wav,
    wait_for_line,
)
from proto_helpers import record_paced, tone_amplitude

from bridge.midi import ump
from bridge.transport import Host, Message, cmd, shm
from bridge.transport.commands import ErrorCode
from bridge.transport.host import CommandError, HandshakeError
from bridge.transport.layout import Mode
from bridge.transport.message import FRAGMENT


@pytest.fixture(scope="module", autouse=True)
def native_build():
    build_native()


def start_device(spawn, kind: str, *args: str, device_id: str = "Sine"):
    """A sine-synth device process: the C tool or `python -m bridge device`."""
    if kind == "c":
        return c_device(spawn, *args, device_id=device_id)
    return spawn.device(*args, device_id=device_id)


def segment_of(namespace: str, device_id: str) -> str:
    info = by_id(namespace)[device_id]
    return shm.transport_name(namespace, info.slot, info.pid)


def start_old_host(spawn, kind: str, device_id: str) -> subprocess.Popen:
    """A host process (cli_host or `discolink-bridge host`) playing note 69 to the device for
    20 s under link tag "old": the host a test then kills -9."""
    args = ("--id", device_id, "--seconds", "20", "--link-tag", "old", "--note", "69")
    if kind == "c":
        return cli_host_popen(spawn, *args)
    return spawn.popen("host", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def assert_only_the_new_note(path) -> None:
    """The take at ``path`` holds note 60 (261.6 Hz), and nothing of the old host's note 69."""
    rec, rate = read_wav(path)
    spectrum = np.abs(np.fft.rfft(rec[0] * np.hanning(rec.shape[1])))
    hz = np.fft.rfftfreq(rec.shape[1], 1 / rate)
    assert abs(hz[np.argmax(spectrum)] - 261.6) < 2
    assert spectrum[np.argmin(np.abs(hz - 440))] < 0.01 * spectrum.max(), "the old note sounds"


# ---- 440 Hz, both ways and C to C -----------------------------------------------------------

@pytest.mark.parametrize("fmt", ["wav", "raw"])
def test_c_host_records_440_hz_without_gaps_from_a_python_device(spawn, tmp_path, fmt):
    # fill 4 (21 ms of slack) keeps a loaded machine from causing a gap, as tests/test_audio.py
    dev = spawn.device("--fill", "4", device_id="Py")
    out = tmp_path / f"rec.{fmt}"
    done = cli_host(spawn, "--id", dev.id, "--seconds", "1.6", "--record", str(out), "--json")
    assert done.returncode == 0, done.stderr
    stats = json_line(done.stdout)
    assert stats["device"] == dev.id and stats["disconnected"] == ""
    if fmt == "wav":
        rec, rate = read_wav(out)
    else:
        rec, rate = np.fromfile(out, dtype="<f4").reshape(-1, 2).T, 48000
    assert rec.shape[1] == stats["blocks"] * 256
    assert_440_without_gaps(rec, rate, stats["underruns"])
    dev.stop()


def test_python_host_records_440_hz_without_gaps_from_a_c_device(spawn, tmp_path):
    dev = c_device(spawn, "--fill", "4", "--channels", "3")
    out = tmp_path / "rec.wav"
    done = spawn.run("host", "--id", dev.id, "--seconds", "1.6", "--record", str(out), "--json")
    assert done.returncode == 0, done.stderr
    stats = json_line(done.stdout)
    assert stats["channels"] == 3 and not stats["disconnected"]
    rec, rate = read_wav(out)
    assert rec.shape[0] == 3
    assert_440_without_gaps(rec, rate, stats["underruns"])
    tail = dev.stop()
    assert " 0 overruns" in tail and " 0 bad messages" in tail, tail  # the demand clock waits


@pytest.mark.parametrize(("rate", "block"), [(48000, 256), (44100, 96), (96000, 1000)])
def test_c_host_records_440_hz_without_gaps_from_a_c_device_at_any_block_size(spawn, tmp_path,
                                                                             rate, block):
    dev = c_device(spawn, "--fill", "4")
    out = tmp_path / "rec.wav"
    done = cli_host(spawn, "--id", dev.id, "--seconds", "1.6", "--record", str(out), "--json",
                    "--samplerate", str(rate), "--blocksize", str(block))
    assert done.returncode == 0, done.stderr
    stats = json_line(done.stdout)
    assert (stats["sample_rate"], stats["block_size"]) == (rate, block)  # FLEXIBLE_FORMAT
    rec, got_rate = read_wav(out)
    assert got_rate == rate
    assert_440_without_gaps(rec, rate, stats["underruns"])
    assert by_id(spawn.namespace)[dev.id].block_size == block  # the slot's format mirror


def test_a_c_device_on_its_own_clock_plays_to_a_python_host(spawn, tmp_path):
    dev = c_device(spawn, "--clock", "realtime")
    assert "realtime clock" in dev.ready_line
    out = tmp_path / "rec.wav"
    done = spawn.run("host", "--id", dev.id, "--seconds", "1.5", "--record", str(out), "--json")
    assert done.returncode == 0, done.stderr
    rec, rate = read_wav(out)
    hits = np.flatnonzero(np.abs(rec[0]) > 1e-4)
    seg = rec[0, hits[0] : hits[0] + 24000]
    assert abs(np.argmax(np.abs(np.fft.rfft(seg))) * rate / seg.size - 440) <= 2


# ---- kill -9 ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["c", "python"])
def test_c_host_zero_fills_and_reports_when_its_device_is_killed(spawn, tmp_path, kind):
    dev = start_device(spawn, kind, device_id="Victim")
    segment = segment_of(spawn.namespace, dev.id)
    out = tmp_path / "rec.wav"
    host = cli_host_popen(spawn, "--id", dev.id, "--seconds", "3", "--record", str(out), "--json")
    wait_until(lambda: by_id(spawn.namespace)[dev.id].claimed, 5, "the C host's claim")
    time.sleep(0.8)
    dev.kill9()
    killed_at = time.monotonic()
    stdout, stderr = host.communicate(timeout=15)
    assert host.returncode == 1, stderr  # the device was lost: a runtime failure
    line = next(li for li in stderr.splitlines() if "disconnected from" in li)
    assert f"cli_host: disconnected from {dev.id} after " in line
    assert f"device process {dev.pid} died; zero-filling" in line
    lost_after = float(line.split(" after ")[1].split(" s:")[0])
    stats = json_line(stdout)
    assert stats["disconnected"] == f"device process {dev.pid} died"
    rec, rate = read_wav(out)
    # sound before the kill; from a little after it, exact silence to the end
    assert np.abs(rec[0, : int(0.7 * rate)]).max() > 0.1
    cut = int((lost_after + 0.06) * rate)
    assert cut < int(2.5 * rate) and np.all(rec[:, cut:] == 0.0)
    assert time.monotonic() - killed_at < 15
    # Reclaim (section 3.4): the dead device's segment stays until a scan; the next scan
    # (here cli_host's, looking for it) frees the slot and unlinks the segment.
    assert segment in shm.namespace_names(spawn.namespace)
    again = cli_host(spawn, "--id", dev.id)
    assert again.returncode == 1 and "no device 'Victim:0'" in again.stderr
    assert segment not in shm.namespace_names(spawn.namespace)
    assert scan(spawn.namespace) == []


def test_python_host_zero_fills_and_reports_when_the_c_device_is_killed(spawn, tmp_path):
    dev = c_device(spawn, device_id="Victim")
    segment = segment_of(spawn.namespace, dev.id)
    out = tmp_path / "rec.wav"
    host = spawn.popen("host", "--id", dev.id, "--seconds", "3", "--record", str(out), "--json",
                       stdout=subprocess.PIPE, text=True)
    wait_until(lambda: by_id(spawn.namespace)[dev.id].claimed, 10, "the Python host's claim")
    time.sleep(0.8)
    dev.kill9()
    stdout, _ = host.communicate(timeout=20)
    assert host.returncode == 1
    stats = json_line(stdout)
    assert stats["disconnected"] == f"device process {dev.pid} died"
    rec, rate = read_wav(out)
    assert np.abs(rec[0, : int(0.5 * rate)]).max() > 0.1
    assert np.all(rec[:, int(2.5 * rate):] == 0.0)
    listing = spawn.run("list", "--json")  # a scan: reclaims the dead slot
    assert listing.returncode == 0 and "Victim" not in listing.stdout
    assert segment not in shm.namespace_names(spawn.namespace)


@pytest.mark.parametrize("killed_kind", ["c", "python"])
@pytest.mark.parametrize("host_kind", ["c", "python"])
def test_a_c_device_silences_a_killed_hosts_note_and_a_new_host_takes_the_stale_claim(
        spawn, tmp_path, host_kind, killed_kind):
    dev = c_device(spawn, "--verbose", device_id="Keep")
    old = start_old_host(spawn, killed_kind, dev.id)
    wait_for_line(dev.proc.stderr, "handshake", 10)
    time.sleep(0.3)
    old.send_signal(signal.SIGKILL)
    old.wait(timeout=5)
    # the device notices within its 250 ms host check, and ends the dead host's note
    wait_for_line(dev.proc.stderr, f"host died: host pid {old.pid} died", 5)
    info = by_id(spawn.namespace)[dev.id]
    assert not info.claimed and info.host_pid == old.pid and info.link_tag == "old"  # stale
    # A new host takes the stale claim without --force; nothing of the old session sounds:
    # its note 69 (440 Hz) is gone, only the new note 60 (261.6 Hz) plays.
    out = tmp_path / "new.wav"
    if host_kind == "c":
        done = cli_host(spawn, "--id", dev.id, "--note", "60", "--seconds", "1", "--record",
                        str(out), "--link-tag", "new")
    else:
        done = spawn.run("host", "--id", dev.id, "--note", "60", "--seconds", "1", "--record",
                         str(out), "--link-tag", "new")
    assert done.returncode == 0, done.stderr
    assert_only_the_new_note(out)
    dev.stop()


@pytest.mark.parametrize("killed_kind", ["c", "python"])
def test_a_python_device_ends_a_killed_hosts_note_before_the_next_host_records(
        spawn, tmp_path, killed_kind):
    """§8.2's reset on a new claim, for the Python sine device: the note a host left sounding
    when it was killed -9 never reaches the next host's recording."""
    dev = spawn.device(device_id="Keep")
    old = start_old_host(spawn, killed_kind, dev.id)
    wait_until(lambda: by_id(spawn.namespace)[dev.id].host_pid == old.pid, 10, "the claim")
    time.sleep(0.5)  # the note is sounding
    old.send_signal(signal.SIGKILL)
    old.wait(timeout=5)
    out = tmp_path / "new.wav"
    done = cli_host(spawn, "--id", dev.id, "--note", "60", "--seconds", "1", "--record",
                    str(out), "--link-tag", "new")
    assert done.returncode == 0, done.stderr
    assert_only_the_new_note(out)


# ---- session recall -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["c", "python"])
def test_c_host_recalls_its_device_by_link_tag_after_the_host_restarts(spawn, kind):
    start_device(spawn, kind, device_id="Layer")
    dev1 = start_device(spawn, kind, device_id="Layer")  # two devices: the tag picks one
    assert dev1.id == "Layer:1"
    first = cli_host_popen(spawn, "--id", "Layer:1", "--seconds", "20", "--link-tag",
                           "DAW:track1")
    wait_until(lambda: by_id(spawn.namespace)["Layer:1"].claimed, 10, "the first host's claim")
    first.send_signal(signal.SIGKILL)  # the DAW crashed
    first.wait(timeout=5)
    done = cli_host(spawn, "--recall", "--link-tag", "DAW:track1", "--seconds", "0.5", "--json")
    assert done.returncode == 0, done.stderr
    assert json_line(done.stdout)["device"] == "Layer:1"
    # A live host's claim is never taken by recall: with the tag on a claimed device and no
    # --id to fall back to, there is nothing to recall.
    holder = cli_host_popen(spawn, "--id", "Layer:1", "--seconds", "20", "--link-tag",
                            "DAW:track1")
    wait_until(lambda: by_id(spawn.namespace)["Layer:1"].host_pid == holder.pid, 10, "held")
    refused = cli_host(spawn, "--recall", "--link-tag", "DAW:track1")
    assert refused.returncode == 1 and "no device with link tag 'DAW:track1'" in refused.stderr
    holder.terminate()


def test_a_python_host_recalls_a_c_device_by_link_tag_after_its_host_process_was_killed(spawn):
    """The other direction of the test above: two C devices, a `discolink-bridge host`
    process claims Layer:1 with a tag and is killed -9; a new Python host's recall by that
    tag alone (no id) finds Layer:1, over the stale claim, and hears it."""
    c_device(spawn, device_id="Layer")
    dev1 = c_device(spawn, device_id="Layer")
    assert dev1.id == "Layer:1"
    first = spawn.popen("host", "--id", "Layer:1", "--seconds", "20", "--link-tag",
                        "DAW:track1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: by_id(spawn.namespace)["Layer:1"].host_pid == first.pid, 10, "the claim")
    first.send_signal(signal.SIGKILL)  # the DAW crashed
    first.wait(timeout=5)
    with Host() as host:
        conn = host.recall("DAW:track1")
        assert conn.device == "Layer:1"
        assert host.send_command(cmd.midi_note_on(0, 69, 100))
        rec = record_paced(host, 1.0)
    assert tone_amplitude(rec[0, -24000:], 48000, 440.0) > 0.05


@pytest.mark.parametrize("host_kind", ["c", "python"])
def test_recall_falls_back_to_the_id_when_the_c_device_restarts_as_the_same_name_n(spawn,
                                                                                   host_kind):
    dev = c_device(spawn, device_id="Keys:3")
    done = cli_host(spawn, "--id", "Keys:3", "--link-tag", "song", "--seconds", "0.3")
    assert done.returncode == 0, done.stderr
    assert by_id(spawn.namespace)["Keys:3"].link_tag == "song"
    dev.kill9()
    again = c_device(spawn, device_id="Keys:3")  # a new process, a fresh slot: no tag on it
    assert again.id == "Keys:3" and by_id(spawn.namespace)["Keys:3"].link_tag == ""
    if host_kind == "c":
        done = cli_host(spawn, "--recall", "--link-tag", "song", "--id", "Keys:3", "--seconds",
                        "0.3", "--json")
        assert done.returncode == 0, done.stderr
        assert json_line(done.stdout)["device"] == "Keys:3"
    else:
        with Host(spawn.namespace) as host:
            conn = host.recall("song", "Keys:3")
            assert conn.device == "Keys:3"
    assert by_id(spawn.namespace)["Keys:3"].link_tag == "song"
    again.stop()


# ---- the 1.1 rules from outside: a Python host, the C device and the Python device ----------

def raw(type_code: int, *, flags: int = 0, frag_index: int = 0, frag_count: int = 0,
        transfer_id: int = 0, payload: bytes = b"", payload_len: int | None = None) -> Message:
    m = Message()
    m.type = type_code
    m.seq = cmd.next_seq()
    m.flags = flags
    m.frag_index, m.frag_count, m.transfer_id = frag_index, frag_count, transfer_id
    m.set_payload(payload)
    if payload_len is not None:
        m.payload_len = payload_len
    return m


def refused(host: Host, message: Message) -> tuple[int, str]:
    with pytest.raises(CommandError) as err:
        host.request(message, timeout=3)
    return err.value.code, str(err.value)


@pytest.fixture(params=["c", "python"])
def rules_device(request, spawn):
    return start_device(spawn, request.param, device_id="Rules")


def test_fragment_errors_are_answered_alike(spawn, rules_device):
    T = cmd.T
    with Host(spawn.namespace) as host:
        host.connect(rules_device.id)
        before = host.counters()["bad_messages"]
        cases = [
            raw(T.Ping, flags=FRAGMENT, frag_count=2, transfer_id=5, payload=bytes(224)),
            raw(T.SysEx, frag_count=2, transfer_id=5, payload=bytes(224)),  # count 2, no flag
            raw(T.SysEx, flags=FRAGMENT, frag_count=1, transfer_id=5, payload=b"\xf0\xf7"),
            raw(T.SysEx, flags=FRAGMENT, frag_count=2, transfer_id=0, payload=bytes(224)),
            raw(T.SysEx, flags=FRAGMENT, frag_index=1, frag_count=2, transfer_id=6,
                payload=bytes(224)),  # the first seen is not index 0
        ]
        for m in cases:
            code, text = refused(host, m)
            assert code == ErrorCode.FRAGMENT_ERROR, (m, text)
        # a non-last fragment shorter than 224 bytes: refused, its transfer discarded
        first = raw(T.SysEx, flags=FRAGMENT, frag_count=3, transfer_id=9,
                    payload=b"\xf0" + bytes(223))
        assert host.send_command(first)
        short = raw(T.SysEx, flags=FRAGMENT, frag_index=1, frag_count=3, transfer_id=9,
                    payload=bytes(100))
        assert refused(host, short)[0] == ErrorCode.FRAGMENT_ERROR
        last = raw(T.SysEx, flags=FRAGMENT, frag_index=2, frag_count=3, transfer_id=9,
                   payload=b"\xf7")
        assert refused(host, last)[0] == ErrorCode.FRAGMENT_ERROR  # the transfer is gone
        # a fragment of another type than its transfer's first
        assert host.send_command(raw(T.SysEx, flags=FRAGMENT, frag_count=2, transfer_id=11,
                                     payload=b"\xf0" + bytes(223)))
        assert refused(host, raw(T.UMP, flags=FRAGMENT, frag_index=1, frag_count=2,
                                 transfer_id=11, payload=bytes(8)))[0] == ErrorCode.FRAGMENT_ERROR
        assert host.counters()["bad_messages"] - before == len(cases) + 3
        host.ping()  # still answering


def test_the_handshake_ignores_out_of_range_values_and_adopts_the_rest(spawn, rules_device):
    with Host(spawn.namespace) as host:
        host.set_local_buffer_info(500000, 8)  # both out of range: ignored, never refused
        conn = host.connect(rules_device.id)
        assert (conn.sample_rate, conn.block_size) == (48000, 256)
        host.disconnect()
        host.set_local_buffer_info(44100, 96)  # any block size in range, not only powers of 2
        conn = host.connect(rules_device.id)
        assert (conn.sample_rate, conn.block_size) == (44100, 96)
        host.disconnect()
        host.set_local_buffer_info(48000, 5000)  # each value on its own
        conn = host.connect(rules_device.id)
        assert (conn.sample_rate, conn.block_size) == (48000, 96)


def test_a_handshake_of_another_major_version_is_refused_naming_both(spawn, rules_device):
    with Host(spawn.namespace) as host, pytest.raises(HandshakeError) as err:
        host.connect(rules_device.id, version=(2, 0))
    assert "host speaks 2.0" in str(err.value) and "speaks 1.1" in str(err.value)


def test_set_transport_mode_refuses_what_the_segment_cannot_do(spawn, rules_device):
    with Host(spawn.namespace) as host:
        host.connect(rules_device.id)
        for mode in (int(Mode.MIDI), 7):  # audio rings: no midi mode; 7 is no mode at all
            code, _ = refused(host, cmd.set_transport_mode(mode))
            assert code == ErrorCode.INVALID_ARGUMENT
        assert scan(spawn.namespace)[0].mode == "audio+midi"
        reply = host.request(cmd.set_transport_mode(int(Mode.AUDIO)))
        assert cmd.decode(reply)["mode"] == int(Mode.AUDIO)
        # order of checks: in audio mode a MIDI command is WRONG_MODE before its payload is
        # looked at (this one is short), and WRONG_MODE is not a bad message
        before = host.counters()["bad_messages"]
        code, _ = refused(host, raw(cmd.T.NoteOn, payload=b"\x00"))
        assert code == ErrorCode.WRONG_MODE
        assert host.counters()["bad_messages"] == before
        host.request(cmd.set_transport_mode(int(Mode.AUDIO_MIDI)))


def test_midi_that_midi_cannot_carry_is_malformed_and_counted(spawn, rules_device):
    T = cmd.T
    with Host(spawn.namespace) as host:
        host.connect(rules_device.id)
        before = host.counters()["bad_messages"]
        for m in (raw(T.NoteOn, payload=bytes((16, 60, 100))),
                  raw(T.PitchBend, payload=bytes((0, 0, 0xFF, 0x7F))),
                  raw(T.NoteOn, payload=bytes((0, 60))),  # short
                  raw(T.SysEx, payload=b"\xf0\x01\x02"),  # no F7
                  raw(0x7777),  # unknown: UNKNOWN_COMMAND
                  raw(T.Ping, payload=bytes(8), payload_len=300)):
            code, text = refused(host, m)
            want = ErrorCode.UNKNOWN_COMMAND if m.type == 0x7777 else ErrorCode.MALFORMED
            assert code == want, (m, text)
        assert host.counters()["bad_messages"] - before == 6


def test_a_c_device_plays_midi_raw_with_running_status_and_midi2_ump(spawn):
    """MidiRaw with running status and a MIDI 2.0 UMP note: each a sine of its own."""
    dev = c_device(spawn)
    with Host(spawn.namespace) as host:
        host.connect(dev.id)
        host.send_command(cmd.midi_raw(bytes((0x90, 57, 100, 64, 100))))  # A3 and E4
        for m in cmd.ump(list(ump.midi2_note_on(0, 69, 0xFFFF))):  # A4, velocity 127
            host.send_command(m)
        rate = host.connection.sample_rate
        rec = record_paced(host, 0.5)
    seg = rec[0, rate // 10:]
    for hz in (220.0, 329.63, 440.0):
        assert tone_amplitude(seg, rate, hz) > 0.1, hz
    assert tone_amplitude(seg, rate, 300.0) < 0.02
