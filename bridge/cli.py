"""``discolink-bridge``: run devices, list the registry, and host devices from a terminal.

Exit codes: 0 success; 2 usage or configuration error (one line on stderr); 1 runtime
failure (one clear line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .midi.parser import DEFAULT_SYSEX_LIMIT
from .transport.clock import DEFAULT_RT_PRIORITY, set_realtime_priority

EPILOG = """\
examples:
  discolink-bridge device --id Sine                 # a sine synth device, Sine:0
  discolink-bridge list                             # what is registered
  discolink-bridge cleanup --all                    # what killed devices left in /dev/shm
  discolink-bridge host --id Sine:0 --record a.wav  # play A4 for 2 s and record it
  discolink-bridge demo                             # a rack, a phrase recorded, its status
  discolink-bridge rack configs/demo.yaml           # run a rack of devices from a YAML file
  discolink-bridge midi-monitor --id Mon            # print the MIDI a device receives
  discolink-bridge send --id Mon:0 'note_on note=60 velocity=100'   # send it some

Devices and hosts meet in a namespace: $DISCOLINK_NAMESPACE or --namespace (default
"default"). Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""


class UsageError(Exception):
    """Bad configuration detected after parsing: exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``--help`` shows the rest)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 24 * 3600:
        raise argparse.ArgumentTypeError(f"{value} s is out of range (0, 86400]")
    return value


def _midi7(text: str) -> int:
    value = _positive_int(text) if text != "0" else 0
    if value > 127:
        raise argparse.ArgumentTypeError(f"{value} is out of the MIDI range 0..127")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="discolink-bridge",
        description="discoLink shared-memory audio and MIDI between processes: run devices, "
                    "list them, and host them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--namespace", help="registry namespace (default: $DISCOLINK_NAMESPACE "
                   "or 'default')")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def device_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--id", metavar="NAME",
                        help="device id: NAME takes the lowest free NAME:N, NAME:N asks for "
                             "exactly that (session recall). Default: the id in --state, "
                             "else the first plugin's name, else Sine")
        sp.add_argument("--channels", metavar="N|LIST",
                        help="output channels: a count 1..12 (default 2 for the sine synth, "
                             "a plugin's own output bus otherwise), or with plugins a list "
                             "of the last stage's channels, e.g. 3-4 or 1,3")
        sp.add_argument("--samplerate", type=_positive_int, default=48000,
                        help="sample rate in Hz (default 48000)")
        sp.add_argument("--blocksize", type=_positive_int, default=256,
                        help="block size in frames (default 256)")
        sp.add_argument("--mode", default="audio+midi", choices=["audio+midi", "audio", "midi"],
                        help="transport mode (default audio+midi)")
        sp.add_argument("--clock", default="demand", choices=["demand", "realtime"],
                        help="demand: render when the host's ring runs low (default); "
                             "realtime: render on the device's own clock")
        sp.add_argument("--fill", type=_positive_int, default=2,
                        help="demand clock: blocks kept queued ahead of the host, 1..4 "
                             "(default 2; latency is at most fill x block)")
        sp.add_argument("--return", dest="return_audio", action="store_true",
                        help="add a host-to-device return ring (the synth mixes it in; an "
                             "effect chain takes it as its input, and gets one by default)")
        plugin = sp.add_argument_group(
            "plugins (pedalboard, lilv)", "Run VST3 plugins (AU on macOS), LV2 plugins, "
            "pedalboard's built-in effects or the built-in synth instead of the sine synth. "
            "Several --plugin make a chain, first to last; only the first may be an "
            "instrument (or the first after LV2 MIDI effects).")
        plugin.add_argument("--plugin", action="append", default=[], metavar="SPEC",
                            help="a .vst3 path, lv2:URI or lv2:NAME (from $LV2_PATH), "
                                 "builtin:NAME (builtin:Reverb, builtin:Chorus, ..., "
                                 "builtin:Sine); repeatable")
        plugin.add_argument("--plugin-name", metavar="NAME",
                            help="which plugin of a bundle that holds several")
        plugin.add_argument("--tap", metavar="TAP",
                            help="what feeds the link: out (default), a stage by name or "
                                 "number, optionally with channels: DLSine12:3-4")
        plugin.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                            help="set a parameter at start (by key or display name; in a "
                                 "chain Stage.key); repeatable")
        plugin.add_argument("--state", type=Path, metavar="FILE",
                            help="restore the device id and plugin state from FILE at start "
                                 "(if it exists), and save them there when they change and "
                                 "on stop")
        plugin.add_argument("--preset", type=Path, metavar="PRESET",
                            help="load this preset at start (unless --state restores one): "
                                 "a .vstpreset file, or an LV2 preset's name, URI or .ttl")
        plugin.add_argument("--input", type=Path, metavar="FILE",
                            help="effects: loop this audio file as the chain's input "
                                 "(instead of the host's return audio)")
        sp.add_argument("--fixed-format", action="store_true",
                        help="keep this sample rate and block size even if a host asks for "
                             "others (default: follow the host's handshake)")
        sp.add_argument("--monitor", action="store_true",
                        help="print every command, response and connection event to stderr")
        midi_in_args(sp)
        rt_arg(sp)

    def midi_in_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--midi-in", action="append", default=[], metavar="PATTERN",
                        help="also play live MIDI from every input port whose name matches "
                             "(glob, or a substring); repeatable. Uses ALSA, or JACK where "
                             "there is no /dev/snd/seq. Ports that vanish are reopened")
        sp.add_argument("--sysex-limit", type=_positive_int, default=DEFAULT_SYSEX_LIMIT,
                        metavar="BYTES", help="longest SysEx accepted; longer ones are "
                        f"dropped and counted (default {DEFAULT_SYSEX_LIMIT})")

    def rt_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--rt-priority", type=int, default=DEFAULT_RT_PRIORITY, metavar="N",
                        help="SCHED_FIFO priority of the audio loop, 1..99, as JACK uses; 0 "
                             f"for normal scheduling (default {DEFAULT_RT_PRIORITY}; falls "
                             "back to normal when the OS refuses)")

    def jack_client_args(sp: argparse.ArgumentParser, default_name: str) -> None:
        sp.add_argument("--jack-server", metavar="NAME",
                        help="JACK server name (default: $JACK_DEFAULT_SERVER or 'default')")
        sp.add_argument("--client-name", metavar="NAME",
                        help=f"JACK client name (default {default_name})")

    sp = sub.add_parser("device", help="run the sine-synth device until Ctrl-C / SIGTERM",
                        description="Run a polyphonic sine-synth device that plays the MIDI it "
                                    "receives over discoLink. Stops cleanly on SIGINT/SIGTERM.")
    device_args(sp)
    sp = sub.add_parser("master", help="the sine-synth device with a live status display",
                        description="Like 'device', with a live terminal display: claim, link "
                                    "tag, ring fill, underruns, messages and levels.")
    device_args(sp)

    sp = sub.add_parser("list", help="print the registry",
                        description="List the devices registered in the namespace.")
    sp.add_argument("--json", action="store_true", help="print a JSON list of objects with "
                    "id, pid, channels, sample_rate, block_size, mode, claimed, host_pid, "
                    "link_tag, xruns")

    sp = sub.add_parser(
        "cleanup", help="remove what dead devices left in shared memory",
        description="Free the registry slots of devices that died (kill -9, a crash) and "
                    "remove the shared-memory segments (/dev/shm) that no live device owns. A "
                    "namespace with no device left loses its registry too. Running devices "
                    "and their hosts are never touched. Safe to run at any time.",
        epilog="examples:\n  discolink-bridge cleanup --dry-run   # what would go, in this "
               "namespace\n  discolink-bridge cleanup --all       # every namespace of "
               "this user", formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--all", action="store_true",
                    help="every namespace of this user, not just the current one")
    sp.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    sp.add_argument("--json", action="store_true", help="print a JSON list, one object per "
                    "namespace: namespace, live, freed, removed")

    sp = sub.add_parser("host", help="connect to a device, play, record, report",
                        description="Connect to a device as a host, play a note or a MIDI file "
                                    "in real time, optionally send a WAV through the return "
                                    "ring, record the device's audio, and print stats.")
    sp.add_argument("--id", required=True, metavar="ID", help="device id (NAME:N, or NAME for "
                    "its lowest instance)")
    sp.add_argument("--link-tag", default="", metavar="TAG",
                    help="tag stored with the claim, for session recall")
    sp.add_argument("--note", type=_midi7, default=69, help="MIDI note to play (default 69, A4)")
    sp.add_argument("--velocity", type=_midi7, default=100, help="note velocity (default 100)")
    sp.add_argument("--midi-file", type=Path, metavar="F.mid",
                    help="play this MIDI file in time instead of --note")
    sp.add_argument("--send", type=Path, metavar="IN.wav",
                    help="stream this WAV through the device's return ring")
    sp.add_argument("--seconds", type=_seconds, metavar="S",
                    help="how long to run (default 2 s, or the MIDI file's length + 0.5 s)")
    sp.add_argument("--record", type=Path, metavar="OUT.wav",
                    help="write the received audio here (32-bit float WAV)")
    sp.add_argument("--samplerate", type=_positive_int, default=48000,
                    help="sample rate to ask for in the handshake (default 48000)")
    sp.add_argument("--blocksize", type=_positive_int, default=256,
                    help="block size to ask for in the handshake (default 256)")
    sp.add_argument("--force", action="store_true",
                    help="take the device even if another live host holds it")
    rt_arg(sp)
    sp.add_argument("--json", action="store_true", help="print only one JSON object: device, "
                    "sample_rate, block_size, channels, blocks, underruns, note_to_sound_ms, ...")

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

    sp = sub.add_parser(
        "midi-monitor", help="a MIDI-only device that prints every event it receives",
        description="Run a MIDI-only device that prints each MIDI event it receives, with "
                    "its block number and sample offset, in the manner of jack_midi_dump. "
                    "Point any host's MIDI at it (or --midi-in a live port). Runs until "
                    "Ctrl-C / SIGTERM.")
    sp.add_argument("--id", default="MidiMonitor", metavar="NAME",
                    help="device id (default MidiMonitor)")
    sp.add_argument("--samplerate", type=_positive_int, default=48000,
                    help="sample rate of its block clock in Hz (default 48000)")
    sp.add_argument("--blocksize", type=_positive_int, default=256,
                    help="block size in frames (default 256)")
    sp.add_argument("--json", action="store_true", help="one JSON object per event: block, "
                    "offset, bytes (hex), message")
    midi_in_args(sp)

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
    sp.add_argument("--channels", type=_positive_int, metavar="N",
                    help="input ports, 1..12 (default: one per --connect)")
    sp.add_argument("--midi-out", action="append", default=[], metavar="PORT",
                    help="JACK MIDI input port(s) to connect the MIDI output to (glob)")
    jack_client_args(sp, "discolink-ID")

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
    sp.add_argument("--seconds", type=_seconds, metavar="S", help="stop after S seconds "
                    "(default: run until Ctrl-C / SIGTERM)")

    sp = sub.add_parser("plugin", help="find plugins and describe them",
                        description="Plugin discovery: scan folders for VST3 (and AU on "
                                    "macOS) and LV2 plugins, or describe one plugin. Each "
                                    "plugin is probed in a subprocess with a timeout, so one that "
                                    "crashes or hangs is reported and the scan goes on.")
    psub = sp.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    scan = psub.add_parser("scan", help="list the plugins in the standard folders and DIRs",
                           description="List plugins with name, vendor, path, format, "
                                       "instrument or effect, inputs, outputs and parameter "
                                       "count (LV2: also URI, class, MIDI ports). Searches the "
                                       "standard VST3 folders, the LV2 path and any DIRs "
                                       "given. Results are cached and refreshed when the "
                                       "files change.")
    scan.add_argument("dirs", nargs="*", type=Path, metavar="DIR", help="more folders to search")
    scan.add_argument("--json", action="store_true", help="print a JSON list of objects")
    scan.add_argument("--timeout", type=_seconds, default=30.0, metavar="S",
                      help="give up on a plugin that takes longer to probe (default 30 s)")
    scan.add_argument("--no-cache", action="store_true", help="probe everything again")
    info = psub.add_parser("info", help="describe one plugin",
                           description="Load one plugin (in a subprocess) and describe it: "
                                       "name, vendor, path, format, is_instrument, is_effect, "
                                       "inputs, outputs and its parameters (name, min, max, "
                                       "default).")
    info.add_argument("path", metavar="PLUGIN",
                      help="a .vst3 bundle, lv2:URI or lv2:NAME, or builtin:NAME")
    info.add_argument("--plugin-name", metavar="NAME",
                      help="which plugin of a bundle that holds several")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--timeout", type=_seconds, default=30.0, metavar="S",
                      help="give up after this long (default 30 s)")

    sp = sub.add_parser(
        "rack", help="run a rack of devices from a YAML file (or check it, or reload it)",
        description="A headless rack: every device of FILE.yaml in its own supervised "
                    "process, restarted by its policy, with ids and plugin states kept across "
                    "restarts. Runs until Ctrl-C / SIGTERM (every device then stops and "
                    "deregisters); SIGHUP re-reads the file. docs/configuration.md has the "
                    "format.",
        epilog="examples:\n"
               "  discolink-bridge rack configs/demo.yaml     # run it (status table, then logs)\n"
               "  discolink-bridge rack check configs/vst3.yaml   # validate only (exit 2 if bad)\n"
               "  discolink-bridge rack schema > rack.schema.json # JSON Schema for editors\n"
               "  discolink-bridge rack reload                # re-read the running rack's file\n"
               "  discolink-bridge status                     # what the running rack is doing",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("target", metavar="FILE|check|schema|reload",
                    help="a rack file to run, or one of the actions")
    sp.add_argument("file", nargs="?", type=Path, metavar="FILE", help="for check: the file")
    sp.add_argument("--state-dir", type=Path, metavar="DIR",
                    help="keep ids and plugin states here instead of the rack's state folder")

    sp = sub.add_parser("status", help="ask the running rack how its devices are",
                        description="Ask the rack running in the namespace (through its "
                                    "control socket) for each device's pid, state, claim, "
                                    "link tag, ring fill, underruns, restarts and CPU %.")
    sp.add_argument("--json", action="store_true", help="print the answer as JSON")

    sp = sub.add_parser("demo", help="run the demo rack, record a phrase from it, stop",
                        description="The whole chain in one command: start the demo rack "
                                    "(configs/demo.yaml: the built-in synth, and the synth "
                                    "through pedalboard's chorus and reverb), play a short "
                                    "phrase on its Pad device as a host, record demo.wav, "
                                    "print the session's stats and the rack's status, stop.")
    sp.add_argument("--record", type=Path, default=Path("demo.wav"), metavar="OUT.wav",
                    help="where to write the recording (default demo.wav)")
    sp.add_argument("--seconds", type=_seconds, default=3.0, help="length (default 3)")
    sp.add_argument("--json", action="store_true", help="print the stats as JSON")
    return p


# ---- commands -----------------------------------------------------------------------------


def _device_setup(args: argparse.Namespace):
    from .adapters.instrument import InstrumentDevice
    from .adapters.sine import SineSynth
    from .transport import Capability, Device, DeviceRunner, make_console_monitor
    from .transport.registry import validate_device_id

    try:
        if not 1 <= args.fill <= 4:
            raise ValueError(f"--fill must be 1..4 blocks, got {args.fill}")
        check_rt_priority(args.rt_priority)
        if args.plugin:
            device_id, channels, chain, saved = _plugin_setup(args)
        else:
            for flag in ("plugin_name", "tap", "state", "input", "preset"):
                if getattr(args, flag):
                    raise ValueError(f"--{flag.replace('_', '-')} needs --plugin")
            if args.param:
                raise ValueError("--param needs --plugin")
            device_id, chain, saved = "Sine" if args.id is None else args.id, None, None
            channels = 2 if args.channels is None else _channel_count(args.channels)
        validate_device_id(device_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    monitor = make_console_monitor(audio=False) if args.monitor else None
    device = Device(args.namespace, monitor=monitor)
    caps = 0 if args.fixed_format else Capability.FLEXIBLE_FORMAT
    # an effect chain listens to the host through the return ring unless it plays a file
    return_audio = args.return_audio or (chain is not None and chain.is_effect
                                         and args.input is None)
    try:
        device.start(device_id, channels, args.samplerate, args.blocksize, args.mode,
                     capabilities=caps, return_audio=return_audio)
    except ValueError as exc:
        device.close()
        raise UsageError(str(exc)) from None
    try:
        saver = None
        if chain is not None:
            chain.report = device.report_error
            if args.state is not None:
                from .adapters.plugin_device import StateSaver

                saver = StateSaver(args.state, lambda: device.id, device.report_error)
                chain.on_state_change = saver
        instrument = chain if chain is not None else SineSynth(args.samplerate)
        wiring = InstrumentDevice(device, instrument, midi_in=args.midi_in,
                                  sysex_limit=args.sysex_limit, on_port_event=_port_event)
        if chain is not None:
            device.on_command(chain.handle)
    except BaseException:
        device.close()
        raise
    runner = DeviceRunner(device, wiring, clock=args.clock, fill=args.fill,
                          rt_priority=args.rt_priority)
    runner.wiring = wiring
    runner.chain = chain
    runner.saver = saver
    runner.restored = saved is not None
    return device, runner


def _channel_count(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 12:
        raise ValueError(f"--channels {text!r}: give a count 1..12 (channel lists are for "
                         "plugins)")
    return int(text)


def _plugin_setup(args: argparse.Namespace):
    """Load the chain for ``device --plugin``: (device id, channels, chain, saved state)."""
    from .adapters.plugin_device import build_chain, read_state_file

    saved = read_state_file(args.state) if args.state else None
    if saved is not None and len(saved["chain"].get("stages", [])) != len(args.plugin):
        raise ValueError(f"--state {args.state} holds a chain of "
                         f"{len(saved['chain']['stages'])} plugin(s), not {len(args.plugin)}")
    chain = build_chain(args.plugin, sample_rate=args.samplerate, block_size=args.blocksize,
                        plugin_name=args.plugin_name, channels=args.channels, tap=args.tap,
                        params=args.param, input_file=args.input,
                        state=saved["chain"] if saved else None, preset=args.preset)
    device_id = args.id if args.id is not None else (saved["device_id"] if saved else None) \
        or re.sub(r"[^A-Za-z0-9_.-]+", "", chain.stages[0].name) or "Plugin"
    return device_id, chain.channels, chain, saved


def _protect_stdout() -> None:
    """Point fd 1 at stderr, and Python's stdout at a copy of the real one: what a plugin
    prints (C++ code writes to fd 1) can't corrupt our output, --json included."""
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = open(real, "w", buffering=1, closefd=True)


