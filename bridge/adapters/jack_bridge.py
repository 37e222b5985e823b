"""JACK in both directions, through JACK-Client.

- :class:`JackDeviceBridge` (``jack-device``) is a JACK client that is also a discoLink
  device: its N audio input ports, connected to other clients' ports, feed the device's
  ring; a JACK MIDI output port plays the host's IPC MIDI, each event at its sample offset
  within the JACK period. A discoLink host can so play a JACK synth and hear it.
- :class:`JackHostBridge` (``jack-host``) is a discoLink host that is also a JACK client: the
  device's channels appear as JACK output ports, and a JACK MIDI input port forwards what it
  receives to the device as IPC MIDI, at the same sample offsets.

The JACK process callback is the clock. It allocates no buffers (the numpy views JACK-Client
hands out are all it creates), never blocks and never raises; the ring absorbs a JACK period
that differs from the device's block. The main thread supervises: it reconnects port
patterns when clients appear, and when jackd goes away it says so, keeps the discoLink side
alive (a jack-device streams silence on its own clock), and reconnects when jackd is back.
When the discoLink peer of a jack-host goes away, its JACK ports stay and play silence until
the peer returns.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch
import os
import threading
import time
from collections.abc import Callable

import numpy as np

from ..midi.stream import CAPABILITIES as stream_capabilities
from ..midi.stream import MidiStream
from ..transport import Device, Host, HostError
from ..transport import commands as cmd
from ..transport.clock import StopFlag
from ..transport.layout import MESSAGE_HEADER_SIZE, MESSAGE_PAYLOAD_SIZE, Mode
from ..transport.shm import shown

RECONNECT_INTERVAL_S = 0.5
CLOSE_DEADLINE_S = 0.3  # longest wait for libjack's close (see _JackSide._close_client)
_PAYLOAD = MESSAGE_HEADER_SIZE  # where a message's payload starts in its buffer
Reporter = Callable[[str, str], None]  # (event, detail)


class JackUnavailable(RuntimeError):
    """No JACK server could be reached (names the server)."""


def server_name(server: str | None) -> str:
    return server or os.environ.get("JACK_DEFAULT_SERVER") or "default"


def check_client_name(name: str) -> None:
    """A JACK client name libjack can take (ValueError naming the limit): a name too long
    otherwise fails as if no server were running."""
    import jack

    limit = jack.client_name_size() - 1  # the size counts the terminating NUL
    size = len(name.encode())
    if size > limit:
        raise ValueError(f"JACK client name {shown(name)} is {size} bytes; JACK takes at most "
                         f"{limit}; give a shorter --client-name")


def quiet_libjack() -> None:
    """libjack prints its own errors and notes on stderr ("Cannot connect to server
    socket", ...); ours say the same in one line, so its are dropped."""
    import jack

    jack.set_error_function(lambda message: None)
    jack.set_info_function(lambda message: None)


def open_client(name: str, server: str | None) -> object:
    """A JACK client on ``server`` (never starting a server of its own)."""
    import jack

    quiet_libjack()
    try:
        return jack.Client(name, servername=server_name(server), no_start_server=True)
    except jack.JackOpenError as exc:
        raise JackUnavailable(f"cannot reach JACK server {server_name(server)!r} ({exc}); "
                              "start one, e.g. jackd --no-realtime -d dummy -r 48000 "
                              "-p 256") from None


def matching_ports(client, pattern: str, **kinds) -> list[str]:
    """Port names matching a glob (``client:port``, ``*`` allowed), in JACK's order."""
    return [p.name for p in client.get_ports(**kinds) if fnmatch.fnmatchcase(p.name, pattern)]


# ---- latency, through libjack directly (JACK-Client does not wrap it) -----------------------

class _Range(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint32), ("max", ctypes.c_uint32)]


_CAPTURE, _PLAYBACK = 0, 1
_libjack = None


def _lib():
    global _libjack
    if _libjack is None:
        _libjack = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
        _libjack.jack_port_set_latency_range.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                                         ctypes.POINTER(_Range)]
        _libjack.jack_port_get_latency_range.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                                         ctypes.POINTER(_Range)]
    return _libjack


_LATENCY_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)


