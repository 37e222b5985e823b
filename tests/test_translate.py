"""MIDI 2.0 <-> MIDI 1.0 translation: the scaling tables of M2-115-U and the Default
Translation rules of M2-104-UM Appendix D, with MIDI 1.0 bytes cross-checked by mido."""

from __future__ import annotations

import mido
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.midi import ump
from bridge.midi.translate import (
    Midi1ToUmp,
    TranslateStats,
    Translator,
    midi1_to_ump,
    scale_down,
    scale_up,
    ump_to_midi1,
    zero_extend,
)

# --------------------------------------------------------------------------------------------
# Scaling: the numeric examples of M2-115-U "MIDI 2.0 Bit Scaling and Resolution" v1.0.2

TABLE_5_UP_7_TO_16 = [(0x00, 0x0000), (0x05, 0x0A00), (0x1E, 0x3C00), (0x20, 0x4000),
                      (0x40, 0x8000), (0x46, 0x8C30), (0x60, 0xC104), (0x78, 0xF1C7),
                      (0x7F, 0xFFFF)]
TABLE_6_UP_7_TO_32 = [(0x00, 0x00000000), (0x05, 0x0A000000), (0x1E, 0x3C000000),
                      (0x20, 0x40000000), (0x40, 0x80000000), (0x46, 0x8C30C30C),
                      (0x60, 0xC1041041), (0x78, 0xF1C71C71), (0x7F, 0xFFFFFFFF)]
TABLE_7_UP_16_TO_32 = [(0x0000, 0x00000000), (0x0005, 0x00050000), (0x001E, 0x001E0000),
                       (0x4000, 0x40000000), (0x8000, 0x80000000), (0x9C40, 0x9C403880),
                       (0xC000, 0xC0008001), (0xFDE8, 0xFDE8FBD1), (0xFFFF, 0xFFFFFFFF)]
TABLE_8_DOWN_16_TO_7 = [(0x1400, 0x0A), (0x8000, 0x40), (0xAEBA, 0x57), (0xFFFF, 0x7F)]
TABLE_9_ZERO_EXTEND_7_TO_16 = [(0x0A, 0x1400), (0x40, 0x8000), (0x57, 0xAE00), (0x7F, 0xFE00)]


@pytest.mark.parametrize(("src", "dst", "table"), [
    (7, 16, TABLE_5_UP_7_TO_16), (7, 32, TABLE_6_UP_7_TO_32), (16, 32, TABLE_7_UP_16_TO_32)])
def test_scale_up_matches_m2_115_tables(src, dst, table):
    assert [(v, scale_up(v, src, dst)) for v, _ in table] == table


def test_scale_down_matches_m2_115_table_8():
    assert [(v, scale_down(v, 16, 7)) for v, _ in TABLE_8_DOWN_16_TO_7] == TABLE_8_DOWN_16_TO_7


def test_zero_extension_matches_m2_115_table_9():
    assert [(v, zero_extend(v, 7, 16)) for v, _ in TABLE_9_ZERO_EXTEND_7_TO_16] == (
        TABLE_9_ZERO_EXTEND_7_TO_16)


def test_scale_up_centre_and_one_bit_rules():
    # M2-115-U 3.2: centre (0x40, 0x2000) scales to centre; 3.3: a 1-bit 1 scales to all ones
    assert scale_up(0x2000, 14, 32) == 0x80000000
    assert scale_up(0x3FFF, 14, 32) == 0xFFFFFFFF
    assert scale_up(1, 1, 16) == 0xFFFF
    assert scale_up(0, 1, 16) == 0


@given(st.sampled_from([(7, 16), (7, 32), (14, 32), (16, 32), (2, 7), (3, 16), (12, 32)]),
       st.data())
def test_scale_down_undoes_scale_up_and_up_is_monotonic(bits, data):
    src, dst = bits
    v = data.draw(st.integers(0, (1 << src) - 1))
    up = scale_up(v, src, dst)
    assert scale_down(up, dst, src) == v  # M2-115-U 3.2 core rule
    if v:
        assert scale_up(v - 1, src, dst) < up


def test_scaling_rejects_out_of_range():
    with pytest.raises(ValueError, match="value 128 out of range"):
        scale_up(128, 7, 16)
    with pytest.raises(ValueError, match="cannot scale down"):
        scale_down(1, 7, 16)


