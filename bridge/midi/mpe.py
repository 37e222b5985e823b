"""MIDI Polyphonic Expression (MPE) helpers: zones, configuration messages, a sender and a tracker.

MPE (MMA/AMEI RP-053, "MIDI Polyphonic Expression" v1.0) gives every sounding note its own MIDI
channel so that pitch bend, channel pressure and CC 74 can shape each note separately. This module
holds the pieces a bridge needs on either side of a MIDI 1.0 link, as pure functions and small
state machines (standard library only, no I/O):

* `Zone` / `ZoneLayout`: the lower and upper zones and the spec's no-overlap rule.
* `mcm_messages` / `pitch_bend_range_messages`: the MPE Configuration Message (RPN 6) and Pitch
  Bend Sensitivity (RPN 0) as raw bytes.
* `MpeSender`: host side; allocates member channels to notes and emits their messages.
* `MpeZoneTracker`: device side; follows MCM and RPN 0 in an incoming stream and answers which
  channels are MPE members or managers and what bend range each has.
* `bend_to_semitones` / `semitones_to_bend`: 14-bit pitch bend conversions used by both sides.

MIDI messages are plain `bytes`, one complete MIDI 1.0 message each (no running status).
Channels are 0-based indices 0..15 throughout: MPE's "channel 1" (the lower zone's manager) is
index 0 and "channel 16" (the upper zone's manager) is index 15.

Spec rules applied (RP-053 v1.0 section numbers):

* 2.1.1: MCM is ``[Bn 64 06] [Bn 65 00] [Bn 06 mm]``; n = 0 is the lower zone, n = F the upper,
  any other channel is invalid and ignored; mm = 0 turns the zone off, 1..F sets its member count;
  the Data Entry LSB is not used. A channel belongs to one zone at a time: the most recent MCM
  takes precedence, even if that deactivates the other zone.
* 2.1.4: channels entering or leaving MPE control return to default values (here: bend range 2).
* 2.4: on an MCM the receiver sets the manager's bend range to 2 and the members' to 48; RPN 0 on
  the manager sets the manager's range; RPN 0 on any member sets the range of every member of the
  zone (members of one zone may not differ); senders send it to every member channel.
* 3.2: a new note goes to an unoccupied channel, the one with the oldest last Note Off first.
* 3.3.1 / 3.3.4: a note's initial pitch bend, CC 74 and channel pressure precede its Note On, and
  pressure is brought to zero before a Note Off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = [
    "BEND_CENTER",
    "BEND_MAX",
    "DEFAULT_MANAGER_BEND_RANGE",
    "DEFAULT_MEMBER_BEND_RANGE",
    "MAX_BEND_RANGE",
    "MpeSender",
    "MpeZoneTracker",
    "TrackerStats",
    "UnknownNoteError",
    "Zone",
    "ZoneKind",
    "ZoneLayout",
    "bend_to_semitones",
    "mcm_messages",
    "pitch_bend_range_messages",
    "semitones_to_bend",
]

ZoneKind = Literal["lower", "upper"]

BEND_CENTER = 8192
BEND_MAX = 16383
DEFAULT_MEMBER_BEND_RANGE = 48.0  # RP-053 2.4: member channels after an MCM
DEFAULT_MANAGER_BEND_RANGE = 2.0  # RP-053 2.4: manager channel after an MCM
CONVENTIONAL_BEND_RANGE = 2.0  # MIDI 1.0 default for channels outside any zone
MAX_BEND_RANGE = 96.0  # RP-053 1.2 / 2.4: ranges run from 0 to +-96 semitones

# Control change numbers used here.
_CC_DATA_MSB = 6
_CC_DATA_LSB = 38
_CC_TIMBRE = 74
_CC_NRPN_LSB = 98
_CC_NRPN_MSB = 99
_CC_RPN_LSB = 100
_CC_RPN_MSB = 101
_CC_RESET_ALL = 121
_CC_ALL_NOTES_OFF = 123
# The only controllers that can change what MpeZoneTracker knows: a stream may skip feeding it
# every other message (a dense stream's control changes are mostly not these).
TRACKED_CONTROLLERS = frozenset({_CC_RPN_MSB, _CC_RPN_LSB, _CC_NRPN_MSB, _CC_NRPN_LSB,
                                 _CC_RESET_ALL, _CC_DATA_MSB, _CC_DATA_LSB})
_RPN_BEND_RANGE = (0, 0)
_RPN_MCM = (0, 6)
_NULL = 127

_MANAGER = {"lower": 0, "upper": 15}


def _check_channel(channel: int) -> int:
    if not isinstance(channel, int) or not 0 <= channel <= 15:
        raise ValueError(f"MIDI channel index must be 0..15, got {channel!r}")
    return channel


def _check_data(name: str, value: int) -> int:
    if not isinstance(value, int) or not 0 <= value <= 127:
        raise ValueError(f"{name} must be an int 0..127, got {value!r}")
    return value


def _check_kind(zone: str) -> ZoneKind:
    if zone == "lower":
        return "lower"
    if zone == "upper":
        return "upper"
    raise ValueError(f"zone must be 'lower' or 'upper', got {zone!r}")


def _clamp7(value: float) -> int:
    return max(0, min(127, int(value)))


def _cc(channel: int, controller: int, value: int) -> bytes:
    return bytes((0xB0 | channel, controller, value))


# --------------------------------------------------------------------------------------------
# Pitch bend conversions


def semitones_to_bend(semitones: float, range_semitones: float) -> int:
    """Semitones -> 14-bit pitch bend value (centre 8192), clamped to 0..16383.

    A range of 0 means bend is disabled: every input gives the centre value.
    """
    if math.isnan(semitones) or not math.isfinite(range_semitones) or range_semitones < 0:
        raise ValueError(f"bad bend {semitones!r} or range {range_semitones!r}")
    if range_semitones == 0:
        return BEND_CENTER
    scaled = semitones / range_semitones * BEND_CENTER
    scaled = max(-BEND_CENTER, min(float(BEND_CENTER), scaled))  # also tames infinities
    return max(0, min(BEND_MAX, BEND_CENTER + round(scaled)))


def bend_to_semitones(value14: int, range_semitones: float) -> float:
    """14-bit pitch bend value (0..16383, centre 8192) -> semitones, given the bend range."""
    if not isinstance(value14, int) or not 0 <= value14 <= BEND_MAX:
        raise ValueError(f"pitch bend value must be an int 0..16383, got {value14!r}")
    if not math.isfinite(range_semitones) or range_semitones < 0:
        raise ValueError(f"bend range must be >= 0, got {range_semitones!r}")
    return (value14 - BEND_CENTER) / BEND_CENTER * range_semitones


def _bend_message(channel: int, value14: int) -> bytes:
    return bytes((0xE0 | channel, value14 & 0x7F, value14 >> 7))


# --------------------------------------------------------------------------------------------
# Zones


@dataclass(frozen=True)
class Zone:
    """One MPE zone: ``kind`` "lower" (manager index 0) or "upper" (manager index 15).

    ``members`` is the member channel count, 0 (zone off) to 15. Bend ranges are in semitones;
    the defaults are those the spec sets on every MCM (members +-48, manager +-2).
    """

    kind: ZoneKind
    members: int = 0
    member_bend_range: float = DEFAULT_MEMBER_BEND_RANGE
    manager_bend_range: float = DEFAULT_MANAGER_BEND_RANGE

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if not isinstance(self.members, int) or not 0 <= self.members <= 15:
            raise ValueError(f"member count must be 0..15, got {self.members!r}")
        for rng in (self.member_bend_range, self.manager_bend_range):
            if not 0 <= rng <= MAX_BEND_RANGE:
                raise ValueError(f"bend range must be 0..96 semitones, got {rng!r}")

    @property
    def enabled(self) -> bool:
        """True when the zone has at least one member channel."""
        return self.members > 0

    @property
    def manager_channel(self) -> int:
        """Manager (master) channel index: 0 for the lower zone, 15 for the upper."""
        return _MANAGER[self.kind]

    @property
    def member_channels(self) -> range:
        """Member channel indices in allocation order: lower 1..n, upper 14 down to 15-n."""
        if self.kind == "lower":
            return range(1, self.members + 1)
        return range(14, 14 - self.members, -1)

    def is_member(self, channel: int) -> bool:
        """True if ``channel`` (0..15) is one of this zone's member channels."""
        return channel in self.member_channels

    def is_manager(self, channel: int) -> bool:
        """True if the zone is on and ``channel`` (0..15) is its manager channel."""
        return self.enabled and channel == self.manager_channel

    def uses(self, channel: int) -> bool:
        """True if ``channel`` is this (enabled) zone's manager or one of its members."""
        return self.is_manager(channel) or self.is_member(channel)

    def bend_range(self, channel: int) -> float | None:
        """Bend range of ``channel`` in this zone, or None if the zone does not use it."""
        if self.is_manager(channel):
            return self.manager_bend_range
        if self.is_member(channel):
            return self.member_bend_range
        return None


