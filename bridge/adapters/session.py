"""A host session: play a note or a MIDI file into a device, optionally send a WAV through
its return ring, and record what comes back to a WAV file, paced in real time like a DAW.

This is the engine of ``discolink-bridge host`` and ``demo``; it turns a Host into files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..transport import Host, Message, cmd


class SessionError(Exception):
    """A session cannot run as asked (bad input file, wrong format)."""


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


def detect_onset(signal: np.ndarray, start: int = 0, threshold: float | None = None) -> int | None:
    """Index of the first sample at or after ``start`` whose magnitude exceeds the threshold
    (default: 1% of the peak, at least 1e-4). None if the signal stays below it."""
    tail = np.abs(signal[start:])
    if tail.size == 0:
        return None
    thr = threshold if threshold is not None else max(1e-4, 0.01 * float(tail.max()))
    hits = np.flatnonzero(tail > thr)
    return int(start + hits[0]) if hits.size else None


def midi_file_events(path: Path, sample_rate: int) -> tuple[list[tuple[int, Message]], float]:
    """A MIDI file's channel messages as (frame, MidiRaw) pairs, and its length in seconds."""
    import mido

    try:
        mid = mido.MidiFile(path)
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise SessionError(f"cannot read MIDI file {path}: {exc}") from None
    events, now = [], 0.0
    for msg in mid:  # iterating a MidiFile yields messages with delta times in seconds
        now += msg.time
        if msg.is_meta or msg.type == "sysex":
            continue
        events.append((round(now * sample_rate), cmd.midi_raw(bytes(msg.bytes()))))
    return events, now


def read_wav(path: Path, sample_rate: int, channels: int) -> np.ndarray:
    """A WAV as float32 (channels, frames); mono is spread to every channel."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise SessionError(f"cannot read audio file {path}: {exc}") from None
    if rate != sample_rate:
        raise SessionError(f"{path} is {rate} Hz but the device runs at {sample_rate} Hz; "
                           "resample it first")
    data = data.T
    if data.shape[0] == 1 and channels > 1:
        data = np.repeat(data, channels, axis=0)
    elif data.shape[0] != channels:
        out = np.zeros((channels, data.shape[1]), np.float32)
        n = min(channels, data.shape[0])
        out[:n] = data[:n]
        data = out
    return np.ascontiguousarray(data, dtype=np.float32)


def run_session(plan: SessionPlan, host: Host | None = None,
                log: Callable[[str], None] = lambda s: None,
                namespace: str | None = None) -> dict:
    """Connect, play, record; returns the stats (see ``discolink-bridge host --json``).
    Without ``host``, a Host of our own in ``namespace`` (default: $DISCOLINK_NAMESPACE)."""
    own = host is None
    host = host or Host(namespace)
    try:
        host.set_local_buffer_info(plan.sample_rate, plan.block_size)
        conn = host.connect(plan.device, plan.link_tag, force=plan.force)
        log(f"connected to {conn.device}: {conn.sample_rate} Hz, {conn.block_size} frames, "
            f"{conn.channels} ch, {conn.mode}, protocol {conn.version}, link tag "
            f"{host.link_tag!r}")
        return _play(plan, host, log)
    finally:
        if own:
            host.close()
        else:
            host.disconnect()


def _play(plan: SessionPlan, host: Host, log: Callable[[str], None]) -> dict:
    conn = host.connection
    rate, block, channels = conn.sample_rate, conn.block_size, max(conn.channels, 1)
    events = list(plan.events)
    length = 2.0
    if plan.midi_file is not None:
        file_events, length = midi_file_events(plan.midi_file, rate)
        events += file_events
        length += 0.5  # let the last notes ring
    elif plan.note is not None:
        seconds = plan.seconds if plan.seconds is not None else length
        events.append((0, cmd.midi_note_on(0, plan.note, plan.velocity)))
        events.append((max(0, int((seconds - 0.25) * rate)), cmd.midi_note_off(0, plan.note)))
    if plan.seconds is not None:
        length = plan.seconds
    send = None
    if plan.send is not None:
        if not conn.return_channels:
            raise SessionError(f"device {conn.device} has no return ring; start it with "
                               "--return to use --send")
        send = read_wav(plan.send, rate, conn.return_channels)
        length = max(length, send.shape[1] / rate) if plan.seconds is None else length
    n_blocks = max(1, int(np.ceil(length * rate / block)))
    events.sort(key=lambda e: e[0])
    first_note = next((f for f, m in events if _is_note_on(m)), None)

    record = np.zeros((channels, n_blocks * block), np.float32)
    buf = np.zeros((channels, block), np.float32)
    ret = np.zeros((conn.return_channels, block), np.float32) if send is not None else None

    period = block / rate
    start = time.monotonic()
    k_event = 0
    dropped = 0
    for k in range(n_blocks):
        block_end = (k + 1) * block
        while k_event < len(events) and events[k_event][0] < block_end:
            frame, msg = events[k_event]
            msg.sample_offset = max(0, frame - k * block)
            if not host.send_command(msg):
                dropped += 1
            k_event += 1
        if ret is not None:
            a, b = k * block, min((k + 1) * block, send.shape[1])
            ret.fill(0)
            if a < b:
                ret[:, : b - a] = send[:, a:b]
            host.send_return_audio(ret)
        host.receive_audio(buf)
        record[:, k * block : (k + 1) * block] = buf
        host.process_responses()
        wait = start + (k + 1) * period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    if plan.note is not None and plan.midi_file is None:
        host.send_command(cmd.midi_cc(0, 123, 0))  # all notes off

    note_ms = None
    if first_note is not None:
        onset = detect_onset(record[0], first_note)
        if onset is not None:
            note_ms = round((onset - first_note) / rate * 1000.0, 3)
    if plan.record is not None:
        import soundfile as sf

        sf.write(str(plan.record), record.T, rate, subtype="FLOAT")
        log(f"recorded {record.shape[1] / rate:.2f} s, {channels} ch, {rate} Hz to {plan.record}")
    stats = {
        "device": conn.device,
        "sample_rate": rate,
        "block_size": block,
        "channels": conn.channels,
        "blocks": host.stats.blocks_read,
        "underruns": host.stats.underruns,
        "note_to_sound_ms": note_ms,
        "link_tag": host.link_tag,
        "commands_sent": host.stats.commands_sent,
        "commands_dropped": host.stats.commands_dropped + dropped,
        "peak": round(float(np.abs(record).max()), 6) if record.size else 0.0,
        "disconnected": "" if host.connected else host.disconnect_reason,
        "record": str(plan.record) if plan.record else None,
    }
    return stats


def _is_note_on(msg: Message) -> bool:
    if msg.type == cmd.T.NoteOn:
        return cmd.decode(msg)["velocity"] > 0
    if msg.type == cmd.T.MidiRaw:
        data = bytes(msg.payload)
        return len(data) >= 3 and data[0] & 0xF0 == 0x90 and data[2] > 0
    return False