# --------------------------------------------------------------------------------------------
# MIDI 2.0 -> MIDI 1.0 (M2-104-UM D.2)


def down(*packets: tuple[int, ...], **kw) -> list[bytes]:
    words = [w for p in packets for w in p]
    return ump_to_midi1(words, Translator(**kw))


def as_mido(msgs: list[bytes]) -> list[mido.Message]:
    return [mido.Message.from_bytes(m) for m in msgs]


def test_note_on_velocity_scales_down_and_never_to_zero():
    # D.2: if the translated velocity is 0, it is replaced with 1
    msgs = down(ump.midi2_note_on(1, 60, 0xFFFF), ump.midi2_note_on(1, 60, 0x0001),
                ump.midi2_note_on(1, 60, 0), ump.midi2_note_on(1, 60, 0x8000))
    assert msgs == [b"\x91\x3c\x7f", b"\x91\x3c\x01", b"\x91\x3c\x01", b"\x91\x3c\x40"]
    m = as_mido(msgs)[1]
    assert (m.type, m.channel, m.note, m.velocity) == ("note_on", 1, 60, 1)


def test_note_off_keeps_zero_velocity():
    assert down(ump.midi2_note_off(0, 60, 0)) == [b"\x80\x3c\x00"]
    assert as_mido(down(ump.midi2_note_off(2, 61, 0xFFFF)))[0] == mido.Message(
        "note_off", channel=2, note=61, velocity=127)


def test_pressure_and_control_change_scale_32_to_7():
    msgs = down(ump.midi2_poly_pressure(0, 60, 0x80000000), ump.midi2_control_change(0, 7,
                                                                                   0xFFFFFFFF),
                ump.midi2_channel_pressure(3, 0x40000000))
    assert as_mido(msgs) == [mido.Message("polytouch", note=60, value=64),
                             mido.Message("control_change", control=7, value=127),
                             mido.Message("aftertouch", channel=3, value=32)]


def test_pitch_bend_scales_32_to_14_centre_to_centre():
    msgs = down(ump.midi2_pitch_bend(0, 0x80000000), ump.midi2_pitch_bend(0, 0xFFFFFFFF),
                ump.midi2_pitch_bend(0, 0))
    assert msgs == [b"\xe0\x00\x40", b"\xe0\x7f\x7f", b"\xe0\x00\x00"]
    assert [m.pitch for m in as_mido(msgs)] == [0, 8191, -8192]


def test_rpn_becomes_four_control_changes_every_time():
    # D.2: each registered/assignable controller generates four MIDI 1.0 messages.
    # 12 semitones of pitch bend sensitivity, zero-extended: 0x18000000 -> CC6 12, CC38 0
    tr = Translator()
    rpn = ump.midi2_rpn(0, 0, 0, 0x18000000)
    expected = [b"\xb0\x65\x00", b"\xb0\x64\x00", b"\xb0\x06\x0c", b"\xb0\x26\x00"]
    assert ump_to_midi1(list(rpn), tr) == expected
    assert ump_to_midi1(list(rpn), tr) == expected  # not shortened the second time


def test_nrpn_uses_99_98():
    msgs = down(ump.midi2_nrpn(5, 0x21, 0x09, 0xFFFFFFFF))
    assert [(m.channel, m.control, m.value) for m in as_mido(msgs)] == [
        (5, 99, 0x21), (5, 98, 0x09), (5, 6, 127), (5, 38, 127)]


def test_program_change_with_bank_is_bank_select_then_program():
    assert down(ump.midi2_program_change(0, 5, bank=(1, 2))) == [
        b"\xb0\x00\x01", b"\xb0\x20\x02", b"\xc0\x05"]
    assert down(ump.midi2_program_change(4, 5)) == [b"\xc4\x05"]