def _port_event(event: str, detail: str) -> None:
    """Live MIDI port news, on stderr (stdout is for the device's own status lines)."""
    _bridge_news(f"midi-in {event}", detail)


def check_rt_priority(priority: int) -> None:
    if not 0 <= priority <= 99:
        raise ValueError(f"--rt-priority must be 0..99, got {priority}")


def _install_stop(runner) -> None:
    def stop(signum, frame):
        runner.stop_event.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def cmd_device(args: argparse.Namespace) -> int:
    return _run_device(args, display=False)


def cmd_master(args: argparse.Namespace) -> int:
    return _run_device(args, display=True)


def _run_device(args: argparse.Namespace, display: bool) -> int:
    """``device`` and ``master``: one life cycle (ready line, run, stopped line, state saved
    on stop), with ``master``'s live display in the main thread while the loop runs in
    another."""
    if args.plugin:
        _protect_stdout()
    device, runner = _device_setup(args)
    _install_stop(runner)
    try:
        what = ""
        if runner.chain is not None:
            chain = runner.chain
            what = (f", plugins {' -> '.join(st.name for st in chain.stages)}, tap "
                    f"{chain.tap.name}{', state restored' if runner.restored else ''}")
        fmt = (f"{device.channels} ch, {device.sample_rate} Hz, {device.block_size} frames, "
               f"{device.mode.label}, {args.clock} clock"
               f"{f' (fill {args.fill})' if args.clock == 'demand' else ''}")
        if display:
            _live_display(args, device, runner, fmt, what.removeprefix(", plugins "))
        else:
            rt = f", {runner.enter_realtime()}" if args.rt_priority else ""
            print(f"device {device.id} ready: {fmt}{rt}, namespace {device.namespace!r}, pid "
                  f"{os.getpid()}{what}", flush=True)
            runner.run()
        if not device.registered:
            raise RuntimeError(device.last_error.removeprefix("registry: "))
        s = device.stats
        midi = runner.wiring.stream.stats
        print(f"device {device.id} stopped: {s.blocks_written} blocks, {s.overruns} overruns, "
              f"{s.underruns} host underruns, {s.commands_received} commands, "
              f"{s.bad_messages} bad messages, {midi.ipc_events + midi.live_events} MIDI "
              f"events", flush=True)
    finally:
        runner.wiring.close()
        _save_state(args, device, runner)
        device.close()
    return 0


