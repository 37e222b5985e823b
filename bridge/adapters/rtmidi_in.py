"""Live MIDI input for devices, through python-rtmidi: ``--midi-in PATTERN``.

Every input port whose name matches a pattern is opened, and what it plays goes to a
:class:`~bridge.midi.stream.MidiStream`, stamped with its arrival time. A pattern with glob
characters (``*?[``) is matched with fnmatch against the whole port name; a plain pattern
matches any port name that contains it. A watcher thread rescans the ports once a second:
a port that vanishes is reported and closed, and reopened when it comes back.

The rtmidi API is ALSA where ``/dev/snd/seq`` exists and JACK otherwise (the JACK API needs
a running JACK server; ``JACK_DEFAULT_SERVER`` picks which one). Both are compiled into the
python-rtmidi wheels.
"""

from __future__ import annotations

import fnmatch
import os
import socket
import threading
import time
from collections.abc import Callable

import rtmidi

from ..midi.stream import MidiStream

RESCAN_INTERVAL_S = 1.0
CLIENT_NAME = "discolink-bridge"

APIS = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK,
        "coremidi": rtmidi.API_MACOSX_CORE, "winmm": rtmidi.API_WINDOWS_MM}


def default_api() -> str:
    """ALSA when the sequencer device exists, else JACK (Linux); the platform's own API
    elsewhere."""
    compiled = set(rtmidi.get_compiled_api())
    if rtmidi.API_LINUX_ALSA in compiled and os.path.exists("/dev/snd/seq"):
        return "alsa"
    if rtmidi.API_UNIX_JACK in compiled:
        return "jack"
    for name, api in APIS.items():
        if api in compiled:
            return name
    raise RuntimeError("python-rtmidi was built without any MIDI API")


def jack_server_name() -> str:
    return os.environ.get("JACK_DEFAULT_SERVER") or "default"


