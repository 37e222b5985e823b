"""How a rack starts a device: ``python -m bridge.cli.rack_child FD RACK_PID``.

The supervisor hands the device its command line (a JSON list: ``--namespace NS device ...``)
through the file descriptor FD, a memfd it wrote before the fork, instead of argv: a device
with 150,000 ``midi_in`` patterns does not fit in argv (E2BIG), and writing the memfd never
blocks the supervisor the way a full pipe would.

Before anything else the child asks Linux to send it SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), then checks that the parent is still RACK_PID: a rack that was
killed with -9 between the fork and the prctl would otherwise leave this device orphaned.
PDEATHSIG fires when the *thread* that forked the child ends, so the rack forks from its main
thread only (its life is the process's). SIGTERM, not SIGKILL, so that the device deregisters,
removes its segment and saves its plugin state as on any stop.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """SIGTERM to this process when the parent dies; exit now if it is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the rack died before the prctl: nobody would signal us
        raise SystemExit(f"discolink-bridge: the rack (pid {parent_pid}) is gone; not starting")


def read_argv(fd: int) -> list[str]:
    """The device's command line, a JSON list of strings, from the descriptor ``fd``."""
    with os.fdopen(fd, "rb") as stream:
        stream.seek(0)
        argv = json.loads(stream.read())
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise SystemExit("discolink-bridge: the rack handed over a bad command line")
    return argv


def lift_lists(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Take the values of plain repeatable options (``--midi-in P``, ``--connect P``) out of
    ``argv``, by dest: argparse's cost grows with the square of their number (150,000
    patterns would take minutes), so they are handed to :func:`main` after parsing."""
    import argparse

    from . import build_parser

    if len(argv) < 3 or argv[0] != "--namespace":
        return argv, {}
    verbs = next(a for a in build_parser()._actions
                 if isinstance(a, argparse._SubParsersAction)).choices
    verb = verbs.get(argv[2])
    if verb is None:
        return argv, {}
    plain = {opt: action.dest for action in verb._actions
             if isinstance(action, argparse._AppendAction) and action.type is None
             and action.choices is None for opt in action.option_strings}
    kept, lists = argv[:3], {}
    i = 3
    while i < len(argv):
        dest = plain.get(argv[i])
        if dest is not None and i + 1 < len(argv):
            lists.setdefault(dest, []).append(argv[i + 1])
            i += 2
        else:
            kept.append(argv[i])
            i += 1
    return kept, lists


def run(args: list[str]) -> int:
    """``FD RACK_PID`` -> the device's exit code."""
    if len(args) != 2 or not all(a.isdigit() for a in args):
        print("usage: python -m bridge.cli.rack_child FD RACK_PID (the rack starts this)",
              file=sys.stderr)
        return 2
    die_with_parent(int(args[1]))
    argv, lists = lift_lists(read_argv(int(args[0])))
    from . import main

    return main(argv, lists)


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