@dataclass(frozen=True)
class ZoneLayout:
    """Both zones of a device. Zones never overlap; a zone with 0 members is off."""

    lower: Zone = field(default_factory=lambda: Zone("lower"))
    upper: Zone = field(default_factory=lambda: Zone("upper"))

    def __post_init__(self) -> None:
        if self.lower.kind != "lower" or self.upper.kind != "upper":
            raise ValueError("ZoneLayout needs a lower zone and an upper zone")
        lower, upper = self.lower, self.upper
        if lower.enabled and upper.enabled and lower.members + upper.members > 14:
            raise ValueError(
                f"zones overlap: lower {self.lower.members} + upper {self.upper.members} members"
            )

    @property
    def enabled(self) -> bool:
        """True when at least one zone is on (MPE mode, RP-053 2.1)."""
        return self.lower.enabled or self.upper.enabled

    def zone(self, kind: str) -> Zone:
        """The lower or upper zone by name."""
        return self.lower if _check_kind(kind) == "lower" else self.upper

    def zone_of(self, channel: int) -> Zone | None:
        """The enabled zone whose manager or member ``channel`` (0..15) is, else None."""
        for zone in (self.lower, self.upper):
            if zone.uses(channel):
                return zone
        return None

    def configure(self, kind: str, members: int) -> ZoneLayout:
        """The layout after an MCM for ``kind`` with ``members`` member channels (0 = off).

        The configured zone gets the spec's default bend ranges (48 / 2). The newest message
        takes precedence: if the zones would overlap, the other zone shrinks to what is left,
        and is switched off if nothing is (its manager channel taken, or 0 members left).
        """
        kind = _check_kind(kind)
        new = Zone(kind, members)
        other = self.upper if kind == "lower" else self.lower
        if new.enabled and other.enabled:
            # Lower n uses indices 0..n, upper m uses 15-m..15: disjoint iff n + m <= 14.
            other = replace(other, members=max(0, min(other.members, 14 - members)))
        if kind == "lower":
            return ZoneLayout(new, other)
        return ZoneLayout(other, new)

    def channels_in_mpe(self) -> frozenset[int]:
        """Every channel index used by an enabled zone."""
        return frozenset(ch for ch in range(16) if self.zone_of(ch) is not None)


