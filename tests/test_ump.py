"""UMP codec: exact bit layouts from M2-104-UM, encoder/decoder round trips, and a decoder
that never raises on hostile input and accounts for every word it was given."""

from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.midi import ump
from bridge.midi.ump import Packet, SysEx7Reassembler, UmpStats

# Packet sizes by message type, written out from M2-104-UM section 2.1.4 independently of the
# module's table so that a slip in either shows up.
SPEC_SIZES = {0x0: 1, 0x1: 1, 0x2: 1, 0x6: 1, 0x7: 1,
              0x3: 2, 0x4: 2, 0x8: 2, 0x9: 2, 0xA: 2,
              0xB: 3, 0xC: 3,
              0x5: 4, 0xD: 4, 0xE: 4, 0xF: 4}

ch = st.integers(0, 15)
grp = st.integers(0, 15)
u7 = st.integers(0, 127)
u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def one(words: tuple[int, ...]) -> Packet:
    """Decode a single packet and insist that nothing else was seen."""
    return ump.decode(words)


# --------------------------------------------------------------------------------------------
# Sizes


def test_packet_sizes_follow_the_spec_for_every_message_type():
    for mt, size in SPEC_SIZES.items():
        assert ump.PACKET_WORDS[mt] == size
        assert ump.packet_words((mt << 28) | 0x0ABCDEF) == size


def test_every_encoder_output_has_the_size_of_its_message_type():
    samples = [ump.noop(), ump.jr_timestamp(1), ump.system(0xF8), ump.midi1_note_on(0, 1, 2),
               ump.sysex7_packet(0, b"\x01"), ump.midi2_note_on(0, 1, 2),
               ump.sysex8_packet(0, 0, b"\x01"), ump.mds_payload(0, b"")]
    for words in samples:
        assert len(words) == SPEC_SIZES[words[0] >> 28]


# --------------------------------------------------------------------------------------------
# Exact layouts, hand-written from the field diagrams in M2-104-UM


