"""What the verbs of ``discolink-bridge`` share: the usage error and one-line parser, the
argument types, the argument groups two verbs declare alike, and the stop and news helpers."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from ..midi.parser import DEFAULT_SYSEX_LIMIT
from ..transport.clock import DEFAULT_RT_PRIORITY


class UsageError(Exception):
    """Bad configuration detected after parsing: exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``--help`` shows the rest)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ---- argument types ----------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _in_range(text: str, low: int, high: int, what: str) -> int:
    value = positive_int(text)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what} {value} is out of range {low}..{high}")
    return value


def sample_rate(text: str) -> int:
    """A sample rate in the protocol's valid range (protocol.md §8.1)."""
    from ..transport.layout import SAMPLE_RATE_MAX, SAMPLE_RATE_MIN

    return _in_range(text, SAMPLE_RATE_MIN, SAMPLE_RATE_MAX, "sample rate")


def block_size(text: str) -> int:
    """A block size in the protocol's valid range (protocol.md §8.1)."""
    from ..transport.layout import BLOCK_SIZE_MAX, BLOCK_SIZE_MIN

    return _in_range(text, BLOCK_SIZE_MIN, BLOCK_SIZE_MAX, "block size")


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 24 * 3600:
        raise argparse.ArgumentTypeError(f"{value} s is out of range (0, 86400]")
    return value


def midi7(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= 127:
        raise argparse.ArgumentTypeError(f"{value} is out of the MIDI range 0..127")
    return value


# ---- argument groups that several verbs declare alike ----------------------------------


def midi_in_args(sp: argparse.ArgumentParser) -> None:
    """--midi-in and --sysex-limit: a device's live MIDI inputs."""
    sp.add_argument("--midi-in", action="append", default=[], metavar="PATTERN",
                    help="also play live MIDI from every input port whose name matches "
                         "(glob, or a substring); repeatable. Uses ALSA, or JACK where "
                         "there is no /dev/snd/seq. Ports that vanish are reopened")
    sp.add_argument("--sysex-limit", type=positive_int, default=DEFAULT_SYSEX_LIMIT,
                    metavar="BYTES", help="longest SysEx accepted; longer ones are "
                    f"dropped and counted (default {DEFAULT_SYSEX_LIMIT})")


def rt_arg(sp: argparse.ArgumentParser) -> None:
    """--rt-priority of a device's or a host's audio loop."""
    sp.add_argument("--rt-priority", type=int, default=DEFAULT_RT_PRIORITY, metavar="N",
                    help="SCHED_FIFO priority of the audio loop, 1..99, as JACK uses; 0 "
                         f"for normal scheduling (default {DEFAULT_RT_PRIORITY}; falls "
                         "back to normal when the OS refuses)")


def check_rt_priority(priority: int) -> None:
    """--rt-priority's range, checked by the verbs that run an audio loop (exit 2)."""
    if not 0 <= priority <= 99:
        raise ValueError(f"--rt-priority must be 0..99, got {priority}")


# ---- running until stopped ---------------------------------------------------------------


def install_stop(runner) -> None:
    """SIGINT and SIGTERM stop a device's runner: the loop ends and cleanup runs."""
    stop_on_signals(runner.stop_event, (signal.SIGINT, signal.SIGTERM))


def stop_on_signals(event: threading.Event | None = None,
                    signals: tuple = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
                    ) -> tuple[threading.Event, list[int]]:
    """Each of ``signals`` sets ``event`` (made if None) instead of killing the process, so
    the work in hand (a take being written) ends cleanly. Returns the event, and the list
    the signals received are appended to."""
    event = event or threading.Event()
    received: list[int] = []

    def stop(signum, frame):
        received.append(signum)
        event.set()

    for sig in signals:
        signal.signal(sig, stop)
    return event, received


def bridge_news(event: str, detail: str) -> None:
    """A bridge's news (JACK or a port lost, back, refused), one line on stderr."""
    print(f"discolink-bridge: {event}: {detail}", file=sys.stderr, flush=True)


def port_event(event: str, detail: str) -> None:
    """Live MIDI port news, on stderr (stdout is for the device's own status lines)."""
    bridge_news(f"midi-in {event}", detail)


def print_stats(stats: dict, as_json: bool) -> None:
    """A host session's stats (``host``, ``demo``): one line, or one JSON object."""
    if as_json:
        print(json.dumps(stats))
        return
    ms = stats["note_to_sound_ms"]
    print(f"{stats['device']}: {stats['blocks']} blocks, {stats['underruns']} underruns, "
          f"note-to-sound {'n/a' if ms is None else f'{ms:.2f} ms'}, peak {stats['peak']:.3f}"
          + (f", disconnected: {stats['disconnected']}" if stats["disconnected"] else ""))
