"""``host`` and ``send``: connect to a device as its host, to play and record or to send MIDI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..transport.clock import set_realtime_priority
from .common import (
    UsageError,
    block_size,
    bridge_news,
    check_rt_priority,
    midi7,
    print_stats,
    rt_arg,
    sample_rate,
    seconds,
    stop_on_signals,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add host and send to the top-level subparsers, each with its handler."""
    sp = sub.add_parser("host", help="connect to a device, play, record, report",
                        description="Connect to a device as a host, play a note or a MIDI file "
                                    "in real time, optionally send a WAV through the return "
                                    "ring, record the device's audio, and print stats.")
    sp.add_argument("--id", required=True, metavar="ID", help="device id (NAME:N, or NAME for "
                    "its lowest instance)")
    sp.add_argument("--link-tag", default="", metavar="TAG",
                    help="tag stored with the claim, for session recall")
    sp.add_argument("--note", type=midi7, help="MIDI note to play, 0..127 (default 69, A4; "
                    "not played to an audio-only device unless given)")
    sp.add_argument("--velocity", type=midi7, default=100, help="note velocity (default 100)")
    sp.add_argument("--midi-file", type=Path, metavar="F.mid",
                    help="play this MIDI file in time instead of --note")
    sp.add_argument("--send", type=Path, metavar="IN.wav",
                    help="stream this WAV through the device's return ring")
    sp.add_argument("--seconds", type=seconds, metavar="S",
                    help="how long to run (default 2 s, or the MIDI file's length + 0.5 s)")
    sp.add_argument("--record", type=Path, metavar="OUT.wav",
                    help="write the received audio here as it comes (32-bit float WAV; kept "
                    "on Ctrl-C, SIGTERM or SIGHUP, and readable up to about the last second "
                    "after a crash)")
    sp.add_argument("--samplerate", type=sample_rate, default=48000,
                    help="sample rate to ask for in the handshake (default 48000)")
    sp.add_argument("--blocksize", type=block_size, default=256,
                    help="block size to ask for in the handshake (default 256)")
    sp.add_argument("--force", action="store_true",
                    help="take the device even if another live host holds it")
    rt_arg(sp)
    sp.add_argument("--json", action="store_true", help="print only one JSON object: device, "
                    "sample_rate, block_size, channels, blocks, underruns, note_to_sound_ms, ...")
    sp.set_defaults(handler=cmd_host)

    sp = sub.add_parser(
        "send", help="send MIDI messages to a device, then release it",
        description="Connect to a device as a short-lived host, send MIDI messages written "
                    "in mido's text format, wait until the device has taken them, and "
                    "disconnect.",
        epilog="examples:\n"
               "  discolink-bridge send --id Sine:0 'note_on channel=0 note=60 velocity=100'\n"
               "  discolink-bridge send --id Mon:0 --at-offset 128 'control_change control=7 "
               "value=90' 'pitchwheel pitch=-2000'\n"
               "  discolink-bridge send --id Mon:0 'sysex data=(1,2,3)'\n"
               "Message types and fields are mido's: note_on, note_off, control_change, "
               "pitchwheel (-8192..8191),\nprogram_change, aftertouch, polytouch, sysex, "
               "songpos, start, stop, clock, ...",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--id", required=True, metavar="ID", help="device id (NAME:N, or NAME for "
                    "its lowest instance)")
    sp.add_argument("messages", nargs="+", metavar="MESSAGE",
                    help="a MIDI message in mido's text format, e.g. 'note_on channel=0 "
                    "note=60 velocity=100' (channels are 0..15)")
    sp.add_argument("--at-offset", type=int, default=0, metavar="N",
                    help="sample offset of the messages within the device's block (default 0)")
    sp.add_argument("--link-tag", default="", metavar="TAG", help="link tag for the claim")
    sp.add_argument("--force", action="store_true",
                    help="send even if another live host holds the device (takes its claim)")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp.set_defaults(handler=cmd_send)


def cmd_host(args: argparse.Namespace) -> int:
    from ..adapters.session import SessionPlan, SessionPlanError, run_session
    from ..transport import DeviceClaimed
    from ..transport.registry import validate_device_id, validate_link_tag

    try:
        validate_device_id(args.id)
        validate_link_tag(args.link_tag)
        check_rt_priority(args.rt_priority)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    plan = SessionPlan(device=args.id, link_tag=args.link_tag,
                       note=69 if args.note is None else args.note,
                       note_is_default=args.note is None, velocity=args.velocity,
                       midi_file=args.midi_file, send=args.send, seconds=args.seconds,
                       record=args.record, sample_rate=args.samplerate,
                       block_size=args.blocksize, force=args.force)
    log = (lambda s: None) if args.json else (lambda s: print(s, flush=True))
    if args.rt_priority:
        refused = set_realtime_priority(args.rt_priority)
        if refused:
            log(f"normal scheduling: {refused}")
    stop, signals = stop_on_signals()
    try:
        stats = run_session(plan, log=log, namespace=args.namespace, stop=stop,
                            news=bridge_news)
    except SessionPlanError as exc:
        raise UsageError(str(exc)) from None
    except DeviceClaimed as exc:
        raise RuntimeError(claimed(exc)) from None
    print_stats(stats, args.json)
    if signals:
        return 128 + signals[0]
    return 1 if stats["disconnected"] else 0


def claimed(exc) -> str:
    """A DeviceClaimed in the words of the command line (its flag is --force)."""
    return (f"device {exc.device} is claimed by host pid {exc.holder_pid} (link tag "
            f"{exc.link_tag!r}); stop that host, or pass --force to take the device over")


def cmd_send(args: argparse.Namespace) -> int:
    from ..adapters.midi_tools import send_midi
    from ..midi.event import from_mido, parse_mido_text
    from ..transport import DeviceClaimed
    from ..transport.registry import validate_device_id, validate_link_tag

    try:
        validate_device_id(args.id)
        validate_link_tag(args.link_tag)
        if not 0 <= args.at_offset <= 0xFFFFFFFF:
            raise ValueError(f"--at-offset {args.at_offset} must be 0..4294967295")
        events = []
        for n, text in enumerate(args.messages, 1):
            if not text.strip():
                raise ValueError(f"message {n} is empty; write one in mido's text format, "
                                 "e.g. 'note_on channel=0 note=60 velocity=100'")
            try:
                events.append(from_mido(parse_mido_text(text), args.at_offset))
            except ValueError as exc:
                raise ValueError(f"message {n}: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        result = send_midi(args.id, events, namespace=args.namespace, link_tag=args.link_tag,
                           force=args.force)
    except DeviceClaimed as exc:
        raise RuntimeError(claimed(exc)) from None
    if args.json:
        print(json.dumps(result.__dict__))
    else:
        print(f"sent {result.events} message(s) to {result.device} at offset "
              f"{args.at_offset} ({result.commands} command(s); round trip "
              f"{result.round_trip_ms:.2f} ms)")
    return 0
