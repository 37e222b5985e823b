"""Shared fixtures: an isolated namespace per test, and device processes started for real.

Every test gets its own DISCOLINK_NAMESPACE, so tests never see each other's devices, and
every segment of that namespace is unlinked afterwards, whatever the test did.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.transport import shm

REPO = Path(__file__).resolve().parent.parent
# The LV2 test plugins (plugins/build.sh) come first on the LV2 path, then the standard
# folders; every process a test starts inherits it. plugins/README.md documents it.
LV2_TEST_PATH = os.pathsep.join([str(REPO / "build" / "plugins" / "lv2"),
                                 str(Path.home() / ".lv2"), "/usr/local/lib/lv2",
                                 "/usr/lib/lv2"])
os.environ["LV2_PATH"] = LV2_TEST_PATH

# What outside programs the tests run leave in /dev/shm on purpose, for later runs of their
# own: jackd's server table, segments (jack-UID-N, ~100 MB) and metadata folder, and
# swh-lv2's band-limited oscillator tables.
OUTSIDE_LITTER = re.compile(r"^(jack-shm-registry|jack_db-\d+|jack-\d+-\d+|blo-.*\.tbl)$")


def jackd_running() -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "jackd":
                return True
        except OSError:
            pass
    return False


@pytest.fixture(scope="session", autouse=True)
def no_outside_litter():
    """Remove that litter once the session ends, if the session made it and no jackd (the
    user's own, say) still runs: a test run leaves /dev/shm as it found it."""
    before = set(os.listdir("/dev/shm"))
    yield
    if jackd_running():
        return
    for name in set(os.listdir("/dev/shm")) - before:
        if OUTSIDE_LITTER.match(name):
            path = Path("/dev/shm", name)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


@dataclass
class DeviceProcess:
    """A `discolink-bridge device` running in its own OS process."""

    proc: subprocess.Popen
    id: str
    ready_line: str
    args: list[str] = field(default_factory=list)
    stderr: str = ""  # what it wrote to stderr, once stop() has collected it

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 5.0) -> str:
        """SIGTERM, wait, and return what the device printed after its ready line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.stderr = err or ""
        return out or ""

    def kill9(self) -> None:
        """kill -9, then reap the zombie (as a shell or supervisor would)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)


class Spawner:
    """Starts device processes in the test's namespace and cleans up after the test."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.procs: list[subprocess.Popen] = []

    def env(self) -> dict:
        env = dict(os.environ)
        env["DISCOLINK_NAMESPACE"] = self.namespace
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def device(self, *args: str, device_id: str = "Sine", timeout: float = 20.0) -> DeviceProcess:
        """Start `python -m bridge device --id ID ARGS...` and wait for its ready line."""
        return self.device_command([sys.executable, "-m", "bridge", "device", "--id", device_id],
                                   *args, timeout=timeout)

    def device_command(self, command: list[str], *args: str,
                       timeout: float = 20.0) -> DeviceProcess:
        """Start any device program (the Python CLI, a C tool) that prints a ready line
        `device ID ready: ...`, and wait for that line."""
        proc = subprocess.Popen([*command, *args], env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO)
        self.procs.append(proc)
        deadline = time.monotonic() + timeout
        line = proc.stdout.readline()
        if not line.startswith("device ") or time.monotonic() > deadline:
            err = proc.stderr.read() if proc.poll() is not None else ""
            raise RuntimeError(f"{command[0]} did not start: {line!r} {err}")
        return DeviceProcess(proc, line.split()[1], line.strip(), list(args))

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run `python -m bridge ARGS...` to completion in this namespace."""
        return subprocess.run([sys.executable, "-m", "bridge", *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        """Start `python -m bridge ARGS...` without waiting."""
        proc = subprocess.Popen([sys.executable, "-m", "bridge", *args], env=self.env(),
                                cwd=REPO, **kwargs)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for name in shm.list_names(shm.namespace_prefix(self.namespace)):
            shm.unlink(name)


@pytest.fixture
def namespace(monkeypatch) -> str:
    """A fresh namespace, also exported as DISCOLINK_NAMESPACE for in-process endpoints."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("DISCOLINK_NAMESPACE", ns)
    yield ns
    for name in shm.list_names(shm.namespace_prefix(ns)):
        shm.unlink(name)


@pytest.fixture
def spawn(namespace) -> Spawner:
    s = Spawner(namespace)
    yield s
    s.cleanup()


@pytest.fixture
def jack(monkeypatch):
    """A jackd of this test's own (dummy backend, 48 kHz, 256 frames), exported to every
    process the test starts through JACK_DEFAULT_SERVER."""
    from jack_server import JackServer

    server = JackServer().start()
    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    yield server
    server.stop()