# --------------------------------------------------------------------------------------------
# Configuration messages


def mcm_messages(zone: str, members: int, *, rpn_null: bool = True) -> list[bytes]:
    """MPE Configuration Message (RPN 0/6) for ``zone`` "lower" or "upper", 0..15 members.

    Sent on the zone's manager channel in the spec's order (RP-053 2.1.1): CC 100 = 6,
    CC 101 = 0, CC 6 = members. With ``rpn_null`` (default) CC 101/100 = 127 follow, so later
    Data Entry messages on that channel cannot re-trigger it.
    """
    kind = _check_kind(zone)
    if not isinstance(members, int) or not 0 <= members <= 15:
        raise ValueError(f"member count must be 0..15, got {members!r}")
    ch = _MANAGER[kind]
    out = [_cc(ch, _CC_RPN_LSB, 6), _cc(ch, _CC_RPN_MSB, 0), _cc(ch, _CC_DATA_MSB, members)]
    if rpn_null:
        out += [_cc(ch, _CC_RPN_MSB, _NULL), _cc(ch, _CC_RPN_LSB, _NULL)]
    return out


def pitch_bend_range_messages(channel: int, semitones: int, cents: int = 0) -> list[bytes]:
    """Pitch Bend Sensitivity (RPN 0/0) on ``channel`` (0..15), followed by RPN null.

    CC 101 = 0, CC 100 = 0, CC 6 = semitones, CC 38 = cents, CC 101/100 = 127. Both values are
    MIDI data bytes (0..127); MPE devices use 0..96 semitones and 0 cents (RP-053 2.4).
    """
    _check_channel(channel)
    _check_data("semitones", semitones)
    _check_data("cents", cents)
    return [
        _cc(channel, _CC_RPN_MSB, 0),
        _cc(channel, _CC_RPN_LSB, 0),
        _cc(channel, _CC_DATA_MSB, semitones),
        _cc(channel, _CC_DATA_LSB, cents),
        _cc(channel, _CC_RPN_MSB, _NULL),
        _cc(channel, _CC_RPN_LSB, _NULL),
    ]


