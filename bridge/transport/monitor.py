"""Debug monitors: optional observers of every command, response, audio block, connection
change and error. Endpoints call a monitor only when one is installed, so an absent monitor
costs one ``is None`` test per event. Monitor methods are called on the real-time path: keep
them quick, and never let them raise (an exception in a monitor is swallowed and counted).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .message import Message


class DebugMonitor:
    """Base monitor: every hook does nothing. Subclass and override what you need.

    ``endpoint`` is a short label such as ``device Synth:0`` or ``host 1234``; ``direction``
    is ``"in"`` or ``"out"`` as seen from that endpoint.
    """

    def on_command(self, endpoint: str, direction: str, message: Message) -> None:
        """A command (host to device) was sent or received."""

    def on_response(self, endpoint: str, direction: str, message: Message) -> None:
        """A response (device to host) was sent or received."""

    def on_audio(self, endpoint: str, direction: str, frames: int, channels: int) -> None:
        """An audio block was written or read (frames actually transferred)."""

    def on_connection(self, endpoint: str, event: str, detail: str) -> None:
        """A claim, handshake, disconnect or loss of the peer."""

    def on_error(self, endpoint: str, where: str, text: str) -> None:
        """Something failed; the real-time path reports here instead of raising."""


class ConsoleMonitor(DebugMonitor):
    """Prints one line per event, like upstream discoLink's console monitor."""

    def __init__(self, stream: TextIO | None = None, *, audio: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.audio = audio
        self._t0 = time.monotonic()

    def _line(self, text: str) -> None:
        self.stream.write(f"[discoLink {time.monotonic() - self._t0:9.3f}] {text}\n")
        self.stream.flush()

    def on_command(self, endpoint: str, direction: str, message: Message) -> None:
        self._line(f"{endpoint} {'<-' if direction == 'in' else '->'} {message!r}")

    def on_response(self, endpoint: str, direction: str, message: Message) -> None:
        self._line(f"{endpoint} {'<-' if direction == 'in' else '->'} {message!r}")

    def on_audio(self, endpoint: str, direction: str, frames: int, channels: int) -> None:
        if self.audio:
            self._line(f"{endpoint} audio {direction} {frames} frames x {channels} ch")

    def on_connection(self, endpoint: str, event: str, detail: str) -> None:
        self._line(f"{endpoint} {event}: {detail}")

    def on_error(self, endpoint: str, where: str, text: str) -> None:
        self._line(f"{endpoint} ERROR {where}: {text}")


def make_console_monitor(stream: TextIO | None = None, *, audio: bool = True) -> ConsoleMonitor:
    """A monitor that prints every event to ``stream`` (stderr by default)."""
    return ConsoleMonitor(stream, audio=audio)