def _save_state(args: argparse.Namespace, device, runner) -> None:
    if runner.chain is None or args.state is None or not device.id:
        return
    from .adapters.plugin_device import write_state_file

    if runner.saver is not None:
        runner.saver.close()
    try:
        write_state_file(args.state, device.id, runner.chain.get_state())
    except OSError as exc:
        print(f"discolink-bridge device: could not save --state {args.state}: {exc}",
              file=sys.stderr)


def _live_display(args: argparse.Namespace, device, runner, fmt: str, plugins: str) -> None:
    """``master``: the device loop in a thread of its own, a status table on the terminal."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    levels = np.zeros(max(device.channels, 1), np.float32)
    scratch = np.zeros((max(device.channels, 1), 8192), np.float32)

    def on_block(block):
        view = scratch[:, : block.shape[1]]
        np.abs(block, out=view)
        np.maximum(levels * 0.8, view.max(axis=1), out=levels)

    runner.on_block = on_block
    thread = threading.Thread(target=runner.run, name="discolink-device", daemon=True)

    def table() -> Table:
        s = device.stats
        t = Table(title=f"discoLink device {device.id}  (namespace {device.namespace})",
                  show_header=False, min_width=60)
        host = device.host_pid
        t.add_row("claim", f"host pid {host}" + ("" if device.host_alive() else " (stale)")
                  if host else "unclaimed")
        t.add_row("link tag", device.link_tag or "-")
        t.add_row("format", fmt)
        if plugins:
            t.add_row("plugins", plugins)
        t.add_row("scheduling", runner.rt_status if args.rt_priority else "normal")
        t.add_row("ring fill", f"{device.fill()} frames")
        t.add_row("blocks", str(s.blocks_written))
        t.add_row("underruns / overruns", f"{s.underruns} / {s.overruns}")
        t.add_row("messages in / out", f"{s.commands_received} / {s.responses_sent}")
        t.add_row("bad messages", str(s.bad_messages))
        for c, level in enumerate(levels):
            db = 20 * np.log10(max(float(level), 1e-6))
            bar = "#" * int(max(0.0, (db + 60) / 60) * 30)
            t.add_row(f"level ch {c + 1}", f"{db:6.1f} dBFS {bar}")
        return t

    thread.start()
    try:
        with Live(table(), console=Console(), refresh_per_second=10) as live:
            while thread.is_alive() and not runner.stop_event.is_set():
                time.sleep(0.1)
                live.update(table())
    finally:
        runner.stop_event.set()
        thread.join(timeout=2)


def cmd_list(args: argparse.Namespace) -> int:
    from .transport import Registry
    from .transport.shm import namespace_from_env

    registry = Registry.find(args.namespace)
    devices = []
    if registry is not None:
        try:
            devices = registry.scan()
        finally:
            registry.close()
    if args.json:
        print(json.dumps([d.to_json() for d in devices]))
        return 0
    if not devices:
        print(f"no devices in namespace {namespace_from_env(args.namespace)!r}")
        return 0
    print(f"{'ID':<24} {'PID':>7} {'CH':>3} {'RATE':>6} {'BLOCK':>5} {'MODE':<10} "
          f"{'XRUNS':>5} CLAIM")
    for d in devices:
        claim = f"host {d.host_pid}" if d.claimed else "-"
        if d.link_tag:
            claim += f" [{d.link_tag}]"
        print(f"{d.id:<24} {d.pid:>7} {d.channels:>3} {d.sample_rate:>6} {d.block_size:>5} "
              f"{d.mode:<10} {d.xruns:>5} {claim}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from .transport.registry import sweep_namespace
    from .transport.shm import namespace_from_env, namespace_prefix, namespaces

    names = namespaces() if args.all else [namespace_from_env(args.namespace)]
    sweeps = [s for ns in names if (s := sweep_namespace(ns, dry_run=args.dry_run))]
    if args.json:
        print(json.dumps([s.to_json() for s in sweeps]))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for s in sweeps:
        removed = ", ".join(n[len(namespace_prefix(s.namespace)):] for n in s.removed)
        parts = [f"{verb} {len(s.removed)} segment(s)" + (f" ({removed})" if removed else "")]
        if s.freed:
            parts.append(f"{'would free' if args.dry_run else 'freed'} the slot(s) of dead "
                         f"device(s) {', '.join(s.freed)}")
        parts.append(f"kept {len(s.live)} live device(s)" + (
            f" ({', '.join(s.live)})" if s.live else ""))
        print(f"namespace {s.namespace!r}: " + "; ".join(parts))
    if not sweeps:
        where = "any namespace" if args.all else f"namespace {names[0]!r}"
        print(f"nothing to clean: no registry for {where}")
    return 0


def _print_stats(stats: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(stats))
        return
    ms = stats["note_to_sound_ms"]
    print(f"{stats['device']}: {stats['blocks']} blocks, {stats['underruns']} underruns, "
          f"note-to-sound {'n/a' if ms is None else f'{ms:.2f} ms'}, peak {stats['peak']:.3f}"
          + (f", disconnected: {stats['disconnected']}" if stats["disconnected"] else ""))


def cmd_host(args: argparse.Namespace) -> int:
    from .adapters.session import SessionPlan, run_session
    from .transport.registry import validate_device_id, validate_link_tag

    try:
        validate_device_id(args.id)
        validate_link_tag(args.link_tag)
        check_rt_priority(args.rt_priority)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for path in (args.midi_file, args.send):
        if path is not None and not path.is_file():
            raise UsageError(f"no such file: {path}")
    plan = SessionPlan(device=args.id, link_tag=args.link_tag, note=args.note,
                       velocity=args.velocity, midi_file=args.midi_file, send=args.send,
                       seconds=args.seconds, record=args.record, sample_rate=args.samplerate,
                       block_size=args.blocksize, force=args.force)
    log = (lambda s: None) if args.json else (lambda s: print(s, flush=True))
    if args.rt_priority:
        refused = set_realtime_priority(args.rt_priority)
        if refused:
            log(f"normal scheduling: {refused}")
    stats = run_session(plan, log=log, namespace=args.namespace)
    _print_stats(stats, args.json)
    return 1 if stats["disconnected"] else 0


DEMO_RACK = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
DEMO_PHRASE = [(60, 0.0), (64, 0.25), (67, 0.5), (72, 0.75), (67, 1.0), (64, 1.25)]


def _demo_phrase(path: Path) -> None:
    """A short arpeggio as a MIDI file: C E G C G E, a quarter second each."""
    import mido

    track = mido.MidiTrack()
    mid = mido.MidiFile(ticks_per_beat=480, tracks=[track])
    track.append(mido.MetaMessage("set_tempo", tempo=500000))  # 120 bpm: 240 ticks = 0.25 s
    for note, _start in DEMO_PHRASE:
        track.append(mido.Message("note_on", note=note, velocity=90, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=240))
    mid.save(path)


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the demo rack (configs/demo.yaml) in a namespace of its own, play a phrase on
    its Pad device and record it, print the rack's status, stop it."""
    import tempfile

    from .adapters.session import SessionPlan, run_session
    from .rack.supervisor import ask, format_status
    from .transport import Host

    if not DEMO_RACK.is_file():
        raise RuntimeError(f"the demo rack {DEMO_RACK} is missing (run from a checkout)")
    namespace = args.namespace or os.environ.get("DISCOLINK_NAMESPACE") or \
        f"demo{os.getpid()}"
    env = dict(os.environ, DISCOLINK_NAMESPACE=namespace, PYTHONUNBUFFERED="1")
    say = (lambda s: None) if args.json else (lambda s: print(s, flush=True))
    with tempfile.TemporaryDirectory(prefix="discolink-demo-") as tmp:
        rack = subprocess.Popen([sys.executable, "-m", "bridge", "rack", str(DEMO_RACK),
                                 "--state-dir", tmp], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        stats = {"disconnected": "the demo did not run"}
        try:
            for line in rack.stdout:
                if " ready: " in line and line.startswith("rack "):
                    say(line.strip())
                    break
            else:
                raise RuntimeError(f"the demo rack did not start (exit code {rack.wait()})")
            phrase = Path(tmp) / "phrase.mid"
            _demo_phrase(phrase)
            with Host(namespace) as host:
                plan = SessionPlan(device="Pad:0", link_tag="demo", midi_file=phrase,
                                   seconds=args.seconds, record=args.record)
                stats = run_session(plan, host, log=say)
            status = ask(namespace, "status")
            status.pop("ok", None)
            _print_stats(stats, args.json)
            if args.json:
                print(json.dumps({"rack": status}))
            else:
                print(format_status(status))
        finally:
            rack.send_signal(signal.SIGTERM)
            try:
                rack.wait(timeout=20)
            except subprocess.TimeoutExpired:
                rack.kill()
                rack.wait()
        say("rack stopped")
    return 1 if stats["disconnected"] else 0


def _rack_namespace(args: argparse.Namespace) -> str:
    from .transport.shm import namespace_from_env

    return namespace_from_env(args.namespace)


def cmd_rack(args: argparse.Namespace) -> int:
    from .rack import config as rack_config
    from .rack.supervisor import Rack, ask, format_status

    if args.target == "schema":
        print(json.dumps(rack_config.json_schema(), indent=1))
        return 0
    if args.target == "reload":
        reply = ask(_rack_namespace(args), "reload", timeout=120)
        print(reply.get("message") or reply.get("error"))
        return 0 if reply.get("ok") else 1
    if args.target == "check":
        if args.file is None:
            raise UsageError("rack check needs a FILE")
        path = args.file
    else:
        if args.file is not None:
            raise UsageError(f"unexpected {args.file}: give one rack FILE (or check FILE)")
        path = Path(args.target)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() \
            else "does not exist"
        raise UsageError(f"rack file {path} {what}; give a YAML file such as configs/demo.yaml")
    env = dict(os.environ)
    if args.namespace:
        env["DISCOLINK_NAMESPACE"] = args.namespace
    try:
        config = rack_config.load_rack(path, environ=env)
    except rack_config.ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"discolink-bridge rack: {path}: {len(exc.issues)} error(s); nothing started",
              file=sys.stderr)
        return 2
    if args.target == "check":
        print(f"{path}: ok, rack {config.name!r} with {len(config.devices)} device(s)")
        return 0
    rack = Rack(path, config, state_dir=args.state_dir.resolve() if args.state_dir else None)
    signal.signal(signal.SIGINT, lambda *_: rack.stop())
    signal.signal(signal.SIGTERM, lambda *_: rack.stop())
    signal.signal(signal.SIGHUP, lambda *_: rack.request_reload())
    try:
        rack.start()
        print(format_status(rack.status()), flush=True)
        print(f"rack {config.name} ready: {len(rack.children)} device(s), namespace "
              f"{rack.namespace!r}, pid {os.getpid()}; Ctrl-C stops it, SIGHUP or "
              "'discolink-bridge rack reload' re-reads the file", flush=True)
        rack.run()
    finally:
        rack.shutdown()
    print(f"rack {config.name} stopped", flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .rack.supervisor import ask, format_status

    reply = ask(_rack_namespace(args), "status")
    if not reply.get("ok"):
        raise RuntimeError(reply.get("error", "the rack did not answer"))
    reply.pop("ok")
    print(json.dumps(reply, indent=1) if args.json else format_status(reply))
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from .adapters.midi_tools import send_midi
    from .midi.event import from_mido, parse_mido_text
    from .transport.registry import validate_device_id, validate_link_tag

    try:
        validate_device_id(args.id)
        validate_link_tag(args.link_tag)
        if not 0 <= args.at_offset <= 0xFFFFFFFF:
            raise ValueError(f"--at-offset {args.at_offset} must be 0..4294967295")
        events = []
        for n, text in enumerate(args.messages, 1):
            try:
                events.append(from_mido(parse_mido_text(text), args.at_offset))
            except ValueError as exc:
                raise ValueError(f"message {n}: {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = send_midi(args.id, events, namespace=args.namespace, link_tag=args.link_tag,
                       force=args.force)
    if args.json:
        print(json.dumps(result.__dict__))
    else:
        print(f"sent {result.events} message(s) to {result.device} at offset "
              f"{args.at_offset} ({result.commands} command(s); round trip "
              f"{result.round_trip_ms:.2f} ms)")
    return 0


def cmd_midi_monitor(args: argparse.Namespace) -> int:
    from .adapters.midi_tools import start_midi_monitor
    from .transport.registry import validate_device_id

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
            on_port_event=_port_event)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _install_stop(runner)
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