# --------------------------------------------------------------------------------------------
# Host side: note allocation


class UnknownNoteError(KeyError):
    """A note id that is not sounding: never issued, already ended, or stolen.

    Subclasses KeyError (so ``except KeyError`` works); ``note_id`` and ``stolen`` say which.
    """

    def __init__(self, note_id: int, stolen: bool = False) -> None:
        super().__init__(note_id)
        self.note_id = note_id
        self.stolen = stolen

    def __str__(self) -> str:
        if self.stolen:
            return f"note id {self.note_id} was stolen for a newer note and is no longer sounding"
        return f"note id {self.note_id} is not sounding (unknown or already ended)"


@dataclass
class _Voice:
    note_id: int
    channel: int
    note: int
    started: int  # allocation sequence number
    pressure: int


class MpeSender:
    """Host-side MPE note allocator for one zone: one note per member channel.

    A new note takes a free member channel, least recently used first (channels never used come
    first, in the zone's member order; then the one whose last note ended longest ago). When
    every member channel is busy the oldest sounding note is stolen: its Note Off is emitted
    first and its id becomes invalid. Methods return the MIDI messages to send, in order.
    Not thread-safe.
    """

    _STOLEN_MEMORY = 1024  # how many stolen ids are remembered for error messages

    def __init__(
        self,
        zone: str = "lower",
        members: int = 15,
        *,
        member_bend_range: int = int(DEFAULT_MEMBER_BEND_RANGE),
        manager_bend_range: int = int(DEFAULT_MANAGER_BEND_RANGE),
    ) -> None:
        kind = _check_kind(zone)
        if not isinstance(members, int) or not 1 <= members <= 15:
            raise ValueError(f"a sender needs 1..15 member channels, got {members!r}")
        for rng in (member_bend_range, manager_bend_range):
            if not isinstance(rng, int) or not 0 <= rng <= MAX_BEND_RANGE:
                raise ValueError(f"bend range must be an int 0..96, got {rng!r}")
        self._zone = Zone(kind, members, float(member_bend_range), float(manager_bend_range))
        self._voices: dict[int, _Voice] = {}
        self._by_channel: dict[int, _Voice] = {}
        self._released: dict[int, int] = {}  # channel -> sequence number of its last note end
        self._stolen: dict[int, None] = {}  # ordered set of recently stolen ids
        self._next_id = 1
        self._seq = 0

    @property
    def zone(self) -> Zone:
        """The zone this sender plays into (with its bend ranges)."""
        return self._zone

    @property
    def active_notes(self) -> dict[int, tuple[int, int]]:
        """Sounding notes: note_id -> (channel, note number)."""
        return {v.note_id: (v.channel, v.note) for v in self._voices.values()}

    def configure(self) -> list[bytes]:
        """Messages to send before playing: the MCM, then RPN 0 on the manager and every member."""
        z = self._zone
        out = mcm_messages(z.kind, z.members)
        out += pitch_bend_range_messages(z.manager_channel, int(z.manager_bend_range))
        for ch in z.member_channels:
            out += pitch_bend_range_messages(ch, int(z.member_bend_range))
        return out

    def note_on(
        self,
        note: int,
        velocity: int,
        *,
        bend: float = 0.0,
        pressure: int = 0,
        timbre: int = 64,
    ) -> tuple[int, list[bytes]]:
        """Start a note; returns ``(note_id, messages)``.

        ``note`` 0..127 and ``velocity`` 1..127 are checked (ValueError). ``bend`` is in
        semitones (converted with the member bend range, clamped); ``pressure`` and ``timbre``
        (CC 74) are clamped to 0..127. Messages: the stolen note's Note Off if any, then pitch
        bend, CC 74 and channel pressure on the note's channel, then the Note On.
        """
        _check_data("note", note)
        if not isinstance(velocity, int) or not 1 <= velocity <= 127:
            raise ValueError(f"velocity must be 1..127 (use note_off to end), got {velocity!r}")
        out: list[bytes] = []
        channel = self._free_channel()
        if channel is None:
            oldest = min(self._voices.values(), key=lambda v: v.started)
            out += self._end(oldest, 0)
            self._remember_stolen(oldest.note_id)
            channel = oldest.channel
        self._seq += 1
        voice = _Voice(self._next_id, channel, note, self._seq, _clamp7(pressure))
        self._next_id += 1
        self._voices[voice.note_id] = voice
        self._by_channel[channel] = voice
        out.append(_bend_message(channel, semitones_to_bend(bend, self._zone.member_bend_range)))
        out.append(_cc(channel, _CC_TIMBRE, _clamp7(timbre)))
        out.append(bytes((0xD0 | channel, voice.pressure)))
        out.append(bytes((0x90 | channel, note, velocity)))
        return voice.note_id, out

    def note_off(self, note_id: int, velocity: int = 0) -> list[bytes]:
        """End a note: channel pressure 0 first if it was not 0 (RP-053 3.3.4), then Note Off."""
        _check_data("velocity", velocity)
        return self._end(self._voice(note_id), velocity)

    def bend(self, note_id: int, semitones: float) -> list[bytes]:
        """Per-note pitch bend in semitones (clamped to the member bend range)."""
        voice = self._voice(note_id)
        value = semitones_to_bend(semitones, self._zone.member_bend_range)
        return [_bend_message(voice.channel, value)]

    def pressure(self, note_id: int, value: int) -> list[bytes]:
        """Per-note channel pressure, clamped to 0..127."""
        voice = self._voice(note_id)
        voice.pressure = _clamp7(value)
        return [bytes((0xD0 | voice.channel, voice.pressure))]

    def timbre(self, note_id: int, value: int) -> list[bytes]:
        """Per-note timbre (CC 74), clamped to 0..127."""
        voice = self._voice(note_id)
        return [_cc(voice.channel, _CC_TIMBRE, _clamp7(value))]

    def all_notes_off(self) -> list[bytes]:
        """End every sounding note (oldest first), then All Notes Off (CC 123) on the manager."""
        out: list[bytes] = []
        for voice in sorted(self._voices.values(), key=lambda v: v.started):
            out += self._end(voice, 0)
        out.append(_cc(self._zone.manager_channel, _CC_ALL_NOTES_OFF, 0))
        return out

    # -- internals

    def _voice(self, note_id: int) -> _Voice:
        voice = self._voices.get(note_id)
        if voice is None:
            raise UnknownNoteError(note_id, stolen=note_id in self._stolen)
        return voice

    def _free_channel(self) -> int | None:
        free = [
            (self._released.get(ch, -1), pos, ch)
            for pos, ch in enumerate(self._zone.member_channels)
            if ch not in self._by_channel
        ]
        return min(free)[2] if free else None

    def _end(self, voice: _Voice, velocity: int) -> list[bytes]:
        out: list[bytes] = []
        if voice.pressure:
            out.append(bytes((0xD0 | voice.channel, 0)))
        out.append(bytes((0x80 | voice.channel, voice.note, velocity)))
        del self._voices[voice.note_id]
        del self._by_channel[voice.channel]
        self._seq += 1
        self._released[voice.channel] = self._seq
        return out

    def _remember_stolen(self, note_id: int) -> None:
        self._stolen[note_id] = None
        if len(self._stolen) > self._STOLEN_MEMORY:
            del self._stolen[next(iter(self._stolen))]


