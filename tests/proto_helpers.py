"""Helpers for the protocol-level tests (test_protocol, test_fuzz, test_segments,
test_fragments, test_rings, test_cli): polling with deadlines, tone analysis, direct access
to an in-process device's rings, and the child-process script tests/proto_child.py.

Nothing here fakes the transport: the helpers only drive real endpoints, real rings in real
shared memory, and real OS processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from helpers_ipc import NOTE_69_AMPLITUDE, wait_until  # noqa: F401  (re-exported)

from bridge.transport import Device, Host, Message
from bridge.transport.layout import TRANSPORT_HEADER
from bridge.transport.ring import MessageRing

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CHILD = TESTS / "proto_child.py"
NOTE_AMPLITUDE_V100 = NOTE_69_AMPLITUDE  # the sine synth's amplitude at velocity 100
TIMEOUT = 10.0  # for requests and handshakes: generous, the machine may be loaded


# ---- audio analysis ---------------------------------------------------------------------


def peak_hz(signal: np.ndarray, rate: int) -> float:
    """Frequency of the strongest spectral peak (Hann window, zero-padded 8x)."""
    n = signal.shape[-1]
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(n), 8 * n))
    return float(np.argmax(spectrum) * rate / (8 * n))


def tone_amplitude(signal: np.ndarray, rate: int, hz: float) -> float:
    """Amplitude of the ``hz`` component of ``signal`` (a windowed single-bin DFT)."""
    n = signal.shape[-1]
    w = np.hanning(n)
    t = np.arange(n) / rate
    return float(2 * abs(np.sum(signal * w * np.exp(-2j * np.pi * hz * t))) / w.sum())


def onset(signal: np.ndarray, threshold: float = 1e-4) -> int:
    hits = np.flatnonzero(np.abs(signal) > threshold)
    assert hits.size, "no sound in the recording"
    return int(hits[0])


def device_time(signal: np.ndarray) -> np.ndarray:
    """The recording from its onset on, without exact-zero samples: the blocks a host read
    before the device had rendered them (underruns) are zero-filled, so this undoes the
    gaps and gives the device's own timeline (a sounding sine is never exactly 0 for long)."""
    tail = signal[onset(signal):]
    return tail[tail != 0.0]


def record_paced(host: Host, seconds: float, channels: int | None = None) -> np.ndarray:
    """Read ``seconds`` of audio from a connected host, paced in real time like a DAW."""
    conn = host.connection
    rate, block = conn.sample_rate, conn.block_size
    channels = channels or max(conn.channels, 1)
    blocks = max(1, int(np.ceil(seconds * rate / block)))
    out = np.zeros((channels, block), np.float32)
    rec = np.zeros((channels, blocks * block), np.float32)
    start = time.monotonic()
    for k in range(blocks):
        host.receive_audio(out)
        rec[:, k * block : (k + 1) * block] = out
        delay = start + (k + 1) * block / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return rec


# ---- in-process devices -----------------------------------------------------------------


def header(dev_or_buf) -> dict:
    """The transport header of an in-process Device, a connected Host, or a buffer."""
    if isinstance(dev_or_buf, Device):
        buf = dev_or_buf.segment.buf
    elif isinstance(dev_or_buf, Host):
        buf = dev_or_buf._segment.buf
    else:
        buf = dev_or_buf
    return TRANSPORT_HEADER.unpack_from(buf)


def device_rings(dev: Device) -> tuple[MessageRing, MessageRing]:
    """(command ring, response ring) of an in-process device, located from its header."""
    h = header(dev)
    buf = dev.segment.buf
    return (MessageRing(buf, h["command_ring_offset"], h["message_slots"]),
            MessageRing(buf, h["response_ring_offset"], h["message_slots"]))


@contextmanager
def heartbeating(dev: Device, interval: float = 0.05) -> Iterator[None]:
    """Keep an in-process device's registry heartbeat fresh while something slow (another
    process starting up) runs: a scan reclaims devices silent for 3 s."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            dev.heartbeat()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def drain(ring: MessageRing) -> list[Message]:
    """Pop every queued message."""
    out = []
    rx = Message()
    while ring.pop(rx.buf) == 1:
        out.append(rx.copy())
    return out


# ---- payloads shared by the tests and their child processes ------------------------------

SYSEX_SIZES = (3, 224, 225, 4096, 100_003, 1 << 20)


def sysex_payloads(seed: int) -> list[bytes]:
    """Complete SysEx messages (F0 .. F7, 7-bit data) of the SYSEX_SIZES, from ``seed``."""
    rng = np.random.default_rng(seed)
    return [b"\xf0" + rng.integers(0, 128, size - 2, dtype=np.uint8).tobytes() + b"\xf7"
            for size in SYSEX_SIZES]


# ---- child processes --------------------------------------------------------------------


def child_env() -> dict:
    env = dict(os.environ)  # carries DISCOLINK_NAMESPACE from the `namespace` fixture
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_child(*args: str, **kwargs) -> subprocess.Popen:
    """Start ``python tests/proto_child.py ARGS...`` in the test's namespace."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, str(CHILD), *args], env=child_env(), text=True,
                            cwd=REPO, **kwargs)
