"""The debug monitor: every command, response, audio block, connection change and error is
observed, one line per event on the console, and a broken monitor never breaks the audio path.

The first tests run device and host in one process (a thread drives the device) because
they check what each endpoint reports to its own observer; the CLI test at the end runs the
device in its own process.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter

import numpy as np
import pytest
from helpers_ipc import wait_until

from bridge.transport import (
    DebugMonitor,
    Device,
    DeviceRunner,
    Host,
    cmd,
    make_console_monitor,
)


class Recorder(DebugMonitor):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_command(self, endpoint, direction, message):
        self.events.append(("command", direction, cmd.name_of(message.type)))

    def on_response(self, endpoint, direction, message):
        self.events.append(("response", direction, cmd.name_of(message.type)))

    def on_audio(self, endpoint, direction, frames, channels):
        self.events.append(("audio", direction, frames, channels))

    def on_connection(self, endpoint, event, detail):
        self.events.append(("connection", event, detail))

    def on_error(self, endpoint, where, text):
        self.events.append(("error", where, text))

    def kinds(self) -> Counter:
        return Counter(e[0] for e in self.events)


@pytest.fixture
def running_device(namespace):
    """A device whose loop runs in a thread, with a recording monitor."""
    recorder = Recorder()
    device = Device(monitor=recorder)
    device.start("Mon", 2, 48000, 256)
    runner = DeviceRunner(device, lambda block: block.fill(0.25), rt_priority=0)
    thread = threading.Thread(target=runner.run)
    thread.start()
    yield device, recorder
    runner.stop_event.set()
    thread.join()
    device.close()


def test_device_and_host_monitors_see_commands_responses_audio_and_connections(running_device):
    _, device_seen = running_device
    host_seen = Recorder()
    with Host(monitor=host_seen) as host:
        host.connect("Mon:0", link_tag="mon")
        host.ping()
        host.send_command(cmd.midi_note_on(0, 60, 100))
        out = np.zeros((2, 256), np.float32)
        wait_until(lambda: host.receive_audio(out) == 256, 5, "a full block")
        wait_until(lambda: ("command", "in", "NoteOn") in device_seen.events, 5,
                   "the device to see the NoteOn")
    host_kinds = [e[:3] for e in host_seen.events]
    assert ("connection", "claimed") == host_seen.events[0][:2]
    assert ("command", "out", "Handshake") in host_kinds
    assert ("response", "in", "HandshakeAck") in host_kinds
    assert ("command", "out", "Ping") in host_kinds and ("response", "in", "Pong") in host_kinds
    assert ("audio", "in", 256) in host_kinds
    assert host_seen.events[-1][:2] == ("connection", "disconnected")
    dev_kinds = [e[:3] for e in device_seen.events]
    assert ("command", "in", "Handshake") in dev_kinds
    assert ("response", "out", "HandshakeAck") in dev_kinds
    assert ("response", "out", "Pong") in dev_kinds
    assert ("audio", "out", 256) in dev_kinds
    assert any(e[:2] == ("connection", "claimed") and "mon" in e[2] for e in device_seen.events)


def test_real_time_failures_are_reported_to_the_monitor_instead_of_raised(running_device):
    device, device_seen = running_device
    assert device.send_audio(np.zeros((3, 256), np.float32)) is False  # wrong channel count
    assert device.send_audio(np.zeros((2, 256), np.float64)) is False  # wrong sample type
    errors = [e for e in device_seen.events if e[0] == "error"]
    assert any("does not match" in e[2] for e in errors)
    assert any("float32" in e[2] for e in errors)
    assert device.stats.errors >= 2


def test_a_monitor_that_raises_never_breaks_the_audio_path(namespace):
    class Broken(DebugMonitor):
        def on_audio(self, *args):
            raise RuntimeError("monitor bug")

    with Device(monitor=Broken()) as device:
        device.start("Broken", 2, 48000, 256)
        block = np.zeros((2, 256), np.float32)
        # Unclaimed: writes still go to the ring (nobody reads), and each calls the monitor.
        assert all(device.send_audio(block) for _ in range(4))
        assert device.stats.errors == 4
        assert device.stats.blocks_written == 4


def test_console_monitor_prints_one_line_per_event():
    stream = io.StringIO()
    monitor = make_console_monitor(stream)
    message = cmd.midi_note_on(0, 60, 100)
    monitor.on_command("host 1", "out", message)
    monitor.on_response("host 1", "in", cmd.error(message, 4, "nope"))
    monitor.on_audio("device X:0", "out", 256, 2)
    monitor.on_connection("host 1", "claimed", "X:0 with link tag 'a'")
    monitor.on_error("device X:0", "send_audio", "ring full")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5
    assert "NoteOn" in lines[0] and "Error" in lines[1] and "256 frames" in lines[2]
    assert "claimed" in lines[3] and "ERROR send_audio: ring full" in lines[4]
    quiet = io.StringIO()
    make_console_monitor(quiet, audio=False).on_audio("d", "out", 256, 2)
    assert quiet.getvalue() == ""


def test_cli_device_monitor_reports_a_hosts_connection_on_stderr(spawn):
    dev = spawn.device("--monitor", device_id="Watched")
    with Host() as host:
        host.connect(dev.id, link_tag="watch-me")
        time.sleep(0.2)
    dev.proc.terminate()
    _, err = dev.proc.communicate(timeout=10)
    assert "claimed: host pid" in err and "watch-me" in err
    assert "<- <Message Handshake" in err
    assert "disconnect" in err
