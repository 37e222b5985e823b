"""Protocol behaviour between a device process and the test process as host: the handshake
in both directions, version checks, capability negotiation, commands and Error answers."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from proto_helpers import (
    NOTE_AMPLITUDE_V100,
    TIMEOUT,
    device_time,
    header,
    peak_hz,
    record_paced,
    wait_until,
)

from bridge.transport import (
    Capability,
    CommandError,
    ErrorCode,
    HandshakeError,
    Host,
    Message,
    Mode,
    Registry,
    cmd,
)
from bridge.transport.commands import next_seq
from bridge.transport.layout import PROTOCOL_MAJOR, PROTOCOL_MINOR
from bridge.transport.shm import Segment

VERSION = f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"  # this implementation's protocol version

def scan_one(device_id: str):
    registry = Registry()
    try:
        return {d.id: d for d in registry.scan()}[device_id]
    finally:
        registry.close()


def segment_header(host: Host) -> dict:
    """The device's transport header, read through a mapping of our own."""
    seg = Segment.attach(host.device.segment_name)
    try:
        return header(seg.buf)
    finally:
        seg.close()


def collect_errors(host: Host) -> dict[int, Message]:
    """Error responses by request_seq, filled as host.process_responses() runs."""
    errors: dict[int, Message] = {}

    def on_response(msg: Message, _host: Host) -> None:
        if msg.type == cmd.T.Error:
            errors[msg.request_seq] = msg.copy()

    host.on_response(on_response)
    return errors


def error_for(host: Host, errors: dict[int, Message], request: Message) -> dict:
    def answered():
        host.process_responses()
        return errors.get(request.seq)

    return cmd.decode(wait_until(answered, 10.0, f"an Error answering {request!r}"))


