"""The rules that protocol 1.1 settled (docs/protocol.md §13), each against a real device
process: fragment refusals, the handshake's range rule, transport modes a segment supports,
the reset on a new claim, the published clock, and the liveness and release guards."""

from __future__ import annotations

import os
import time

import pytest
from proto_helpers import TIMEOUT, header, wait_until
from test_midi_cli import Monitor
from test_protocol import collect_errors, error_for

from bridge.transport import Capability, ErrorCode, Host, Message, Mode, Registry, cmd
from bridge.transport.commands import fragments
from bridge.transport.layout import (
    BLOCK_SIZE_MAX,
    FILL_DEFAULT,
    MESSAGE_PAYLOAD_SIZE,
    SAMPLE_RATE_MAX,
    MessageFlag,
)


def no_answer(host: Host, request: Message, types: tuple[int, ...]) -> bool:
    """True when, after a Ping round trip, nothing of ``types`` answered ``request``."""
    seen: list[int] = []
    host.on_response(lambda m, _h: seen.append(m.type) if m.request_seq == request.seq
                     else None)
    host.ping(timeout=TIMEOUT)  # FIFO: a Pong after it means the device has handled it
    return not any(t in types for t in seen)


def split(message: Message, parts: int) -> list[Message]:
    """``message``'s payload cut into ``parts`` FRAGMENT-flagged messages of its type, as a
    sender that ignores §6.2's fragmentable column would send them."""
    payload = bytes(message.payload)
    size = -(-len(payload) // parts)
    out = []
    for i in range(parts):
        m = Message()
        m.type, m.seq = message.type, cmd.next_seq()
        m.flags, m.frag_index, m.frag_count, m.transfer_id = MessageFlag.FRAGMENT, i, parts, 77
        m.set_payload(payload[i * size:(i + 1) * size])
        out.append(m)
    return out


# ---- fragments (§6.2) ---------------------------------------------------------------------


def test_a_fragmented_ping_is_refused_with_fragment_error_and_never_answered_with_pong(spawn):
    """1.0 answered '1111|2222' with a Pong of the last fragment alone (2222)."""
    dev = spawn.device(device_id="FragPing")
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        errors = collect_errors(host)
        ping = cmd.ping(sent_ns=0x1111_2222)
        first, last = split(ping, 2)
        assert host.send_command(first) and host.send_command(last)
        e = error_for(host, errors, first)
        assert e["code"] == ErrorCode.FRAGMENT_ERROR and "Ping cannot be fragmented" in e["text"]
        assert e["request_type"] == cmd.T.Ping
        assert error_for(host, errors, last)["code"] == ErrorCode.FRAGMENT_ERROR
        assert no_answer(host, last, (cmd.T.Pong,))
        assert header(host)["bad_messages"] == 2


def test_a_fragmented_set_transport_mode_is_refused_and_the_mode_stays(spawn):
    dev = spawn.device(device_id="FragMode")
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        errors = collect_errors(host)
        request = cmd.set_transport_mode(Mode.AUDIO)
        for part in split(request, 2):
            assert host.send_command(part)
            assert error_for(host, errors, part)["code"] == ErrorCode.FRAGMENT_ERROR
        assert header(host)["mode"] == Mode.AUDIO_MIDI


def sysex_transfer() -> list[Message]:
    return cmd.sysex(b"\xf0" + bytes(range(100)) * 5 + b"\xf7")  # 3 fragments


def broken_flag_without_count(msgs: list[Message]) -> list[Message]:
    msgs[0].frag_count = 1  # FRAGMENT flag with a count below 2
    return msgs[:1]


def broken_count_without_flag(msgs: list[Message]) -> list[Message]:
    msgs[0].flags = 0  # frag_count 3 without the flag: 1.0 took it as a fragment
    return msgs[:1]


def broken_transfer_id_zero(msgs: list[Message]) -> list[Message]:
    for m in msgs:
        m.transfer_id = 0
    return msgs[:1]


def broken_short_fragment(msgs: list[Message]) -> list[Message]:
    msgs[1].set_payload(bytes(msgs[1].payload)[:100])  # not the last, yet short
    return msgs


def broken_type_change(msgs: list[Message]) -> list[Message]:
    msgs[1].type = cmd.T.UMP  # fragmentable too, but not this transfer's type
    return msgs


@pytest.mark.parametrize("breaker, words", [
    (broken_flag_without_count, "FRAGMENT flag but frag_count 1"),
    (broken_count_without_flag, "no FRAGMENT flag"),
    (broken_transfer_id_zero, "transfer id 0"),
    (broken_short_fragment, "is short (100 bytes"),
    (broken_type_change, "is UMP, the transfer is SysEx"),
])
def test_a_fragment_breaking_a_1_1_rule_is_refused_and_nothing_of_it_is_played(
        spawn, breaker, words):
    """A midi-monitor device answers the refused fragment FRAGMENT_ERROR naming the fault and
    prints no SysEx of the broken transfer; a whole SysEx right after it still arrives."""
    monitor = Monitor(spawn, device_id="FragRules")
    with Host() as host:
        host.connect(monitor.id, timeout=TIMEOUT)
        errors = collect_errors(host)
        msgs = breaker(sysex_transfer())
        for m in msgs:
            assert host.send_command(m)
        host.ping(timeout=TIMEOUT)  # FIFO: once the Pong is back, every fragment was handled
        answered = [m for m in msgs if m.seq in errors]
        assert answered, "a broken transfer must be answered"
        decoded = [cmd.decode(errors[m.seq]) for m in answered]
        texts = [e["text"] for e in decoded]
        assert all(e["code"] == ErrorCode.FRAGMENT_ERROR for e in decoded), texts
        assert any(words in t for t in texts), texts
        assert header(host)["bad_messages"] == len(answered)
        for m in cmd.sysex(b"\xf0\x01\x02\xf7"):
            assert host.send_command(m)
        host.ping(timeout=TIMEOUT)
    wait_until(lambda: any("sysex" in line for line in monitor.lines), TIMEOUT,
               "the whole SysEx to be printed")
    lines, _ = monitor.stop()
    sysex = [line for line in lines if "sysex" in line]
    assert len(sysex) == 1 and "f0 01 02 f7" in sysex[0], lines  # only the whole one


def test_a_reassembled_command_takes_its_last_fragments_seq_for_its_answer(spawn):
    """§6.2: the response to a fragmented request names the last fragment's seq."""
    dev = spawn.device(device_id="FragSeq")
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        errors = collect_errors(host)
        msgs = fragments("LoadPreset", b"x" * (MESSAGE_PAYLOAD_SIZE + 10))  # the sine synth
        for m in msgs:  # serves no presets: an Error NOT_SUPPORTED answers the whole
            assert host.send_command(m)
        e = error_for(host, errors, msgs[-1])
        assert e["code"] == ErrorCode.NOT_SUPPORTED
        assert msgs[0].seq not in errors


# ---- handshake (§8.2) ---------------------------------------------------------------------


@pytest.mark.parametrize("rate, block, want", [
    (SAMPLE_RATE_MAX + 1, 128, (48000, 128)),  # the rate out of range: ignored, block taken
    (44100, BLOCK_SIZE_MAX + 1, (44100, 256)),  # the block out of range: ignored
    (44100, 100, (44100, 100)),  # any block size in range, not only powers of two
    (0, 0, (48000, 256)),  # no preference
])
def test_a_flexible_device_takes_each_valid_value_and_ignores_the_rest(spawn, rate, block,
                                                                      want):
    """1.0 refused the whole Handshake with INVALID_ARGUMENT for one bad value."""
    dev = spawn.device(device_id="Flex")
    with Host() as host:
        host.set_local_buffer_info(rate, block)
        conn = host.connect(dev.id, timeout=TIMEOUT)
        assert (conn.sample_rate, conn.block_size) == want
        h = header(host)
        assert (h["sample_rate"], h["block_size"]) == want, "the header follows the ack"
        [info] = Registry().scan()
        assert (info.sample_rate, info.block_size) == want, "so does the slot's mirror"


def test_the_hosts_channels_mode_and_return_channels_are_ignored(spawn):
    dev = spawn.device(device_id="Info")
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        errors = collect_errors(host)
        acks: dict[int, dict] = {}
        host.on_response(lambda m, _h: acks.__setitem__(m.request_seq, cmd.decode(m))
                         if m.type == cmd.T.HandshakeAck else None)
        request = cmd.handshake(48000, 256, 7, mode=Mode.MIDI, return_channels=5)
        assert host.send_command(request)
        ack = wait_until(lambda: host.process_responses() >= 0 and acks.get(request.seq),
                         TIMEOUT, "the HandshakeAck")
        assert (ack["channels"], ack["mode"], ack["return_channels"]) == (2, Mode.AUDIO_MIDI, 0)
        assert not errors


def test_the_sine_device_offers_ump_and_plays_it(spawn):
    """A device that plays UMP says so: a host that checks the bit must find it."""
    dev = spawn.device(device_id="Ump")
    with Host() as host:
        conn = host.connect(dev.id, timeout=TIMEOUT)
        assert conn.capabilities & Capability.UMP
        assert header(host)["capabilities"] & Capability.UMP


# ---- transport modes (§10) ----------------------------------------------------------------


def test_an_audio_segment_refuses_midi_mode_and_keeps_its_mode(spawn):
    """1.0 accepted it and left mode=2 with channels=2 and an audio ring."""
    dev = spawn.device(device_id="Modes")
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        errors = collect_errors(host)
        request = cmd.set_transport_mode(Mode.MIDI)
        assert host.send_command(request)
        e = error_for(host, errors, request)
        assert e["code"] == ErrorCode.INVALID_ARGUMENT and "midi" in e["text"]
        h = header(host)
        assert (h["mode"], h["channels"]) == (Mode.AUDIO_MIDI, 2)
        [info] = Registry().scan()
        assert info.mode == "audio+midi"
        assert host.request(cmd.set_transport_mode(Mode.AUDIO), timeout=TIMEOUT)
        assert header(host)["mode"] == Mode.AUDIO


def test_a_midi_command_in_audio_mode_gets_wrong_mode_before_its_payload_is_checked(spawn):
    dev = spawn.device("--mode", "audio", device_id="Order")
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        errors = collect_errors(host)
        bad = cmd.midi_note_on(0, 60, 100)
        bad.buf[32] = 99  # channel 99: malformed, but the mode is checked first (§7.3)
        assert host.send_command(bad)
        assert error_for(host, errors, bad)["code"] == ErrorCode.WRONG_MODE


# ---- clocking (§12) -----------------------------------------------------------------------


def test_a_demand_clock_device_publishes_its_fill_and_never_queues_more(spawn):
    dev = spawn.device("--fill", "3", device_id="Fill")
    with Host() as host:
        conn = host.connect(dev.id, timeout=TIMEOUT)
        wait_until(lambda: header(host)["fill_blocks"] == 3, TIMEOUT, "fill_blocks 3")
        assert host.latency_frames() == 3 * conn.block_size
        # no reads: the device fills up to 3 blocks and stops there
        wait_until(lambda: host.available_frames() >= 3 * conn.block_size, TIMEOUT, "3 blocks")
        before = header(host)["blocks_written"]
        time.sleep(0.3)  # a device that queued more would have written more by now
        assert host.available_frames() == 3 * conn.block_size
        assert header(host)["blocks_written"] == before


def test_a_realtime_clock_device_publishes_fill_zero(spawn):
    dev = spawn.device("--clock", "realtime", device_id="Own")
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        assert header(host)["fill_blocks"] == 0


def test_the_default_fill_is_published(spawn):
    dev = spawn.device(device_id="Default")
    with Host() as host:
        host.connect(dev.id, timeout=TIMEOUT)
        wait_until(lambda: header(host)["fill_blocks"] == FILL_DEFAULT, TIMEOUT, "the fill")


# ---- liveness and release (§4.2, §8.3) ----------------------------------------------------


def test_release_does_not_clear_the_claim_of_a_device_that_reused_the_slot(spawn):
    """A host whose device died and whose slot a new device took must not clear the new
    claim when it releases late."""
    old = spawn.device(device_id="Reuse")
    late = Host()
    late.connect(old.id, timeout=TIMEOUT)
    old.kill9()
    new = spawn.device(device_id="Reuse")
    assert Registry().scan()[0].pid == new.pid
    with Host() as holder:
        holder.connect(new.id, timeout=TIMEOUT)
        late.close()  # the late release
        [info] = Registry().scan()
        assert info.host_pid == os.getpid() and info.claimed, "the new claim survived"