# --------------------------------------------------------------------------------------------
# Device side: zone tracking


@dataclass
class TrackerStats:
    """Counters kept by `MpeZoneTracker`; the ``ignored`` total sums the refusal counters."""

    messages: int = 0  # feed() calls
    malformed: int = 0  # not one well-formed MIDI 1.0 message
    orphan_data_entry: int = 0  # CC 6/38 with no RPN selected (none yet, null, or an NRPN)
    mcm_applied: int = 0
    mcm_wrong_channel: int = 0  # MCM on a channel other than 0 or 15 (spec: ignore)
    mcm_out_of_range: int = 0  # member count above 15 (not defined by the spec: ignored)
    bend_range_applied: int = 0
    bend_range_clamped: int = 0  # RPN 0 above 96 semitones, clamped to 96

    @property
    def ignored(self) -> int:
        """Messages that were refused as malformed or invalid."""
        return (
            self.malformed + self.orphan_data_entry + self.mcm_wrong_channel + self.mcm_out_of_range
        )


# Status high nibble -> total message length for channel messages.
_CHANNEL_LENGTH = {0x8: 3, 0x9: 3, 0xA: 3, 0xB: 3, 0xC: 2, 0xD: 2, 0xE: 3}
# System common / real-time status -> total length (SysEx, F4, F5 and F7 handled apart).
_SYSTEM_LENGTH = {0xF1: 2, 0xF2: 3, 0xF3: 2, 0xF6: 1} | dict.fromkeys(range(0xF8, 0x100), 1)


