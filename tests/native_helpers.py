"""Helpers for the tests of the C SDK (native/discolink.h) and its tools: building them,
starting C devices as real processes, running cli_host, and checking a recorded 440 Hz tone.

Nothing here fakes the transport: the tools are the binaries setup.sh builds into
build/native, run as separate OS processes in the test's namespace.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
from conftest import REPO, DeviceProcess, Spawner

NATIVE = REPO / "build" / "native"
HEADER = REPO / "native" / "discolink.h"
AMPLITUDE = 0.25 * 100 / 127  # both sine synths: 0.25 * velocity / 127


def build_native() -> None:
    """`make -C native` (what setup.sh runs): quick when nothing changed; fails the test with
    the compiler's output otherwise."""
    done = subprocess.run(["make", "-s", "-C", str(REPO / "native"), "all"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"make -C native failed:\n{done.stdout}\n{done.stderr}"


def tool(name: str) -> str:
    path = NATIVE / name
    assert path.is_file(), f"{path} is missing: run ./setup.sh"
    return str(path)


def c_device(spawn: Spawner, *args: str, device_id: str = "Sine", name: str = "cli_device",
             timeout: float = 10.0) -> DeviceProcess:
    """Start a C tool device (cli_device or cli_master) and wait for its ready line."""
    return spawn.device_command([tool(name), "--id", device_id], *args, timeout=timeout)


def cli_host(spawn: Spawner, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([tool("cli_host"), *args], env=spawn.env(), capture_output=True,
                          text=True, timeout=timeout)


def cli_host_popen(spawn: Spawner, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([tool("cli_host"), *args], env=spawn.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    spawn.procs.append(proc)
    return proc


def json_line(stdout: str) -> dict:
    """The JSON object a host printed with --json (its last line)."""
    return json.loads(stdout.strip().splitlines()[-1])


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T, rate


def wait_for_line(stream, needle: str, timeout: float) -> str:
    """Read lines from a text pipe until one contains ``needle``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} within {timeout} s")


def assert_440_without_gaps(rec: np.ndarray, rate: int, underruns: int,
                            seconds: float = 1.0) -> None:
    """A note-69 recording: 440 Hz from its onset on, on every channel alike, and continuous
    in the device's own timeline. A host read that came up short (an underrun: the host woke
    late on a loaded machine) is zero-filled, as the protocol says; with the demand clock the
    device only waits for it, so nothing may be lost or repeated once those zeros are taken
    out. Zero-filled stretches need a reported underrun."""
    hits = np.flatnonzero(np.abs(rec[0]) > 1e-4)
    assert hits.size, "no sound in the recording"
    tail = rec[:, hits[0]:]
    zero_filled = np.all(tail == 0.0, axis=0)
    n = int(seconds * rate)
    stretches = int(np.count_nonzero(np.diff(zero_filled[:n].astype(np.int8)) == 1))
    assert stretches <= underruns, f"{stretches} zero-filled stretches, {underruns} underruns"
    seg = tail[:, ~zero_filled][:, :n]  # the device's timeline
    assert seg.shape[1] == n, f"less than {seconds} s of sound arrived"
    spectrum = np.abs(np.fft.rfft(seg[0] * np.hanning(n)))
    peak_hz = np.argmax(spectrum) * rate / n
    assert abs(peak_hz - 440.0) <= 1.0, f"peak at {peak_hz} Hz"
    for c in range(1, seg.shape[0]):
        np.testing.assert_array_equal(seg[c], seg[0])
    # No gaps: a continuous sine never jumps by more than amplitude * 2*pi*f/fs per sample,
    # and no window of four cycles goes quiet.
    step = np.abs(np.diff(seg[0]))
    assert step.max() <= AMPLITUDE * 2 * np.pi * 440 / rate * 1.01, f"a jump of {step.max()}"
    window = round(4 * rate / 440)
    usable = n // window * window
    window_rms = np.sqrt((seg[0, :usable].reshape(-1, window) ** 2).mean(axis=1))
    assert window_rms.min() > AMPLITUDE / np.sqrt(2) * 0.95, "a gap in the recording"