def _bridge_news(event: str, detail: str) -> None:
    """A bridge's news (JACK or a port lost, back, refused), one line on stderr."""
    print(f"discolink-bridge: {event}: {detail}", file=sys.stderr, flush=True)


def _run_bridge(bridge, prog: str) -> None:
    def stop(signum, frame):
        bridge.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    bridge.run()


def cmd_jack_device(args: argparse.Namespace) -> int:
    from .adapters.jack_bridge import JackDeviceBridge, JackUnavailable
    from .transport.registry import validate_device_id

    try:
        validate_device_id(args.id)
        bridge = JackDeviceBridge(args.id, args.connect, channels=args.channels,
                                  midi_out=args.midi_out, server=args.jack_server,
                                  namespace=args.namespace, client_name=args.client_name,
                                  report=_bridge_news)
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
    from .adapters.jack_bridge import JackHostBridge, JackUnavailable
    from .transport.registry import validate_device_id, validate_link_tag

    try:
        validate_device_id(args.id)
        validate_link_tag(args.link_tag)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    bridge = JackHostBridge(args.id, connect_out=args.connect_out, midi_in=args.midi_in,
                            link_tag=args.link_tag, server=args.jack_server,
                            namespace=args.namespace, client_name=args.client_name,
                            report=_bridge_news)
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