def _well_formed(msg: bytes) -> bool:
    if not msg or msg[0] < 0x80:
        return False
    status = msg[0]
    if status == 0xF0:
        return len(msg) >= 2 and msg[-1] == 0xF7 and all(b < 0x80 for b in msg[1:-1])
    length = _CHANNEL_LENGTH.get(status >> 4) if status < 0xF0 else _SYSTEM_LENGTH.get(status)
    return length is not None and len(msg) == length and all(b < 0x80 for b in msg[1:])


class MpeZoneTracker:
    """Device-side MPE state, driven by `feed` with an incoming MIDI 1.0 stream.

    Follows, per channel, RPN selection (CC 101/100; NRPN selection CC 99/98, RPN null 127/127
    and Reset All Controllers CC 121 deselect) and Data Entry (CC 6/38). Applies the MCM
    (RPN 0/6) from channel 0 (lower zone) or 15 (upper zone) and Pitch Bend Sensitivity
    (RPN 0/0) per the spec rules in the module docstring. `feed` never raises; refused input is
    counted in `stats`. Channel arguments to queries are indices 0..15.
    """

    def __init__(self, layout: ZoneLayout | None = None) -> None:
        self._layout = layout or ZoneLayout()
        self._conventional = [CONVENTIONAL_BEND_RANGE] * 16  # ranges of channels outside zones
        self._rpn: list[tuple[int | None, int | None]] = [(None, None)] * 16
        self._nrpn = [False] * 16  # last parameter selection on the channel was an NRPN
        self._bend_msb: list[int | None] = [None] * 16  # RPN 0 semitones seen since selection
        self.stats = TrackerStats()

    # -- queries

    @property
    def zones(self) -> ZoneLayout:
        """The current zone layout (immutable snapshot)."""
        return self._layout

    @property
    def mpe_enabled(self) -> bool:
        """True while at least one zone is on."""
        return self._layout.enabled

    def zone_of(self, channel: int) -> Zone | None:
        """The zone that uses ``channel`` (0..15) as manager or member, else None."""
        return self._layout.zone_of(_check_channel(channel))

    def is_member(self, channel: int) -> bool:
        """True if ``channel`` (0..15) is a member channel of an enabled zone."""
        _check_channel(channel)
        return self._layout.lower.is_member(channel) or self._layout.upper.is_member(channel)

    def is_manager(self, channel: int) -> bool:
        """True if ``channel`` (0..15) is the manager of an enabled zone."""
        _check_channel(channel)
        return self._layout.lower.is_manager(channel) or self._layout.upper.is_manager(channel)

    def bend_range(self, channel: int) -> float:
        """Pitch bend range of ``channel`` (0..15) in semitones; +-2 outside zones by default."""
        zone = self.zone_of(channel)
        if zone is not None:
            rng = zone.bend_range(channel)
            if rng is not None:
                return rng
        return self._conventional[channel]

    # -- input

    def feed(self, message: bytes) -> bool:
        """Consume one MIDI 1.0 message; True if it applied an MCM or a bend range (RPN 0).

        Never raises: anything that is not one well-formed message is counted and ignored.
        """
        self.stats.messages += 1
        if not isinstance(message, bytes | bytearray | memoryview):
            self.stats.malformed += 1
            return False
        msg = bytes(message)
        if not _well_formed(msg):
            self.stats.malformed += 1
            return False
        if msg[0] >> 4 != 0xB:
            return False
        return self._control_change(msg[0] & 0x0F, msg[1], msg[2])

    def feed_all(self, messages: Iterable[bytes]) -> int:
        """Feed every message in order; returns how many changed the MPE state."""
        return sum(self.feed(m) for m in messages)

    # -- internals

    def _control_change(self, ch: int, controller: int, value: int) -> bool:
        if controller == _CC_RPN_MSB:
            self._rpn[ch] = (value, self._rpn[ch][1])
            self._nrpn[ch] = False
            self._bend_msb[ch] = None
        elif controller == _CC_RPN_LSB:
            self._rpn[ch] = (self._rpn[ch][0], value)
            self._nrpn[ch] = False
            self._bend_msb[ch] = None
        elif controller in (_CC_NRPN_MSB, _CC_NRPN_LSB):
            self._nrpn[ch] = True
        elif controller == _CC_RESET_ALL:
            self._rpn[ch] = (_NULL, _NULL)  # RP-015: Reset All Controllers nulls RPN/NRPN
            self._nrpn[ch] = False
            self._bend_msb[ch] = None
        elif controller in (_CC_DATA_MSB, _CC_DATA_LSB):
            return self._data_entry(ch, controller == _CC_DATA_MSB, value)
        return False

    def _data_entry(self, ch: int, is_msb: bool, value: int) -> bool:
        rpn = self._rpn[ch]
        if self._nrpn[ch] or None in rpn or rpn == (_NULL, _NULL):
            self.stats.orphan_data_entry += 1
            return False
        if rpn == _RPN_MCM:
            if not is_msb:
                return False  # RP-053 2.1.1: the Data Entry LSB of the MCM is not used
            return self._mcm(ch, value)
        if rpn == _RPN_BEND_RANGE:
            if is_msb:
                self._bend_msb[ch] = value
                return self._set_bend_range(ch, float(value))
            semis = self._bend_msb[ch]
            if semis is None:  # LSB alone: keep the current whole semitones
                semis = int(self.bend_range(ch))
            semis = min(semis, int(MAX_BEND_RANGE))  # an MSB above 96 was counted already
            return self._set_bend_range(ch, semis + value / 100)
        return False  # some other RPN: not ours to track

    def _mcm(self, ch: int, members: int) -> bool:
        if ch == 0:
            kind: ZoneKind = "lower"
        elif ch == 15:
            kind = "upper"
        else:
            self.stats.mcm_wrong_channel += 1
            return False
        if members > 15:
            self.stats.mcm_out_of_range += 1
            return False
        before = self._layout.channels_in_mpe()
        self._layout = self._layout.configure(kind, members)
        for changed in before ^ self._layout.channels_in_mpe():  # RP-053 2.1.4
            self._conventional[changed] = CONVENTIONAL_BEND_RANGE
        self.stats.mcm_applied += 1
        return True

    def _set_bend_range(self, ch: int, semitones: float) -> bool:
        if semitones > MAX_BEND_RANGE:
            self.stats.bend_range_clamped += 1
            semitones = MAX_BEND_RANGE
        self.stats.bend_range_applied += 1
        zone = self._layout.zone_of(ch)
        if zone is None:
            self._conventional[ch] = semitones
        elif zone.is_manager(ch):
            self._replace_zone(replace(zone, manager_bend_range=semitones))
        else:  # RP-053 2.4: one range for all members of a zone
            self._replace_zone(replace(zone, member_bend_range=semitones))
        return True

    def _replace_zone(self, zone: Zone) -> None:
        if zone.kind == "lower":
            self._layout = ZoneLayout(zone, self._layout.upper)
        else:
            self._layout = ZoneLayout(self._layout.lower, zone)