@pytest.mark.parametrize(("words", "expected"), [
    # MT 0x4 note on: channel 0, group 0, note 60, velocity 0xFFFF, no attribute
    (ump.midi2_note_on(0, 60, 0xFFFF), (0x40903C00, 0xFFFF0000)),
    # note on with attribute type 3 (pitch 7.9) and data 0x3C80, group 5, channel 2
    (ump.midi2_note_on(2, 60, 0x8000, attr_type=3, attr_data=0x3C80, group=5),
     (0x45923C03, 0x80003C80)),
    (ump.midi2_note_off(1, 60, 0x8000), (0x40813C00, 0x80000000)),
    (ump.midi2_poly_pressure(0, 60, 0x80000000), (0x40A03C00, 0x80000000)),
    (ump.midi2_registered_per_note_controller(0, 60, 0x4A, 1), (0x40003C4A, 0x00000001)),
    (ump.midi2_assignable_per_note_controller(3, 60, 0xFF, 2), (0x40133CFF, 0x00000002)),
    (ump.midi2_per_note_management(0, 60, detach=True, reset=True), (0x40F03C03, 0)),
    (ump.midi2_per_note_management(0, 60, detach=True), (0x40F03C02, 0)),
    (ump.midi2_control_change(0, 7, 0xFFFFFFFF), (0x40B00700, 0xFFFFFFFF)),
    (ump.midi2_rpn(0, 0, 0, 0x18000000), (0x40200000, 0x18000000)),
    (ump.midi2_nrpn(0, 0x21, 0x09, 0xFFFFFFFF), (0x40302109, 0xFFFFFFFF)),
    (ump.midi2_relative_rpn(0, 1, 2, -1), (0x40400102, 0xFFFFFFFF)),
    (ump.midi2_relative_nrpn(0, 1, 2, 5), (0x40500102, 0x00000005)),
    (ump.midi2_program_change(0, 5, bank=(1, 2)), (0x40C00001, 0x05000102)),
    (ump.midi2_program_change(0, 5), (0x40C00000, 0x05000000)),
    (ump.midi2_channel_pressure(0, 0x40000000), (0x40D00000, 0x40000000)),
    (ump.midi2_pitch_bend(0, 0x80000000), (0x40E00000, 0x80000000)),
    (ump.midi2_per_note_pitch_bend(0, 60, 0x80000000), (0x40603C00, 0x80000000)),
    # MT 0x2
    (ump.midi1_note_on(1, 60, 0x40, group=9), (0x29913C40,)),
    (ump.midi1_note_off(0, 60), (0x20803C00,)),
    (ump.midi1_control_change(15, 7, 100), (0x20BF0764,)),
    (ump.midi1_program_change(0, 5), (0x20C00500,)),
    (ump.midi1_channel_pressure(0, 0x33), (0x20D03300,)),
    (ump.midi1_pitch_bend(0, 0x2000), (0x20E00040,)),
    (ump.midi1_poly_pressure(0, 60, 1), (0x20A03C01,)),
    # MT 0x1
    (ump.system(0xF8), (0x10F80000,)),
    (ump.system(0xFF, group=3), (0x13FF0000,)),
    (ump.song_position(0x2001), (0x10F20140,)),
    (ump.mtc_quarter_frame(0x35), (0x10F13500,)),
    (ump.song_select(9), (0x10F30900,)),
    (ump.tune_request(), (0x10F60000,)),
    # MT 0x0
    (ump.noop(), (0x00000000,)),
    (ump.jr_clock(0x1234), (0x00101234,)),
    (ump.jr_timestamp(0xBEEF), (0x0020BEEF,)),
    (ump.delta_clockstamp_tpq(480), (0x003001E0,)),
    (ump.delta_clockstamp(0xFFFFF), (0x004FFFFF,)),
    # MT 0x3: status/number-of-bytes nibbles, then bytes left to right
    (ump.sysex7_packet(0, b"\x7e\x7f\x06\x01"), (0x30047E7F, 0x06010000)),
    (ump.sysex7_packet(1, b"\x01\x02\x03\x04\x05\x06", group=2), (0x32160102, 0x03040506)),
    (ump.sysex7_packet(3, b""), (0x30300000, 0x00000000)),
    # MT 0x5: the byte count includes the stream id
    (ump.sysex8_packet(0, 7, b"\xaa"), (0x500207AA, 0, 0, 0)),
    (ump.sysex8_packet(2, 1, bytes(range(1, 14))),
     (0x502E0101, 0x02030405, 0x06070809, 0x0A0B0C0D)),
    (ump.mds_header(3, 0x0102, 4, 1, 0x0041, 0x7F00, 0x0001, 0x0002),
     (0x50830102, 0x00040001, 0x00417F00, 0x00010002)),
    (ump.mds_payload(3, bytes(range(1, 15))), (0x50930102, 0x03040506, 0x0708090A, 0x0B0C0D0E)),
])
def test_bit_layout(words, expected):
    assert words == expected
    assert ump.decode(words).words == expected


# --------------------------------------------------------------------------------------------
# Decoding of spec words into fields


def test_decode_fields_of_midi2_note_on_from_spec_words():
    p = one((0x40903C00, 0xFFFF0000))
    assert (p.mt, p.group, p.kind, p.channel, p.note, p.velocity) == (
        4, 0, "note_on", 0, 60, 0xFFFF)
    assert (p.attr_type, p.attr_data) == (0, 0)


def test_decode_program_change_bank_flag():
    p = one((0x40C00001, 0x05000102))
    assert (p.kind, p.program, p.bank_valid, p.bank_msb, p.bank_lsb) == (
        "program_change", 5, True, 1, 2)
    q = one((0x40C00000, 0x05000102))
    assert (q.bank_valid, q.bank_msb, q.bank_lsb) == (False, None, None)


def test_decode_relative_controller_is_signed():
    assert one(ump.midi2_relative_rpn(0, 0, 0, -(1 << 31))).value == -(1 << 31)
    assert one(ump.midi2_relative_nrpn(0, 0, 0, (1 << 31) - 1)).value == (1 << 31) - 1


def test_decode_per_note_management_flags():
    p = one(ump.midi2_per_note_management(0, 1, reset=True))
    assert (p.reset_controllers, p.detach) == (True, False)


