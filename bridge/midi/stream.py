"""A device's MIDI intake: IPC commands and live ports merged into one stream per block.

:class:`MidiStream` is what an instrument adapter plugs between a Device and its renderer:

- ``handle`` is a Device command handler. It turns every IPC MIDI command (MidiRaw,
  NoteOn/Off, ControlChange, PitchBend, ProgramChange, Aftertouch, SysEx, UMP) into MIDI 1.0
  events at the command's ``sample_offset``. UMP is translated to MIDI 1.0 on arrival,
  since that is what plugins take.
- ``push_live`` takes bytes from a live port, from any thread, stamped with their arrival
  time.
- ``take`` is called once per rendered block and returns that block's events in time
  order, each with its sample offset.

Live events are placed as JACK places MIDI: an event that arrived during the previous block
period plays in the next block at the offset of its arrival within that period. This keeps
the spacing of what a player played, at a fixed latency of one block. Events that ask for an
offset at or past the block's end are played on the block's last frame and counted as late.
A command whose fields MIDI can't carry (a channel over 15, a SysEx without F7, a SysEx
over the limit) raises MalformedMessage, which the Device counts, reports to its debug
monitor and answers with an Error response. Damage inside a MidiRaw or UMP byte stream is
handled as on a cable: the good messages are kept, the damage is dropped, counted in the
codecs' counters and reported through ``report``, with no Error response.
"""

from __future__ import annotations

import collections
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from ..transport import commands as cmd
from ..transport.layout import Capability
from ..transport.message import Message
from . import translate, ump
from .event import SYSEX_END, SYSEX_START, MidiEvent
from .mpe import TRACKED_CONTROLLERS as _TRACKED
from .mpe import MpeZoneTracker
from .parser import DEFAULT_SYSEX_LIMIT, MidiParser

MAX_EVENTS_PER_BLOCK = 4096  # more than this in one block is dropped (and counted)
MAX_LIVE_QUEUE = 8192  # live events waiting for the next block

T = cmd.T
_NOTE_ON, _NOTE_OFF, _CC, _BEND = T.NoteOn, T.NoteOff, T.ControlChange, T.PitchBend
_PROGRAM, _TOUCH, _RAW, _SYSEX, _UMP = (T.ProgramChange, T.Aftertouch, T.MidiRaw, T.SysEx,
                                        T.UMP)
_MIDI_TYPES = cmd.MIDI_TYPES
_OFFSET = operator.itemgetter(0)  # MidiEvent.offset, at C speed for sorting
_new_event = tuple.__new__  # MidiEvent(...) without NamedTuple's Python-level __new__
_SMALL_STATUS = {_NOTE_ON: 0x90, _NOTE_OFF: 0x80, _CC: 0xB0}
SMALL_TYPES = (_NOTE_ON, _NOTE_OFF, _CC, _BEND, _PROGRAM, _TOUCH)  # for the fast path
_SMALL_SIZE = {t: cmd.BY_CODE[t].request.fixed_size for t in SMALL_TYPES}


def _small_fault(t: int, b: bytes) -> str:
    """Why handle_small refused a small command: which field is out of which range."""
    if t == _BEND:
        return (f"PitchBend channel {b[0]} value {b[2] | (b[3] << 8)} out of range (0..15, "
                "0..16383)")
    if t == _PROGRAM:
        return ("ProgramChange with fields out of range (channel 0..15, program 0..127): "
                f"{b[:2].hex(' ')}")
    if t == _TOUCH:
        return ("Aftertouch with fields out of range (channel 0..15, poly 0..1, note and "
                "pressure 0..127)")
    return (f"{cmd.name_of(t)} with fields out of range (channel 0..15, data 0..127): "
            f"{b[:3].hex(' ')}")


# What a device whose MIDI intake is a MidiStream offers on top of MIDI: it plays UMP
# (translated on arrival), so it must say so in its capabilities (protocol.md §4.1).
CAPABILITIES = int(Capability.UMP)

