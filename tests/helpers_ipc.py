"""Helpers shared by the registry and lifecycle tests: polling with deadlines, registry
snapshots, real-time paced reading, and /proc and /dev/shm probes.

Nothing here fakes the transport: these helpers only drive real endpoints and look at the
real kernel objects (processes, POSIX shared-memory names).
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from bridge.transport import DeviceInfo, Host, Registry, cmd
from bridge.transport.shm import transport_name

T = TypeVar("T")

HELPER_HOST = Path(__file__).resolve().parent / "helpers_host.py"
SAMPLE_RATE = 48000
BLOCK = 256
NOTE_69_AMPLITUDE = 0.25 * 100 / 127  # the sine synth's amplitude for velocity 100


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.005) -> T:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def scan(namespace: str) -> list[DeviceInfo]:
    """One Registry.scan() of ``namespace`` from a fresh Registry handle (reclaims dead slots)."""
    registry = Registry(namespace)
    try:
        return registry.scan()
    finally:
        registry.close()


def by_id(namespace: str) -> dict[str, DeviceInfo]:
    return {d.id: d for d in scan(namespace)}


def segment_exists(name: str) -> bool:
    """True if the POSIX shared-memory object ``name`` (e.g. "/discolink-...") exists."""
    return os.path.exists("/dev/shm" + name)


def device_segment(info: DeviceInfo) -> str:
    return transport_name(info.namespace, info.slot, info.pid)


def proc_state(pid: int) -> str:
    """The /proc state letter of ``pid`` ("R", "S", "Z", ...), or "" if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    end = stat.rindex(b")")
    return stat[end + 2 : end + 3].decode()


def read_realtime(host: Host, seconds: float, channels: int = 2,
                  block: int = BLOCK) -> np.ndarray:
    """Read ``seconds`` of audio paced in real time, like a DAW callback."""
    blocks = max(1, int(np.ceil(seconds * SAMPLE_RATE / block)))
    out = np.zeros((channels, block), np.float32)
    rec = np.zeros((channels, blocks * block), np.float32)
    period = block / SAMPLE_RATE
    start = time.monotonic()
    for k in range(blocks):
        host.receive_audio(out)
        rec[:, k * block : (k + 1) * block] = out
        delay = start + (k + 1) * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return rec


def drain_pty(fd: int) -> tuple[list[bytes], threading.Thread]:
    """Read a pty's controller side until it closes, so that whatever the program writes to
    its terminal never fills it up; returns the chunks (growing) and the reader thread."""
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    return chunks, reader