def cmd_plugin(args: argparse.Namespace) -> int:
    from .adapters import plugin_scan

    if args.plugin_command == "info":
        result = plugin_scan.info(args.path, plugin_name=args.plugin_name,
                                  timeout=args.timeout)
        print(json.dumps(result, indent=1) if args.json else plugin_scan.format_info(result))
        return 0
    for d in args.dirs:
        if not d.is_dir():
            raise UsageError(f"no such folder: {d}")
    progress = None if args.json or not sys.stderr.isatty() else plugin_scan.console_progress()
    results = plugin_scan.scan(args.dirs, timeout=args.timeout, use_cache=not args.no_cache,
                               progress=progress)
    print(json.dumps(results, indent=1) if args.json else plugin_scan.format_table(results))
    return 0


COMMANDS = {"device": cmd_device, "master": cmd_master, "list": cmd_list,
            "cleanup": cmd_cleanup, "host": cmd_host,
            "demo": cmd_demo, "send": cmd_send, "midi-monitor": cmd_midi_monitor,
            "plugin": cmd_plugin, "jack-device": cmd_jack_device, "jack-host": cmd_jack_host,
            "rack": cmd_rack, "status": cmd_status}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .adapters.session import SessionError
    from .adapters.stage import PluginError
    from .transport import HostError, RegistryError, SegmentError

    prog = f"discolink-bridge {args.command}"
    try:
        if args.namespace is not None:
            from .transport.shm import namespace_from_env

            namespace_from_env(args.namespace)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a bad namespace
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (HostError, RegistryError, SegmentError, SessionError, RuntimeError,
            TimeoutError, PluginError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # our reader went away (`... | head`): cleanup already ran
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # keep the exit-time flush from failing again
        return 0
    except OSError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