def test_no_midi1_equivalent_is_dropped_and_counted():
    tr = Translator()
    words = [*ump.midi2_relative_rpn(0, 0, 0, 1), *ump.midi2_relative_nrpn(0, 0, 0, -1),
             *ump.midi2_registered_per_note_controller(0, 60, 74, 1),
             *ump.midi2_assignable_per_note_controller(0, 60, 74, 1),
             *ump.midi2_per_note_management(0, 60, detach=True),
             *ump.midi2_per_note_pitch_bend(0, 60, 0x80000000),
             *ump.jr_timestamp(5), *ump.sysex8_packet(0, 0, b"\x01")]
    assert ump_to_midi1(words, tr) == []
    assert dict(tr.stats.dropped) == {
        "relative_rpn": 1, "relative_nrpn": 1, "registered_per_note_controller": 1,
        "assignable_per_note_controller": 1, "per_note_management": 1,
        "per_note_pitch_bend": 1, "jr_timestamp": 1, "sysex8_complete": 1}
    assert tr.stats.total_dropped == 8


def test_mpe_per_note_messages_go_to_the_note_channel():
    tr = Translator(mpe=True)
    words = [*ump.midi2_per_note_pitch_bend(3, 60, 0xFFFFFFFF),
             *ump.midi2_registered_per_note_controller(4, 60, 74, 0x80000000),
             *ump.midi2_assignable_per_note_controller(5, 60, 74, 0xFFFFFFFF),
             *ump.midi2_poly_pressure(6, 60, 0xFFFFFFFF),
             *ump.midi2_registered_per_note_controller(4, 60, 1, 0x80000000)]
    assert as_mido(ump_to_midi1(words, tr)) == [
        mido.Message("pitchwheel", channel=3, pitch=8191),
        mido.Message("control_change", channel=4, control=74, value=64),
        mido.Message("control_change", channel=5, control=74, value=127),
        mido.Message("aftertouch", channel=6, value=127)]
    assert dict(tr.stats.dropped) == {"registered_per_note_controller": 1}


def test_midi1_channel_voice_passes_straight_through_with_its_group():
    tr = Translator()
    assert tr.translate([0x29913C40, 0x2FC50700]) == [(9, b"\x91\x3c\x40"), (15, b"\xc5\x07")]


def test_group_filter():
    words = [*ump.midi1_note_on(0, 1, 2, group=1), *ump.midi1_note_on(0, 3, 4, group=2)]
    assert ump_to_midi1(words, group=2) == [b"\x90\x03\x04"]


def test_system_messages_become_their_bytes():
    words = [*ump.system(0xF8), *ump.song_position(0x2001), *ump.mtc_quarter_frame(0x35),
             *ump.song_select(9), *ump.tune_request(), *ump.system(0xFF)]
    msgs = down(tuple(words))
    assert msgs == [b"\xf8", b"\xf2\x01\x40", b"\xf1\x35", b"\xf3\x09", b"\xf6", b"\xff"]
    assert [m.type for m in as_mido(msgs)] == [
        "clock", "songpos", "quarter_frame", "song_select", "tune_request", "reset"]
    assert as_mido(msgs)[1].pos == 0x2001


def test_sysex7_is_reassembled_into_one_message():
    payload = bytes(range(40))
    tr = Translator()
    msgs = []
    for packet in ump.sysex7_packets(payload, group=3):
        msgs += tr.translate(packet)
    assert msgs == [(3, b"\xf0" + payload + b"\xf7")]
    assert as_mido([msgs[0][1]])[0].data == tuple(payload)


def test_sysex_over_the_limit_is_dropped_and_counted():
    tr = Translator(sysex_limit=16)
    words = [w for p in ump.sysex7_packets(bytes(40)) for w in p]
    assert ump_to_midi1(words, tr) == []
    assert tr.stats.ump.sysex_overflow == 1
    assert ump_to_midi1(list(ump.sysex7_packet(0, b"\x01\x02")), tr) == [b"\xf0\x01\x02\xf7"]


def test_translator_accepts_a_decoded_packet_and_counts_bad_words():
    tr = Translator()
    assert tr.translate(ump.decode(ump.midi2_note_on(0, 60, 0xFFFF))) == [(0, b"\x90\x3c\x7f")]
    assert ump_to_midi1([0x40703C00, 0, 0xD0000000, 0, 0, 0, 0x4090], tr) == []
    assert (tr.stats.ump.invalid, tr.stats.ump.skipped_unknown, tr.stats.ump.truncated) == (
        1, 1, 0)
    assert ump_to_midi1([0x40903C00], tr) == []
    assert tr.stats.ump.truncated == 1


# --------------------------------------------------------------------------------------------
# MIDI 1.0 -> UMP, protocol 1 (MT 0x2 / 0x1 / 0x3)


