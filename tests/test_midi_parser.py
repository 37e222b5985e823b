"""The MIDI 1.0 byte-stream parser: exact on good streams, safe and counting on bad ones."""

from __future__ import annotations

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.midi.event import MidiEvent, from_mido, message_length, parse_mido_text
from bridge.midi.parser import MidiParser, parse

# -- strategies: well-formed messages ---------------------------------------------------

data7 = st.integers(0, 127)


@st.composite
def channel_message(draw) -> bytes:
    kind = draw(st.sampled_from([0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0]))
    status = kind | draw(st.integers(0, 15))
    n = message_length(status) - 1
    return bytes([status, *draw(st.lists(data7, min_size=n, max_size=n))])


@st.composite
def system_message(draw) -> bytes:
    status = draw(st.sampled_from([0xF1, 0xF2, 0xF3, 0xF6, 0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF]))
    n = message_length(status) - 1
    return bytes([status, *draw(st.lists(data7, min_size=n, max_size=n))])


sysex = st.lists(data7, max_size=40).map(lambda d: bytes([0xF0, *d, 0xF7]))
message = st.one_of(channel_message(), channel_message(), system_message(), sysex)


def with_running_status(messages: list[bytes]) -> bytes:
    """Serialise as a MIDI cable would: omit a status byte that repeats the last one."""
    out, running = bytearray(), 0
    for m in messages:
        s = m[0]
        if s < 0xF0 and s == running:
            out += m[1:]
        else:
            out += m
            if s < 0xF0:
                running = s
            elif s < 0xF8:
                running = 0
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(message, max_size=30))
def test_well_formed_stream_with_running_status_parses_back_exactly(messages):
    got, stats = parse(with_running_status(messages))
    assert got == messages
    assert stats.damaged == 0
    assert stats.messages == len(messages)


@settings(max_examples=200, deadline=None)
@given(st.lists(message, max_size=20))
def test_parser_agrees_with_mido(messages):
    raw = b"".join(messages)  # mido's parser does not take running status
    ours, _ = parse(raw)
    p = mido.Parser()
    p.feed(raw)
    theirs = [bytes(m.bytes()) for m in p]
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(st.lists(message, min_size=1, max_size=10), st.data())
def test_real_time_bytes_anywhere_leave_the_message_intact(messages, data):
    raw = bytearray(with_running_status(messages))
    pos = data.draw(st.integers(0, len(raw)))
    raw[pos:pos] = b"\xf8"  # a timing clock in the middle of whatever is there
    got, stats = parse(bytes(raw))
    assert got.count(b"\xf8") == messages.count(b"\xf8") + 1
    assert [m for m in got if m[0] < 0xF8] == [m for m in messages if m[0] < 0xF8]
    assert stats.damaged == 0


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.integers(2, 64))
def test_random_bytes_never_raise_and_every_message_is_complete(raw, limit):
    got, stats = parse(raw, sysex_limit=limit)
    assert stats.messages == len(got)
    for m in got:
        if m[0] == 0xF0:
            assert m[-1] == 0xF7 and len(m) <= limit
            assert all(b < 0x80 for b in m[1:-1])
        else:
            assert len(m) == message_length(m[0])
            assert all(b < 0x80 for b in m[1:])


@pytest.mark.parametrize("raw,counter,kept", [
    (b"\x3c\x64", "stray_data", []),  # data with no status
    (b"\x90\x3c", "truncated", []),  # cut by the end of the chunk
    (b"\x90\x3c\xb0\x07\x64", "truncated", [b"\xb0\x07\x64"]),  # cut by a new status
    (b"\xf0\x01\x02\x90\x3c\x64", "unterminated_sysex", [b"\x90\x3c\x64"]),
    (b"\xf0\x01\x02", "unterminated_sysex", []),
    (b"\xf0" + b"\x01" * 20 + b"\xf7\xc0\x05", "sysex_overflow", [b"\xc0\x05"]),
    (b"\xf4\xf5\xf9\xfd\xf7\xf8", "undefined", [b"\xf8"]),
])
def test_damage_is_dropped_counted_and_described(raw, counter, kept):
    parser = MidiParser(sysex_limit=16)
    out: list[bytes] = []
    parser.feed(raw, out)
    assert out == kept
    assert getattr(parser.stats, counter) >= 1
    assert parser.stats.damaged == getattr(parser.stats, counter)
    assert parser.last_error  # the debug monitor gets a description


def test_system_common_cancels_running_status():
    got, stats = parse(b"\x90\x3c\x64\xf3\x02\x3e\x64")
    assert got == [b"\x90\x3c\x64", b"\xf3\x02"]
    assert stats.stray_data == 2


def test_running_status_carries_across_chunks_like_a_cable():
    parser = MidiParser()
    out: list[bytes] = []
    parser.feed(b"\x90\x3c\x64", out)
    parser.feed(b"\x3e\x64", out)
    assert out == [b"\x90\x3c\x64", b"\x90\x3e\x64"]


def test_sysex_at_exactly_the_limit_passes_one_over_is_dropped():
    ok = b"\xf0" + b"\x11" * 14 + b"\xf7"  # 16 bytes
    got, stats = parse(ok, sysex_limit=16)
    assert got == [ok] and stats.damaged == 0
    got, stats = parse(b"\xf0" + b"\x11" * 15 + b"\xf7", sysex_limit=16)
    assert got == [] and stats.sysex_overflow == 1


def test_parser_refuses_a_limit_that_cannot_hold_a_sysex():
    with pytest.raises(ValueError, match="sysex_limit"):
        MidiParser(sysex_limit=1)


# -- MidiEvent and mido -----------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(message, st.integers(0, 8191))
def test_event_round_trips_through_mido(data, offset):
    event = MidiEvent(offset, data)
    m = event.to_mido()
    assert m.time == offset
    assert from_mido(m, offset) == event


def test_mido_text_format_and_its_errors():
    assert from_mido(parse_mido_text("note_on channel=2 note=60 velocity=100"), 5) == \
        MidiEvent(5, b"\x92\x3c\x64")
    with pytest.raises(ValueError, match="'note_on note=999'"):
        parse_mido_text("note_on note=999")
    with pytest.raises(ValueError, match="mido's text format"):
        parse_mido_text("hello")


def test_ump_event_has_no_mido_form():
    with pytest.raises(ValueError, match="translate"):
        MidiEvent(0, words=(0x20903C64,)).to_mido()


def test_meta_messages_are_refused():
    with pytest.raises(ValueError, match="meta"):
        from_mido(mido.MetaMessage("set_tempo", tempo=500000))