def assert_tone(rec: np.ndarray, rate: int, hz: float) -> None:
    seg = device_time(rec[0])[: rate // 2]
    assert seg.shape[0] == rate // 2, "less than 0.5 s of sound arrived"
    got = peak_hz(seg, rate)
    assert abs(got - hz) < 2.0, f"tone at {got:.1f} Hz, expected {hz} Hz"


# ---- handshake ---------------------------------------------------------------------------


def test_flexible_device_adopts_the_hosts_format_in_connection_registry_and_audio(spawn):
    dev = spawn.device("--samplerate", "44100", "--blocksize", "128", "--channels", "2",
                       device_id="Flex")
    before = scan_one(dev.id)
    assert (before.sample_rate, before.block_size) == (44100, 128)
    assert before.capabilities & Capability.FLEXIBLE_FORMAT
    with Host() as host:
        host.set_local_buffer_info(48000, 256, channels=6)  # channels: the device decides
        conn = host.connect(dev.id, timeout=TIMEOUT)
        assert (conn.sample_rate, conn.block_size, conn.channels) == (48000, 256, 2)
        # A host never offers FLEXIBLE_FORMAT (§8.1): the device's own bit decides, so the
        # format is adopted although the negotiated set leaves the bit out.
        assert not conn.capabilities & Capability.FLEXIBLE_FORMAT
        assert conn.version == f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"
        assert conn.mode == "audio+midi"
        after = scan_one(dev.id)
        assert (after.sample_rate, after.block_size, after.channels) == (48000, 256, 2)
        assert after.claimed and after.host_pid == os.getpid()
        h = segment_header(host)
        assert (h["sample_rate"], h["block_size"], h["channels"]) == (48000, 256, 2)
        # The synth follows the new rate: note 69 is 440 Hz at 48 kHz (it would be 479 Hz
        # if the device still rendered at 44.1 kHz).
        assert host.send_command(cmd.midi_note_on(0, 69, 100))
        rec = record_paced(host, 1.2)
    assert_tone(rec, 48000, 440.0)


def test_fixed_format_device_keeps_its_format_and_the_host_follows(spawn):
    dev = spawn.device("--samplerate", "44100", "--blocksize", "128", "--fixed-format",
                       device_id="Fixed")
    assert not scan_one(dev.id).capabilities & Capability.FLEXIBLE_FORMAT
    with Host() as host:
        host.set_local_buffer_info(48000, 256)
        conn = host.connect(dev.id, timeout=TIMEOUT)
        assert (conn.sample_rate, conn.block_size, conn.channels) == (44100, 128, 2)
        assert conn.version == f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"
        assert not conn.capabilities & Capability.FLEXIBLE_FORMAT
        info = scan_one(dev.id)
        assert (info.sample_rate, info.block_size) == (44100, 128)
        assert (segment_header(host)["sample_rate"], segment_header(host)["block_size"]) == \
            (44100, 128)
        assert host.send_command(cmd.midi_note_on(0, 69, 100))
        rec = record_paced(host, 1.2)
    assert_tone(rec, 44100, 440.0)


def test_host_without_a_preference_gets_the_devices_format(spawn):
    dev = spawn.device("--samplerate", "96000", "--blocksize", "512")
    with Host() as host:  # no set_local_buffer_info: 0 = no preference
        conn = host.connect(dev.id, timeout=TIMEOUT)
        assert (conn.sample_rate, conn.block_size) == (96000, 512)


def test_version_mismatch_is_refused_naming_both_versions_and_leaves_the_device_unclaimed(
        spawn):
    dev = spawn.device(device_id="Versioned")
    with Host() as host:
        with pytest.raises(HandshakeError) as err:
            host.connect(dev.id, version=(2, 0))
        text = str(err.value)
        assert "2.0" in text and VERSION in text and dev.id in text, text
        assert not host.connected and host.connection is None
    info = scan_one(dev.id)
    assert not info.claimed and info.host_pid == 0
    seg = Segment.attach(info.segment_name)
    try:
        assert header(seg.buf)["host_pid"] == 0
    finally:
        seg.close()
    # Another host, in another process, can take the device now.
    r = spawn.run("host", "--id", dev.id, "--seconds", "0.3", "--json")
    assert r.returncode == 0, r.stderr
    assert dev.proc.poll() is None


def test_raw_handshake_with_major_99_gets_a_version_mismatch_error(spawn):
    dev = spawn.device()
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        errors = collect_errors(host)
        bad = cmd.handshake(48000, 256, version=(99, 0))
        assert host.send_command(bad)
        e = error_for(host, errors, bad)
        assert e["code"] == ErrorCode.VERSION_MISMATCH
        assert e["request_type"] == cmd.T.Handshake
        assert "99.0" in e["text"] and VERSION in e["text"]
        assert host.ping(timeout=TIMEOUT) > 0  # the connection is unaffected
        assert host.connected


# ---- capabilities ------------------------------------------------------------------------


@pytest.mark.parametrize("restricted", [True, False], ids=["midi+audio-only", "everything"])
def test_capabilities_are_the_intersection_of_device_and_host(spawn, restricted):
    dev = spawn.device("--return", "--channels", "3")
    device_caps = scan_one(dev.id).capabilities
    assert device_caps & Capability.RETURN_AUDIO
    offered = int(Capability.MIDI | Capability.AUDIO) if restricted else int(sum(Capability))
    with Host() as host:
        conn = host.connect(dev.id, capabilities=offered, timeout=TIMEOUT)
        assert conn.capabilities == device_caps & offered
        if restricted:
            assert conn.capabilities == Capability.MIDI | Capability.AUDIO
            assert not conn.capabilities & Capability.RETURN_AUDIO
        else:
            assert conn.capabilities == device_caps
            assert conn.capabilities & Capability.RETURN_AUDIO
            assert conn.capabilities & Capability.FLEXIBLE_FORMAT
            assert not conn.capabilities & (Capability.PARAMETERS | Capability.STATE)
            assert conn.return_channels == conn.channels == 3


# ---- commands ----------------------------------------------------------------------------


def test_ping_is_answered_by_a_pong_echoing_the_send_time(spawn):
    dev = spawn.device()
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        assert host.ping(timeout=TIMEOUT) > 0
        t0 = time.monotonic_ns()
        ping = cmd.ping(t0)
        pong = host.request(ping, timeout=TIMEOUT)
        assert pong.type == cmd.T.Pong and pong.is_response and pong.request_seq == ping.seq
        p = cmd.decode(pong)
        assert p["ping_sent_ns"] == t0
        assert t0 <= p["received_ns"] <= time.monotonic_ns()  # same CLOCK_MONOTONIC


def test_unknown_command_type_gets_unknown_command_error_and_the_device_keeps_working(spawn):
    dev = spawn.device()
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        msg = Message()
        msg.type = 0x7777
        msg.seq = next_seq()
        msg.set_payload(b"hello")
        with pytest.raises(CommandError) as err:
            host.request(msg, timeout=TIMEOUT)
        assert err.value.code == ErrorCode.UNKNOWN_COMMAND
        assert "0x7777" in str(err.value)
        assert host.counters()["bad_messages"] == 1
        assert host.ping(timeout=TIMEOUT) > 0
        assert host.send_command(cmd.midi_note_on(0, 69, 100))
        rec = record_paced(host, 0.3)
        assert np.abs(rec).max() > 0.5 * NOTE_AMPLITUDE_V100, "the device stopped playing"
    assert dev.proc.poll() is None


def test_malformed_payloads_get_malformed_errors_and_are_counted(spawn):
    dev = spawn.device()
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        short_note = Message()
        short_note.type = cmd.T.NoteOn
        short_note.set_payload(b"\x00")  # needs 3 bytes
        huge_len = cmd.ping()
        huge_len.payload_len = 1000  # more than a message can hold
        bad_text = Message()
        bad_text.type = cmd.T.Disconnect
        bad_text.set_payload(b"\xff\xfe")  # not UTF-8
        for i, msg in enumerate([short_note, huge_len, bad_text], start=1):
            msg.seq = next_seq()
            with pytest.raises(CommandError) as err:
                host.request(msg, timeout=TIMEOUT)
            assert err.value.code == ErrorCode.MALFORMED, str(err.value)
            assert host.counters()["bad_messages"] == i
        assert host.ping(timeout=TIMEOUT) > 0


def test_unsupported_commands_get_not_supported(spawn):
    unsupported = [
        cmd.build("GetState"),
        cmd.set_parameter(0, 0.5),
        cmd.build("ParameterList"),
        cmd.get_parameter(1),
        cmd.route(""),
        cmd.build("LoadPreset", path="/tmp/x.preset"),
        cmd.build("SetState", state=b"\x01\x02"),
    ]
    assert_not_supported(spawn, unsupported)


def test_commands_with_a_name_field_can_be_built_and_get_not_supported(spawn):
    # SetParameter/GetParameter by name and FileTransfer carry a payload field called "name".
    named = [
        cmd.set_parameter("gain", 0.5),
        cmd.get_parameter("gain"),
        cmd.build("FileTransfer", name="patch.syx", data=b"\xf0\xf7"),
    ]
    assert cmd.decode(named[0]) == {"index": -1, "value": 0.5, "name": "gain"}
    assert_not_supported(spawn, named)


def assert_not_supported(spawn, unsupported: list[Message]) -> None:
    dev = spawn.device()
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        for msg in unsupported:
            name = cmd.name_of(msg.type)
            with pytest.raises(CommandError) as err:
                host.request(msg, timeout=TIMEOUT)
            assert err.value.code == ErrorCode.NOT_SUPPORTED, f"{name}: {err.value}"
            assert name in str(err.value)
        assert host.counters()["bad_messages"] == 0  # unsupported is not malformed
        assert host.ping(timeout=TIMEOUT) > 0


def test_audio_mode_refuses_midi_with_wrong_mode_until_switched_back(spawn):
    dev = spawn.device()
    with Host() as host:
        host.set_local_buffer_info(48000, 256)
        host.connect(dev.id, timeout=TIMEOUT)
        reply = host.request(cmd.set_transport_mode(Mode.AUDIO), timeout=TIMEOUT)
        assert reply.is_response and cmd.decode(reply)["mode"] == Mode.AUDIO
        assert scan_one(dev.id).mode == "audio"
        assert segment_header(host)["mode"] == Mode.AUDIO
        for msg in [cmd.midi_note_on(0, 69, 100), cmd.midi_cc(0, 7, 100),
                    cmd.midi_raw(b"\x90\x45\x64"), cmd.sysex(b"\xf0" + bytes(500) + b"\xf7")]:
            with pytest.raises(CommandError) as err:
                host.request(msg, timeout=TIMEOUT)
            assert err.value.code == ErrorCode.WRONG_MODE
            assert "audio-only" in str(err.value)
        rec = record_paced(host, 0.2)
        assert not rec.any(), "refused notes must not sound"
        out = np.zeros((2, 256), np.float32)

        def full_block() -> bool:
            time.sleep(0.002)
            return host.receive_audio(out) == 256

        wait_until(full_block, 5.0, "audio to keep flowing in audio mode")
        reply = host.request(cmd.set_transport_mode(Mode.AUDIO_MIDI), timeout=TIMEOUT)
        assert cmd.decode(reply)["mode"] == Mode.AUDIO_MIDI
        errors = collect_errors(host)
        note = cmd.midi_note_on(0, 69, 100)
        assert host.send_command(note)
        rec = record_paced(host, 0.3)
        host.ping(timeout=TIMEOUT)
        assert note.seq not in errors
        assert np.abs(rec).max() > 0.5 * NOTE_AMPLITUDE_V100
        assert host.counters()["bad_messages"] == 0


def test_midi_mode_device_has_no_audio_ring_and_refuses_audio_modes(spawn):
    dev = spawn.device("--mode", "midi")
    info = scan_one(dev.id)
    assert (info.mode, info.channels) == ("midi", 0)
    with Host() as host:
        conn = host.connect(dev.id, timeout=TIMEOUT)
        assert conn.mode == "midi" and conn.channels == 0 and conn.return_channels == 0
        assert conn.capabilities & Capability.MIDI
        assert not conn.capabilities & Capability.AUDIO
        h = segment_header(host)
        assert h["audio_ring_offset"] == 0 and h["return_ring_offset"] == 0
        assert h["total_size"] == h["response_ring_offset"] + 128 + 1024 * 256
        out = np.ones((1, 256), np.float32)
        assert host.receive_audio(out) == 0 and not out.any()
        for mode in (Mode.AUDIO, Mode.AUDIO_MIDI):
            with pytest.raises(CommandError) as err:
                host.request(cmd.set_transport_mode(mode), timeout=TIMEOUT)
            assert err.value.code == ErrorCode.INVALID_ARGUMENT
            assert "midi mode" in str(err.value) and "no audio" in str(err.value)
        with pytest.raises(CommandError) as err:
            host.request(cmd.set_transport_mode(9), timeout=TIMEOUT)
        assert err.value.code == ErrorCode.INVALID_ARGUMENT
        reply = host.request(cmd.set_transport_mode(Mode.MIDI), timeout=TIMEOUT)
        assert cmd.decode(reply)["mode"] == Mode.MIDI
        assert scan_one(dev.id).mode == "midi"
        errors = collect_errors(host)
        note = cmd.midi_note_on(0, 60, 90)
        assert host.send_command(note)
        host.ping(timeout=TIMEOUT)
        assert note.seq not in errors
    assert dev.proc.poll() is None


def test_return_audio_sent_by_the_host_comes_back_in_the_device_output(spawn):
    """The CLI sine device adds its return ring to its output: a known sine sent through it
    arrives sample-exact (the synth is silent, so output = return audio)."""
    dev = spawn.device("--return", "--channels", "2")
    rate, block, n_blocks = 48000, 256, 100
    t = np.arange(n_blocks * block) / rate
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t + 0.3)
    sent = np.stack([tone, -0.5 * tone]).astype(np.float32)
    blocks = [np.ascontiguousarray(sent[:, k * block : (k + 1) * block]) for k in range(n_blocks)]
    with Host() as host:
        host.set_local_buffer_info(rate, block)
        conn = host.connect(dev.id, timeout=TIMEOUT)
        assert conn.return_channels == 2
        out = np.zeros((2, block), np.float32)
        received: list[np.ndarray] = []
        k = frames = 0
        start = time.monotonic()
        deadline = start + 30
        while frames < sent.shape[1]:
            if k < n_blocks and host.send_return_audio(blocks[k]):
                k += 1  # a refused block (ring full) is sent again next time: never dropped
            n = host.receive_audio(out)
            if n and out.any():
                received.append(out[:, :n].copy())
                frames += n
            assert time.monotonic() < deadline, f"only {frames} frames came back"
            delay = start + (k + 1) * block / rate - time.monotonic()
            time.sleep(max(delay, 0.0005))
        assert host.connected
    got = np.concatenate(received, axis=1)
    np.testing.assert_array_equal(got, sent)
