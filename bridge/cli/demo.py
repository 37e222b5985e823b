"""``demo``: the demo rack started, a phrase played on it and recorded, its status, stop."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .common import UsageError, bridge_news, print_stats, seconds, stop_on_signals


def register(sub: argparse._SubParsersAction) -> None:
    """Add demo to the top-level subparsers, each with its handler."""
    sp = sub.add_parser("demo", help="run the demo rack, record a phrase from it, stop",
                        description="The whole chain in one command: start the demo rack "
                                    "(configs/demo.yaml: the built-in synth, and the synth "
                                    "through pedalboard's chorus and reverb), play a short "
                                    "phrase on its Pad device as a host, record demo.wav, "
                                    "print the session's stats and the rack's status, stop.")
    sp.add_argument("--record", type=Path, default=Path("demo.wav"), metavar="OUT.wav",
                    help="where to write the recording as it comes (default demo.wav; kept "
                    "on Ctrl-C, SIGTERM or SIGHUP)")
    sp.add_argument("--seconds", type=seconds, default=3.0, help="length (default 3)")
    sp.add_argument("--json", action="store_true", help="print the stats as JSON")
    sp.set_defaults(handler=cmd_demo)


DEMO_RACK = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
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

    from ..adapters.recorder import check_record_path
    from ..adapters.session import SessionPlan, SessionPlanError, run_session
    from ..rack.supervisor import ask, format_status
    from ..transport import Host

    if not DEMO_RACK.is_file():
        raise RuntimeError(f"the demo rack {DEMO_RACK} is missing (run from a checkout)")
    try:
        check_record_path(args.record)  # before the rack starts: a bad path costs nothing
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stop, signals = stop_on_signals()
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
                try:
                    stats = run_session(plan, host, log=say, stop=stop, news=bridge_news)
                except SessionPlanError as exc:
                    raise UsageError(str(exc)) from None
            print_stats(stats, args.json)
            if not stop.is_set():  # stopped by a signal: the rack may be going too (Ctrl-C)
                status = ask(namespace, "status")
                status.pop("ok", None)
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
    if signals:
        return 128 + signals[0]
    return 1 if stats["disconnected"] else 0