def jack_server_down() -> bool:
    """True when jackd2's server socket for this user shows no server listening.

    jackd2 listens on ``/dev/shm/jack_<server>_<uid>_0``. When that file is missing, or is
    there but refuses connections (a server that was killed leaves it behind), no jackd2 is
    running. PipeWire's JACK has no such socket, so where PipeWire runs (its socket in
    $XDG_RUNTIME_DIR) the answer is "maybe up", and rtmidi is asked.
    """
    path = f"/dev/shm/jack_{jack_server_name()}_{os.getuid()}_0"
    if not os.path.exists(path):
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        return not os.path.exists(os.path.join(runtime, "pipewire-0"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(0.5)
        sock.connect(path)
        return False
    except OSError:
        return True
    finally:
        sock.close()


def matches(pattern: str, port: str) -> bool:
    """Glob match on the whole name when the pattern has glob characters, else substring."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(port, pattern)
    return pattern in port


class LiveMidiInputs:
    """Opens the input ports matching ``patterns``, keeps them open, feeds ``stream``.

    ``report(event, detail)`` hears about ports opened, vanished and reopened, and about
    failures; it is called from the watcher thread.
    """

    def __init__(self, patterns: list[str], stream: MidiStream, *, api: str | None = None,
                 client_name: str = CLIENT_NAME,
                 report: Callable[[str, str], None] | None = None,
                 rescan_interval: float = RESCAN_INTERVAL_S) -> None:
        if not patterns:
            raise ValueError("no --midi-in pattern given")
        for p in patterns:
            if not p:
                raise ValueError("--midi-in pattern is empty")
        self.api_name = api or default_api()
        if self.api_name not in APIS:
            raise ValueError(f"unknown MIDI API {self.api_name!r}; choose from "
                             f"{', '.join(APIS)}")
        self.patterns = list(patterns)
        self.stream = stream
        self.client_name = client_name
        self.report = report or (lambda event, detail: None)
        self.rescan_interval = rescan_interval
        self.open_ports: dict[str, rtmidi.MidiIn] = {}  # source port name -> our input
        self.events_received = 0
        self.vanished = 0
        self.reopened = 0
        self._ever_opened: set[str] = set()
        self._last_failure: dict[str, str] = {}
        self._probe: rtmidi.MidiIn | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifetime -----------------------------------------------------------------------
    def start(self) -> LiveMidiInputs:
        """Open what matches now and start watching for ports that come and go."""
        self.rescan()
        self._thread = threading.Thread(target=self._watch, name="midi-in watcher",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for port in list(self.open_ports):
                self._close(port)
            if self._probe is not None:
                self._probe.delete()
                self._probe = None

    def __enter__(self) -> LiveMidiInputs:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- scanning -----------------------------------------------------------------------
    def available(self) -> list[str]:
        """Names of every input port the API offers now ([] when it can't be asked)."""
        if self.api_name == "jack" and jack_server_down():
            # Asked anyway, libjack would print five lines to stderr on every rescan.
            self._drop_probe()
            self._failed("scan", f"no JACK server {jack_server_name()!r} is running; waiting "
                         "for it")
            return []
        try:
            if self._probe is None:
                self._probe = rtmidi.MidiIn(APIS[self.api_name], name=f"{self.client_name}-scan")
            ports = [p for p in self._probe.get_ports() if not self._is_ours(p)]
            self._last_failure.pop("scan", None)
            return ports
        except Exception as exc:  # e.g. no JACK server: keep trying on the next rescan
            self._drop_probe()
            self._failed("scan", f"cannot list {self.api_name} MIDI ports: {exc}")
            return []

    def _drop_probe(self) -> None:
        if self._probe is not None:
            try:
                self._probe.delete()
            except Exception:
                pass
            self._probe = None

    def _is_ours(self, port: str) -> bool:
        return port.startswith(self.client_name)

    def rescan(self) -> None:
        """Close ports that vanished, open matching ports that are new or came back."""
        with self._lock:
            present = self.available()
            for port in list(self.open_ports):
                if port not in present:
                    self._close(port)
                    self.vanished += 1
                    self.report("vanished", f"MIDI input {port!r} vanished; will reopen it "
                                "when it returns")
            for port in present:
                if port in self.open_ports or not any(matches(p, port) for p in self.patterns):
                    continue
                self._open(port, present.index(port))

    def _open(self, port: str, index: int) -> None:
        try:
            midi_in = rtmidi.MidiIn(APIS[self.api_name], name=self.client_name)
            midi_in.ignore_types(sysex=False, timing=True, active_sense=True)
            midi_in.set_callback(self._on_message, [None])  # the port's last arrival time
            midi_in.open_port(index, name=f"in {len(self._ever_opened)}")
        except Exception as exc:
            self._failed(port, f"cannot open MIDI input {port!r}: {exc}")
            return
        self.open_ports[port] = midi_in
        again = port in self._ever_opened
        self._ever_opened.add(port)
        if again:
            self.reopened += 1
        self.report("reopened" if again else "opened", f"MIDI input {port!r} "
                    f"({self.api_name})")

    def _close(self, port: str) -> None:
        midi_in = self.open_ports.pop(port, None)
        if midi_in is not None:
            try:
                midi_in.cancel_callback()
                midi_in.close_port()
                midi_in.delete()
            except Exception:
                pass

    def _failed(self, key: str, text: str) -> None:
        """Report a failure once, not on every rescan while it lasts."""
        if self._last_failure.get(key) != text:
            self._last_failure[key] = text
            self.report("error", text)

    def _watch(self) -> None:
        while not self._stop.wait(self.rescan_interval):
            try:
                self.rescan()
            except Exception as exc:  # never let the watcher die
                self.report("error", f"MIDI port rescan failed: {type(exc).__name__}: {exc}")

    # -- rtmidi's thread ----------------------------------------------------------------
    def _on_message(self, event: tuple[list[int], float], last: list | None = None) -> None:
        """An event's arrival time: rtmidi stamps each event's delta to the port's previous
        one in its JACK thread, before this Python callback waits for the GIL, which on a
        loaded machine can take tens of milliseconds. So the arrival is the previous one
        plus the delta, never later than now (that also pulls a late first stamp in)."""
        now = time.monotonic()
        self.events_received += 1
        when = now
        if last is not None:
            if last[0] is not None:
                when = min(now, last[0] + event[1])
            last[0] = when
        self.stream.push_live(event[0], when)
