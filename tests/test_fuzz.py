"""Fuzzing: a device survives any 256 bytes in its command ring (hypothesis, in-process);
real device processes (the sine synth, a plugin chain, an LV2 plugin, midi-monitor) survive
structure-aware traffic (tests/fuzz_traffic.py); decode() and the Reassembler never raise
anything but MalformedMessage/FragmentError."""

from __future__ import annotations

import os
import random
import struct

import fuzz_traffic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proto_helpers import device_rings, drain

from bridge.transport import Capability, Device, ErrorCode, MalformedMessage, Message, cmd
from bridge.transport.commands import BY_CODE, MIDI_TYPES, FragmentError, Reassembler
from bridge.transport.layout import (
    MESSAGE_HEADER_SIZE,
    MESSAGE_PAYLOAD_SIZE,
    MESSAGE_SIZE,
    MessageFlag,
    Mode,
)


def fuzz(examples: int) -> settings:
    """Modest example counts; no deadline (the machine is shared and noisy)."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])

KNOWN = sorted(BY_CODE)
U32 = st.integers(0, 0xFFFFFFFF)
# Types whose default handling decodes the payload (the rest get NOT_SUPPORTED unread).
DECODED = {cmd.T.Ping, cmd.T.Handshake, cmd.T.SetTransportMode, cmd.T.Disconnect,
           cmd.T.Pong, cmd.T.Error, cmd.T.HandshakeAck, *MIDI_TYPES}
BAD_CODES = {ErrorCode.UNKNOWN_COMMAND, ErrorCode.MALFORMED, ErrorCode.FRAGMENT_ERROR}


def mostly(value: int, *others: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    """``value`` four times in five, else one of ``others``."""
    n = len(others)
    return st.integers(0, 5 * n - 1).flatmap(
        lambda k: st.just(value) if k < 4 * n else others[k - 4 * n])


@st.composite
def structured_messages(draw) -> bytes:
    """Messages with plausible headers: known or random types, sane or absurd lengths and
    fragment fields, random or well-formed payloads."""
    mtype = draw(st.one_of(st.sampled_from(KNOWN), st.integers(0, 0xFFFF)))
    flags = draw(mostly(0, st.sampled_from([1, 2, 3]), st.integers(0, 0xFFFF)))
    payload = draw(st.binary(max_size=MESSAGE_PAYLOAD_SIZE))
    if mtype == cmd.T.Handshake and draw(st.booleans()):  # reach the negotiation code
        payload = struct.pack("<HHIIIIII", draw(st.sampled_from([1, 1, 2, 0xFFFF])),
                              draw(st.integers(0, 0xFFFF)), draw(U32),
                              draw(st.sampled_from([0, 7999, 44100, 48000, 384001])),
                              draw(st.sampled_from([0, 15, 64, 256, 4097])), draw(U32),
                              draw(U32), draw(U32))
    length = draw(st.one_of(st.just(len(payload)), st.integers(0, MESSAGE_PAYLOAD_SIZE), U32))
    frag_index = draw(mostly(0, st.integers(0, 4), U32))
    frag_count = draw(mostly(0, st.integers(0, 5), U32))
    transfer_id = draw(st.one_of(st.integers(0, 3), U32))
    head = struct.pack("<HHIIIIIII", mtype, flags, draw(U32), draw(U32), length, frag_index,
                       frag_count, transfer_id, draw(U32))
    return (head + payload).ljust(MESSAGE_SIZE, b"\0")


raw_messages = st.binary(min_size=MESSAGE_SIZE, max_size=MESSAGE_SIZE)
any_message = st.one_of(raw_messages, structured_messages())


def expected_bad(msg: Message, mode: Mode) -> int | None:
    """The Error code a device must answer an unfragmented message with when the message is
    bad (unknown or malformed); 0 when it is not bad; None when not predictable here."""
    if msg.flags & MessageFlag.FRAGMENT or msg.frag_count > 1:
        return None  # depends on the reassembly state
    if msg.payload_len > MESSAGE_PAYLOAD_SIZE:
        return ErrorCode.MALFORMED
    if msg.type not in BY_CODE:
        return ErrorCode.UNKNOWN_COMMAND
    if msg.type in MIDI_TYPES and mode == Mode.AUDIO:
        return 0  # refused with WRONG_MODE before it is read
    if msg.type in DECODED:
        try:
            cmd.decode(msg)
        except MalformedMessage:
            return ErrorCode.MALFORMED
    return 0


# ---- in-process device -------------------------------------------------------------------


def test_device_survives_arbitrary_messages_and_answers_bad_ones(namespace):
    with Device() as dev:
        dev.start("Fuzz", 2, 48000, 256, capabilities=Capability.FLEXIBLE_FORMAT)
        commands, responses = device_rings(dev)

        def ping_answered() -> None:
            ping = cmd.ping()
            assert commands.push(ping.buf) == 1
            assert dev.process_commands() == 1
            pongs = [m for m in drain(responses) if m.type == cmd.T.Pong]
            assert [m.request_seq for m in pongs] == [ping.seq]

        @fuzz(150)
        @given(st.lists(any_message, min_size=1, max_size=12))
        def one_by_one_then_as_a_batch(batch: list[bytes]) -> None:
            for raw in batch:
                msg = Message(raw)
                predicted = expected_bad(msg, dev.mode)
                bad_before = dev.stats.bad_messages
                assert commands.push(raw) == 1
                assert dev.process_commands() == 1  # handled, and never raises
                counted = dev.stats.bad_messages - bad_before
                errors = [m for m in drain(responses) if m.type == cmd.T.Error]
                answered = {cmd.decode(e)["code"] for e in errors if e.request_seq == msg.seq}
                assert counted in (0, 1)
                assert ErrorCode.INTERNAL not in answered, f"{msg!r}: {dev.last_error}"
                if counted:
                    assert answered & BAD_CODES, f"bad message not answered: {msg!r}"
                if predicted is not None:
                    assert counted == bool(predicted), f"{msg!r}: counted {counted}"
                    if predicted:
                        assert predicted in answered, f"{msg!r}: answered {answered}"
            # The same messages all at once: every one is handled in a single call.
            for raw in batch:
                assert commands.push(raw) == 1
            assert dev.process_commands() == len(batch)
            drain(responses)
            ping_answered()

        one_by_one_then_as_a_batch()
        assert dev.running
        ping_answered()


# ---- real device processes, structure-aware (tests/fuzz_traffic.py) -----------------------

# Seconds of traffic per device process: 22 s in all, some 150k messages on an idle
# machine. tests/fuzz_long.py runs the same for as long as asked (docs/performance.md).
FUZZ_SECONDS = {"sine": 6.0, "sine-fast": 5.0, "reverb": 5.0, "lv2": 3.0, "midi-monitor": 3.0}


@pytest.mark.parametrize("target", list(FUZZ_SECONDS))
def test_device_process_survives_well_formed_and_mutated_traffic_and_answers_ping(
        namespace, target):
    """MIDI, MidiRaw (every status byte, running status, truncated), fragmented SysEx, UMP of
    every message type, good and broken fragment sequences, handshakes in and out of range,
    transport modes and parameters, mutated one time in five: after every batch of 200 the
    device is alive, answers Ping, has answered nothing with Error INTERNAL, has swallowed no
    exception (with --monitor), and still renders; at the end it exits 0 on SIGTERM. A failure
    lists the last messages sent and the seed (DISCOLINK_FUZZ_SEED replays it)."""
    seed = int(os.environ.get("DISCOLINK_FUZZ_SEED", "0")) or random.randrange(1, 2**31)
    report = fuzz_traffic.fuzz(fuzz_traffic.TARGETS[target],
                               fuzz_traffic.environment(namespace),
                               seconds=FUZZ_SECONDS[target], seed=seed)
    assert report.messages >= 1000, report  # enough to mean something even when loaded
    assert report.bad_messages > 0 and report.errors_received > 0, (
        f"the fuzz traffic never reached the device's checks: {report}")


# ---- decode() and the Reassembler ---------------------------------------------------------


@fuzz(400)
@given(any_message)
def test_decode_raises_only_malformed_message(raw):
    msg = Message(raw)
    try:
        fields = cmd.decode(msg)
    except MalformedMessage as exc:
        assert exc.code in (ErrorCode.UNKNOWN_COMMAND, ErrorCode.MALFORMED)
    else:
        assert isinstance(fields, dict)
        assert msg.type in BY_CODE


@fuzz(200)
@given(st.sampled_from(KNOWN), st.booleans(), st.binary(max_size=3000))
def test_decode_of_reassembled_blobs_raises_only_malformed_message(mtype, response, blob):
    msg = Message()
    msg.type = mtype
    msg.flags = MessageFlag.RESPONSE if response else 0
    try:
        cmd.decode(msg.with_blob(blob))
    except MalformedMessage:
        pass


@fuzz(300)
@given(st.lists(any_message, max_size=40))
def test_reassembler_raises_only_fragment_errors_on_arbitrary_input(batch):
    r = Reassembler(max_bytes=4096, max_transfers=4)
    for raw in batch:
        msg = Message(raw)
        try:
            whole = r.feed(msg)
        except FragmentError as exc:
            assert exc.code == ErrorCode.FRAGMENT_ERROR
            continue
        assert r.pending <= 4
        if whole is not None and whole is not msg:
            assert whole.type == msg.type


@st.composite
def interleavings(draw):
    blobs = draw(st.lists(st.binary(min_size=0, max_size=2000), min_size=1, max_size=5))
    transfers = [cmd.fragments("SysEx", b, transfer_id=i + 1) for i, b in enumerate(blobs)]
    queues = [list(t) for t in transfers]
    order = []
    while any(queues):
        k = draw(st.sampled_from([i for i, q in enumerate(queues) if q]))
        order.append(queues[k].pop(0))
    return blobs, order


@fuzz(150)
@given(interleavings())
def test_interleaved_transfers_reassemble_to_their_blobs(case):
    blobs, order = case
    r = Reassembler()
    got = [w for m in order if (w := r.feed(Message(bytes(m.buf)))) is not None]
    assert len(got) == len(blobs)
    assert sorted(bytes(w.payload) for w in got) == sorted(blobs)
    assert r.pending == 0


@pytest.mark.parametrize("payload_len", [MESSAGE_PAYLOAD_SIZE + 1, 0xFFFFFFFF])
def test_message_payload_never_trusts_the_length_field(payload_len):
    msg = Message(b"\x01" * MESSAGE_SIZE)
    msg.payload_len = payload_len
    assert len(msg.payload) == MESSAGE_PAYLOAD_SIZE
    assert bytes(msg.payload) == bytes(msg.buf[MESSAGE_HEADER_SIZE:])