def test_decode_mixed_data_set_header_fields():
    p = one(ump.mds_header(3, 0x0102, 4, 1, 0x0041, 0x7F00, 5, 6, group=7))
    assert (p.kind, p.group, p.mds_id, p.chunk_bytes, p.chunks, p.chunk, p.manufacturer,
            p.device, p.sub_id1, p.sub_id2) == (
        "mds_header", 7, 3, 0x0102, 4, 1, 0x0041, 0x7F00, 5, 6)


# --------------------------------------------------------------------------------------------
# Round trips over the field ranges


@given(ch, u7, u16, u8, u16, grp, st.booleans())
def test_roundtrip_midi2_notes(c, note, vel, at, ad, g, on):
    enc = ump.midi2_note_on if on else ump.midi2_note_off
    p = one(enc(c, note, vel, attr_type=at, attr_data=ad, group=g))
    assert (p.kind, p.channel, p.note, p.velocity, p.attr_type, p.attr_data, p.group) == (
        "note_on" if on else "note_off", c, note, vel, at, ad, g)


@given(ch, u7, u32, grp)
def test_roundtrip_midi2_note_values(c, note, v, g):
    for enc, kind in ((ump.midi2_poly_pressure, "poly_pressure"),
                      (ump.midi2_per_note_pitch_bend, "per_note_pitch_bend")):
        p = one(enc(c, note, v, group=g))
        assert (p.kind, p.channel, p.note, p.value, p.group) == (kind, c, note, v, g)


@given(ch, u7, u8, u32, grp)
def test_roundtrip_per_note_controllers(c, note, index, v, g):
    for enc, kind in ((ump.midi2_registered_per_note_controller,
                       "registered_per_note_controller"),
                      (ump.midi2_assignable_per_note_controller,
                       "assignable_per_note_controller")):
        p = one(enc(c, note, index, v, group=g))
        assert (p.kind, p.channel, p.note, p.index, p.value, p.group) == (
            kind, c, note, index, v, g)


@given(ch, u7, st.booleans(), st.booleans(), grp)
def test_roundtrip_per_note_management(c, note, detach, reset, g):
    p = one(ump.midi2_per_note_management(c, note, detach=detach, reset=reset, group=g))
    assert (p.kind, p.channel, p.note, p.detach, p.reset_controllers, p.group) == (
        "per_note_management", c, note, detach, reset, g)


@given(ch, u7, u7, u32, st.integers(-(1 << 31), (1 << 31) - 1), grp)
def test_roundtrip_controllers(c, bank, index, v, delta, g):
    for enc, kind, val in ((ump.midi2_rpn, "rpn", v), (ump.midi2_nrpn, "nrpn", v),
                           (ump.midi2_relative_rpn, "relative_rpn", delta),
                           (ump.midi2_relative_nrpn, "relative_nrpn", delta)):
        p = one(enc(c, bank, index, val, group=g))
        assert (p.kind, p.channel, p.bank, p.index, p.value, p.group) == (
            kind, c, bank, index, val, g)
    p = one(ump.midi2_control_change(c, index, v, group=g))
    assert (p.kind, p.channel, p.index, p.value) == ("control_change", c, index, v)


@given(ch, u7, st.none() | st.tuples(u7, u7), grp)
def test_roundtrip_midi2_program_change(c, program, bank, g):
    p = one(ump.midi2_program_change(c, program, bank=bank, group=g))
    assert (p.kind, p.channel, p.program, p.bank_valid, p.group) == (
        "program_change", c, program, bank is not None, g)
    assert (None if not p.bank_valid else (p.bank_msb, p.bank_lsb)) == bank


@given(ch, u32, grp)
def test_roundtrip_midi2_channel_values(c, v, g):
    assert one(ump.midi2_channel_pressure(c, v, group=g)).value == v
    p = one(ump.midi2_pitch_bend(c, v, group=g))
    assert (p.kind, p.channel, p.value, p.group) == ("pitch_bend", c, v, g)