def test_protocol1_channel_voice_and_system():
    data = bytes.fromhex("913c40" "c507" "e00040" "f8" "f20140" "f6")
    assert midi1_to_ump(data, group=9) == [
        (0x29913C40,), (0x29C50700,), (0x29E00040,), (0x19F80000,), (0x19F20140,),
        (0x19F60000,)]


def test_running_status_and_interleaved_realtime():
    # note on, running status note on, a clock in the middle of the third message
    data = bytes.fromhex("903c40" "3e41" "40" "f8" "42")
    assert midi1_to_ump(data) == [ump.midi1_note_on(0, 60, 0x40), ump.midi1_note_on(0, 62, 0x41),
                                  ump.system(0xF8), ump.midi1_note_on(0, 64, 0x42)]


def test_sysex_becomes_sysex7_packets_even_with_a_clock_inside():
    payload = bytes(range(1, 15))
    data = b"\xf0" + payload[:5] + b"\xf8" + payload[5:] + b"\xf7"
    packets = midi1_to_ump(data, group=4)
    assert packets[0] == ump.system(0xF8, group=4)
    assert packets[1:] == ump.sysex7_packets(payload, group=4)


def test_protocol1_junk_is_counted():
    stats = TranslateStats()
    data = bytes.fromhex("3c" "f4" "9040" "b0" "f0 01 02" "903c40" "f0 7e")
    packets = midi1_to_ump(data, stats=stats)
    assert packets == [ump.midi1_note_on(0, 60, 0x40)]
    assert dict(stats.dropped) == {"stray_data": 1, "undefined_status": 1, "incomplete": 3,
                                   "unterminated_sysex": 1}


def test_bad_arguments():
    with pytest.raises(ValueError, match="protocol 3"):
        midi1_to_ump(b"", protocol=3)
    with pytest.raises(ValueError, match="group 16"):
        midi1_to_ump(b"", group=16)


# --------------------------------------------------------------------------------------------
# MIDI 1.0 -> UMP, protocol 2 (M2-104-UM D.3)


def test_protocol2_notes_scale_7_to_16_and_velocity_zero_is_note_off():
    data = bytes.fromhex("913c7f" "813c40" "913c00")
    assert midi1_to_ump(data, protocol=2) == [
        (0x40913C00, 0xFFFF0000), (0x40813C00, 0x80000000), (0x40813C00, 0x00000000)]


def test_protocol2_values_use_min_centre_max():
    data = bytes.fromhex("b00746" "a03c40" "d07f" "e00040" "e07f7f" "c005")
    assert midi1_to_ump(data, protocol=2) == [
        (0x40B00700, 0x8C30C30C),  # M2-115-U table 6: 0x46 -> 0x8C30C30C
        (0x40A03C00, 0x80000000), (0x40D00000, 0xFFFFFFFF),
        (0x40E00000, 0x80000000), (0x40E00000, 0xFFFFFFFF),
        (0x40C00000, 0x05000000)]


def test_protocol2_keeps_system_and_sysex_as_is():
    assert midi1_to_ump(b"\xfa\xf0\x01\xf7", protocol=2, group=1) == [
        ump.system(0xFA, group=1), ump.sysex7_packet(0, b"\x01", group=1)]


def test_stateful_rpn_is_held_until_data_entry_lsb():
    t = Midi1ToUmp()
    assert t.feed(bytes.fromhex("b06500" "b06400" "b0060c")) == []
    assert t.feed(bytes.fromhex("b02600")) == [(0x40200000, 0x18000000)]  # zero-extended
    # back down again: pitch bend sensitivity 12 survives exactly
    assert down((0x40200000, 0x18000000))[2:] == [b"\xb0\x06\x0c", b"\xb0\x26\x00"]


def test_stateful_rpn_index_below_32_is_zero_extended_above_centre_too():
    # M2-115-U 4.1: RPN index 0-31 use zero extension, so 127 semitones (14-bit 0x3F80) is
    # 0xFE000000 exactly, where Min-Center-Max would add noise in the low bits
    t = Midi1ToUmp()
    assert t.feed(bytes.fromhex("b06500" "b06400" "b0067f" "b02600")) == [
        (0x40200000, 0xFE000000)]
    assert t.feed(bytes.fromhex("b06401" "b0267f")) == [(0x40200001, 0xFFFC0000)]