@dataclass
class StreamStats:
    """Counters of a device's MIDI intake; ``parse`` and ``ump`` hold the codecs' own."""

    ipc_events: int = 0  # IPC events delivered to a block
    live_events: int = 0
    blocks: int = 0
    late: int = 0  # offset at or past the block's end: played on its last frame
    invalid: int = 0  # IPC MIDI commands with out-of-range fields or bad SysEx framing
    sysex_overflow: int = 0  # SysEx commands over the limit
    dropped: int = 0  # over MAX_EVENTS_PER_BLOCK or MAX_LIVE_QUEUE
    untranslatable: int = 0  # UMP that has no MIDI 1.0 form (dropped)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


Reporter = Callable[[str, str], None]  # (where, text)


class MidiStream:
    """One block's MIDI from every source, merged and ordered by sample offset."""

    def __init__(self, sample_rate: int, *, sysex_limit: int = DEFAULT_SYSEX_LIMIT,
                 report: Reporter | None = None) -> None:
        self.sample_rate = sample_rate
        self.sysex_limit = sysex_limit
        self.report = report
        self.stats = StreamStats()
        self.parser = MidiParser(sysex_limit, lambda text: self._report("MidiRaw", text))
        # live ports: only the audio thread parses (in take), so one parser serves them all
        self.live_parser = MidiParser(sysex_limit, lambda text: self._report("live MIDI", text))
        self.mpe = MpeZoneTracker()  # follows zone set-up, so UMP per-note data becomes MPE
        self.translator = translate.Translator(mpe=False, sysex_limit=sysex_limit)
        self.ump_stats = self.translator.stats.ump
        self._events: list[MidiEvent] = []  # IPC events for the next block
        self._spare: list[MidiEvent] = []  # the list take() returned last time
        self._live: collections.deque[tuple[float, bytes]] = collections.deque()
        self._live_dropped = 0  # written only by push_live's thread
        self._live_dropped_seen = 0
        self._last_take = time.monotonic()
        self._scratch: list[bytes] = []

    # -- sources ------------------------------------------------------------------------
    def handle(self, msg: Message, device: object = None) -> bool:
        """Device command handler: take MIDI commands, leave everything else."""
        t = msg.type
        if t not in _MIDI_TYPES:
            return False
        try:
            self._handle(t, msg)
        except cmd.MalformedMessage:
            raise  # the device counts it, reports it, and answers Error MALFORMED
        except Exception as exc:  # a codec bug must not reach the device's loop
            self._report("MIDI", f"{cmd.name_of(t)}: {type(exc).__name__}: {exc}")
        return True

    def handle_small(self, t: int, offset: int, b0: int, b1: int, b2: int, b3: int) -> bool:
        """The Device's fast path (``Device.on_small_command``) for the fixed-layout MIDI
        commands: the same events as ``handle``, without a Message. Returns False for a
        value MIDI can't carry, so that the normal path refuses it with an Error."""
        status = _SMALL_STATUS.get(t)
        if status is not None:  # NoteOn, NoteOff, ControlChange: channel, data1, data2
            if b0 > 15 or b1 > 127 or b2 > 127:
                return False
            data = bytes((status | b0, b1, b2))
        elif t == _BEND:  # channel, reserved, u16 value
            value = b2 | (b3 << 8)
            if b0 > 15 or value > 16383:
                return False
            data = bytes((0xE0 | b0, value & 0x7F, value >> 7))
        elif t == _PROGRAM:
            if b0 > 15 or b1 > 127:
                return False
            data = bytes((0xC0 | b0, b1))
        elif t == _TOUCH:  # channel, poly, note, pressure
            if b0 > 15 or b1 > 1 or b2 > 127 or b3 > 127:
                return False
            data = bytes((0xA0 | b0, b2, b3)) if b1 else bytes((0xD0 | b0, b3))
        else:
            return False
        events = self._events
        if len(events) >= MAX_EVENTS_PER_BLOCK:
            self._bad("dropped", f"more than {MAX_EVENTS_PER_BLOCK} MIDI events in one block")
            return True
        if status == 0xB0 and b1 in _TRACKED:  # only these can change the MPE state
            self.mpe.feed(data)
        events.append(_new_event(MidiEvent, (offset, data, ())))  # ipc_events: in take
        return True

    def handle_raw(self, t: int, offset: int, payload: memoryview | bytes) -> bool:
        """The Device's fast path for MidiRaw (``Device.on_raw_command``): parse the payload
        as a MIDI 1.0 cable (damage is counted, never raised) into this block's events."""
        out = self._scratch
        out.clear()
        self.parser.feed(payload, out)
        self._add_all(offset, out)
        return True

    def attach(self, device: object, on_claim: Callable[[object], None] | None = None) -> None:
        """Make this stream ``device``'s MIDI intake: the command handler, both fast paths,
        and a fresh start on every new claim (``on_claim`` runs after that, if given)."""
        device.on_command(self.handle)
        device.on_small_command(self.handle_small, list(SMALL_TYPES))
        device.on_raw_command(self.handle_raw, [_RAW])

        def claimed(dev: object) -> None:
            self.clear()
            if on_claim is not None:
                on_claim(dev)

        device.on_claim(claimed)

    def _handle(self, t: int, msg: Message) -> None:
        offset = msg.sample_offset
        p = msg.payload
        size = _SMALL_SIZE.get(t)
        if size is not None:  # the fast path's decoder serves the normal path too
            if len(p) < size:
                cmd.decode(msg)  # raises MalformedMessage naming the short payload
            b = bytes(p[:4]).ljust(4, b"\0")
            if not self.handle_small(t, offset, b[0], b[1], b[2], b[3]):
                self._invalid(_small_fault(t, b))
        elif t == _RAW:
            self.handle_raw(t, offset, p)
        elif t == _SYSEX:
            data = bytes(p)
            if len(data) > self.sysex_limit:
                self.stats.sysex_overflow += 1
                raise cmd.MalformedMessage(f"SysEx of {len(data)} bytes is over the limit of "
                                           f"{self.sysex_limit}; dropped",
                                           cmd.ErrorCode.INVALID_ARGUMENT)
            if (len(data) < 2 or data[0] != SYSEX_START or data[-1] != SYSEX_END
                    or any(b >= 0x80 for b in data[1:-1])):
                return self._invalid("SysEx must be F0, data bytes below 0x80, F7; got "
                                     f"{len(data)} bytes starting {data[:4].hex(' ')}")
            self._add_all(offset, [data])
        elif t == _UMP:
            self._ump(bytes(p), offset)

    def _ump(self, raw: bytes, offset: int) -> None:
        tr = self.translator
        tr.mpe = self.mpe.mpe_enabled  # per-note data becomes MPE when the zone is set up
        damage = _ump_damage(self.ump_stats)
        dropped = tr.stats.total_dropped
        words = ump.words_from_bytes(raw, self.ump_stats)
        self._add_all(offset, [data for _group, data in tr.translate(words)])
        if _ump_damage(self.ump_stats) != damage:
            after = self.ump_stats.as_dict()
            what = ", ".join(f"{k} {v}" for k, v in after.items() if k != "packets" and v)
            self._report("UMP", f"invalid UMP skipped (totals: {what})")
        if tr.stats.total_dropped != dropped:
            self.stats.untranslatable += tr.stats.total_dropped - dropped
            kinds = ", ".join(sorted(tr.stats.dropped))
            self._report("UMP", f"UMP with no MIDI 1.0 form dropped (kinds so far: {kinds})")

    def _add_all(self, offset: int, messages: list[bytes]) -> None:
        """Each message as this block's event at ``offset``, in one pass (a packed MidiRaw
        holds dozens): the block's limit, then the MPE tracker, then the events."""
        events = self._events
        room = MAX_EVENTS_PER_BLOCK - len(events)
        if len(messages) > room:
            lost = len(messages) - max(room, 0)
            del messages[max(room, 0):]
            self.stats.dropped += lost - 1  # and one more by _bad: every event counts
            self._bad("dropped", f"more than {MAX_EVENTS_PER_BLOCK} MIDI events in one block")
        feed = self.mpe.feed
        for data in messages:
            if data[0] & 0xF0 == 0xB0 and len(data) == 3 and data[1] in _TRACKED:
                feed(data)  # only these controllers can change the MPE state
        events.extend([_new_event(MidiEvent, (offset, data, ())) for data in messages])

    def push_live(self, data: bytes | list[int], when: float | None = None) -> None:
        """Queue bytes from a live input port. Thread-safe; ``when`` is time.monotonic()."""
        live = self._live
        if len(live) >= MAX_LIVE_QUEUE:
            self._live_dropped += 1
            return
        live.append((time.monotonic() if when is None else when, bytes(data)))

    # -- the block ----------------------------------------------------------------------
    def take(self, frames: int) -> list[MidiEvent]:
        """This block's events, ordered by offset (IPC before live at equal offsets).

        Call it exactly once per rendered block, from the audio thread. The list is reused
        after the next call: copy it to keep it longer.
        """
        now = time.monotonic()
        events = self._events
        self.stats.blocks += 1
        if not events and not self._live and self._live_dropped == self._live_dropped_seen:
            self._last_take = now
            return events  # the common case: an empty block, nothing to merge or sort
        last = frames - 1
        self.stats.ipc_events += len(events)  # everything queued so far came over IPC
        if self._live:
            self._take_live(events, frames, now)
        late = 0
        for i, e in enumerate(events):
            if e.offset > last:
                events[i] = MidiEvent(last, e.data, e.words)
                late += 1
        if late:
            self.stats.late += late
            self._report("offset", f"{late} event(s) asked for an offset past the block of "
                         f"{frames} frames; played on its last frame")
        if self._live_dropped != self._live_dropped_seen:
            n = self._live_dropped - self._live_dropped_seen
            self._live_dropped_seen = self._live_dropped
            self._bad("dropped", f"{n} live MIDI event(s) dropped: queue full")
        self._last_take = now
        if len(events) > 1:
            events.sort(key=_OFFSET)  # stable: equal offsets keep their order
        # Double buffering: the list returned now is refilled only after the next take, by
        # which time the renderer is done with it; no list is allocated per block.
        spare = self._spare
        spare.clear()
        self._spare, self._events = events, spare
        return events

    def _take_live(self, events: list[MidiEvent], frames: int, now: float) -> None:
        live = self._live
        rate = self.sample_rate
        last_take = self._last_take
        parser = self.live_parser
        out = self._scratch
        while live:
            when, data = live.popleft()
            offset = int((when - last_take) * rate + 0.5)
            offset = 0 if offset < 0 else frames - 1 if offset >= frames else offset
            out.clear()
            parser.feed(data, out)
            before = len(events)
            self._add_all(offset, out)  # events is self._events: the same limit, the same MPE
            self.stats.live_events += len(events) - before

    def clear(self) -> None:
        """Forget queued events, partial messages and the MPE zones (a new host claimed the
        device: protocol.md §8.2's reset)."""
        self._events.clear()
        self._live.clear()
        self.parser.reset()
        self.live_parser.reset()
        self.translator.reset()
        self.mpe = MpeZoneTracker()

    # -- reporting ----------------------------------------------------------------------
    def _invalid(self, text: str) -> None:
        """A well-formed command with values MIDI can't carry: counted, then refused."""
        self.stats.invalid += 1
        raise cmd.MalformedMessage(text, cmd.ErrorCode.MALFORMED)

    def _bad(self, counter: str, text: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self._report("MIDI", text)

    def _report(self, where: str, text: str) -> None:
        if self.report is not None:
            try:
                self.report(where, text)
            except Exception:
                pass

    def counters(self) -> dict[str, int]:
        """Every counter of the intake, parser and UMP decoder, flat, for status output."""
        out = self.stats.as_dict()
        out.update({f"midi_{k}": v for k, v in self.parser.stats.as_dict().items()
                    if k != "messages"})
        out.update({f"live_{k}": v for k, v in self.live_parser.stats.as_dict().items()
                    if k != "messages"})
        out.update({f"ump_{k}": v for k, v in self.ump_stats.as_dict().items()})
        return out


def _ump_damage(s: ump.UmpStats) -> int:
    return s.skipped_unknown + s.truncated + s.invalid + s.sysex_overflow + s.sysex_unexpected
