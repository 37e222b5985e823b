"""``discolink-bridge``: run devices, list the registry, and host devices from a terminal.

One module per group of verbs declares their arguments beside their handlers: each has a
``register(subparsers)`` that adds its parsers and sets ``handler``. This module builds the
top-level parser and maps errors to exit codes: 0 success; 2 usage or configuration error
(one line on stderr); 1 runtime failure (one clear line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys

# numpy first, before the transport imports it: as the one-file cli.py did. Loaded deep in
# the transport's import chain instead, it took ~20 ms longer (--help: 190 ms, not 170).
import numpy  # noqa: F401

from . import demo, device, host, jack, listing, midi_monitor, plugin, rack
from .common import Parser, UsageError

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

# In the order of the top-level help.
VERB_MODULES = (device, listing, host, midi_monitor, jack, plugin, rack, demo)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="discolink-bridge",
        description="discoLink shared-memory audio and MIDI between processes: run devices, "
                    "list them, and host them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--namespace", help="registry namespace (default: $DISCOLINK_NAMESPACE "
                   "or 'default')")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in VERB_MODULES:
        module.register(sub)
    return p


def main(argv: list[str] | None = None, lists: dict[str, list[str]] | None = None) -> int:
    """Run the command line ``argv``; ``lists`` extends list options by dest after parsing
    (the rack hands long pattern lists over this way: argparse is quadratic in them)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for dest, values in (lists or {}).items():
        setattr(args, dest, [*(getattr(args, dest, None) or []), *values])
    return _run(args, f"discolink-bridge {args.command}")


MESSAGE_MAX_CHARS = 400  # an error line longer than this is cut in its middle


def clipped(message: object) -> str:
    """An error for the user's terminal: a value the user gave (a 5,000-character path or
    message) is not echoed in full. Each line longer than MESSAGE_MAX_CHARS keeps its start
    and its end, which say what and why."""
    def clip(line: str) -> str:
        if len(line) <= MESSAGE_MAX_CHARS:
            return line
        return f"{line[:240]} ... [{len(line) - 360} characters] ... {line[-120:]}"

    return "\n".join(clip(line) for line in str(message).split("\n"))


def _run(args: argparse.Namespace, prog: str) -> int:
    from ..adapters.session import SessionError
    from ..adapters.stage import PluginError
    from ..transport import HostError, RegistryError, SegmentError

    try:
        if args.namespace is not None:
            from ..transport.shm import namespace_from_env

            namespace_from_env(args.namespace)
        return args.handler(args)
    except UsageError as exc:
        print(f"{prog}: error: {clipped(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a bad namespace
        print(f"{prog}: error: {clipped(exc)}", file=sys.stderr)
        return 2
    except (HostError, RegistryError, SegmentError, SessionError, RuntimeError,
            TimeoutError, PluginError) as exc:
        print(f"{prog}: {clipped(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # our reader went away (`... | head`): cleanup already ran
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # keep the exit-time flush from failing again
        return 0
    except OSError as exc:
        print(f"{prog}: {clipped(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
