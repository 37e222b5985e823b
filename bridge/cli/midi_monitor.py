"""``midi-monitor``: a MIDI-only device that prints every event it receives."""

from __future__ import annotations

import argparse
import os
import sys

from .common import UsageError, block_size, install_stop, midi_in_args, port_event, sample_rate


def register(sub: argparse._SubParsersAction) -> None:
    """Add midi-monitor to the top-level subparsers, each with its handler."""
    sp = sub.add_parser(
        "midi-monitor", help="a MIDI-only device that prints every event it receives",
        description="Run a MIDI-only device that prints each MIDI event it receives, with "
                    "its block number and sample offset, in the manner of jack_midi_dump. "
                    "Point any host's MIDI at it (or --midi-in a live port). Runs until "
                    "Ctrl-C / SIGTERM.")
    sp.add_argument("--id", default="MidiMonitor", metavar="NAME",
                    help="device id (default MidiMonitor)")
    sp.add_argument("--samplerate", type=sample_rate, default=48000,
                    help="sample rate of its block clock in Hz (default 48000)")
    sp.add_argument("--blocksize", type=block_size, default=256,
                    help="block size in frames (default 256)")
    sp.add_argument("--json", action="store_true", help="one JSON object per event: block, "
                    "offset, bytes (hex), message")
    midi_in_args(sp)
    sp.set_defaults(handler=cmd_midi_monitor)


def cmd_midi_monitor(args: argparse.Namespace) -> int:
    from ..adapters.midi_tools import start_midi_monitor
    from ..transport.registry import validate_device_id

    try:
        validate_device_id(args.id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def print_line(line: str) -> None:
        print(line, flush=True)

    try:
        device, runner, wiring = start_midi_monitor(
            args.id, print_line, namespace=args.namespace, sample_rate=args.samplerate,
            block_size=args.blocksize, as_json=args.json, midi_in=args.midi_in,
            on_port_event=port_event, sysex_limit=args.sysex_limit)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    install_stop(runner)
    try:
        print(f"midi-monitor {device.id} ready: {device.sample_rate} Hz, {device.block_size} "
              f"frames per block, namespace {device.namespace!r}, pid {os.getpid()}",
              file=sys.stderr, flush=True)
        runner.run()
        s = wiring.stream.stats
        print(f"midi-monitor {device.id} stopped: {s.ipc_events} IPC and {s.live_events} live "
              f"events in {s.blocks} blocks; {wiring.stream.counters()['invalid']} invalid",
              file=sys.stderr, flush=True)
    finally:
        wiring.close()
        device.close()
    return 0
