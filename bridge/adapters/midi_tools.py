"""The MIDI command-line tools' engines: ``send`` (a short-lived host that sends MIDI) and
``midi-monitor`` (a MIDI-only device that prints what it receives, like jack_midi_dump)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..midi import ipc
from ..midi.event import MidiEvent
from ..midi.parser import DEFAULT_SYSEX_LIMIT
from ..midi.stream import CAPABILITIES as stream_capabilities
from ..transport import Device, ErrorCode, Host, cmd
from ..transport.clock import DeviceRunner
from ..transport.layout import Mode
from .instrument import InstrumentDevice


@dataclass
class SendResult:
    device: str
    events: int
    commands: int
    round_trip_ms: float


def send_midi(device_id: str, events: list[MidiEvent], *, namespace: str | None = None,
              link_tag: str = "", force: bool = False, timeout: float = 2.0) -> SendResult:
    """Claim ``device_id``, send ``events`` in order, wait until the device has taken them
    (a Ping behind them comes back), and release the claim.

    Raises DeviceNotFound, DeviceClaimed (naming the holder's pid and link tag unless
    ``force``), HandshakeError, TimeoutError when the device stops answering, ValueError
    (nothing sent) for an offset past the device's block, and RuntimeError when the device
    refuses what it was sent (an audio-only device answers WRONG_MODE).
    """
    messages = ipc.encode_all(events)  # encode everything first: a bad event sends nothing
    refused: list[str] = []

    def on_error(msg, _host) -> None:
        if msg.type == cmd.T.Error:
            e = cmd.decode(msg)
            try:
                refused.append(f"{ErrorCode(e['code']).name}: {e['text']}")
            except ValueError:  # a code this version does not know
                refused.append(f"error {e['code']}: {e['text']}")

    with Host(namespace) as host:
        conn = host.connect(device_id, link_tag, force=force, timeout=timeout,
                            prime_timeout=0.0)
        late = [e.offset for e in events if e.offset >= conn.block_size]
        if late:
            raise ValueError(f"sample offset {late[0]} is past the end of {conn.device}'s "
                             f"{conn.block_size}-frame block (offsets 0..{conn.block_size - 1})")
        host.on_response(on_error)
        deadline = time.monotonic() + timeout
        for m in messages:
            while host.free_command_slots() == 0:  # ring full: let the device drain it
                if not host.connected or time.monotonic() > deadline:
                    raise TimeoutError(f"device {conn.device} is not taking commands")
                host.process_responses()
                time.sleep(0.001)
            if not host.send_command(m):
                why = host.stats.last_error or "send failed"
                raise RuntimeError(f"device {conn.device}: {why}")
        rtt = host.ping(timeout=timeout)  # commands are FIFO: the Pong follows our MIDI
        host.disconnect()
    if refused:
        raise RuntimeError(f"device {conn.device} refused {len(refused)} of {len(messages)} "
                           f"command(s) ({refused[0]})")
    return SendResult(conn.device, len(events), len(messages), rtt * 1000.0)


def _reading(event: MidiEvent) -> str | None:
    """mido's text for the event, without its time (None when mido can't read it)."""
    try:
        return str(event.to_mido()).removesuffix(f" time={event.offset}")
    except Exception:
        return None


def format_event(block: int, event: MidiEvent) -> str:
    """One line per event, jack_midi_dump style: block, offset, bytes, and mido's reading."""
    body = " ".join(f"{b:02x}" for b in event.data)
    text = _reading(event) or "(unparsable)"
    return f"block {block:>7}  offset {event.offset:>5}: {body:<12}  {text}"


def event_json(block: int, event: MidiEvent) -> str:
    """One JSON object per event: block, offset, bytes (hex), message (mido's reading)."""
    return json.dumps({"block": block, "offset": event.offset, "bytes": event.data.hex(),
                       "message": _reading(event) or ""})


def start_midi_monitor(device_id: str, print_line: Callable[[str], None], *,
                       namespace: str | None = None, sample_rate: int = 48000,
                       block_size: int = 256, as_json: bool = False,
                       midi_in: list[str] | None = None,
                       on_port_event: Callable[[str, str], None] | None = None,
                       sysex_limit: int = DEFAULT_SYSEX_LIMIT,
                       ) -> tuple[Device, DeviceRunner, InstrumentDevice]:
    """A MIDI-only device on the real-time clock whose blocks print their events."""
    fmt = event_json if as_json else format_event

    def on_events(block: int, events: list[MidiEvent]) -> None:
        for e in events:
            print_line(fmt(block, e))

    device = Device(namespace)
    device.start(device_id, 0, sample_rate, block_size, Mode.MIDI,
                 capabilities=stream_capabilities)
    try:
        wiring = InstrumentDevice(device, None, midi_in=midi_in, on_events=on_events,
                                  on_port_event=on_port_event, sysex_limit=sysex_limit)
    except BaseException:
        device.close()
        raise
    runner = DeviceRunner(device, wiring, clock="realtime")
    return device, runner, wiring