def install_latency_callback(client, ports_and_frames: Callable[[int], list]) -> object:
    """Answer JACK's latency requests for our ports. ``ports_and_frames(mode)`` gives
    ``[(port, frames), ...]`` for that mode. JACK recomputes latencies whenever the graph
    changes and would overwrite values set once, so they are set here, each time it asks.
    Returns the callback object, which the caller must keep alive."""
    def on_latency(mode: int, _arg) -> None:
        try:
            for port, frames in ports_and_frames(mode):
                set_latency(port, mode, frames)
        except Exception:
            pass

    import jack

    cb = _LATENCY_CALLBACK(on_latency)
    lib = _lib()
    lib.jack_set_latency_callback.argtypes = [ctypes.c_void_p, _LATENCY_CALLBACK,
                                              ctypes.c_void_p]
    lib.jack_set_latency_callback(int(jack._ffi.cast("uintptr_t", client._ptr)), cb, None)
    return cb


def _port_pointer(port) -> int:
    import jack

    return int(jack._ffi.cast("uintptr_t", port._ptr))


def set_latency(port, mode: int, frames: int) -> None:
    """Report ``frames`` of latency on one of our ports (JackCaptureLatency = 0 for audio that
    comes into the graph through us, JackPlaybackLatency = 1 for audio that leaves it)."""
    r = _Range(frames, frames)
    _lib().jack_port_set_latency_range(_port_pointer(port), mode, ctypes.byref(r))


def get_latency(port, mode: int) -> tuple[int, int]:
    r = _Range()
    _lib().jack_port_get_latency_range(_port_pointer(port), mode, ctypes.byref(r))
    return r.min, r.max


# ---- common supervision ---------------------------------------------------------------------

class _JackSide:
    """What both bridges share: the client's life cycle, xruns, patterns, the pause handshake
    between the main thread and the process callback."""

    def __init__(self, client_name: str, server: str | None, report: Reporter | None) -> None:
        self.client_name = client_name
        self.server = server
        self.report = report or (lambda event, detail: None)
        self.client = None
        self.xruns = 0
        self.jack_alive = False
        self.sample_rate = 0
        self.period = 0
        self._dirty = threading.Event()  # ports came or went: re-apply connection patterns
        self._stop = StopFlag()  # set from signal handlers: takes no lock
        self._lost_reason = ""
        self._refused: tuple[int, int] | None = None  # the JACK settings refused last
        self.midi_dropped = 0  # MIDI events the callback could not pass on (see subclasses)
        self._midi_dropped_said = 0
        self._next_drop_report = 0.0
        self._dropped_what = "MIDI event(s) dropped"  # what a drop means, for the report

    def _report_midi_drops(self) -> None:
        """From the main thread: MIDI the callback could not pass on, said once a second."""
        dropped = self.midi_dropped
        now = time.monotonic()
        if dropped != self._midi_dropped_said and now >= self._next_drop_report:
            self.report("midi dropped", f"{dropped - self._midi_dropped_said} "
                        f"{self._dropped_what} ({dropped} so far)")
            self._midi_dropped_said = dropped
            self._next_drop_report = now + 1.0

    # the callback-side counters: only the process callback writes them
    _entered = 0
    _left = 0
    _paused = False
    _drain = False

    def _open(self) -> None:
        client = open_client(self.client_name, self.server)
        self.client = client
        self.sample_rate = client.samplerate
        self.period = client.blocksize
        client.set_xrun_callback(self._on_xrun)
        client.set_shutdown_callback(self._on_shutdown)
        client.set_port_registration_callback(self._on_port_registration)
        client.set_process_callback(self._process)

    def _on_xrun(self, delay_usecs: float) -> None:
        self.xruns += 1
        self._drain = True  # jack-host: an xrun may have left a backlog in the ring

    def _on_shutdown(self, status, reason: str) -> None:
        self.jack_alive = False
        self._lost_reason = reason or "jackd went away"

    def _on_port_registration(self, port, register: bool) -> None:
        self._dirty.set()

    def _close_client(self) -> None:
        """Deactivate and close our client, waiting at most CLOSE_DEADLINE_S: when jackd is
        going away at the same moment, libjack's close blocks for ~5 s, and a bridge told to
        stop (or one that must go on with its own clock) cannot wait that long. The close
        then finishes, or not, on a daemon thread of its own."""
        client, self.client = self.client, None
        if client is None:
            return

        def close() -> None:
            try:
                client.deactivate()
                client.close()
            except Exception:
                pass

        closer = threading.Thread(target=close, name="jack-close", daemon=True)
        closer.start()
        closer.join(CLOSE_DEADLINE_S)

    def _drop_lost_client(self, keeping: str) -> None:
        """jackd went away: make the callback stand aside, close our client, say so once."""
        if self.client is None:
            return
        self.pause_callback()
        self._close_client()
        self.report("jack lost", f"JACK server {server_name(self.server)!r} went away "
                    f"({self._lost_reason}); {keeping}")

    def _reopen(self, rate: int, period: int | None, runs: str) -> bool:
        """One attempt to reach a server that went away. True when a client is open at
        ``rate`` (and ``period``, if given), the settings the discoLink side ``runs`` at. A
        server back at other settings is refused, and said once per setting, not per try."""
        try:
            self._open()
        except JackUnavailable:
            self.client = None
            return False
        if self.sample_rate == rate and period in (None, self.period):
            self._refused = None
            return True
        if self._refused != (self.sample_rate, self.period):
            self._refused = (self.sample_rate, self.period)
            wanted = f"{rate} Hz" + (f", {period} frames" if period else "")
            self.report("jack refused", f"JACK is back at {self.sample_rate} Hz, "
                        f"{self.period} frames; {runs} runs at {wanted}: staying silent "
                        "until JACK runs at that again")
        self._close_client()
        return False

    def _go_live(self) -> None:
        """Ports registered: let the callback work, activate, connect the patterns."""
        self._paused = False
        self.jack_alive = True
        self.client.activate()
        self.apply_patterns()

    def apply_patterns(self) -> None:
        raise NotImplementedError

    def pause_callback(self) -> None:
        """Make the callback stand aside, and wait until it is out (main thread only)."""
        self._paused = True
        deadline = time.monotonic() + 1.0
        while self._entered != self._left and time.monotonic() < deadline:
            time.sleep(0.0005)

    def stop(self) -> None:
        self._stop.set()

    def _process(self, frames: int) -> None:
        raise NotImplementedError


