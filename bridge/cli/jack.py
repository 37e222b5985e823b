"""``jack-device`` and ``jack-host``: JACK clients as discoLink devices, and discoLink devices
as JACK ports."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from .common import UsageError, bridge_news, positive_int, seconds


def register(sub: argparse._SubParsersAction) -> None:
    """Add jack-device and jack-host to the top-level subparsers, each with its handler."""
    sp = sub.add_parser(
        "jack-device", help="a JACK client that is a discoLink device",
        description="Run a JACK client whose audio input ports feed a discoLink device, and "
                    "whose JACK MIDI output plays the MIDI the device's host sends. So a "
                    "discoLink host can play a JACK synth and hear it. The JACK period is the "
                    "clock; the device runs at JACK's sample rate and period.",
        epilog="examples:\n"
               "  jackd --no-realtime -d dummy -r 48000 -p 256 &   # or the machine's own JACK\n"
               "  jack_midisine &\n"
               "  discolink-bridge jack-device --id Sine --connect 'midisine:out' "
               "--midi-out 'midisine:midi_in'\n"
               "  discolink-bridge jack-device --id Metro --connect 'metro:*' --channels 2\n"
               "On a real machine JACK runs on ALSA (jackd -d alsa) or is PipeWire's JACK.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--id", required=True, metavar="NAME", help="device id (NAME or NAME:N)")
    sp.add_argument("--connect", action="append", default=[], metavar="PORT",
                    help="JACK output port(s) to feed input port N (the Nth --connect); glob "
                         "patterns allowed; connected again when those clients come back")
    sp.add_argument("--channels", type=positive_int, metavar="N",
                    help="input ports, 1..12 (default: one per --connect)")
    sp.add_argument("--midi-out", action="append", default=[], metavar="PORT",
                    help="JACK MIDI input port(s) to connect the MIDI output to (glob)")
    jack_client_args(sp, "discolink-ID")
    sp.set_defaults(handler=cmd_jack_device)

    sp = sub.add_parser(
        "jack-host", help="a discoLink device's audio as JACK output ports",
        description="Connect to a discoLink device as its host and expose its channels as JACK "
                    "output ports, with a JACK MIDI input whose events go to the device as IPC "
                    "MIDI at their sample offsets. So jack_rec, Ardour, Carla or any JACK "
                    "client can record or process the device. The device must run at JACK's "
                    "sample rate.",
        epilog="examples:\n"
               "  discolink-bridge jack-host --id Sine:0 --connect-out 'system:playback_*'\n"
               "  discolink-bridge jack-host --id Synth --midi-in 'a2j:*' --link-tag studio",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--id", required=True, metavar="ID", help="device id (NAME:N, or NAME)")
    sp.add_argument("--connect-out", action="append", default=[], metavar="PORTS",
                    help="JACK input ports for out_1, out_2, ... in order (glob); repeatable")
    sp.add_argument("--midi-in", action="append", default=[], metavar="PORT",
                    help="JACK MIDI output port(s) to connect to our MIDI input (glob)")
    sp.add_argument("--link-tag", default="", metavar="TAG", help="link tag for the claim")
    jack_client_args(sp, "discolink-host-NAME")
    sp.add_argument("--seconds", type=seconds, metavar="S", help="stop after S seconds "
                    "(default: run until Ctrl-C / SIGTERM)")
    sp.set_defaults(handler=cmd_jack_host)


def jack_client_args(sp: argparse.ArgumentParser, default_name: str) -> None:
    """--jack-server and --client-name, as jack-device and jack-host both take them."""
    sp.add_argument("--jack-server", metavar="NAME",
                    help="JACK server name (default: $JACK_DEFAULT_SERVER or 'default')")
    sp.add_argument("--client-name", metavar="NAME",
                    help=f"JACK client name (default {default_name})")


def _run_bridge(bridge, prog: str) -> None:
    def stop(signum, frame):
        bridge.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    bridge.run()


def cmd_jack_device(args: argparse.Namespace) -> int:
    from ..adapters.jack_bridge import JackDeviceBridge, JackUnavailable
    from ..transport.registry import validate_device_id

    try:
        validate_device_id(args.id)
        bridge = JackDeviceBridge(args.id, args.connect, channels=args.channels,
                                  midi_out=args.midi_out, server=args.jack_server,
                                  namespace=args.namespace, client_name=args.client_name,
                                  report=bridge_news)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        try:
            device_id = bridge.start()
        except JackUnavailable as exc:
            raise RuntimeError(str(exc)) from None
        print(f"jack-device {device_id} ready: {bridge.channels} ch, {bridge.sample_rate} Hz, "
              f"{bridge.period} frames (the JACK period), JACK client {bridge.client.name!r}, "
              f"namespace {bridge.device.namespace!r}, pid {os.getpid()}", flush=True)
        _run_bridge(bridge, "jack-device")
        if not bridge.device.registered:
            raise RuntimeError(bridge.device.last_error.removeprefix("registry: ")
                               or f"{device_id} lost its registry slot")
        print(f"jack-device {device_id} stopped: {bridge.blocks} periods, {bridge.xruns} "
              f"xruns, {bridge.midi_dropped} MIDI events dropped", flush=True)
    finally:
        bridge.close()
    return 0


def cmd_jack_host(args: argparse.Namespace) -> int:
    from ..adapters.jack_bridge import JackHostBridge, JackUnavailable
    from ..transport.registry import validate_device_id, validate_link_tag

    try:
        validate_device_id(args.id)
        validate_link_tag(args.link_tag)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    bridge = JackHostBridge(args.id, connect_out=args.connect_out, midi_in=args.midi_in,
                            link_tag=args.link_tag, server=args.jack_server,
                            namespace=args.namespace, client_name=args.client_name,
                            report=bridge_news)
    try:
        try:
            bridge.start()
        except (JackUnavailable, ValueError) as exc:
            raise RuntimeError(str(exc)) from None
        c = bridge.host.connection
        print(f"jack-host {c.device} ready: {bridge.channels} JACK output port(s) at "
              f"{bridge.sample_rate} Hz, period {bridge.period} frames (device block "
              f"{c.block_size}), JACK client {bridge.client.name!r}, pid {os.getpid()}",
              flush=True)
        if args.seconds:
            threading.Timer(args.seconds, bridge.stop).start()
        _run_bridge(bridge, "jack-host")
        s = bridge.host.stats
        print(f"jack-host {c.device} stopped: {bridge.blocks} periods, {bridge.xruns} xruns, "
              f"{s.underruns} underruns, {bridge.midi_forwarded} MIDI events forwarded "
              f"({bridge.midi_dropped} dropped), "
              f"{bridge.peer_losses} peer losses, {bridge.frames_dropped} backlog frames "
              "dropped", flush=True)
    finally:
        bridge.close()
    return 0
