"""The device's batch read and small-command fast path give exactly what the normal path
gives: the same MIDI events in the same order, the same responses, the same refusals.

A Device in this process with commands pushed straight into its command ring (no host
needed for that); one device runs the fast path, a twin with a debug monitor installed runs
the normal path, and their outputs are compared.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proto_helpers import device_rings, drain
from test_midi_parser import channel_message, message

from bridge.midi import ipc
from bridge.midi.event import MidiEvent
from bridge.midi.stream import MidiStream
from bridge.transport import Device, cmd
from bridge.transport.device import BATCH_MESSAGES
from bridge.transport.monitor import DebugMonitor


def twin(name: str, fast: bool) -> tuple[Device, MidiStream]:
    dev = Device(monitor=None if fast else DebugMonitor())
    dev.start(name, 1, 48000, 256)
    stream = MidiStream(48000)
    stream.attach(dev)  # both fast paths (small commands and MidiRaw), and the normal one
    return dev, stream


def run_both(messages) -> list[tuple[list[MidiEvent], list[tuple[int, int, int]]]]:
    out = []
    for fast in (True, False):
        dev, stream = twin(f"Twin{int(fast)}", fast)
        try:
            commands, responses = device_rings(dev)
            for m in messages:
                assert commands.push(m.buf) == 1
            assert dev.process_commands() == len(messages)
            events = list(stream.take(256))
            answers = [(r.type, r.request_seq, cmd.decode(r).get("code", 0))
                       for r in drain(responses)]
            out.append((events, answers))
        finally:
            dev.close()
    return out


def mixed_commands(seed: int, count: int) -> list:
    """A shuffled mix of small MIDI commands, invalid ones, pings, raw MIDI and a SysEx."""
    rng = random.Random(seed)
    messages = []
    for i in range(count):
        r = rng.random()
        if r < 0.6:
            status = rng.choice([0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0]) | rng.randrange(16)
            n = 3 if status & 0xF0 not in (0xC0, 0xD0) else 2
            data = bytes([status, *(rng.randrange(128) for _ in range(n - 1))])
            messages += ipc.encode(MidiEvent(rng.randrange(256), data))
        elif r < 0.7:
            messages.append(cmd.build("NoteOn", channel=rng.choice([16, 99]), note=1,
                                      velocity=1))  # refused: channel out of range
        elif r < 0.8:
            messages.append(cmd.ping(i))
        elif r < 0.9:
            messages.append(cmd.build("MidiRaw", sample_offset=i % 256, data=b"\x90\x3c\x64\x3e"))
        else:
            messages += ipc.encode(MidiEvent(7, bytes([0xF0, *([i % 128] * 300), 0xF7])))
    return messages


def test_fast_path_equals_normal_path_on_a_long_mixed_stream(namespace):
    messages = mixed_commands(1, 400)
    assert len(messages) > 2 * BATCH_MESSAGES  # several batches
    (fast_events, fast_answers), (slow_events, slow_answers) = run_both(messages)
    assert fast_events == slow_events
    assert len(fast_events) > 200
    assert fast_answers == slow_answers
    refusals = [a for a in fast_answers if a[0] == cmd.T.Error]
    assert refusals and all(code == cmd.ErrorCode.MALFORMED for _, _, code in refusals)


# The namespace is only where the twins register; each example starts and closes its own.
@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 300), st.one_of(channel_message(), message)),
                max_size=80))
def test_fast_path_equals_normal_path_for_any_midi(namespace, items):
    messages = ipc.encode_all([MidiEvent(o, d) for o, d in items])
    (fast, _), (slow, _) = run_both(messages)
    assert fast == slow


@pytest.mark.parametrize("kind", ["small", "raw"])
def test_a_fast_path_handler_that_raises_loses_nothing(namespace, kind):
    dev = Device()
    dev.start("Raiser", 1, 48000, 256)
    seen = []
    try:
        def explode(*args):
            raise RuntimeError("bug")

        if kind == "small":
            dev.on_small_command(explode, [cmd.T.NoteOn])
            message = cmd.midi_note_on(0, 60, 100)
        else:
            dev.on_raw_command(explode, [cmd.T.MidiRaw])
            message = cmd.midi_raw(b"\x90\x3c\x64")
        dev.on_command(lambda m, d: seen.append(m.type) or True)
        commands, _ = device_rings(dev)
        for _ in range(5):
            commands.push(message.buf)
        assert dev.process_commands() == 5
        assert seen == [message.type] * 5  # each went down the normal path instead
        assert "RuntimeError: bug" in dev.last_error
    finally:
        dev.close()


def test_only_one_raw_bytes_field_commands_can_take_the_raw_fast_path(namespace):
    with Device() as dev:
        for t in (cmd.T.NoteOn, cmd.T.FileTransfer, cmd.T.SetParameter):
            with pytest.raises(ValueError, match="does not carry one raw bytes field"):
                dev.on_raw_command(lambda *a: True, [t])


def test_only_small_fixed_layout_commands_can_take_the_fast_path(namespace):
    with Device() as dev:
        for t in (cmd.T.SysEx, cmd.T.MidiRaw, cmd.T.SetParameter):
            with pytest.raises(ValueError, match="not a small"):
                dev.on_small_command(lambda *a: True, [t])