# ---- JACK clients as a discoLink device -----------------------------------------------------

class JackDeviceBridge(_JackSide):
    """A JACK client that is a discoLink device (see the module docstring)."""

    def __init__(self, device_id: str, connect: list[str], *, channels: int | None = None,
                 midi_out: list[str] | None = None, server: str | None = None,
                 namespace: str | None = None, client_name: str | None = None,
                 report: Reporter | None = None) -> None:
        super().__init__(client_name or f"discolink-{device_id.split(':')[0]}", server, report)
        self.connect_patterns = list(connect)
        self.channels = channels or max(1, len(self.connect_patterns))
        if not 1 <= self.channels <= 12:
            raise ValueError(f"--channels must be 1..12, got {self.channels}")
        if len(self.connect_patterns) > self.channels:
            raise ValueError(f"{len(self.connect_patterns)} --connect patterns for "
                             f"{self.channels} input port(s); give --channels "
                             f"{len(self.connect_patterns)} or more")
        self.midi_out_patterns = list(midi_out or [])
        self.device_id = device_id
        check_client_name(self.client_name)
        self.namespace = namespace
        self.device: Device | None = None  # made once JACK is reached: a failed start
        # leaves nothing in /dev/shm, not even a registry
        self.stream: MidiStream | None = None
        self._inports: list = []
        self._midi_out = None
        self._block = np.zeros((self.channels, 1), np.float32)
        self.blocks = 0
        self._dropped_what = ("MIDI event(s) from the host not played into JACK: the MIDI "
                              "output port's buffer for the period was full")

    def start(self) -> str:
        """Open JACK, register the device at JACK's rate and period, activate, connect."""
        self._open()
        self.device = Device(self.namespace)
        self.device.start(self.device_id, self.channels, self.sample_rate, self.period,
                          Mode.AUDIO_MIDI, capabilities=stream_capabilities)
        self.stream = MidiStream(self.sample_rate, report=self.device.report_error)
        self.stream.attach(self.device)
        self._activate()
        return self.device.id

    def _activate(self) -> None:
        client = self.client
        self._inports = [client.inports.register(f"in_{i + 1}") for i in range(self.channels)]
        self._midi_out = client.midi_outports.register("midi_out")
        self._block = np.zeros((self.channels, self.period), np.float32)
        # audio leaves the JACK graph at our inputs, toward the discoLink host: one period
        self._latency_cb = install_latency_callback(
            client, lambda mode: [(p, self.period) for p in self._inports]
            if mode == _PLAYBACK else [])
        self._go_live()

    def apply_patterns(self) -> None:
        """Connect what the patterns match now (idempotent; called when ports appear)."""
        client = self.client
        for i, pattern in enumerate(self.connect_patterns):
            for source in matching_ports(client, pattern, is_audio=True, is_output=True):
                if not self._inports[i].is_connected_to(source):
                    _try(lambda s=source, i=i: client.connect(s, self._inports[i]))
        for pattern in self.midi_out_patterns:
            for dest in matching_ports(client, pattern, is_midi=True, is_input=True):
                if not self._midi_out.is_connected_to(dest):
                    _try(lambda d=dest: client.connect(self._midi_out, d))

    def _process(self, frames: int) -> None:
        self._entered += 1
        try:
            if self._paused:
                return
            device = self.device
            device.process_commands()
            midi = self._midi_out
            midi.clear_buffer()
            events = self.stream.take(frames)
            written = 0
            try:
                for event in events:
                    if event.data:
                        midi.write_midi_event(event.offset, event.data)
                    written += 1
            except Exception:  # the port's buffer is full: the rest of the period is lost
                self.midi_dropped += len(events) - written
            block = self._block
            if block.shape[1] != frames:  # a new period; JACK calls the blocksize callback
                return
            for i, port in enumerate(self._inports):
                block[i] = port.get_array()
            device.send_audio(block)
            self.blocks += 1
        except Exception as exc:  # never into JACK
            self.device.report_error("jack process", f"{type(exc).__name__}: {exc}")
        finally:
            self._left += 1

    def run(self) -> None:
        """Supervise until stop(): patterns, xruns in the registry, jackd's comings and
        goings (a silent clock of our own in between)."""
        # The callback stamps the heartbeat, but a stalled server stops calling it, and this
        # loop may itself block in a JACK call then: a thread of its own keeps it fresh.
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        period_s = self.period / self.sample_rate
        next_block = time.monotonic()
        next_try = 0.0
        silence = np.zeros((self.channels, self.period), np.float32)
        while not self._stop.is_set() and self.device.registered:
            if self.jack_alive:
                if self._dirty.is_set():
                    self._dirty.clear()
                    _try(self.apply_patterns)
                self._report_midi_drops()
                self.device.registry.set_xruns(self.device.slot, self.xruns)
                self._stop.wait(0.05)
                next_block = time.monotonic()
                continue
            self._drop_lost_client("streaming silence until it returns")
            now = time.monotonic()
            if now >= next_try:  # reconnect?
                next_try = now + RECONNECT_INTERVAL_S
                if self._reopen(self.device.sample_rate, self.device.block_size,
                                "this device"):
                    self._activate()
                    self.report("jack back", f"reconnected to JACK server "
                                f"{server_name(self.server)!r}")
                    continue
            # our own clock meanwhile: commands, heartbeat, a silent block per period
            self.device.process_commands()
            if now >= next_block:
                self.device.send_audio(silence)
                next_block += period_s
                if now - next_block > 0.25:
                    next_block = now
            time.sleep(min(0.002, max(0.0, next_block - time.monotonic())))

    def _heartbeat(self) -> None:
        try:
            while not self._stop.wait(0.05) and self.device.registered:
                self.device.heartbeat()
        except Exception:  # the device is being closed under us: nothing left to keep alive
            pass

    def close(self) -> None:
        """Stop: the callback stands aside, the device deregisters and removes its segment
        (first, so nothing is left even if libjack then hangs), then the client closes."""
        self._stop.set()
        self.pause_callback()
        if self.device is not None:
            self.device.close()
        self._close_client()


