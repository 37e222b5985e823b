"""The rack server: one supervised OS process per device, persistence, reload, status.

Each device of a rack runs as ``python -m bridge device ...`` (or ``jack-device``) in its
own process, so a crashing plugin takes down only its own device. The supervisor:

- starts every device, learns the id it got from its ready line, and from then on restarts
  it with exactly that id (session recall: a host that was connected reconnects by link tag);
- restarts a device that dies, by its policy (``always``, ``on-failure``, ``never``), after a
  backoff of 0.5 s doubling to 8 s; a device that crashes 5 times within 60 s is marked
  failed and left alone, and the rest of the rack keeps running;
- keeps device ids (``rack.json``) and plugin states (``<device>.json``, written by the
  device itself on stop and whenever it changes) in the rack's state folder, and restores
  them at start;
- re-reads the file on SIGHUP or ``rack reload`` and starts, stops or restarts only the
  devices whose definition changed; an invalid new file is rejected and nothing changes;
- answers ``status``, ``reload`` and ``stop`` on a UNIX socket only its owner can use;
- on SIGINT or SIGTERM stops every device (each deregisters and removes its segment) and
  removes the namespace's registry, so nothing of the rack is left in /dev/shm.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..adapters.persist import FileLock
from ..transport import Registry, _shm, shm
from ..transport.layout import TRANSPORT_HEADER
from ..transport.registry import sweep_namespace
from .config import (
    RACK_IDS_FILE,
    ConfigError,
    DeviceConfig,
    RackConfig,
    device_argv,
    device_fingerprint,
    load_rack,
)
from .statefolder import lock_state_folder, read_saved_ids, write_saved_ids

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
CRASH_LIMIT = 5  # crashes within CRASH_WINDOW_S mark a device failed
CRASH_WINDOW_S = 60.0
READY_TIMEOUT_S = 60.0  # plugins can take a while to load
STOP_TIMEOUT_S = 8.0
POLICIES = ("always", "on-failure", "never")

Log = Callable[[str], None]


def runtime_dir(create: bool = True) -> Path:
    """Where control sockets live: $XDG_RUNTIME_DIR/discolink-bridge, else a private /tmp
    folder (created 0700 unless ``create`` is False: a client that only asks creates
    nothing)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "discolink-bridge" if base else \
        Path(f"/tmp/discolink-bridge-{os.getuid()}")
    if not create:
        return path
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def control_socket_path(namespace: str, create: bool = True) -> Path:
    """One rack per namespace: its control socket is named after the namespace (its folder
    is made unless ``create`` is False)."""
    return runtime_dir(create) / f"rack-{namespace}.sock"


@dataclass
class Child:
    """One device of the rack and its process."""

    config: DeviceConfig
    fingerprint: str
    device_id: str  # the id it asks for: the config's, then the one it got
    proc: subprocess.Popen | None = None
    state: str = "starting"  # starting, running, backoff, failed, stopped
    restarts: int = 0
    crashes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=16))
    backoff: float = BACKOFF_FIRST_S
    next_start: float = 0.0
    started_at: float = 0.0
    last_exit: str = ""
    ready_line: str = ""
    cpu: tuple[float, float] = (0.0, 0.0)  # (cpu seconds, wall time) at the last sample
    cpu_percent: float = 0.0
    stopping: bool = False


