"""A device's MIDI intake (bridge.midi.stream) and the host-side IPC encoding (bridge.midi.ipc).

In-process: the commands are real 256-byte messages built by the host-side encoder and
decoded by the device-side stream; the cross-process paths are in test_midi_timing.py and
test_midi_cli.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_midi_parser import channel_message, message, system_message

from bridge.midi import ipc, ump
from bridge.midi.event import MidiEvent
from bridge.midi.stream import MAX_EVENTS_PER_BLOCK, MidiStream
from bridge.transport import commands as cmd
from bridge.transport.message import Message

RATE = 48000


def deliver(stream: MidiStream, messages: list[Message]) -> None:
    """What a Device does: reassemble fragments, then hand each command to the handler."""
    reassembler = cmd.Reassembler()
    for m in messages:
        m = Message(bytes(m.buf))  # through the 256-byte wire form
        if m.frag_count > 1:
            m = reassembler.feed(m)
            if m is None:
                continue
        assert stream.handle(m)


class Reports(list):
    def __call__(self, where: str, text: str) -> None:
        self.append((where, text))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), message), max_size=20))
def test_every_midi_message_survives_encode_and_decode(items):
    stream = MidiStream(RATE)
    events = [MidiEvent(offset, data) for offset, data in items]
    deliver(stream, ipc.encode_all(events))
    got = stream.take(256)
    assert got == sorted(events, key=lambda e: e.offset)  # stable: send order kept on ties
    assert stream.stats.invalid == 0


@pytest.mark.parametrize("data,name", [
    (b"\x93\x3c\x64", "NoteOn"), (b"\x83\x3c\x40", "NoteOff"), (b"\xb1\x07\x64", "ControlChange"),
    (b"\xe2\x7f\x7f", "PitchBend"), (b"\xc4\x05", "ProgramChange"), (b"\xd5\x40", "Aftertouch"),
    (b"\xa6\x3c\x40", "Aftertouch"), (b"\xf2\x10\x20", "MidiRaw"), (b"\xf8", "MidiRaw"),
    (b"\xf0\x7e\x01\xf7", "SysEx"),
])
def test_each_message_goes_as_the_most_specific_command(data, name):
    (m,) = ipc.encode(MidiEvent(17, data))
    assert cmd.name_of(m.type) == name and m.sample_offset == 17


def test_pitch_bend_keeps_all_14_bits():
    (m,) = ipc.encode(MidiEvent(0, b"\xe0\x01\x40"))  # 0x40 << 7 | 1 = 8193
    assert cmd.decode(m)["value"] == 8193


def test_long_sysex_is_fragmented_and_arrives_whole():
    data = bytes([0xF0, *(i % 128 for i in range(3000)), 0xF7])
    messages = ipc.encode(MidiEvent(9, data))
    assert len(messages) > 10
    stream = MidiStream(RATE)
    deliver(stream, messages)
    assert stream.take(64) == [MidiEvent(9, data)]


def test_sysex_over_the_limit_is_refused_and_counted():
    stream = MidiStream(RATE, sysex_limit=100)
    with pytest.raises(cmd.MalformedMessage, match="limit of 100") as err:
        deliver(stream, ipc.encode(MidiEvent(0, bytes([0xF0, *([1] * 200), 0xF7]))))
    assert err.value.code == cmd.ErrorCode.INVALID_ARGUMENT
    deliver(stream, ipc.encode(MidiEvent(0, b"\x90\x3c\x64")))
    assert stream.take(64) == [MidiEvent(0, b"\x90\x3c\x64")]
    assert stream.stats.sysex_overflow == 1


def test_encoder_refuses_malformed_events_naming_the_problem():
    for data, text in [(b"\x3c\x64", "status byte"), (b"\x90\x3c", "malformed"),
                       (b"\x90\x3c\xff", "malformed"), (b"\xf4", "undefined"),
                       (b"\xf0\x01", "F7"), (b"", "empty")]:
        with pytest.raises(ValueError, match=text):
            ipc.encode(MidiEvent(0, data))
    with pytest.raises(ValueError, match="offset"):
        ipc.encode(MidiEvent(-1, b"\xf8"))


def test_commands_with_out_of_range_fields_are_refused_as_malformed_and_counted():
    """The Device turns MalformedMessage into an Error response, a bad_messages count and a
    debug-monitor report (test_midi_timing.py checks that across processes)."""
    stream = MidiStream(RATE)
    bad = [cmd.build("NoteOn", channel=16, note=60, velocity=1),
           cmd.build("NoteOn", channel=0, note=200, velocity=1),
           cmd.build("PitchBend", channel=0, value=20000),
           cmd.build("ProgramChange", channel=0, program=128),
           cmd.build("Aftertouch", channel=0, poly=2, note=0, pressure=0),
           cmd.build("SysEx", data=b"\xf0\x01\x02"),  # no F7
           cmd.build("SysEx", data=b"\xf0\x90\xf7")]  # a status byte inside
    for m in bad:
        with pytest.raises(cmd.MalformedMessage, match=r"out of range|F7") as err:
            stream.handle(m)
        assert err.value.code == cmd.ErrorCode.MALFORMED
    short = Message()
    short.type = cmd.T.NoteOn
    short.set_payload(b"\x00")
    with pytest.raises(cmd.MalformedMessage, match=r"short|bytes"):
        stream.handle(short)
    assert stream.take(64) == []
    assert stream.stats.invalid == len(bad)


def test_raw_midi_damage_is_reported_and_the_good_part_kept():
    reports = Reports()
    stream = MidiStream(RATE, report=reports)
    stream.handle(cmd.build("MidiRaw", sample_offset=3, data=b"\x3c\x90\x3c\x64\x3e\x64\x90"))
    assert stream.take(64) == [MidiEvent(3, b"\x90\x3c\x64"), MidiEvent(3, b"\x90\x3e\x64")]
    counters = stream.counters()
    assert counters["midi_stray_data"] == 1 and counters["midi_truncated"] == 1
    assert counters["midi_running_status"] == 1
    assert [w for w, _ in reports] == ["MidiRaw", "MidiRaw"]  # one report per damage


def test_offsets_past_the_block_play_on_its_last_frame_and_are_counted():
    reports = Reports()
    stream = MidiStream(RATE, report=reports)
    deliver(stream, ipc.encode_all([MidiEvent(500, b"\x90\x3c\x64"), MidiEvent(5, b"\xf8")]))
    assert stream.take(64) == [MidiEvent(5, b"\xf8"), MidiEvent(63, b"\x90\x3c\x64")]
    assert stream.stats.late == 1 and "past the block" in reports[0][1]


def test_non_midi_commands_are_left_to_the_device():
    stream = MidiStream(RATE)
    assert not stream.handle(cmd.ping())
    assert not stream.handle(cmd.set_parameter(0, 1.0))


def test_too_many_events_in_one_block_are_dropped_not_grown_without_bound():
    stream = MidiStream(RATE)
    m = ipc.encode(MidiEvent(0, b"\xf8"))[0]
    for _ in range(MAX_EVENTS_PER_BLOCK + 10):
        stream.handle(m)
    assert len(stream.take(64)) == MAX_EVENTS_PER_BLOCK
    assert stream.stats.dropped == 10
    assert stream.take(64) == []  # the next block starts empty


def test_packed_midi_raw_over_the_block_limit_counts_every_event_it_drops():
    stream = MidiStream(RATE)
    packed = cmd.midi_raw(b"\xb0\x07\x40" * 74)  # 74 messages in one command
    for _ in range(56):  # 4,144 events
        stream.handle(packed)
    events = stream.take(64)
    assert len(events) == MAX_EVENTS_PER_BLOCK and events[-1] == MidiEvent(0, b"\xb0\x07\x40")
    assert stream.stats.dropped == 56 * 74 - MAX_EVENTS_PER_BLOCK


# -- UMP over IPC -----------------------------------------------------------------------

def test_ump_midi2_note_on_arrives_as_midi1_with_scaled_velocity():
    stream = MidiStream(RATE)
    words = ump.midi2_note_on(2, 60, 0x8000)
    deliver(stream, ipc.encode(MidiEvent(11, words=words)))
    assert stream.take(64) == [MidiEvent(11, b"\x92\x3c\x40")]


def test_invalid_ump_is_skipped_counted_and_reported():
    reports = Reports()
    stream = MidiStream(RATE, report=reports)
    good = ump.midi1_note_on(0, 60, 100)
    raw = ump.words_to_bytes([*good, 0xD0000000, 1, 2]) + b"\x01\x02"  # flex data, cut short
    (m,) = cmd.fragments("UMP", raw)
    stream.handle(m)
    assert stream.take(64) == [MidiEvent(0, b"\x90\x3c\x64")]
    assert stream.ump_stats.truncated >= 1
    assert reports and reports[0][0] == "UMP"


# -- live input -------------------------------------------------------------------------

def test_live_events_keep_their_spacing_one_block_later():
    stream = MidiStream(RATE)
    stream.take(256)  # block 0 starts the clock
    t0 = stream._last_take
    stream.push_live(b"\x90\x3c\x64", t0 + 10 / RATE)
    stream.push_live(b"\x80\x3c\x00", t0 + 200 / RATE)
    got = stream.take(256)
    assert [e.offset for e in got] == [10, 200]
    assert [e.data for e in got] == [b"\x90\x3c\x64", b"\x80\x3c\x00"]
    assert stream.stats.live_events == 2


def test_live_and_ipc_are_merged_in_time_order():
    stream = MidiStream(RATE)
    stream.take(256)
    t0 = stream._last_take
    stream.push_live(b"\xb0\x01\x02", t0 + 100 / RATE)
    deliver(stream, ipc.encode_all([MidiEvent(150, b"\x90\x3c\x64"),
                                    MidiEvent(50, b"\x90\x3e\x64")]))
    assert [e.offset for e in stream.take(256)] == [50, 100, 150]


def test_live_garbage_is_parsed_safely():
    reports = Reports()
    stream = MidiStream(RATE, report=reports)
    stream.push_live(b"\x3c\x3c")  # data without status
    stream.push_live(b"\x90\x3c")  # truncated
    stream.push_live(b"\x90\x3c\x64")
    assert [e.data for e in stream.take(256)] == [b"\x90\x3c\x64"]
    assert stream.counters()["live_stray_data"] == 2
    assert stream.counters()["live_truncated"] == 1
    assert [w for w, _ in reports] == ["live MIDI"] * 3


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(channel_message(), system_message()), max_size=30))
def test_mpe_tracker_in_the_stream_never_breaks_on_any_channel_message(messages):
    stream = MidiStream(RATE)
    for m in messages:
        stream.push_live(m)
    assert len(stream.take(128)) == len(messages)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 15), st.integers(0, 127), st.integers(0, 127), st.integers(0, 16383),
       st.integers(0, 2**32 - 1))
def test_fast_midi_builders_write_exactly_what_the_command_table_says(ch, a, b, bend, offset):
    """The builders pack messages directly for speed; build() is the table's reference."""
    pairs = [
        (cmd.midi_note_on(ch, a, b, offset), "NoteOn", dict(channel=ch, note=a, velocity=b)),
        (cmd.midi_note_off(ch, a, b, offset), "NoteOff", dict(channel=ch, note=a, velocity=b)),
        (cmd.midi_cc(ch, a, b, offset), "ControlChange",
         dict(channel=ch, controller=a, value=b)),
        (cmd.midi_pitch_bend(ch, bend, offset), "PitchBend", dict(channel=ch, value=bend)),
        (cmd.midi_program_change(ch, a, offset), "ProgramChange", dict(channel=ch, program=a)),
        (cmd.midi_aftertouch(ch, b, a, offset), "Aftertouch",
         dict(channel=ch, poly=1, note=a, pressure=b)),
        (cmd.midi_aftertouch(ch, b, None, offset), "Aftertouch",
         dict(channel=ch, poly=0, note=0, pressure=b)),
    ]
    for fast, name, fields in pairs:
        reference = cmd.build(name, sample_offset=offset, seq=fast.seq, **fields)
        assert bytes(fast.buf) == bytes(reference.buf), name


def test_midi_builders_refuse_an_offset_that_does_not_fit():
    with pytest.raises(ValueError, match="sample offset"):
        cmd.midi_note_on(0, 60, 100, offset=2**32)