# ---- a discoLink host as JACK ports ---------------------------------------------------------

class JackHostBridge(_JackSide):
    """A discoLink host whose device plays into JACK output ports (see the module docstring)."""

    def __init__(self, device_id: str, *, connect_out: list[str] | None = None,
                 midi_in: list[str] | None = None, link_tag: str = "",
                 server: str | None = None, namespace: str | None = None,
                 client_name: str | None = None, report: Reporter | None = None) -> None:
        super().__init__(client_name or f"discolink-host-{device_id.split(':')[0]}", server,
                         report)
        self.device_id = device_id
        check_client_name(self.client_name)
        self.link_tag = link_tag
        self.connect_out = list(connect_out or [])
        self.midi_in_patterns = list(midi_in or [])
        self.host = Host(namespace)
        self.channels = 0
        self._outports: list = []
        self._midi_in = None
        self._block = np.zeros((1, 1), np.float32)
        self.linked = False  # the callback may use the host
        self.midi_forwarded = 0
        self._dropped_what = (f"JACK MIDI event(s) not forwarded to {device_id}: its command "
                              "ring was full, or an event was not a complete MIDI message")
        self._midi_msg = cmd.midi_raw(b"\xf8")  # rewritten in place for each packet
        self.blocks = 0
        self.peer_losses = 0
        self._rate = 0  # the sample rate of the device we last linked to
        self.frames_dropped = 0  # backlog dropped to keep the latency bounded
        self._drain = False

    def start(self) -> None:
        """Open JACK, connect to the device at JACK's rate and period, register one output
        port per device channel, activate and connect the patterns."""
        self._open()
        self._link()
        c = self.host.connection
        self.channels = c.channels
        self._activate()

    def _link(self) -> None:
        """Connect (or reconnect) to the device; refuse a sample rate JACK doesn't run at."""
        host = self.host
        host.set_local_buffer_info(self.sample_rate, self.period)
        c = host.connect(self.device_id, self.link_tag)
        if c.sample_rate != self.sample_rate:
            host.disconnect()
            raise ValueError(f"device {c.device} runs at {c.sample_rate} Hz but JACK runs at "
                             f"{self.sample_rate} Hz; start the device with --samplerate "
                             f"{self.sample_rate} (or JACK at {c.sample_rate})")
        if self.channels and c.channels != self.channels:
            host.disconnect()
            raise ValueError(f"device {c.device} now has {c.channels} channels, not "
                             f"{self.channels}")
        self.link_tag = host.link_tag
        self._rate = c.sample_rate
        self._drain = True  # drop what queued up before our first period
        self.linked = True

    def _activate(self) -> None:
        client = self.client
        self._outports = [client.outports.register(f"out_{i + 1}") for i in range(self.channels)]
        self._midi_in = client.midi_inports.register("midi_in")
        self._block = np.zeros((self.channels, self.period), np.float32)
        # audio enters the JACK graph at our outputs about two device blocks after the device
        # rendered it (the demand clock keeps two blocks queued)
        block = self.host.connection.block_size if self.host.connection else self.period
        self._latency_cb = install_latency_callback(
            client, lambda mode: [(p, 2 * block) for p in self._outports]
            if mode == _CAPTURE else [])
        self._go_live()

    def apply_patterns(self) -> None:
        client = self.client
        for pattern in self.connect_out:
            dests = matching_ports(client, pattern, is_audio=True, is_input=True)
            for i, dest in enumerate(dests[: len(self._outports)]):
                if not self._outports[i].is_connected_to(dest):
                    _try(lambda p=self._outports[i], d=dest: client.connect(p, d))
        for pattern in self.midi_in_patterns:
            for source in matching_ports(client, pattern, is_midi=True, is_output=True):
                if not self._midi_in.is_connected_to(source):
                    _try(lambda s=source: client.connect(s, self._midi_in))

    def _process(self, frames: int) -> None:
        self._entered += 1
        try:
            outs = self._outports
            if self._paused or not self.linked or self._block.shape[1] != frames:
                for port in outs:
                    port.get_array().fill(0.0)
                return
            host = self.host
            self._forward_midi(host)
            block = self._block
            if self._drain:
                # A device on a clock of its own (jack-device, the realtime clock) leaves
                # behind what it wrote before our first period, and a block per xrun that
                # skipped us: queued audio stays latency for good unless it is dropped, here,
                # at the start and after each xrun (where there is a glitch anyway). A
                # demand-clock device just refills.
                self._drain = False
                excess = host.available_frames() - frames
                while excess >= frames:
                    host.receive_audio(block)
                    excess -= frames
                    self.frames_dropped += frames
            host.receive_audio(block)  # zero-fills whatever the device could not deliver
            for i, port in enumerate(outs):
                port.get_array()[:] = block[i]
            host.process_responses()
            self.blocks += 1
        except Exception:
            for port in self._outports:
                try:
                    port.get_array().fill(0.0)
                except Exception:
                    pass
        finally:
            self._left += 1

    def _forward_midi(self, host: Host) -> None:
        """This period's JACK MIDI to the device, at the same offsets: events that share an
        offset (a chord) are packed into one MidiRaw, which the device parses (§7.4), in a
        message preallocated for the purpose; a SysEx too long for one message goes as a
        fragmented SysEx if the ring has room for all of it. What can't be sent is counted
        (``midi_dropped``), never raised: the audio of the period is not at stake here."""
        buf = self._midi_msg.buf
        packed = events = 0
        at = -1
        try:
            for offset, data in self._midi_in.incoming_midi_events():
                size = len(data)
                if packed and (offset != at or packed + size > MESSAGE_PAYLOAD_SIZE):
                    self._send_midi(host, at, packed, events)
                    packed = events = 0
                if size > MESSAGE_PAYLOAD_SIZE:
                    self._send_long_sysex(host, offset, bytes(data))
                    continue
                buf[_PAYLOAD + packed:_PAYLOAD + packed + size] = data
                packed += size
                events += 1
                at = offset
            if packed:
                self._send_midi(host, at, packed, events)
        except Exception:
            self.midi_dropped += events + 1  # what was packed, and the event that failed

    def _send_midi(self, host: Host, offset: int, size: int, events: int) -> None:
        msg = self._midi_msg
        msg.seq = cmd.next_seq()
        msg.sample_offset = offset
        msg.payload_len = size
        if host.send_command(msg):
            self.midi_forwarded += events
        else:
            self.midi_dropped += events

    def _send_long_sysex(self, host: Host, offset: int, data: bytes) -> None:
        try:
            messages = cmd.sysex(data, offset)  # a rare event: allocating here is acceptable
        except ValueError:
            self.midi_dropped += 1  # not a complete F0 .. F7 message: nothing to fragment
            return
        if host.free_command_slots() < len(messages):
            self.midi_dropped += 1  # never half a transfer
            return
        for m in messages:
            host.send_command(m)
        self.midi_forwarded += 1

    def run(self) -> None:
        """Supervise until stop(): patterns, the discoLink peer, and jackd."""
        next_link = next_jack = 0.0  # two clocks: a try at one must not postpone the other
        while not self._stop.is_set():
            now = time.monotonic()
            if self.jack_alive and self._dirty.is_set():
                self._dirty.clear()
                _try(self.apply_patterns)
            self._report_midi_drops()
            if self.linked and not self.host.connected:
                self.pause_callback()
                self.linked = False
                self.peer_losses += 1
                self.report("peer lost", f"device {self.device_id} went away "
                            f"({self.host.disconnect_reason or 'no heartbeat'}); the JACK "
                            "ports play silence until it returns")
                self._paused = False
            if not self.linked and now >= next_link:
                next_link = now + RECONNECT_INTERVAL_S
                try:
                    self.pause_callback()
                    self._link()
                    self.report("peer back", f"reconnected to {self.host.connection.device}")
                except (HostError, ValueError):
                    pass
                finally:
                    self._paused = False
            if not self.jack_alive:
                self._drop_lost_client("keeping the discoLink link")
                if now >= next_jack:
                    next_jack = now + RECONNECT_INTERVAL_S
                    # the rate of the device we last linked to (it may be away just now)
                    if self._reopen(self._rate, None, f"device {self.device_id}"):
                        self._activate()
                        self.report("jack back", "reconnected to JACK server "
                                    f"{server_name(self.server)!r}")
                # keep the link fresh: the device sees us alive through our pid; drain audio
                if self.linked:
                    self.host.process_responses()
            self._stop.wait(0.05)

    def close(self) -> None:
        """Stop: the callback stands aside, the claim is released, then the client closes
        (within its deadline)."""
        self.pause_callback()
        self.host.close()
        self._close_client()


def _try(action: Callable[[], object]) -> None:
    """JACK connects can race with clients leaving; a failed one is retried on the next
    port change, so it is not an error here."""
    try:
        action()
    except Exception:
        pass
