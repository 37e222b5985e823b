"""``device`` and ``master``: the sine synth, or a chain of plugins, as a discoLink device."""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .common import (
    UsageError,
    block_size,
    check_rt_priority,
    install_stop,
    midi_in_args,
    port_event,
    positive_int,
    rt_arg,
    sample_rate,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add device and master to the top-level subparsers, each with its handler."""
    sp = sub.add_parser("device", help="run the sine-synth device until Ctrl-C / SIGTERM",
                        description="Run a polyphonic sine-synth device that plays the MIDI it "
                                    "receives over discoLink. Stops cleanly on SIGINT/SIGTERM.")
    device_args(sp)
    sp.set_defaults(handler=cmd_device)
    sp = sub.add_parser("master", help="the sine-synth device with a live status display",
                        description="Like 'device', with a live terminal display: claim, link "
                                    "tag, ring fill, underruns, messages and levels.")
    device_args(sp)
    sp.set_defaults(handler=cmd_master)


def device_args(sp: argparse.ArgumentParser) -> None:
    """The arguments of ``device`` and ``master``, which differ only in their display."""
    sp.add_argument("--id", metavar="NAME",
                    help="device id: NAME takes the lowest free NAME:N, NAME:N asks for "
                         "exactly that (session recall). Default: the id in --state, "
                         "else the first plugin's name, else Sine")
    sp.add_argument("--channels", metavar="N|LIST",
                    help="output channels: a count 1..12 (default 2 for the sine synth, "
                         "a plugin's own output bus otherwise), or with plugins a list "
                         "of the last stage's channels, e.g. 3-4 or 1,3")
    sp.add_argument("--samplerate", type=sample_rate, default=48000,
                    help="sample rate in Hz (default 48000)")
    sp.add_argument("--blocksize", type=block_size, default=256,
                    help="block size in frames (default 256)")
    sp.add_argument("--mode", default="audio+midi", choices=["audio+midi", "audio", "midi"],
                    help="transport mode (default audio+midi)")
    sp.add_argument("--clock", default="demand", choices=["demand", "realtime"],
                    help="demand: render when the host's ring runs low (default); "
                         "realtime: render on the device's own clock")
    sp.add_argument("--fill", type=positive_int, default=2,
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
                             "on stop; FILE is locked (FILE.lock) while the device runs, "
                             "and its folder must exist")
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


def _device_setup(args: argparse.Namespace):
    from ..adapters.instrument import InstrumentDevice
    from ..adapters.sine import SineSynth
    from ..transport import Capability, Device, DeviceRunner, make_console_monitor
    from ..transport.registry import validate_device_id

    try:
        if not 1 <= args.fill <= 4:
            raise ValueError(f"--fill must be 1..4 blocks, got {args.fill}")
        check_rt_priority(args.rt_priority)
        state_lock = None
        if args.plugin:
            device_id, channels, chain, saved, state_lock = _plugin_setup(args)
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
    from ..midi.stream import CAPABILITIES as stream_capabilities

    # the device's MIDI stream plays UMP, so it says so (a host that checks the bit sends it)
    caps = stream_capabilities | (0 if args.fixed_format else Capability.FLEXIBLE_FORMAT)
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
            chain.warn = lambda text: print(f"discolink-bridge device {device.id}: {text}",
                                            file=sys.stderr, flush=True)
            if args.state is not None:
                from ..adapters.plugin_device import StateSaver

                def warn(text: str) -> None:
                    device.report_error("state", text)
                    print(f"discolink-bridge device: {text}", file=sys.stderr, flush=True)

                saver = StateSaver(args.state, lambda: device.id, warn)
                chain.on_state_change = saver
                chain.on_snapshot_error = saver.failed
        instrument = chain if chain is not None else SineSynth(args.samplerate)
        wiring = InstrumentDevice(device, instrument, midi_in=args.midi_in,
                                  sysex_limit=args.sysex_limit, on_port_event=port_event)
        if chain is not None:
            device.on_command(chain.handle)
    except BaseException:
        device.close()
        raise
    runner = DeviceRunner(device, wiring, clock=args.clock, fill=args.fill,
                          rt_priority=args.rt_priority,
                          on_idle=chain.snapshot_idle if saver is not None else None)
    runner.wiring = wiring
    runner.chain = chain
    runner.saver = saver
    runner.state_lock = state_lock  # held for the process's life
    runner.restored = saved is not None
    return device, runner


def _channel_count(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 12:
        raise ValueError(f"--channels {text!r}: give a count 1..12 (channel lists are for "
                         "plugins)")
    return int(text)


def _plugin_setup(args: argparse.Namespace):
    """Load the chain for ``device --plugin``: (device id, channels, chain, saved state,
    the --state file's lock). The state file is checked and locked before anything loads."""
    from ..adapters.plugin_device import build_chain, lock_state_file, read_state_file

    lock = lock_state_file(args.state) if args.state else None
    saved = read_state_file(args.state) if args.state else None
    if saved is not None and len(saved["chain"].get("stages", [])) != len(args.plugin):
        raise ValueError(f"--state {args.state} holds a chain of "
                         f"{len(saved['chain']['stages'])} plugin(s), not {len(args.plugin)}")
    chain = build_chain(args.plugin, sample_rate=args.samplerate, block_size=args.blocksize,
                        plugin_name=args.plugin_name, channels=args.channels, tap=args.tap,
                        params=args.param, input_file=args.input,
                        state=saved["chain"] if saved else None,
                        state_source=f"--state {args.state}", preset=args.preset)
    device_id = args.id if args.id is not None else (saved["device_id"] if saved else None) \
        or re.sub(r"[^A-Za-z0-9_.-]+", "", chain.stages[0].name) or "Plugin"
    return device_id, chain.channels, chain, saved, lock


def _protect_stdout() -> None:
    """Point fd 1 at stderr, and Python's stdout at a copy of the real one: what a plugin
    prints (C++ code writes to fd 1) can't corrupt our output, --json included."""
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = open(real, "w", buffering=1, closefd=True)


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
    install_stop(runner)
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
              f"events"
              + (f", {runner.chain.nonfinite_blocks} non-finite blocks silenced"
                 if runner.chain is not None else ""), flush=True)
    finally:
        runner.wiring.close()
        saved_ok = _save_state(runner)
        device.close()
    return 0 if saved_ok else 1


def _save_state(runner) -> bool:
    """The save on stop; False (exit 1) when this or any earlier save of --state failed."""
    saver = runner.saver
    if saver is None or not saver.device_id():
        return True
    saver.close()
    try:
        state = runner.chain.get_state()
    except Exception as exc:  # the plugin could not save its state
        saver.failed(str(exc), final=True)
        final_ok = False
    else:
        final_ok = saver.save(state, final=True)
    if saver.failures:
        print(f"discolink-bridge device: {saver.failures} save(s) of --state {saver.path} "
              f"failed; the file {'holds the final state' if final_ok else 'is out of date'}",
              file=sys.stderr, flush=True)
    return not saver.failures


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