@given(ch, u7, u7, st.integers(0, 0x3FFF), grp)
def test_roundtrip_midi1(c, a, b, v14, g):
    p = one(ump.midi1_note_on(c, a, b, group=g))
    assert (p.mt, p.kind, p.channel, p.note, p.velocity, p.group) == (2, "note_on", c, a, b, g)
    p = one(ump.midi1_note_off(c, a, b, group=g))
    assert (p.kind, p.note, p.velocity) == ("note_off", a, b)
    p = one(ump.midi1_poly_pressure(c, a, b, group=g))
    assert (p.kind, p.note, p.value) == ("poly_pressure", a, b)
    p = one(ump.midi1_control_change(c, a, b, group=g))
    assert (p.kind, p.index, p.value) == ("control_change", a, b)
    p = one(ump.midi1_program_change(c, a, group=g))
    assert (p.kind, p.program) == ("program_change", a)
    p = one(ump.midi1_channel_pressure(c, a, group=g))
    assert (p.kind, p.value) == ("channel_pressure", a)
    p = one(ump.midi1_pitch_bend(c, v14, group=g))
    assert (p.kind, p.channel, p.value) == ("pitch_bend", c, v14)


@given(grp, u7, st.integers(0, 0x3FFF), st.sampled_from([0xF6, 0xF8, 0xFA, 0xFB, 0xFC, 0xFE,
                                                          0xFF]))
def test_roundtrip_system(g, v7, v14, status):
    assert (one(ump.mtc_quarter_frame(v7, group=g)).kind,
            one(ump.mtc_quarter_frame(v7, group=g)).value) == ("mtc_quarter_frame", v7)
    assert one(ump.song_position(v14, group=g)).value == v14
    assert one(ump.song_select(v7, group=g)).value == v7
    p = one(ump.system(status, group=g))
    assert (p.mt, p.group, p.status, p.value) == (1, g, status, None)


def test_system_kinds():
    names = {0xF6: "tune_request", 0xF8: "timing_clock", 0xFA: "start", 0xFB: "continue",
             0xFC: "stop", 0xFE: "active_sensing", 0xFF: "reset"}
    for status, kind in names.items():
        assert one(ump.system(status)).kind == kind


@given(grp, u16, st.integers(0, 0xFFFFF))
def test_roundtrip_utility(g, v16, v20):
    assert (one(ump.noop(group=g)).kind, one(ump.noop(group=g)).value) == ("noop", None)
    assert one(ump.jr_clock(v16)).value == v16
    assert one(ump.jr_timestamp(v16)).kind == "jr_timestamp"
    assert one(ump.jr_timestamp(v16)).value == v16
    assert one(ump.delta_clockstamp_tpq(v16)).value == v16
    p = one(ump.delta_clockstamp(v20))
    assert (p.kind, p.value) == ("delta_clockstamp", v20)


@given(st.integers(0, 3), st.binary(max_size=6).map(lambda b: bytes(x & 0x7F for x in b)), grp)
def test_roundtrip_sysex7_packet(status, data, g):
    p = one(ump.sysex7_packet(status, data, group=g))
    assert (p.kind, p.data, p.group) == (
        "sysex7_" + ("complete", "start", "continue", "end")[status], data, g)


@given(st.integers(0, 3), u8, st.binary(max_size=13), grp)
def test_roundtrip_sysex8_packet(status, stream, data, g):
    p = one(ump.sysex8_packet(status, stream, data, group=g))
    assert (p.kind, p.stream_id, p.data, p.group) == (
        "sysex8_" + ("complete", "start", "continue", "end")[status], stream, data, g)


@given(st.integers(0, 15), st.binary(max_size=14), grp)
def test_roundtrip_mds_payload(mds_id, data, g):
    p = one(ump.mds_payload(mds_id, data, group=g))
    assert (p.kind, p.mds_id, p.data) == ("mds_payload", mds_id, data.ljust(14, b"\0"))


@given(st.lists(u16, min_size=7, max_size=7), st.integers(0, 15))
def test_roundtrip_mds_header(vals, mds_id):
    p = one(ump.mds_header(mds_id, *vals))
    assert [p.chunk_bytes, p.chunks, p.chunk, p.manufacturer, p.device, p.sub_id1,
            p.sub_id2] == vals


# --------------------------------------------------------------------------------------------
# Encoder validation


