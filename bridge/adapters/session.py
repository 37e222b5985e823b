"""A host session: play a note or a MIDI file into a device, optionally send a WAV through
its return ring, and record what comes back to a WAV file, paced in real time like a DAW.

This is the engine of ``discolink-bridge host`` and ``demo``; it turns a Host into files.
The take streams to disk as it comes (recorder.TakeWriter), so memory does not grow with
the session, and a device that stalls or restarts is waited for: the take goes on in
silence and the session reattaches when the device is back, as the JACK bridges do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..transport import Host, HostError, Message, RegistryError, SegmentError, cmd
from ..transport.commands import ErrorCode
from .jack_bridge import RECONNECT_INTERVAL_S
from .recorder import TakeWriter, WavFeeder, check_record_path

ONSET_WINDOW_S = 2.0  # how long after the first note its sound is looked for
RELINK_HANDSHAKE_S = 0.5  # a reattach try waits this long for the device's answer


class SessionError(Exception):
    """A session cannot run as asked, or failed while running (exit 1 in the CLI)."""


class SessionPlanError(SessionError):
    """The plan is wrong for its inputs or for the device: a bad file, a folder, a format the
    device does not have (a usage error: exit 2 in the CLI). Raised before any sound."""


@dataclass
class SessionPlan:
    device: str
    link_tag: str = ""
    note: int | None = 69
    velocity: int = 100
    midi_file: Path | None = None
    send: Path | None = None
    seconds: float | None = None
    record: Path | None = None
    sample_rate: int = 48000
    block_size: int = 256
    force: bool = False
    events: list[tuple[int, Message]] = field(default_factory=list)  # (frame, message)
    note_is_default: bool = False  # the note was not asked for: skipped on audio-only devices


def detect_onset(signal: np.ndarray, start: int = 0, threshold: float | None = None) -> int | None:
    """Index of the first sample at or after ``start`` whose magnitude exceeds the threshold
    (default: 1% of the peak, at least 1e-4). None if the signal stays below it."""
    tail = np.abs(signal[start:])
    if tail.size == 0:
        return None
    thr = threshold if threshold is not None else max(1e-4, 0.01 * float(tail.max()))
    hits = np.flatnonzero(tail > thr)
    return int(start + hits[0]) if hits.size else None


def read_midi_file(path: Path) -> tuple[list[tuple[float, bytes]], float]:
    """A MIDI file's channel messages as (seconds, bytes) pairs, and its length in seconds.
    Raises SessionPlanError naming the file and what is wrong with it."""
    import mido

    try:
        mid = mido.MidiFile(path)
        events, now = [], 0.0
        for msg in mid:  # iterating a MidiFile yields messages with delta times in seconds
            now += msg.time
            if msg.is_meta or msg.type == "sysex":
                continue
            events.append((now, bytes(msg.bytes())))
    except EOFError:
        raise SessionPlanError(f"cannot read MIDI file {path}: it ends early "
                               "(truncated?)") from None
    except IsADirectoryError:
        raise SessionPlanError(f"--midi-file {path} is a folder, not a MIDI file") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
        raise SessionPlanError(f"cannot read MIDI file {path}: {why}") from None
    return events, now


def check_wav(path: Path, option: str = "--send"):
    """soundfile's info of a WAV to be sent; SessionPlanError (one line) if it can't be read."""
    import soundfile as sf

    if path.is_dir():
        raise SessionPlanError(f"{option} {path} is a folder, not an audio file")
    if not path.exists():
        raise SessionPlanError(f"{option} {path}: no such file")
    try:
        return sf.info(str(path))
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        why = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
        raise SessionPlanError(f"cannot read audio file {path}: {why}") from None


def open_send(path: Path, sample_rate: int, channels: int, block_size: int) -> WavFeeder:
    """A WAV streamed into a return ring of ``channels``: mono is spread to every channel,
    fewer channels fill the first ones, more are refused (they would be dropped), and so is
    another sample rate (SessionPlanError)."""
    info = check_wav(path)
    if info.samplerate != sample_rate:
        raise SessionPlanError(f"{path} is {info.samplerate} Hz but the device runs at "
                               f"{sample_rate} Hz; resample it first")
    if info.channels > channels and info.channels != 1:
        raise SessionPlanError(f"{path} has {info.channels} channels but the device's return "
                               f"ring has {channels}; give a mono file or one of at most "
                               f"{channels} channels")
    try:
        return WavFeeder(path, channels, block_size)
    except Exception as exc:
        why = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
        raise SessionPlanError(f"cannot read audio file {path}: {why}") from None


def check_plan(plan: SessionPlan) -> tuple[list[tuple[float, bytes]], float]:
    """Everything about a plan that can be checked before connecting (exit 2 in the CLI):
    the --record path, the MIDI file (read here: returns its events and length) and the
    --send WAV."""
    if plan.record is not None:
        try:
            check_record_path(plan.record)
        except ValueError as exc:
            raise SessionPlanError(str(exc)) from None
    events: list[tuple[float, bytes]] = []
    length = 0.0
    if plan.midi_file is not None:
        if plan.midi_file.is_dir():
            raise SessionPlanError(f"--midi-file {plan.midi_file} is a folder, not a MIDI "
                                   "file")
        if not plan.midi_file.exists():
            raise SessionPlanError(f"--midi-file {plan.midi_file}: no such file")
        events, length = read_midi_file(plan.midi_file)
    if plan.send is not None:
        check_wav(plan.send)
    return events, length


def run_session(plan: SessionPlan, host: Host | None = None,
                log: Callable[[str], None] = lambda s: None,
                namespace: str | None = None, *, stop: threading.Event | None = None,
                news: Callable[[str, str], None] = lambda event, detail: None) -> dict:
    """Check the plan, connect, play, record; returns the stats (see ``discolink-bridge host
    --json``). Without ``host``, a Host of our own in ``namespace`` (default:
    $DISCOLINK_NAMESPACE). ``stop`` ends the session early (a signal), keeping the take;
    ``news`` hears of a device lost and back (one line each).

    Raises SessionPlanError before connecting for bad inputs, and right after the handshake
    for a plan the device cannot play (a --record of a MIDI-only device, a WAV with more
    channels than its return ring).
    """
    midi = check_plan(plan)
    own = host is None
    host = host or Host(namespace)
    try:
        host.set_local_buffer_info(plan.sample_rate, plan.block_size)
        conn = host.connect(plan.device, plan.link_tag, force=plan.force)
        log(f"connected to {conn.device}: {conn.sample_rate} Hz, {conn.block_size} frames, "
            f"{conn.channels} ch, {conn.mode}, protocol {conn.version}, link tag "
            f"{host.link_tag!r}")
        return _Session(plan, host, midi, log, news, stop or threading.Event()).run()
    finally:
        if own:
            host.close()
        else:
            host.disconnect()


class _Relinker(threading.Thread):
    """Reattaches a session to its device off the real-time loop: every
    RECONNECT_INTERVAL_S it tries to connect again (a device that was stopped and resumed,
    or killed and restarted under the same id), and sets ``back`` once linked with the
    format the take is recorded in. The loop does not touch the host until ``back``."""

    def __init__(self, host: Host, plan: SessionPlan, want: tuple,
                 news: Callable[[str, str], None]) -> None:
        super().__init__(name="session-relink", daemon=True)
        self.host, self.plan, self.want, self.news = host, plan, want, news
        self.back = threading.Event()
        self.quit = threading.Event()

    def run(self) -> None:
        host, plan = self.host, self.plan
        host.disconnect(notify=False)
        said = ""
        while not self.quit.is_set():
            try:
                c = host.connect(plan.device, plan.link_tag, force=plan.force,
                                 timeout=RELINK_HANDSHAKE_S, prime_timeout=0.2)
                got = (c.sample_rate, c.block_size, c.channels, c.return_channels)
                if got == self.want:
                    self.back.set()
                    return
                host.disconnect()
                why = (f"device {c.device} is back with {c.sample_rate} Hz, {c.block_size} "
                       f"frames, {c.channels} ch, {c.return_channels} return ch, not the "
                       "take's format; not reattaching")
                if why != said:
                    self.news("peer changed", why)
                    said = why
            except (HostError, RegistryError, SegmentError, OSError):
                pass  # not back yet
            self.quit.wait(RECONNECT_INTERVAL_S)


class _Session:
    """One session's real-time loop and what it needs, allocated before the first block."""

    def __init__(self, plan: SessionPlan, host: Host,
                 midi: tuple[list[tuple[float, bytes]], float], log: Callable[[str], None],
                 news: Callable[[str, str], None], stop: threading.Event) -> None:
        self.plan, self.host, self.log, self.news, self.stop = plan, host, log, news, stop
        self.midi_events, self.midi_length = midi
        self.refused = ""  # the device's first WRONG_MODE answer

    def _on_response(self, msg: Message, _host: Host) -> None:
        if msg.type == cmd.T.Error and not self.refused:  # rare: decoding may allocate
            e = cmd.decode(msg)
            if e["code"] == ErrorCode.WRONG_MODE:
                self.refused = e["text"] or "WRONG_MODE"

    def run(self) -> dict:
        plan, host = self.plan, self.host
        conn = host.connection
        rate, block, channels = conn.sample_rate, conn.block_size, max(conn.channels, 1)
        if plan.record is not None and conn.mode == "midi":
            raise SessionPlanError(f"device {conn.device} is MIDI-only: it has no audio to "
                                   f"record to {plan.record}")
        events = list(plan.events)
        length = 2.0
        if plan.midi_file is not None:
            events += [(round(t * rate), cmd.midi_raw(data)) for t, data in self.midi_events]
            length = self.midi_length + 0.5  # let the last notes ring
        elif plan.note is not None and not (plan.note_is_default and conn.mode == "audio"):
            seconds = plan.seconds if plan.seconds is not None else length
            events.append((0, cmd.midi_note_on(0, plan.note, plan.velocity)))
            events.append((max(0, int((seconds - 0.25) * rate)), cmd.midi_note_off(0, plan.note)))
        if plan.seconds is not None:
            length = plan.seconds
        if plan.send is not None and not conn.return_channels:
            raise SessionError(f"device {conn.device} has no return ring; start it with "
                               "--return to use --send")
        events.sort(key=lambda e: e[0])
        first_note = next((f for f, m in events if _is_note_on(m)), None)
        host.on_response(self._on_response)
        send = writer = None
        try:
            if plan.send is not None:
                send = open_send(plan.send, rate, conn.return_channels, block)
                length = max(length, send.frames / rate) if plan.seconds is None else length
            n_blocks = max(1, int(np.ceil(length * rate / block)))
            writer = TakeWriter(plan.record, rate, channels, block) if plan.record else None
            stats = self._loop(conn, events, send, n_blocks, first_note, writer)
        finally:
            error = writer.close() if writer is not None else ""
            if send is not None:
                send.close()
                error = error or send.error
        if send is not None:
            stats["send_late_blocks"] = send.late_blocks
            if send.late_blocks:
                self.news("send late", f"{send.late_blocks} block(s) of {plan.send} went out "
                          "as silence: the file was not read in time (a slow disk)")
        if writer is not None and writer.dropped_blocks:
            self.news("take incomplete", f"{writer.dropped_blocks} block(s) are missing from "
                      f"{plan.record}: the disk fell behind the writer's ring")
        if writer is not None:
            self.log(f"recorded {writer.frames_written / rate:.2f} s, {channels} ch, {rate} Hz "
                     f"to {plan.record}")
            stats["record_frames"] = writer.frames_written
            stats["record_dropped_blocks"] = writer.dropped_blocks
        if error:
            raise SessionError(error)
        if self.refused:
            raise SessionError(f"device {conn.device} refused the MIDI sent to it (WRONG_MODE: "
                               f"{self.refused})")
        return stats

    def _loop(self, conn, events, send, n_blocks, first_note, writer) -> dict:
        plan, host, stop = self.plan, self.host, self.stop
        rate, block, channels = conn.sample_rate, conn.block_size, max(conn.channels, 1)
        want = (rate, block, conn.channels, conn.return_channels)
        buf = np.zeros((channels, block), np.float32)
        magnitude = np.zeros((channels, block), np.float32)
        ret = np.zeros((conn.return_channels, block), np.float32) if send is not None else None
        # channel 0 from the first note's block on, for the note-to-sound time
        onset_from = (first_note // block) * block if first_note is not None else None
        onset = np.zeros(max(block, int(ONSET_WINDOW_S * rate) // block * block), np.float32)
        peak = 0.0
        period = block / rate
        start = time.monotonic()
        k_event = dropped = losses = 0
        relinker: _Relinker | None = None
        lost_at, lost_why = 0.0, ""
        # counters of the connections before a reattach (a connect starts them from zero)
        before = {"blocks_read": 0, "underruns": 0, "commands_sent": 0, "commands_dropped": 0}
        try:
            for k in range(n_blocks):
                if stop.is_set() or self.refused or (writer is not None and writer.error):
                    break
                block_end = (k + 1) * block
                if relinker is None:
                    while k_event < len(events) and events[k_event][0] < block_end:
                        frame, msg = events[k_event]
                        msg.sample_offset = max(0, frame - k * block)
                        if not host.send_command(msg):
                            dropped += 1
                        k_event += 1
                    if ret is not None:
                        send.pull(ret)
                        host.send_return_audio(ret)
                    got = host.receive_audio(buf)
                    host.process_responses()
                    # a short read: an underrun, or the device gone (the full check only then)
                    if got < block and not host.connected:
                        losses += 1
                        lost_at, lost_why = time.monotonic(), host.disconnect_reason
                        for name in before:
                            before[name] += getattr(host.stats, name)
                        self.news("peer lost", f"device {conn.device} went away "
                                  f"({lost_why}); recording silence until it returns")
                        relinker = _Relinker(host, plan, want, self.news)
                        relinker.start()
                else:
                    while k_event < len(events) and events[k_event][0] < block_end:
                        k_event += 1  # no device to take it
                        dropped += 1
                    buf.fill(0)
                    if send is not None:
                        send.pull(ret)  # the file keeps the take's time while the device is away
                    if relinker.back.is_set():
                        relinker.join()
                        relinker = None
                        self.news("peer back", f"reattached to {conn.device} after "
                                  f"{time.monotonic() - lost_at:.1f} s")
                if writer is not None:
                    writer.push(buf)
                np.abs(buf, out=magnitude)
                peak = max(peak, float(magnitude.max()))
                if onset_from is not None and 0 <= k * block - onset_from < onset.shape[0]:
                    at = k * block - onset_from
                    onset[at:at + block] = buf[0]
                wait = start + (k + 1) * period - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        finally:
            if relinker is not None:
                relinker.quit.set()
                relinker.join(timeout=5.0)
        if relinker is None and plan.note is not None and plan.midi_file is None:
            host.send_command(cmd.midi_cc(0, 123, 0))  # all notes off
        counts = {name: before[name] + getattr(host.stats, name) for name in before}
        if relinker is not None:
            gone = lost_why  # lost and not back: why it went
        else:
            gone = "" if host.connected else host.disconnect_reason

        note_ms = None
        if onset_from is not None:
            found = detect_onset(onset, first_note - onset_from)
            if found is not None:
                note_ms = round((found + onset_from - first_note) / rate * 1000.0, 3)
        return {
            "device": conn.device,
            "sample_rate": rate,
            "block_size": block,
            "channels": conn.channels,
            "blocks": counts["blocks_read"],
            "underruns": counts["underruns"],
            "note_to_sound_ms": note_ms,
            "link_tag": host.link_tag,
            "commands_sent": counts["commands_sent"],
            "commands_dropped": counts["commands_dropped"] + dropped,
            "peak": round(peak, 6),
            "disconnected": gone,
            "record": str(plan.record) if plan.record else None,
            "link_losses": losses,
            "stopped_early": stop.is_set(),
        }


def _is_note_on(msg: Message) -> bool:
    if msg.type == cmd.T.NoteOn:
        return cmd.decode(msg)["velocity"] > 0
    if msg.type == cmd.T.MidiRaw:
        data = bytes(msg.payload)
        return len(data) >= 3 and data[0] & 0xF0 == 0x90 and data[2] > 0
    return False