@contextmanager
def on_a_terminal(spawn, *args: str) -> Iterator[tuple[subprocess.Popen, list[bytes]]]:
    """Run ``python -m bridge ARGS...`` with a pty as its terminal (stdin, stdout and
    stderr); yields the process and what it has written so far (growing). A process still
    running at the end is killed."""
    controller, terminal = pty.openpty()
    proc = spawn.popen(*args, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks, reader = drain_pty(controller)  # whatever it writes, the pty never fills up
    try:
        yield proc, chunks
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        os.close(controller)


def read_blocks(host: Host, blocks: int, block: int = BLOCK, channels: int = 1, *,
                feed: Callable[[int], object] | None = None, slack: float = 10.0,
                rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read ``blocks`` whole blocks as the device delivers them, with no pacing of our own
    (the device's clock, demand or JACK, sets the pace); ``feed(k)`` runs before block k
    (to send return audio, say). Fails when the audio stops for ``slack`` seconds more than
    the blocks' own duration."""
    out = np.zeros((channels, block), np.float32)
    rec = np.zeros((channels, blocks * block), np.float32)
    deadline = time.monotonic() + slack + blocks * block / rate
    for k in range(blocks):
        if feed is not None:
            feed(k)
        while host.available_frames() < block:
            assert time.monotonic() < deadline, "the device stopped delivering audio"
            time.sleep(0.0005)
        assert host.receive_audio(out) == block
        rec[:, k * block:(k + 1) * block] = out
    return rec


def play_note_and_record(host: Host, seconds: float = 0.4, channels: int = 2) -> np.ndarray:
    """Silence the synth, send note 69 at velocity 100 and record ``seconds`` of it.

    All notes off first: a host that was killed mid-note leaves its note sounding, and a
    second voice of the same note would sum with it at an arbitrary phase."""
    assert host.send_command(cmd.midi_cc(0, 123, 0)), "all notes off could not be queued"
    assert host.send_command(cmd.midi_note_on(0, 69, 100)), "note on could not be queued"
    return read_realtime(host, seconds, channels)


def assert_note_sounds(rec: np.ndarray, context: str) -> None:
    """The recording carries the synth's note: non-silent, at the expected amplitude."""
    peak = float(np.abs(rec).max())
    assert peak > 0.5 * NOTE_69_AMPLITUDE, f"{context}: no audio arrived (peak {peak:.4f})"
    assert peak < 1.05 * NOTE_69_AMPLITUDE, f"{context}: unexpected audio (peak {peak:.4f})"


def start_helper_host(env: dict, device_id: str, link_tag: str, *, force: bool = False,
                      max_seconds: float = 60.0) -> subprocess.Popen:
    """Start tests/helpers_host.py (a host in its own process) and wait for "connected"."""
    args = [sys.executable, str(HELPER_HOST), device_id, link_tag, str(max_seconds)]
    if force:
        args.append("--force")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    if not line.startswith("connected "):
        proc.kill()
        _, err = proc.communicate()
        raise RuntimeError(f"helper host did not connect: {line!r} {err}")
    return proc


@dataclass
class LinkLoss:
    """How a connected host lost its device, timed from an event (a kill, a SIGTERM)."""

    disconnected_after: float  # seconds until host.connected first read False
    zero_fill_after: float  # seconds until receive_audio zero-filled, for good
    reason: str


def read_until_disconnected(host: Host, since: float, channels: int = 2,
                            timeout: float = 5.0, tail_blocks: int = 20) -> LinkLoss:
    """Keep reading audio in real time until the host reports the link lost, then check
    that every later ``receive_audio`` zero-fills (it is handed a NaN-filled buffer, so a
    call that leaves the buffer alone does not count as zero-filling)."""
    out = np.empty((channels, BLOCK), np.float32)
    period = BLOCK / SAMPLE_RATE
    zero_since: float | None = None  # start of the current run of zero-filled reads
    disconnected_at: float | None = None
    tail = 0
    start = time.monotonic()
    k = 0
    while True:
        out.fill(np.nan)
        n = host.receive_audio(out)
        now = time.monotonic()
        if n == 0 and bool(np.all(out == 0)):
            if zero_since is None:
                zero_since = now
        else:
            assert disconnected_at is None, (
                f"receive_audio returned {n} frames (or left the buffer unfilled) after the "
                f"host reported disconnected ({host.disconnect_reason!r})")
            zero_since = None
        if disconnected_at is None:
            if not host.connected:
                disconnected_at = time.monotonic()
            elif now - since > timeout:
                raise AssertionError(f"host still connected {timeout:.1f} s after the event")
        else:
            tail += 1
            if tail >= tail_blocks:
                break
        k += 1
        delay = start + k * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    assert zero_since is not None
    return LinkLoss(disconnected_at - since, zero_since - since, host.disconnect_reason)


def send(host: Host, *messages) -> None:
    """Send each message; fail the test if one doesn't fit the command ring."""
    for m in messages:
        assert host.send_command(m)


def peak_hz(x: np.ndarray, rate: int = 48000) -> float:
    """The strongest frequency of ``x`` (Hann window, 8x zero padding)."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), 8 * len(x)))
    return float(np.fft.rfftfreq(8 * len(x), 1 / rate)[np.argmax(spec)])