def test_stateful_nrpn_and_rpn_above_31_stretch():
    t = Midi1ToUmp()
    assert t.feed(bytes.fromhex("b06321" "b06209" "b0067f" "b0267f")) == [
        (0x40302109, 0xFFFFFFFF)]
    assert t.feed(bytes.fromhex("b16500" "b16420" "b10640" "b12600")) == [
        (0x40210020, 0x80000000)]


def test_stateful_data_entry_without_parameter_or_null_rpn_is_dropped():
    t = Midi1ToUmp()
    assert t.feed(bytes.fromhex("b00601" "b02600")) == []
    assert t.feed(bytes.fromhex("b0657f" "b0647f" "b00601" "b02600")) == []
    assert t.stats.dropped["data_entry_without_parameter"] == 2


def test_stateful_bank_select_travels_with_program_change():
    t = Midi1ToUmp()
    assert t.feed(bytes.fromhex("b00001" "b02002")) == []  # bank select alone: nothing
    assert t.feed(bytes.fromhex("c005")) == [(0x40C00001, 0x05000102)]
    assert t.feed(bytes.fromhex("c105")) == [(0x40C10000, 0x05000000)]  # no bank on channel 1


def test_stateful_increment_decrement_are_plain_control_changes():
    t = Midi1ToUmp()
    assert t.feed(bytes.fromhex("b06000" "b06100")) == [
        (0x40B06000, 0), (0x40B06100, 0)]


def test_stateful_protocol1_is_one_to_one():
    t = Midi1ToUmp(group=2, protocol=1)
    assert t.feed(bytes.fromhex("b06500")) == [ump.midi1_control_change(0, 101, 0, group=2)]


# --------------------------------------------------------------------------------------------
# Round trips


channel_voice = st.one_of(
    st.tuples(st.sampled_from([0x80, 0x90, 0xA0, 0xB0, 0xE0]), st.integers(0, 15),
              st.integers(0, 127), st.integers(0, 127)).map(
        lambda t: bytes((t[0] | t[1], t[2], t[3]))),
    st.tuples(st.sampled_from([0xC0, 0xD0]), st.integers(0, 15), st.integers(0, 127)).map(
        lambda t: bytes((t[0] | t[1], t[2]))),
)


def _normal(msg: bytes) -> bytes:
    """A note on with velocity 0 is a note off (MIDI 1.0 convention, D.3 translation)."""
    if msg[0] >> 4 == 0x9 and msg[2] == 0:
        return bytes((0x80 | (msg[0] & 0xF), msg[1], 0))
    return msg


@given(st.lists(channel_voice, max_size=20))
def test_midi1_to_midi2_to_midi1_yields_the_original(msgs):
    # D.1: translating MIDI 1.0 -> MIDI 2.0 -> MIDI 1.0 yields the input
    data = b"".join(msgs)
    packets = midi1_to_ump(data, protocol=2)
    assert all(p[0] >> 28 == 4 for p in packets)
    back = ump_to_midi1([w for p in packets for w in p])
    assert back == [_normal(m) for m in msgs]


@given(st.lists(channel_voice, max_size=20), st.integers(0, 15))
def test_midi1_through_protocol1_ump_is_unchanged(msgs, group):
    packets = midi1_to_ump(b"".join(msgs), group=group)
    tr = Translator()
    assert tr.translate([w for p in packets for w in p]) == [(group, m) for m in msgs]


@given(st.binary(max_size=100))
def test_fuzz_midi1_bytes_never_raise_and_output_decodes(data):
    stats = TranslateStats()
    for protocol in (1, 2):
        packets = midi1_to_ump(data, protocol=protocol, stats=stats)
        for p in packets:
            ump.decode(p)
    t = Midi1ToUmp()
    for p in t.feed(data):
        ump.decode(p)


@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=40), st.booleans())
def test_fuzz_ump_words_translate_to_valid_midi1(words, mpe):
    tr = Translator(mpe=mpe)
    for msg in ump_to_midi1(words, tr):
        assert msg[0] >= 0x80 and all(b < 0x80 for b in msg[1:-1])
        mido.Message.from_bytes(msg)  # raises on anything that is not one MIDI 1.0 message
