"""MPE helpers (bridge.midi.mpe): MCM bytes, zone layout rules, the note allocator, the zone
tracker, a sender -> tracker round trip, and hypothesis fuzzing of the tracker."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.midi.mpe import (
    BEND_CENTER,
    MpeSender,
    MpeZoneTracker,
    UnknownNoteError,
    Zone,
    ZoneLayout,
    bend_to_semitones,
    mcm_messages,
    pitch_bend_range_messages,
    semitones_to_bend,
)


def hexes(text: str) -> list[bytes]:
    """'B0 64 06 B0 65 00' -> [b'\\xb0\\x64\\x06', b'\\xb0\\x65\\x00'] (3-byte CC messages)."""
    raw = bytes.fromhex(text)
    return [raw[i : i + 3] for i in range(0, len(raw), 3)]


def tracker_with(*batches: list[bytes]) -> MpeZoneTracker:
    tracker = MpeZoneTracker()
    for batch in batches:
        tracker.feed_all(batch)
    return tracker


def channel_of(msg: bytes) -> int:
    return msg[0] & 0x0F


def kind_of(msg: bytes) -> int:
    return msg[0] & 0xF0


# ---------------------------------------------------------------------------------------------
# Configuration messages


def test_mcm_lower_15_matches_spec_layout():
    # RP-053 2.1.1: [Bn 64 06] [Bn 65 00] [Bn 06 mm], n = 0 for the lower zone; then RPN null.
    assert mcm_messages("lower", 15) == hexes("B0 64 06 B0 65 00 B0 06 0F B0 65 7F B0 64 7F")
    assert mcm_messages("lower", 15, rpn_null=False) == hexes("B0 64 06 B0 65 00 B0 06 0F")


def test_mcm_upper_7_matches_spec_layout():
    # RP-053 2.1.2 example two, upper zone line (without its leading CC 121).
    assert mcm_messages("upper", 7, rpn_null=False) == hexes("BF 64 06 BF 65 00 BF 06 07")
    assert mcm_messages("upper", 7)[3:] == hexes("BF 65 7F BF 64 7F")


def test_mcm_rejects_bad_arguments():
    with pytest.raises(ValueError, match="zone"):
        mcm_messages("middle", 3)
    with pytest.raises(ValueError, match=r"0\.\.15"):
        mcm_messages("lower", 16)


def test_pitch_bend_range_messages_bytes():
    assert pitch_bend_range_messages(3, 12, 50) == hexes(
        "B3 65 00 B3 64 00 B3 06 0C B3 26 32 B3 65 7F B3 64 7F"
    )
    with pytest.raises(ValueError):
        pitch_bend_range_messages(16, 2)


# ---------------------------------------------------------------------------------------------
# Zones and layout


def test_zone_channels_and_defaults():
    lower = Zone("lower", 15)
    assert lower.manager_channel == 0
    assert list(lower.member_channels) == list(range(1, 16))
    assert (lower.member_bend_range, lower.manager_bend_range) == (48.0, 2.0)
    upper = Zone("upper", 4)
    assert upper.manager_channel == 15
    assert list(upper.member_channels) == [14, 13, 12, 11]
    off = Zone("upper", 0)
    assert not off.enabled and list(off.member_channels) == [] and not off.is_manager(15)


def test_layout_newest_mcm_shrinks_other_zone():
    layout = ZoneLayout().configure("lower", 15)
    layout = layout.configure("upper", 3)  # upper takes 12..15, lower keeps 1..11
    assert layout.upper.members == 3 and layout.lower.members == 11
    layout = layout.configure("lower", 15)  # lower takes channel 15 too: upper switched off
    assert layout.lower.members == 15 and not layout.upper.enabled
    layout = layout.configure("upper", 14).configure("lower", 0)
    assert layout.upper.members == 14 and not layout.lower.enabled
    with pytest.raises(ValueError, match="overlap"):
        ZoneLayout(Zone("lower", 8), Zone("upper", 7))


# ---------------------------------------------------------------------------------------------
# Tracker


def test_tracker_lower_zone_15():
    tracker = tracker_with(mcm_messages("lower", 15))
    assert tracker.mpe_enabled
    assert tracker.is_manager(0) and not tracker.is_member(0)
    assert all(tracker.is_member(ch) for ch in range(1, 16))
    assert tracker.zone_of(15) == Zone("lower", 15)
    assert tracker.bend_range(7) == 48.0 and tracker.bend_range(0) == 2.0


def test_tracker_upper_mcm_shrinks_lower_zone():
    tracker = tracker_with(mcm_messages("lower", 15), mcm_messages("upper", 3))
    assert tracker.zones.lower.members == 11
    assert [ch for ch in range(16) if tracker.is_member(ch)] == [*range(1, 12), 12, 13, 14]
    assert tracker.zone_of(11).kind == "lower"
    assert tracker.zone_of(12).kind == "upper" and tracker.is_manager(15)


def test_tracker_zone_off_with_zero_members():
    tracker = tracker_with(mcm_messages("lower", 5), mcm_messages("lower", 0))
    assert not tracker.mpe_enabled
    assert tracker.zone_of(0) is None and not tracker.is_manager(0) and not tracker.is_member(1)


def test_tracker_rpn0_on_manager_or_conventional_channel_changes_only_that_channel():
    tracker = tracker_with(mcm_messages("lower", 4))
    tracker.feed_all(pitch_bend_range_messages(0, 7))  # the manager
    tracker.feed_all(pitch_bend_range_messages(9, 12, 50))  # outside every zone
    assert tracker.bend_range(0) == 7.0
    assert tracker.bend_range(9) == 12.5
    assert [tracker.bend_range(ch) for ch in (1, 2, 3, 4)] == [48.0] * 4
    assert tracker.bend_range(10) == 2.0


def test_tracker_rpn0_on_a_member_sets_the_whole_zone():
    # RP-053 2.4: "A receiver must apply the last Pitch Bend Sensitivity message received on
    # any Member Channel to all Member Channels in the Zone."
    tracker = tracker_with(mcm_messages("lower", 4), mcm_messages("upper", 4))
    tracker.feed_all(pitch_bend_range_messages(2, 24))
    assert [tracker.bend_range(ch) for ch in (1, 2, 3, 4)] == [24.0] * 4
    assert tracker.bend_range(0) == 2.0 and tracker.bend_range(14) == 48.0


def test_tracker_member_ranges_reset_to_48_after_mcm():
    tracker = tracker_with(mcm_messages("lower", 4))
    tracker.feed_all(pitch_bend_range_messages(1, 24) + pitch_bend_range_messages(0, 12))
    assert tracker.bend_range(3) == 24.0 and tracker.bend_range(0) == 12.0
    tracker.feed_all(mcm_messages("lower", 6))
    assert [tracker.bend_range(ch) for ch in range(1, 7)] == [48.0] * 6
    assert tracker.bend_range(0) == 2.0


def test_tracker_channel_leaving_mpe_gets_default_range():
    tracker = tracker_with(pitch_bend_range_messages(9, 12))
    assert tracker.bend_range(9) == 12.0
    tracker.feed_all(mcm_messages("lower", 15) + mcm_messages("lower", 3))
    assert tracker.bend_range(9) == 2.0  # entered then left MPE control: reset (RP-053 2.1.4)


def test_tracker_mcm_needs_rpn_selection_on_the_same_channel():
    tracker = MpeZoneTracker()
    tracker.feed(b"\xb0\x65\x00")
    tracker.feed(b"\xb1\x64\x06")  # LSB on another channel: RPN on channel 0 incomplete
    tracker.feed(b"\xb0\x06\x05")
    assert not tracker.mpe_enabled and tracker.stats.orphan_data_entry == 1
    tracker.feed(b"\xb0\x64\x06")
    assert tracker.feed(b"\xb0\x06\x05") is True
    assert tracker.zones.lower.members == 5


def test_tracker_tolerates_garbage_and_counts_it():
    tracker = MpeZoneTracker()
    garbage = [
        b"",
        b"\x06\x05",  # no status byte
        b"\xb0\x06",  # short
        b"\xb0\x06\x05\x00",  # long
        b"\xb0\x86\x05",  # data byte with the top bit set
        b"\xf4",  # undefined system common
        "not bytes",
        None,
    ]
    for item in garbage:
        assert tracker.feed(item) is False  # type: ignore[arg-type]
    assert tracker.stats.malformed == len(garbage)

    tracker.feed(b"\xb0\x06\x05")  # data entry, nothing selected
    tracker.feed_all(hexes("B0 65 7F B0 64 7F B0 06 05"))  # after RPN null
    tracker.feed_all(hexes("B0 63 00 B0 62 06 B0 06 05"))  # NRPN 0/6 is not the MCM
    tracker.feed_all(hexes("B0 64 06 B0 65 00 B0 79 00 B0 06 05"))  # CC 121 nulls the RPN
    assert tracker.stats.orphan_data_entry == 4

    tracker.feed_all(hexes("B3 64 06 B3 65 00 B3 06 05"))  # MCM on channel 4: invalid
    tracker.feed_all(hexes("B0 64 06 B0 65 00 B0 06 10"))  # 16 members: not defined, ignored
    assert tracker.stats.mcm_wrong_channel == 1 and tracker.stats.mcm_out_of_range == 1
    assert not tracker.mpe_enabled and tracker.stats.mcm_applied == 0
    assert tracker.stats.ignored == len(garbage) + 4 + 2

    tracker.feed_all(pitch_bend_range_messages(5, 120))
    assert tracker.bend_range(5) == 96.0 and tracker.stats.bend_range_clamped == 1
    tracker.feed_all(pitch_bend_range_messages(5, 96, 50))  # 96.5: the cents push it over
    assert tracker.bend_range(5) == 96.0 and tracker.stats.bend_range_clamped == 2


def test_tracker_ignores_other_rpns_and_mcm_lsb():
    tracker = tracker_with(mcm_messages("lower", 3))
    tracker.feed_all(hexes("B0 64 06 B0 65 00 B0 26 09"))  # MCM LSB: unused by the spec
    tracker.feed_all(hexes("B1 65 00 B1 64 02 B1 06 40"))  # RPN 2 (coarse tune)
    assert tracker.zones.lower.members == 3 and tracker.bend_range(1) == 48.0
    assert tracker.stats.ignored == 0


# ---------------------------------------------------------------------------------------------
# Sender


def note_on_channel(messages: list[bytes]) -> int:
    (on,) = [m for m in messages if kind_of(m) == 0x90]
    return channel_of(on)


def test_overlapping_notes_get_different_member_channels():
    sender = MpeSender()
    channels = [note_on_channel(sender.note_on(n, 100)[1]) for n in (60, 64, 67)]
    assert channels == [1, 2, 3]


def test_lru_channel_order():
    sender = MpeSender("lower", 4)
    ids = {}
    for n in (60, 61, 62, 63):  # never-used channels come first, in order
        ids[n], msgs = sender.note_on(n, 90)
        assert note_on_channel(msgs) == n - 59
    sender.note_off(ids[62])  # channel 3 ends first
    sender.note_off(ids[60])  # then channel 1
    _, msgs = sender.note_on(70, 90)
    assert note_on_channel(msgs) == 3  # longest ago
    _, msgs = sender.note_on(71, 90)
    assert note_on_channel(msgs) == 1


def test_lru_upper_zone_uses_spec_member_order():
    sender = MpeSender("upper", 3)
    channels = [note_on_channel(sender.note_on(n, 90)[1]) for n in (60, 61)]
    assert channels == [14, 13]


def test_stealing_oldest_note_when_all_channels_busy():
    sender = MpeSender("lower", 3)
    first, msgs = sender.note_on(60, 100)
    first_channel = note_on_channel(msgs)
    for n in (62, 64):
        sender.note_on(n, 100)
    new_id, msgs = sender.note_on(67, 100)
    assert msgs[0] == bytes((0x80 | first_channel, 60, 0))  # the stolen note's Note Off first
    assert all(channel_of(m) == first_channel for m in msgs)
    assert note_on_channel(msgs) == first_channel
    assert sender.active_notes[new_id] == (first_channel, 67)
    with pytest.raises(UnknownNoteError, match=rf"note id {first} was stolen") as info:
        sender.bend(first, 1.0)
    assert info.value.stolen and isinstance(info.value, KeyError)


def test_unknown_and_ended_note_ids():
    sender = MpeSender()
    note_id, _ = sender.note_on(60, 100)
    sender.note_off(note_id)
    with pytest.raises(UnknownNoteError, match=rf"note id {note_id} is not sounding"):
        sender.note_off(note_id)
    with pytest.raises(KeyError):
        sender.pressure(999, 10)


def test_expression_only_on_the_notes_channel():
    sender = MpeSender("lower", 4)
    a, msgs = sender.note_on(60, 100)
    b, _ = sender.note_on(64, 100)
    ch = note_on_channel(msgs)
    bend = sender.bend(a, 2.0)
    assert bend == [bytes((0xE0 | ch, *divmod(semitones_to_bend(2.0, 48), 128)[::-1]))]
    assert sender.pressure(a, 90) == [bytes((0xD0 | ch, 90))]
    assert sender.timbre(a, 20) == [bytes((0xB0 | ch, 74, 20))]
    assert sender.timbre(b, 200) == [bytes((0xB2, 74, 127))]  # clamped, on b's own channel


def test_initial_expression_precedes_note_on():
    sender = MpeSender("lower", 15)
    _, msgs = sender.note_on(60, 56, bend=1.0, pressure=5, timbre=30)
    value = semitones_to_bend(1.0, 48)
    assert msgs == [
        bytes((0xE1, value & 0x7F, value >> 7)),
        bytes((0xB1, 74, 30)),
        bytes((0xD1, 5)),
        bytes((0x91, 60, 56)),
    ]


def test_note_off_zeroes_pressure_first_and_all_notes_off():
    sender = MpeSender("lower", 4)
    a, _ = sender.note_on(60, 100, pressure=40)
    assert sender.note_off(a, 30) == [b"\xd1\x00", b"\x81\x3c\x1e"]
    sender.note_on(62, 100)
    sender.note_on(64, 100)
    out = sender.all_notes_off()
    assert [kind_of(m) for m in out[:2]] == [0x80, 0x80]
    assert out[-1] == b"\xb0\x7b\x00" and sender.active_notes == {}


def test_sender_argument_checks():
    with pytest.raises(ValueError):
        MpeSender("lower", 0)
    sender = MpeSender()
    with pytest.raises(ValueError, match="velocity"):
        sender.note_on(60, 0)
    with pytest.raises(ValueError, match="note"):
        sender.note_on(128, 10)


# ---------------------------------------------------------------------------------------------
# Bend conversions


def test_bend_conversions():
    assert semitones_to_bend(0.0, 48) == BEND_CENTER
    assert semitones_to_bend(48.0, 48) == 16383 and semitones_to_bend(-48.0, 48) == 0
    assert semitones_to_bend(500.0, 48) == 16383 and semitones_to_bend(-500.0, 2) == 0
    assert semitones_to_bend(1.0, 2) == 8192 + 4096
    assert semitones_to_bend(3.0, 0) == BEND_CENTER
    assert bend_to_semitones(0, 48) == -48.0 and bend_to_semitones(8192 + 4096, 2) == 1.0
    with pytest.raises(ValueError):
        bend_to_semitones(16384, 48)


@given(st.floats(-96, 96), st.integers(1, 96))
def test_bend_round_trip_within_quantisation(semitones, rng):
    back = bend_to_semitones(semitones_to_bend(semitones, rng), rng)
    expected = max(-rng, min(rng, semitones))
    assert abs(back - expected) <= rng / 8192 + 1e-9


# ---------------------------------------------------------------------------------------------
# Round trip: sender -> tracker


@pytest.mark.parametrize(("zone", "members", "rng"), [("lower", 15, 48), ("upper", 5, 12)])
def test_sender_stream_understood_by_tracker(zone, members, rng):
    sender = MpeSender(zone, members, member_bend_range=rng, manager_bend_range=3)
    stream = sender.configure()
    sent: dict[int, float] = {}  # channel -> last bend sent, semitones
    for i, (note, bend) in enumerate([(60, 0.25), (64, -1.5), (67, 7.0), (72, -0.01)]):
        note_id, msgs = sender.note_on(note, 100, bend=bend)
        stream += msgs
        sent[note_on_channel(msgs)] = bend
        if i % 2:
            stream += sender.bend(note_id, bend * 2)
            sent[note_on_channel(msgs)] = bend * 2

    tracker = MpeZoneTracker()
    received: dict[int, float] = {}
    for msg in stream:
        tracker.feed(msg)
        if kind_of(msg) == 0xE0:
            ch = channel_of(msg)
            assert tracker.is_member(ch)
            value = msg[1] | msg[2] << 7
            received[ch] = bend_to_semitones(value, tracker.bend_range(ch))

    assert tracker.zones.zone(zone).members == members
    assert tracker.zone_of(sender.zone.manager_channel).kind == zone
    assert tracker.bend_range(sender.zone.manager_channel) == 3.0
    assert received.keys() == sent.keys()
    for ch, bend in sent.items():
        assert received[ch] == pytest.approx(bend, abs=rng / 8192)
    assert tracker.stats.ignored == 0


# ---------------------------------------------------------------------------------------------
# Fuzzing


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONTROLLERS = st.sampled_from([6, 38, 98, 99, 100, 101, 121, 74, 0])
DATA = st.one_of(st.sampled_from([0, 1, 6, 14, 15, 16, 96, 127]), st.integers(0, 127))
CC = st.builds(lambda ch, c, v: bytes((0xB0 | ch, c, v)), st.sampled_from([0, 1, 14, 15]),
               CONTROLLERS, DATA)


def check_invariants(tracker: MpeZoneTracker) -> None:
    lower, upper = tracker.zones.lower, tracker.zones.upper
    assert set(lower.member_channels).isdisjoint(upper.member_channels)
    if lower.enabled and upper.enabled:
        assert lower.members + upper.members <= 14
    for ch in range(16):
        assert 0 <= tracker.bend_range(ch) <= 96


@FUZZ
@given(st.lists(st.binary(max_size=6), max_size=40))
def test_fuzz_random_bytes_never_raise(messages):
    tracker = MpeZoneTracker()
    for msg in messages:
        tracker.feed(msg)
    assert tracker.stats.messages == len(messages)
    check_invariants(tracker)


@FUZZ
@given(st.lists(CC, max_size=60))
def test_fuzz_control_change_streams_keep_layout_valid(messages):
    tracker = MpeZoneTracker()
    for msg in messages:
        tracker.feed(msg)
    assert tracker.stats.malformed == 0
    check_invariants(tracker)


# ---- a device process: MIDI 2.0 per-note pitch bend becomes MPE ---------------------------


def test_ump_per_note_pitch_bend_moves_each_held_voice_of_a_device_process_on_its_own(spawn):
    """A MIDI 2.0 host (UMP only) sets up an MPE lower zone (RPN 6), holds two notes on
    member channels 1 and 2, then bends each note with MIDI 2.0 per-note pitch bend (UMP
    message type 4): the device's translator turns each into its member channel's bend
    (MPE), so in the recorded audio each voice's pitch moves on its own, by the amount
    asked at the members' 48-semitone range."""
    from helpers_ipc import read_blocks
    from proto_helpers import tone_amplitude

    from bridge.midi import ump
    from bridge.midi.mpe import DEFAULT_MEMBER_BEND_RANGE
    from bridge.transport import Host, cmd

    rate, block, seg = 48000, 256, 60  # 60 blocks (0.32 s) per stage
    up, down = 2, -3  # semitones asked of note 60 (channel 1), then of note 64 (channel 2)

    def per_note_bend(channel: int, note: int, semitones: int) -> list:
        value14 = semitones_to_bend(semitones, DEFAULT_MEMBER_BEND_RANGE)
        return cmd.ump(list(ump.midi2_per_note_pitch_bend(channel, note, value14 << 18)))

    stages = {
        0: [*cmd.ump(list(ump.midi2_rpn(0, 0, 6, 15 << 25))),  # MCM: lower zone, 15 members
            *cmd.ump([*ump.midi2_note_on(1, 60, 0xFFFF), *ump.midi2_note_on(2, 64, 0xFFFF)])],
        seg: per_note_bend(1, 60, up),
        2 * seg: per_note_bend(2, 64, down),
    }
    dev = spawn.device("--channels", "1", "--blocksize", str(block), "--fixed-format",
                       device_id="Mpe")
    with Host() as host:
        host.set_local_buffer_info(rate, block)
        host.connect(dev.id)

        def feed(k: int) -> None:
            for m in stages.get(k, []):
                assert host.send_command(m)

        rec = read_blocks(host, 3 * seg, block, 1, feed=feed)[0]
        assert host.counters()["bad_messages"] == 0
    hz = {n: 440.0 * 2 ** ((n - 69) / 12) for n in (60, 60 + up, 64, 64 + down)}
    full = 0.25  # velocity 0xFFFF -> 127: the synth's full amplitude

    def heard(stage: int) -> dict[float, float]:
        # skip the first 10 blocks of a stage: the bend lands somewhere in its first block
        part = rec[(stage * seg + 10) * block:(stage + 1) * seg * block]
        return {n: tone_amplitude(part, rate, f) / full for n, f in hz.items()}

    expected = [{60: 1, 64: 1}, {60 + up: 1, 64: 1}, {60 + up: 1, 64 + down: 1}]
    for stage, want in enumerate(expected):
        got = heard(stage)
        for note, level in got.items():
            if note in want:
                assert level > 0.8, f"stage {stage}: note {note} missing: {got}"
            else:
                assert level < 0.1, f"stage {stage}: note {note} should not sound: {got}"
