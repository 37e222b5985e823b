"""A real jackd (dummy backend) for tests, under a server name of its own.

``jackd --no-realtime -d dummy`` needs no sound card. Each server gets a unique ``-n NAME``
and the processes that should use it get ``JACK_DEFAULT_SERVER=NAME``, so parallel test
runs never meet. ``JACK_NO_START_SERVER=1`` keeps any client from starting a server of its
own when ours is down (which the fault tests rely on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid


class JackServer:
    """One jackd process; start() waits until clients can connect."""

    def __init__(self, sample_rate: int = 48000, period: int = 256,
                 name: str | None = None) -> None:
        self.name = name or f"dltest{uuid.uuid4().hex[:8]}"
        self.sample_rate = sample_rate
        self.period = period
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(self.env)
        return env

    def start(self, timeout: float = 10.0) -> JackServer:
        try:
            return self._start(timeout)
        except RuntimeError as exc:
            if "Too many servers" not in str(exc) or not reclaim_stale_servers():
                raise
            return self._start(timeout)

    def _start(self, timeout: float) -> JackServer:
        if shutil.which("jackd") is None:
            raise RuntimeError("jackd is not installed: run ./setup.sh (it installs jackd2)")
        self.proc = subprocess.Popen(
            ["jackd", "-n", self.name, "--no-realtime", "-d", "dummy",
             "-r", str(self.sample_rate), "-p", str(self.period)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=self.client_env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read()[-2000:]
                hint = ""
                if "Too many servers" in err:  # jackd2 keeps 8 server entries in shared memory
                    hint = ("; JACK's server table is full of servers that were killed without "
                            "cleaning up: with no jackd running, remove "
                            "/dev/shm/jack-shm-registry")
                raise RuntimeError(f"jackd exited with {self.proc.returncode}: {err}{hint}")
            if self.ports() is not None:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jackd {self.name} did not come up in {timeout} s")

    def ports(self, *args: str) -> list[str] | None:
        """jack_lsp's output lines (None while the server can't be reached)."""
        r = subprocess.run(["jack_lsp", *args], env=self.client_env(), capture_output=True,
                           text=True, timeout=10)
        return r.stdout.splitlines() if r.returncode == 0 else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # a clean exit unregisters the server (see below)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        remove_semaphores(self.name)

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)


REGISTRY = "/dev/shm/jack-shm-registry"


def remove_semaphores(server: str) -> None:
    """jackd2 makes a named semaphore per client, /dev/shm/jack_sem.<uid>_<server>_<client>,
    and leaves it behind when the client or the server is killed. Our test servers' names
    are unique, so once one has stopped its semaphores are litter: remove them."""
    prefix = f"jack_sem.{os.getuid()}_{server}_"
    try:
        names = [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.unlink(f"/dev/shm/{name}")
        except FileNotFoundError:
            pass


def stale_server_names() -> list[str]:
    """Servers that jackd2's shared registry still lists although their process is gone.

    jackd2 (1.9.x) keeps 8 server entries after a 24-byte header, each a pid and a 260-byte
    name "jack-<uid>:<server>:". A server that was killed (kill -9, or a stop that timed out)
    leaves its entry behind, and only a server of the same name reclaims it; with 8 stale
    entries no new server can start ("Too many servers already active").
    """
    try:
        data = open(REGISTRY, "rb").read(24 + 8 * 264)
    except OSError:
        return []
    names = []
    for i in range(8):
        off = 24 + i * 264
        if off + 264 > len(data):
            break
        pid = int.from_bytes(data[off:off + 4], "little", signed=True)
        raw = data[off + 4:off + 264].split(b"\0", 1)[0].decode(errors="replace")
        if pid <= 0 or os.path.exists(f"/proc/{pid}"):
            continue
        parts = raw.split(":")
        if len(parts) >= 2 and parts[1]:
            names.append(parts[1])
    return names


def reclaim_server(name: str) -> None:
    """Clear a killed server's entry the way jackd itself does: start a server under its
    name (it takes the entry back) and stop it cleanly (it unregisters)."""
    server = JackServer(name=name)
    try:
        server._start(10.0)
    except RuntimeError:
        return
    server.stop()


def reclaim_stale_servers() -> bool:
    """Clear every stale entry of JACK's server table. True if any was cleared."""
    names = stale_server_names()
    for name in names:
        reclaim_server(name)
    return bool(names)