@pytest.mark.parametrize(("call", "message"), [
    (lambda: ump.midi2_note_on(0, 200, 1), "note 200 out of range 0..127"),
    (lambda: ump.midi2_note_on(16, 1, 1), "channel 16 out of range 0..15"),
    (lambda: ump.midi2_note_on(0, 1, 0x10000), "velocity 65536 out of range 0..65535"),
    (lambda: ump.midi2_note_on(0, 1, 1, group=16), "group 16 out of range 0..15"),
    (lambda: ump.midi2_control_change(0, 128, 0), "index 128 out of range 0..127"),
    (lambda: ump.midi2_control_change(0, 1, 1 << 32), "value 4294967296 out of range"),
    (lambda: ump.midi2_control_change(0, 1, -1), "value -1 out of range"),
    (lambda: ump.midi2_relative_rpn(0, 0, 0, 1 << 31), "delta 2147483648 out of range"),
    (lambda: ump.midi2_program_change(0, 1, bank=(128, 0)), "bank_msb 128 out of range"),
    (lambda: ump.midi1_pitch_bend(0, 0x4000), "value 16384 out of range 0..16383"),
    (lambda: ump.midi1_note_on(0, 1, 128), "velocity 128 out of range 0..127"),
    (lambda: ump.system(0xF4), "status 0xf4"),
    (lambda: ump.system(0xF8, 1), "data1 1 out of range 0..0"),
    (lambda: ump.sysex7_packet(0, bytes(7)), "data length 7 out of range 0..6"),
    (lambda: ump.sysex7_packet(0, b"\x80"), "data[0] 128 out of range 0..127"),
    (lambda: ump.sysex7_packet(4, b""), "status 4 out of range 0..3"),
    (lambda: ump.sysex8_packet(0, 0, bytes(14)), "data length 14 out of range 0..13"),
    (lambda: ump.mds_payload(0, bytes(15)), "data length 15 out of range 0..14"),
    (lambda: ump.jr_timestamp(0x10000), "time 65536 out of range 0..65535"),
    (lambda: ump.delta_clockstamp(1 << 20), "ticks 1048576 out of range 0..1048575"),
    (lambda: ump.sysex7_packets(b"\x01\x90"), "payload[1] 144 out of range 0..127"),
    (lambda: ump.words_to_bytes([1 << 32]), "words[0] 4294967296 out of range"),
])
def test_encoders_name_the_bad_argument_and_its_range(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_non_int_argument_is_a_type_error():
    with pytest.raises(TypeError, match="note must be an int"):
        ump.midi2_note_on(0, 1.5, 1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Decoder robustness


def test_unknown_types_are_sized_skipped_and_counted():
    flex = [0xD0000000, 1, 2, 3]  # flex data: 4 words
    stream = [0xF0000000, 0, 0, 0]  # UMP stream: 4 words
    reserved96 = [0xB0000000, 0x40903C00, 0xFFFF0000]  # MT 0xB: 3 words; tail looks like a note
    reserved32 = [0x6FFFFFFF]
    words = flex + stream + reserved96 + reserved32 + list(ump.midi2_note_on(0, 60, 1))
    stats = UmpStats()
    packets = list(ump.iter_packets(words, stats))
    assert [p.kind for p in packets] == ["note_on"]
    assert stats == UmpStats(packets=1, skipped_unknown=4)


def test_truncated_final_packet_is_counted_not_yielded():
    stats = UmpStats()
    words = [*ump.midi1_note_on(0, 60, 1), 0x40903C00]  # second word of a MIDI 2.0 note missing
    assert [p.kind for p in ump.iter_packets(words, stats)] == ["note_on"]
    assert (stats.packets, stats.truncated) == (1, 1)


@pytest.mark.parametrize("words", [
    (0x40703C00, 0),  # MT 0x4 opcode 0x7 is reserved
    (0x10F40000,),  # MT 0x1 status 0xF4 is undefined
    (0x10F00000,),  # SysEx start has no place in MT 0x1
    (0x10F28000,),  # song position data byte with the top bit set
    (0x20F00000,),  # MT 0x2 status nibble 0xF
    (0x20700000,),  # MT 0x2 status nibble 0x7
    (0x20903C80,),  # MT 0x2 data byte with the top bit set
    (0x00500000,),  # MT 0x0 status 0x5 is reserved
    (0x30470000, 0),  # SysEx7 status 4
    (0x30070000, 0),  # SysEx7 with 7 bytes
    (0x30018000, 0),  # SysEx7 data byte with the top bit set
    (0x40908000, 0),  # MIDI 2.0 note 128
    (0x40C00001, 0x80000000),  # program 128
    (0x50000000, 0, 0, 0),  # SysEx8 with a byte count of 0 (the stream id is counted)
    (0x500F0000, 0, 0, 0),  # SysEx8 with 15 bytes
    (0x50400000, 0, 0, 0),  # MT 0x5 status 4
])
def test_reserved_or_bad_fields_are_invalid(words):
    stats = UmpStats()
    after = ump.system(0xF8)
    assert [p.kind for p in ump.iter_packets([*words, *after], stats)] == ["timing_clock"]
    assert stats == UmpStats(packets=1, invalid=1)
    with pytest.raises(ValueError):
        ump.decode(words)


def test_words_outside_uint32_are_invalid():
    stats = UmpStats()
    words = [-1, 1 << 32, "x", None, 0x40903C00, -5, *ump.system(0xFA)]
    assert [p.kind for p in ump.iter_packets(words, stats)] == ["start"]
    # four bad first words skip one word each; the note's bad second word spoils that packet
    assert stats == UmpStats(packets=1, invalid=5)


def _expected_units(words: list) -> tuple[int, int, int]:
    """Independent walk: (packets started, invalid starts, truncated)."""
    i = units = bad = trunc = 0
    while i < len(words):
        w = words[i]
        if not (isinstance(w, int) and 0 <= w <= 0xFFFFFFFF):
            bad += 1
            i += 1
            continue
        size = SPEC_SIZES[w >> 28]
        if i + size > len(words):
            trunc = 1
            break
        units += 1
        i += size
    return units, bad, trunc


word_or_junk = st.one_of(u32, u32, u32, st.integers(-(1 << 40), 1 << 40), st.none(),
                         st.floats(allow_nan=True))


@given(st.lists(u32, max_size=60))
def test_fuzz_uint32_words_never_raise_and_counters_add_up(words):
    stats = UmpStats()
    packets = list(ump.iter_packets(words, stats))
    units, bad, trunc = _expected_units(words)
    assert stats.packets == len(packets)
    assert bad == 0
    assert stats.truncated == trunc
    assert stats.packets + stats.skipped_unknown + stats.invalid == units
    for p in packets:
        assert len(p.words) == SPEC_SIZES[p.mt]
        assert p.group == (p.words[0] >> 24) & 0xF


@given(st.lists(word_or_junk, max_size=60))
def test_fuzz_junk_never_raises_and_counters_add_up(words):
    stats = UmpStats()
    packets = list(ump.iter_packets(words, stats))
    units, bad, trunc = _expected_units(words)
    assert stats.packets == len(packets)
    assert stats.truncated == trunc
    assert stats.packets + stats.skipped_unknown + stats.invalid == units + bad


@given(st.lists(st.sampled_from(sorted(SPEC_SIZES)), max_size=30), st.randoms())
def test_fuzz_typed_words_decode_whenever_they_are_valid(mts, rnd):
    """Random packets of every message type: whatever decodes re-encodes to the same words."""
    words = []
    for mt in mts:
        size = SPEC_SIZES[mt]
        words += [(mt << 28) | rnd.getrandbits(28)] + [rnd.getrandbits(32)
                                                         for _ in range(size - 1)]
    for p in ump.iter_packets(words):
        assert ump.decode(p.words) == p


# --------------------------------------------------------------------------------------------
# Transport bytes


def test_words_to_bytes_is_little_endian():
    assert ump.words_to_bytes([0x40903C00, 0xFFFF0000]) == bytes.fromhex("003c9040 0000ffff")


@given(st.lists(u32, max_size=20), st.binary(max_size=3))
def test_words_bytes_roundtrip_and_trailing_bytes_are_truncated(words, tail):
    stats = UmpStats()
    raw = ump.words_to_bytes(words)
    assert raw == struct.pack(f"<{len(words)}I", *words)
    assert ump.words_from_bytes(raw + tail, stats) == words
    assert stats.truncated == (1 if tail else 0)


# --------------------------------------------------------------------------------------------
# SysEx7 splitting and reassembly


@pytest.mark.parametrize(("n", "forms"), [
    (0, ["complete"]), (6, ["complete"]), (7, ["start", "end"]), (12, ["start", "end"]),
    (13, ["start", "continue", "end"]), (20, ["start", "continue", "continue", "end"]),
])
def test_sysex7_split_forms(n, forms):
    packets = [one(w) for w in ump.sysex7_packets(bytes(i % 128 for i in range(n)))]
    assert [p.kind.removeprefix("sysex7_") for p in packets] == forms
    assert all(len(p.data) == 6 for p in packets[:-1])
    assert b"".join(p.data for p in packets) == bytes(i % 128 for i in range(n))


def test_sysex7_split_strips_f0_f7():
    assert ump.sysex7_packets(b"\xf0\x7e\x7f\x06\x01\xf7") == ump.sysex7_packets(
        b"\x7e\x7f\x06\x01")


@given(st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)), grp)
def test_sysex7_split_then_reassemble(payload, g):
    r = SysEx7Reassembler()
    out = [r.feed(one(w)) for w in ump.sysex7_packets(payload, group=g)]
    assert out[-1] == payload
    assert all(x is None for x in out[:-1])
    assert r.stats == UmpStats()