class Rack:
    """A running rack. ``start()``, then ``run()`` until ``stop()`` (or a signal)."""

    def __init__(self, path: Path, config: RackConfig, *, log: Log | None = None,
                 python: str = sys.executable, state_dir: Path | None = None) -> None:
        self.path = path
        self.state_dir_override = state_dir
        if state_dir is not None:
            config.state_dir = str(state_dir)
        self.config = config
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.python = python
        self.namespace = config.namespace
        self.state_dir = config.state_folder()
        self.children: dict[str, Child] = {}
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._lock = threading.RLock()
        self._server: socket.socket | None = None
        self.socket_path = control_socket_path(self.namespace)
        self._state_lock: FileLock | None = None

    # -- persistence --------------------------------------------------------------------
    @property
    def ids_file(self) -> Path:
        return self.state_dir / RACK_IDS_FILE

    def _saved_ids(self) -> dict[str, str]:
        ids, problems = read_saved_ids(self.ids_file, self.config)
        for line in problems:  # never obeyed: the entry is dropped and rewritten
            self.log(f"rack {self.config.name}: {line}")
        return ids

    def _save_ids(self) -> None:
        ids = {c.config.id: c.device_id for c in self.children.values()}
        write_saved_ids(self.ids_file, self.config, ids)

    # -- the command line of each device (one mapping: config.device_argv) -------------
    def argv(self, dev: DeviceConfig, device_id: str) -> list[str]:
        return [self.python, "-m", "bridge", *device_argv(self.config, dev,
                                                           device_id=device_id)]

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Create the state folder and control socket, then start every device."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_lock = lock_state_folder(self.state_dir)  # held until shutdown ends
        saved = self._saved_ids()
        for dev in self.config.devices:
            wanted = saved.get(dev.id, dev.id)
            self.children[dev.id] = Child(dev, device_fingerprint(self.config, dev), wanted)
        self._open_socket()
        for child in self.children.values():
            self._spawn(child)
        self._wait_ready(list(self.children.values()))
        self._save_ids()

    def _spawn(self, child: Child) -> None:
        dev = child.config
        log_path = self.state_dir / f"{dev.id}.log"
        err = open(log_path, "ab")
        env = dict(os.environ)
        env["DISCOLINK_NAMESPACE"] = self.namespace
        env["PYTHONUNBUFFERED"] = "1"
        child.proc = subprocess.Popen(self.argv(dev, child.device_id), stdout=subprocess.PIPE,
                                      stderr=err, stdin=subprocess.DEVNULL, env=env, text=True,
                                      start_new_session=True)
        err.close()
        child.state = "starting"
        child.started_at = time.monotonic()
        child.ready_line = ""
        child.stopping = False
        threading.Thread(target=self._read_stdout, args=(child, child.proc), daemon=True,
                         name=f"rack {dev.id}").start()

    def _read_stdout(self, child: Child, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            line = line.strip()
            if " ready: " in line and not child.ready_line and child.proc is proc:
                child.ready_line = line
                got = line.split()[1]
                with self._lock:
                    if child.device_id != got:
                        child.device_id = got
                        self._save_ids()
                    child.state = "running"
                self.log(f"rack {self.config.name}: {child.config.id} running as {got} "
                         f"(pid {proc.pid})")

    def _wait_ready(self, children: list[Child]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._reap()
            if all(c.state != "starting" for c in children):
                return
            time.sleep(0.05)

    def _reap(self) -> None:
        """Notice exits and schedule restarts by policy."""
        now = time.monotonic()
        with self._lock:
            for child in self.children.values():
                proc = child.proc
                if proc is None or proc.poll() is None:
                    if child.state == "backoff" and now >= child.next_start:
                        child.restarts += 1
                        self.log(f"rack {self.config.name}: restarting {child.config.id} as "
                                 f"{child.device_id} (restart {child.restarts})")
                        self._spawn(child)
                    continue
                code = proc.returncode
                child.proc = None
                if child.stopping:
                    child.state = "stopped"
                    continue
                child.last_exit = (f"killed by signal {-code}" if code < 0
                                   else f"exit code {code}")
                failed = code != 0
                policy = child.config.restart
                if policy == "never" or (policy == "on-failure" and not failed):
                    child.state = "stopped"
                    self.log(f"rack {self.config.name}: {child.config.id} ended "
                             f"({child.last_exit}); policy {policy}: not restarted")
                    continue
                child.crashes.append(now)
                recent = [t for t in child.crashes if now - t <= CRASH_WINDOW_S]
                if len(recent) >= CRASH_LIMIT:
                    child.state = "failed"
                    self.log(f"rack {self.config.name}: {child.config.id} FAILED: it ended "
                             f"{len(recent)} times within {CRASH_WINDOW_S:.0f} s (last: "
                             f"{child.last_exit}); see {self.state_dir}/"
                             f"{child.config.id}.log")
                    continue
                delay = child.backoff if len(recent) > 1 else BACKOFF_FIRST_S
                child.backoff = min(BACKOFF_MAX_S, delay * 2)
                child.state = "backoff"
                child.next_start = now + delay
                self.log(f"rack {self.config.name}: {child.config.id} ended "
                         f"({child.last_exit}); restarting in {delay:.1f} s")

    def run(self) -> None:
        """Supervise until stop(): restarts, CPU samples, control requests, reloads."""
        next_sample = 0.0
        while not self._stop.is_set():
            self._reap()
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + 1.0
                self._sample_cpu()
            self._serve_once(0.05)

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def shutdown(self) -> None:
        """Stop every device and remove what the rack made in /dev/shm and the socket."""
        with self._lock:
            children = list(self.children.values())
        for child in children:
            self._terminate(child)
        self._wait_exit(children)
        self._close_socket()
        sweep_namespace(self.namespace)  # the registry goes too when no device is left
        if self._state_lock is not None:
            self._state_lock.release()

    def _terminate(self, child: Child) -> None:
        child.stopping = True
        if child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)

    def _wait_exit(self, children: list[Child]) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in children:
            proc = child.proc
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            child.proc = None
            child.state = "stopped"

    # -- reload ---------------------------------------------------------------------------
    def reload(self) -> str:
        """Re-read the file; apply only what changed. Returns a one-line summary."""
        try:
            new = load_rack(self.path, state_dir=self.state_dir_override)
        except ConfigError as exc:
            text = f"reload rejected, the rack is unchanged:\n{exc}"
            self.log(f"rack {self.config.name}: {text}")
            return text
        if new.namespace != self.namespace:
            text = "reload rejected: the namespace can't change while the rack runs"
            self.log(f"rack {self.config.name}: {text}")
            return text
        with self._lock:
            old = self.children
            wanted = {d.id: d for d in new.devices}
            removed = [i for i in old if i not in wanted]
            added = [i for i in wanted if i not in old]
            changed = [i for i in wanted if i in old
                       and device_fingerprint(new, wanted[i]) != old[i].fingerprint]
            stopping = [old[i] for i in removed + changed]
            for child in stopping:
                self._terminate(child)
        self._wait_exit(stopping)
        with self._lock:
            self.config = new
            for i in removed:
                del self.children[i]
            fresh = []
            for i in added + changed:
                keep = old[i].device_id if i in old else i
                child = Child(wanted[i], device_fingerprint(new, wanted[i]), keep)
                self.children[i] = child
                fresh.append(child)
            for i, child in self.children.items():
                child.config = wanted[i]
            for child in fresh:
                self._spawn(child)
        self._wait_ready(fresh)
        self._save_ids()
        text = (f"reloaded: {len(added)} added, {len(removed)} removed, {len(changed)} "
                f"restarted, {len(self.children) - len(added) - len(changed)} untouched")
        self.log(f"rack {self.config.name}: {text}")
        return text

    # -- status ---------------------------------------------------------------------------
    def _sample_cpu(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        now = time.monotonic()
        for child in list(self.children.values()):
            proc = child.proc
            if proc is None:
                child.cpu_percent = 0.0
                continue
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                continue
            last_cpu, last_t = child.cpu
            if last_t and now > last_t:
                child.cpu_percent = 100.0 * (cpu - last_cpu) / (now - last_t)
            child.cpu = (cpu, now)

    def status(self) -> dict:
        """The rack and each device: pid, state, claim, link tag, ring fill, underruns,
        restarts, CPU %."""
        registry = Registry.find(self.namespace)  # a look creates no registry
        try:
            infos = {d.id: d for d in registry.scan()} if registry is not None else {}
        finally:
            if registry is not None:
                registry.close()
        rows = []
        with self._lock:
            children = list(self.children.values())
        for child in children:
            info = infos.get(child.device_id)
            row = {"name": child.config.id, "id": child.device_id, "kind": child.config.kind,
                   "pid": child.proc.pid if child.proc else None, "state": child.state,
                   "claimed_by": info.host_pid if info and info.claimed else None,
                   "link_tag": info.link_tag if info else "", "restarts": child.restarts,
                   "cpu_percent": round(child.cpu_percent, 1), "last_exit": child.last_exit,
                   "xruns": info.xruns if info else 0, "ring_fill": None, "underruns": None}
            if info is not None:
                row.update(_segment_counters(info))
            rows.append(row)
        return {"rack": self.config.name, "namespace": self.namespace, "file": str(self.path),
                "state_dir": str(self.state_dir), "devices": rows}

    # -- control socket -------------------------------------------------------------------
    def _open_socket(self) -> None:
        path = self.socket_path
        if path.exists():
            if _socket_alive(path):
                raise RuntimeError(f"a rack already runs in namespace {self.namespace!r} "
                                   f"(control socket {path})")
            path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)  # owner-only from the start
        try:
            server.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        server.listen(8)
        server.settimeout(0.05)
        self._server = server

    def _close_socket(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass

    def _serve_once(self, timeout: float) -> None:
        server = self._server
        if server is None:
            time.sleep(timeout)
            return
        server.settimeout(timeout)
        try:
            conn, _ = server.accept()
        except (TimeoutError, OSError):
            return
        with conn:
            conn.settimeout(2.0)
            try:
                request = conn.makefile("r").readline().strip()
                reply = self._answer(request)
            except Exception as exc:  # a bad client never takes the rack down
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            try:
                conn.sendall((json.dumps(reply) + "\n").encode())
            except OSError:
                pass

    def _answer(self, request: str) -> dict:
        """The control verbs: status, reload, stop. Every answer has "ok"."""
        if request == "status":
            return {"ok": True, **self.status()}
        if request == "reload":
            text = self.reload()
            return {"ok": text.startswith("reloaded"), "message": text}
        if request == "stop":
            self.stop()
            return {"ok": True, "message": "stopping"}
        return {"ok": False, "error": f"unknown request {request!r}; verbs: status, reload, "
                                      "stop"}


def ask(namespace: str, verb: str, timeout: float = 30.0) -> dict:
    """Send one verb to the rack running in ``namespace``; RuntimeError when there is none."""
    path = control_socket_path(namespace, create=False)  # asking creates nothing
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, NotADirectoryError, ConnectionRefusedError):
        raise RuntimeError(f"no rack is running in namespace {namespace!r} (no control "
                           f"socket at {path}); start one with: discolink-bridge rack "
                           "FILE.yaml") from None
    with sock:
        sock.sendall((verb + "\n").encode())
        data = sock.makefile("r").readline()
    if not data:
        raise RuntimeError(f"the rack in namespace {namespace!r} closed the connection")
    return json.loads(data)


def _socket_alive(path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _segment_counters(info) -> dict:
    """Underruns and ring fill from a device's transport header (read-only attach)."""
    try:
        seg = shm.Segment.attach(info.segment_name, TRANSPORT_HEADER.size)
    except Exception:
        return {}
    try:
        h = TRANSPORT_HEADER.unpack_from(seg.buf)
        fill = _shm.ring_fill(seg.buf, h["audio_ring_offset"]) if h["audio_ring_offset"] \
            else None
        return {"underruns": h["underruns"], "ring_fill": fill,
                "blocks_written": h["blocks_written"]}
    except Exception:
        return {}
    finally:
        seg.close()


def format_status(status: dict) -> str:
    """The status table `rack` and `status` print."""
    head = (f"rack {status['rack']} (namespace {status['namespace']!r}, {status['file']})\n"
            f"{'DEVICE':<14} {'ID':<14} {'KIND':<6} {'PID':>7} {'STATE':<9} {'CLAIMED BY':>10} "
            f"{'LINK TAG':<12} {'FILL':>6} {'UNDERRUNS':>9} {'RESTARTS':>8} {'CPU%':>6}")
    lines = [head]
    for d in status["devices"]:
        lines.append(
            f"{d['name']:<14} {d['id']:<14} {d['kind']:<6} {d['pid'] or '-':>7} "
            f"{d['state']:<9} {d['claimed_by'] or '-':>10} {d['link_tag'] or '-':<12} "
            f"{'-' if d['ring_fill'] is None else d['ring_fill']:>6} "
            f"{'-' if d['underruns'] is None else d['underruns']:>9} {d['restarts']:>8} "
            f"{d['cpu_percent']:>6.1f}")
    return "\n".join(lines)
