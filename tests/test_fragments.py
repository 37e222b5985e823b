"""Fragmentation: payloads longer than one message split by fragments() and joined by the
Reassembler, in-process and host-to-device across processes through the command ring."""

from __future__ import annotations

import os
import re
import time

import pytest
from proto_helpers import SYSEX_SIZES, device_rings, drain, start_child, sysex_payloads

from bridge.transport import Device, ErrorCode, Message, cmd
from bridge.transport.commands import FragmentError, Reassembler, fragments
from bridge.transport.layout import MESSAGE_PAYLOAD_SIZE, MessageFlag, Mode

MIB = 1 << 20


def feed_all(reassembler: Reassembler, msgs: list[Message]) -> list[Message]:
    return [whole for m in msgs if (whole := reassembler.feed(m)) is not None]


def test_one_mib_blob_round_trips_through_fragments_and_reassembler():
    blob = os.urandom(MIB)
    msgs = fragments("SysEx", blob)
    assert len(msgs) == -(-MIB // MESSAGE_PAYLOAD_SIZE)
    assert {m.transfer_id for m in msgs} == {msgs[0].transfer_id} and msgs[0].transfer_id
    assert [m.frag_index for m in msgs] == list(range(len(msgs)))
    assert all(m.frag_count == len(msgs) and m.flags & MessageFlag.FRAGMENT for m in msgs)
    assert all(m.payload_len == MESSAGE_PAYLOAD_SIZE for m in msgs[:-1])
    r = Reassembler()
    [whole] = feed_all(r, [Message(bytes(m.buf)) for m in msgs])  # through raw bytes
    assert whole.type == cmd.T.SysEx
    assert bytes(whole.payload) == blob
    assert cmd.decode(whole)["data"] == blob
    assert r.pending == 0


@pytest.mark.parametrize("size", [1, MESSAGE_PAYLOAD_SIZE, MESSAGE_PAYLOAD_SIZE + 1,
                                  2 * MESSAGE_PAYLOAD_SIZE, 2 * MESSAGE_PAYLOAD_SIZE + 1])
def test_fragment_boundaries(size):
    blob = os.urandom(size)
    msgs = fragments("GetState", blob)
    assert len(msgs) == -(-size // MESSAGE_PAYLOAD_SIZE)
    if len(msgs) == 1:
        assert not msgs[0].is_fragment and msgs[0].frag_count == 0
    [whole] = feed_all(Reassembler(), msgs)
    assert bytes(whole.payload) == blob


def test_fragments_of_two_interleaved_blobs_reassemble_correctly():
    a, b = os.urandom(50_000), os.urandom(77_777)
    fa, fb = fragments("SysEx", a), fragments("FileTransfer", b)
    assert fa[0].transfer_id != fb[0].transfer_id
    order, i = [], 0
    while 2 * i < len(fb) or i < len(fa):  # a, b, b, a, b, b, ...
        order += fa[i : i + 1] + fb[2 * i : 2 * i + 2]
        i += 1
    assert len(order) == len(fa) + len(fb)
    r = Reassembler()
    got = feed_all(r, order)
    assert {m.type: bytes(m.payload) for m in got} == {cmd.T.SysEx: a, cmd.T.FileTransfer: b}
    assert r.pending == 0


def test_a_missing_fragment_is_detected_naming_the_transfer_and_the_missing_index():
    msgs = fragments("SysEx", os.urandom(10 * MESSAGE_PAYLOAD_SIZE), transfer_id=4242)
    r = Reassembler()
    feed_all(r, msgs[:3])
    with pytest.raises(FragmentError) as err:
        r.feed(msgs[4])  # fragment 3 was lost
    text = str(err.value)
    assert "transfer 4242" in text and re.search(r"missing fragment 3\b", text), text
    assert err.value.code == ErrorCode.FRAGMENT_ERROR
    assert r.pending == 0, "a broken transfer is discarded"
    with pytest.raises(FragmentError):  # and its later fragments are refused too
        r.feed(msgs[5])


def test_a_missing_first_fragment_is_detected():
    msgs = fragments("SysEx", os.urandom(3 * MESSAGE_PAYLOAD_SIZE), transfer_id=77)
    with pytest.raises(FragmentError, match=r"transfer 77: missing fragment 0"):
        Reassembler().feed(msgs[1])


def test_a_duplicate_fragment_is_detected():
    msgs = fragments("SysEx", os.urandom(10 * MESSAGE_PAYLOAD_SIZE), transfer_id=99)
    r = Reassembler()
    feed_all(r, msgs[:3])
    with pytest.raises(FragmentError) as err:
        r.feed(msgs[2])
    text = str(err.value)
    assert "transfer 99" in text and "duplicate" in text and "2" in text, text
    assert r.pending == 0
    # A fresh transfer afterwards is unaffected.
    blob = os.urandom(1000)
    [whole] = feed_all(r, fragments("SysEx", blob))
    assert bytes(whole.payload) == blob


def test_fragments_with_inconsistent_or_impossible_counts_are_refused():
    msgs = fragments("SysEx", os.urandom(5 * MESSAGE_PAYLOAD_SIZE), transfer_id=5)
    r = Reassembler()
    r.feed(msgs[0])
    odd = msgs[1].copy()
    odd.frag_count = 6
    with pytest.raises(FragmentError, match="transfer 5"):
        r.feed(odd)
    impossible = msgs[0].copy()
    impossible.frag_index = 9  # index >= count
    with pytest.raises(FragmentError, match="impossible"):
        Reassembler().feed(impossible)


def test_a_full_reassembler_discards_the_least_recently_advanced_transfer_for_a_new_one():
    discarded: list[tuple[Message, str]] = []
    r = Reassembler(max_transfers=3, on_discard=lambda first, text: discarded.append((first,
                                                                                      text)))
    a, b, c, d = (fragments("SysEx", os.urandom(500)) for _ in range(4))  # 3 fragments each
    for t in (a, b, c):
        assert r.feed(t[0]) is None
    assert r.feed(a[1]) is None  # a advanced last; b is now the stalest
    assert r.feed(d[0]) is None and r.pending == 3
    [(first, text)] = discarded
    assert first.seq == b[0].seq and first.transfer_id == b[0].transfer_id
    assert text.startswith(f"transfer {b[0].transfer_id}: discarded after 1 of 3 fragments")
    assert f"transfer {d[0].transfer_id} started" in text
    assert [bytes(m.payload) for m in feed_all(r, [a[2], d[1], d[2], c[1], c[2]])] == [
        b"".join(bytes(m.payload) for m in t) for t in (a, d, c)]
    with pytest.raises(FragmentError, match="missing fragment 0"):
        r.feed(b[1])  # the discarded transfer's later fragments are refused
    assert r.pending == 0


def test_junk_transfers_never_lock_out_a_device(namespace):
    """Sixteen transfers abandoned after their first fragment (a sender that died, or junk)
    fill the device's reassembler; a real SysEx after them still arrives whole, and the
    stalest junk transfer is answered with FRAGMENT_ERROR and counted."""
    received: list[bytes] = []
    with Device() as dev:
        dev.start("Junk", 0, 48000, 256, Mode.MIDI)
        dev.on_command(lambda msg, _d: msg.type == cmd.T.SysEx and not received.append(
            cmd.decode(msg)["data"]))
        commands, responses = device_rings(dev)
        junk = [cmd.sysex(b"\xf0" + bytes(500) + b"\xf7")[0] for _ in range(16)]
        for m in junk:
            assert commands.push(m.buf) == 1
        dev.process_commands()
        sysex = b"\xf0" + bytes(range(100)) * 7 + b"\xf7"
        for m in cmd.sysex(sysex):
            assert commands.push(m.buf) == 1
        dev.process_commands()
        assert received == [sysex]
        [error] = [m for m in drain(responses) if m.type == cmd.T.Error]
        decoded = cmd.decode(error)
        assert decoded["code"] == ErrorCode.FRAGMENT_ERROR
        assert error.request_seq == junk[0].seq
        assert f"transfer {junk[0].transfer_id}: discarded after 1 of 3" in decoded["text"]
        assert dev.stats.bad_messages == 1


@pytest.mark.parametrize("limit", [1000, 4096, 64 * MESSAGE_PAYLOAD_SIZE])
def test_reassembler_accepts_exactly_max_bytes_and_refuses_one_byte_more(limit):
    ok = fragments("SysEx", os.urandom(limit))
    [whole] = feed_all(Reassembler(max_bytes=limit), ok)
    assert len(whole.payload) == limit
    r = Reassembler(max_bytes=limit)
    with pytest.raises(FragmentError):
        got = feed_all(r, fragments("SysEx", os.urandom(limit + 1)))
        pytest.fail(f"a {limit + 1}-byte transfer passed a {limit}-byte limit "
                    f"({[len(m.payload) for m in got]})")
    assert r.pending == 0


def test_device_answers_a_broken_transfer_with_fragment_error_and_counts_it(namespace):
    with Device() as dev:
        dev.start("Frag", 0, 48000, 256, Mode.MIDI)
        commands, responses = device_rings(dev)
        msgs = cmd.sysex(b"\xf0" + bytes(1000) + b"\xf7")
        for m in msgs[:2] + msgs[3:]:  # fragment 2 never arrives
            assert commands.push(m.buf) == 1
        dev.process_commands()
        errors = [m for m in drain(responses) if m.type == cmd.T.Error]
        assert errors, "a broken transfer must be answered"
        first = cmd.decode(errors[0])
        assert first["code"] == ErrorCode.FRAGMENT_ERROR
        assert f"transfer {msgs[0].transfer_id}" in first["text"]
        assert "missing fragment 2" in first["text"]
        assert errors[0].request_seq == msgs[3].seq
        assert dev.stats.bad_messages == len(errors)


def test_fragmented_sysex_from_a_host_process_arrives_whole(namespace):
    """A host in a child process sends SysEx of 3 B .. 1 MiB through the command ring (the
    two largest with interleaved fragments); our in-process device reassembles each whole."""
    received: list[bytes] = []
    with Device() as dev:
        dev.start("SysExSink", 0, 48000, 256, Mode.MIDI)

        @dev.on_command
        def record(msg: Message, device: Device) -> bool:
            if msg.type == cmd.T.SysEx:
                received.append(cmd.decode(msg)["data"])
                return True
            return False

        child = start_child("sysex", dev.id, "2024")
        deadline = time.monotonic() + 120
        try:
            while child.poll() is None:
                if dev.process_commands() == 0:
                    time.sleep(0.0002)
                assert time.monotonic() < deadline, "the sending host did not finish"
            out, err = child.communicate()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 0, (out, err)
        assert out.startswith("sent ")
        assert dev.stats.bad_messages == 0, dev.last_error
    expected = sysex_payloads(2024)
    assert [len(p) for p in received] == list(SYSEX_SIZES)
    for got, want in zip(received, expected, strict=True):
        assert got == want, f"the {len(want)}-byte SysEx arrived corrupted"