def test_reassembler_keeps_groups_apart():
    r = SysEx7Reassembler()
    a = ump.sysex7_packets(bytes(range(10)), group=1)
    b = ump.sysex7_packets(bytes(range(50, 62)), group=2)
    results = [r.feed(one(w)) for pair in zip(a, b, strict=True) for w in pair]
    assert [x for x in results if x is not None] == [bytes(range(10)), bytes(range(50, 62))]


def test_reassembler_drops_and_counts_overflow_without_growing():
    r = SysEx7Reassembler(max_bytes=10)
    packets = [one(w) for w in ump.sysex7_packets(bytes(30))]
    results = []
    for p in packets:
        results.append(r.feed(p))
        assert r.pending(0) <= 10
    assert results == [None] * len(packets)
    assert r.stats.sysex_overflow == 1
    assert r.stats.sysex_unexpected == 0
    # the next message is fine again
    assert [r.feed(one(w)) for w in ump.sysex7_packets(bytes(8))][-1] == bytes(8)
    # a complete packet over the limit is dropped too
    small = SysEx7Reassembler(max_bytes=3)
    assert small.feed(one(ump.sysex7_packet(0, bytes(4)))) is None
    assert small.stats.sysex_overflow == 1


def test_reassembler_counts_continue_or_end_without_start():
    r = SysEx7Reassembler()
    assert r.feed(one(ump.sysex7_packet(ump.SYSEX_CONTINUE, b"\x01"))) is None
    assert r.feed(one(ump.sysex7_packet(ump.SYSEX_END, b"\x01"))) is None
    assert r.stats.sysex_unexpected == 2


def test_reassembler_counts_a_start_that_cuts_off_a_message():
    r = SysEx7Reassembler()
    r.feed(one(ump.sysex7_packet(ump.SYSEX_START, b"\x01")))
    assert r.feed(one(ump.sysex7_packet(ump.SYSEX_COMPLETE, b"\x02"))) == b"\x02"
    assert r.stats.sysex_unexpected == 1
    assert r.pending(0) == 0


def test_reassembler_rejects_other_packets():
    with pytest.raises(ValueError, match="not a SysEx7 packet"):
        SysEx7Reassembler().feed(one(ump.midi2_note_on(0, 1, 1)))


@given(st.binary(max_size=60), u8)
def test_sysex8_split_rejoins(payload, stream):
    packets = [one(w) for w in ump.sysex8_packets(payload, stream)]
    assert all(p.stream_id == stream for p in packets)
    assert b"".join(p.data for p in packets) == payload
    kinds = [p.kind for p in packets]
    if len(payload) <= 13:
        assert kinds == ["sysex8_complete"]
    else:
        assert kinds[0] == "sysex8_start"
        assert kinds[-1] == "sysex8_end"
        assert set(kinds[1:-1]) <= {"sysex8_continue"}
