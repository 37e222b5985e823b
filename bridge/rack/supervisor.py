"""The rack server: one supervised OS process per device, persistence, reload, status.

Each device of a rack runs as ``python -m bridge.cli.rack_child`` (which runs ``device`` or
``jack-device``, its command line handed over in a memfd) in its own process, so a crashing
plugin takes down only its own device. The supervisor:

- starts every device, learns the id it got from its ready line, and from then on restarts
  it with exactly that id (session recall: a host that was connected reconnects by link tag);
- restarts a device that dies, by its policy (``always``, ``on-failure``, ``never``), after a
  backoff of 0.5 s doubling to 8 s; a device that crashes 5 times within 60 s is marked
  failed and left alone, and the rest of the rack keeps running; the last line the device
  wrote to its log is kept and shown in ``status`` and in the rack's output;
- watches each running device's registry heartbeat: a device whose heartbeat is older than
  ``HEARTBEAT_STALE_S`` (stopped, or stuck in a plugin) is shown as ``hung``, killed with
  SIGKILL and restarted with the same id, like a crash;
- keeps device ids (``rack.json``) and plugin states (``<device>.json``, written by the
  device itself on stop and whenever it changes) in the rack's state folder, and restores
  them at start;
- re-reads the file on SIGHUP or ``rack reload``: parsing and preparing run in a thread, off
  the supervision loop, and a reload that fails anywhere before it touches a device leaves
  the rack exactly as it was; then it starts, stops or restarts only the devices whose
  definition changed;
- answers ``status``, ``reload`` and ``stop`` on a UNIX socket only its owner can use, each
  connection in a thread of its own, so a slow client never stalls supervision;
- makes its devices die with it: each asks Linux for SIGTERM on the rack's death
  (``PR_SET_PDEATHSIG``); a new rack in the namespace replaces the devices an old, killed
  rack left behind; the namespace is held by a lock file, and a stale control socket is
  replaced only once a connect to it is refused;
- on SIGINT or SIGTERM stops every device (each deregisters and removes its segment) and
  removes the namespace's registry, so nothing of the rack is left in /dev/shm; a second
  signal kills the devices that are still stopping.

Every device start happens on the main thread (PR_SET_PDEATHSIG fires when the thread that
forked the child ends, and the main thread lives as long as the rack), at most
``SPAWNS_PER_TICK`` per turn of the loop, so the loop keeps answering signals whatever the
devices do.
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import queue
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
from ..transport.layout import HEARTBEAT_STALE_S, TRANSPORT_HEADER
from ..transport.registry import live_heartbeats, sweep_namespace
from ..transport.shm import pid_alive
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
READY_TIMEOUT_S = 60.0  # plugins can take a while to load; longer is a failed start
STOP_TIMEOUT_S = 8.0  # a stopping device may be saving its plugin state
TICK_S = 0.05  # one turn of the supervision loop
SPAWNS_PER_TICK = 2  # device starts per turn: a fork+exec costs milliseconds on a busy box
HEARTBEAT_CHECK_S = 0.25
LEFTOVER_STOP_S = 1.0  # a leftover device gets this long to exit on SIGTERM, then SIGKILL
CONTROL_CLIENTS = 8  # control connections answered at once; more are closed unanswered
RACK_PID_ENV = "DISCOLINK_RACK_PID"  # in each device's environment: which rack started it
POLICIES = ("always", "on-failure", "never")

Log = Callable[[str], None]


def runtime_dir(create: bool = True) -> Path:
    """Where control sockets live: $XDG_RUNTIME_DIR/discolink-bridge, else a private /tmp
    folder (created 0700 when ``create``)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "discolink-bridge" if base else \
        Path(f"/tmp/discolink-bridge-{os.getuid()}")
    if create:
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
    argv_json: bytes = b""  # its command line (device_argv) for argv_id, reused on restarts
    argv_id: str = ""
    proc: subprocess.Popen | None = None
    state: str = "starting"  # starting, running, hung, backoff, failed, stopped
    restarts: int = 0
    crashes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=16))
    backoff: float = BACKOFF_FIRST_S
    next_start: float = 0.0
    started_at: float = 0.0
    last_exit: str = ""
    last_error: str = ""  # the last line of its log after it failed
    ready_line: str = ""
    cpu: tuple[float, float] = (0.0, 0.0)  # (cpu seconds, wall time) at the last sample
    cpu_percent: float = 0.0
    stopping: bool = False
    queued: bool = False  # waiting for its turn to be started
    kill_reason: str = ""  # why the rack killed it (hung, not ready)
    missing_since: float = 0.0  # running but without a registry slot since then
    last_beat_ns: int = 0  # its heartbeat when last seen in the registry
    log_fd: int = -1  # prepared by a reload: its log, opened before anything changed


@dataclass
class _Plan:
    """A reload, parsed and prepared off the loop, waiting for the loop to apply it."""

    config: RackConfig
    wanted: dict[str, DeviceConfig]
    fresh: dict[str, Child]  # added and changed devices, ready to start
    removed: list[str]
    changed: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    result: str = ""
    stopping: list[Child] = field(default_factory=list)
    deadline: float = 0.0


class Rack:
    """A running rack. ``start()``, then ``run()`` until ``stop()`` (or a signal), then
    ``shutdown()``."""

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
        self._spawn_queue: collections.deque[Child] = collections.deque()
        self._stop = threading.Event()
        self._force = threading.Event()
        self._reload = threading.Event()
        self._reloading = threading.Lock()  # one reload at a time
        self._plans: queue.SimpleQueue[_Plan] = queue.SimpleQueue()
        self._applying: _Plan | None = None
        self._lock = threading.RLock()
        self._clients = threading.BoundedSemaphore(CONTROL_CLIENTS)
        self._server: socket.socket | None = None
        self._ns_lock_fd = -1
        self.socket_path = control_socket_path(self.namespace)
        self._state_lock: FileLock | None = None
        self._ready_pending: list[Child] = []

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
        """What the device runs: ``python -m bridge`` and :func:`device_argv`."""
        return [self.python, "-m", "bridge", *device_argv(self.config, dev,
                                                           device_id=device_id)]

    def _child(self, config: RackConfig, dev: DeviceConfig, device_id: str) -> Child:
        return Child(dev, device_fingerprint(config, dev), device_id,
                     argv_json=_argv_json(config, dev, device_id), argv_id=device_id)

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Take the namespace, replace an old rack's leftovers, create the state folder and
        control socket, and queue every device; ``run()`` starts them."""
        self._lock_namespace()
        try:
            self._replace_leftovers()
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._state_lock = lock_state_folder(self.state_dir)  # held until shutdown ends
            saved = self._saved_ids()
            for dev in self.config.devices:
                self.children[dev.id] = self._child(self.config, dev, saved.get(dev.id, dev.id))
            self._open_socket()
        except BaseException:
            if self._state_lock is not None:
                self._state_lock.release()
                self._state_lock = None
            self._unlock_namespace()
            raise
        for child in self.children.values():
            self._queue(child)
        self._ready_pending = list(self.children.values())

    def _queue(self, child: Child) -> None:
        child.state = "starting"
        child.queued = True
        child.started_at = time.monotonic()
        self._spawn_queue.append(child)

    def _spawn_some(self) -> None:
        """Start at most SPAWNS_PER_TICK queued devices (main thread only: PDEATHSIG)."""
        for _ in range(min(SPAWNS_PER_TICK, len(self._spawn_queue))):
            child = self._spawn_queue.popleft()
            if not child.queued:
                continue  # dropped meanwhile (stopped, or its reload rolled back)
            child.queued = False
            try:
                self._spawn(child)
            except OSError as exc:  # fork or exec refused: a failed start, by policy
                child.proc = None
                child.kill_reason = f"could not start: {exc}"
                self._ended(child, None, time.monotonic())

    def _spawn(self, child: Child) -> None:
        dev = child.config
        log_fd, child.log_fd = child.log_fd, -1
        if log_fd < 0:
            log_fd = os.open(self.state_dir / f"{dev.id}.log",
                             os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        if child.argv_id != child.device_id:  # it got Name:N: ask for exactly that from now
            child.argv_json = _argv_json(self.config, dev, child.device_id)
            child.argv_id = child.device_id
        argv_fd = os.memfd_create("discolink-rack-argv")  # close-on-exec except in the child
        try:
            os.write(argv_fd, child.argv_json)
            env = dict(os.environ)
            env["DISCOLINK_NAMESPACE"] = self.namespace
            env["PYTHONUNBUFFERED"] = "1"
            env[RACK_PID_ENV] = str(os.getpid())
            child.proc = subprocess.Popen(
                [self.python, "-m", "bridge.cli.rack_child", str(argv_fd), str(os.getpid())],
                pass_fds=(argv_fd,), stdout=subprocess.PIPE, stderr=log_fd,
                stdin=subprocess.DEVNULL, env=env, text=True, start_new_session=True)
        finally:
            os.close(argv_fd)
            os.close(log_fd)
        child.state = "starting"
        child.started_at = time.monotonic()
        child.ready_line = ""
        child.stopping = False
        child.kill_reason = ""
        child.missing_since = 0.0
        child.last_beat_ns = 0
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
                        if child in self.children.values():
                            self._save_ids()
                    if child.proc is proc and not child.kill_reason:
                        child.state = "running"
                self.log(f"rack {self.config.name}: {child.config.id} running as {got} "
                         f"(pid {proc.pid})")

    def _reap(self, now: float) -> None:
        """Notice exits, schedule restarts by policy, and queue the restarts that are due."""
        for child in list(self.children.values()):
            proc = child.proc
            if proc is None:
                if child.state in ("backoff", "hung") and not child.queued and \
                        now >= child.next_start:
                    child.restarts += 1
                    self.log(f"rack {self.config.name}: restarting {child.config.id} as "
                             f"{child.device_id} (restart {child.restarts})")
                    self._queue(child)
                continue
            if proc.poll() is None:
                if child.state == "starting" and not child.stopping and \
                        not child.kill_reason and now - child.started_at > READY_TIMEOUT_S:
                    self._kill(child, f"not ready within {READY_TIMEOUT_S:.0f} s")
                continue
            child.proc = None
            if child.stopping:
                child.state = "stopped"
                continue
            self._ended(child, proc.returncode, now)

    def _ended(self, child: Child, code: int | None, now: float) -> None:
        """A device ended on its own (or was killed as hung): record why, then apply its
        restart policy, backoff and crash limit."""
        reason = child.kill_reason
        if reason:
            child.last_exit = reason
        else:
            child.last_exit = (f"killed by signal {-code}" if code is not None and code < 0
                               else f"exit code {code}")
        failed = bool(reason) or code != 0
        if failed:
            child.last_error = _last_log_line(self.state_dir / f"{child.config.id}.log") \
                or child.last_error
        why = f"{child.last_exit}: {child.last_error}" if failed and child.last_error \
            else child.last_exit
        policy = child.config.restart
        name = f"rack {self.config.name}: {child.config.id}"
        if policy == "never" or (policy == "on-failure" and not failed):
            child.state = "stopped"
            self.log(f"{name} ended ({why}); policy {policy}: not restarted")
            return
        child.crashes.append(now)
        recent = [t for t in child.crashes if now - t <= CRASH_WINDOW_S]
        if len(recent) >= CRASH_LIMIT:
            child.state = "failed"
            self.log(f"{name} FAILED: it ended {len(recent)} times within "
                     f"{CRASH_WINDOW_S:.0f} s (last: {why}); see {self.state_dir}/"
                     f"{child.config.id}.log")
            return
        delay = child.backoff if len(recent) > 1 else BACKOFF_FIRST_S
        child.backoff = min(BACKOFF_MAX_S, delay * 2)
        child.state = "hung" if reason.startswith("hung") else "backoff"
        child.next_start = now + delay
        self.log(f"{name} ended ({why}); restarting in {delay:.1f} s")

    def _kill(self, child: Child, reason: str) -> None:
        """SIGKILL a device that no longer does its job; _reap restarts it by policy."""
        child.kill_reason = reason
        if reason.startswith("hung"):
            child.state = "hung"
        self.log(f"rack {self.config.name}: {child.config.id} ({child.device_id}, pid "
                 f"{child.proc.pid}) is {reason}: killing it")
        try:
            child.proc.kill()
        except ProcessLookupError:
            pass

    def _check_heartbeats(self, now: float) -> None:
        """Kill running devices whose registry heartbeat is stale, or whose slot is gone
        (a scan reclaimed it after the heartbeat stalled): hosts can no longer use them."""
        beats = live_heartbeats(self.namespace)
        now_ns = time.monotonic_ns()
        for child in self.children.values():
            proc = child.proc
            if proc is None or child.state != "running" or child.stopping or child.kill_reason:
                continue
            beat = beats.get(proc.pid) or child.last_beat_ns  # a scan may have reclaimed it
            if beat:
                child.last_beat_ns = beat
                age = (now_ns - beat) / 1e9
                if age > HEARTBEAT_STALE_S:
                    self._kill(child, f"hung: no heartbeat for {age:.1f} s")
                continue
            child.missing_since = child.missing_since or now  # running, never seen in a slot
            if now - child.missing_since > HEARTBEAT_STALE_S and proc.poll() is None:
                self._kill(child, f"hung: no registry slot for {HEARTBEAT_STALE_S:.0f} s")

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Supervise until stop(): starts and restarts, heartbeats, reloads, CPU samples.
        ``on_ready`` runs once, when no device of the first start is still starting."""
        threading.Thread(target=self._serve, daemon=True, name="rack control").start()
        next_sample = next_beat = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                self._reap(now)
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_CHECK_S
                    self._check_heartbeats(now)
                self._advance_reload(now)
                self._spawn_some()
            if self._reload.is_set():
                self._reload.clear()
                self._reload_in_thread()
            if self._ready_pending is not None and not self._stop.is_set() and \
                    all(c.state != "starting" for c in self._ready_pending):
                self._ready_pending = None
                if on_ready is not None:
                    on_ready()
            if now >= next_sample:
                next_sample = now + 1.0
                self._sample_cpu()
            self._stop.wait(TICK_S)

    def stop(self) -> None:
        """Ask run() to end; asked again (a second Ctrl-C), shutdown() kills at once."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def shutdown(self) -> None:
        """Stop every device and remove what the rack made in /dev/shm and the socket."""
        with self._lock:
            for child in self._spawn_queue:
                child.queued = False
                _close(child)
            self._spawn_queue.clear()
            children = list(self.children.values())
        for child in children:
            self._terminate(child)
        self._wait_exit(children)
        self._close_socket()
        sweep_namespace(self.namespace)  # the registry goes too when no device is left
        if self._state_lock is not None:
            self._state_lock.release()
            self._state_lock = None
        self._unlock_namespace()

    def _terminate(self, child: Child) -> None:
        child.stopping = True
        child.queued = False
        proc = child.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)  # a stopped (hung) device handles it too

    def _wait_exit(self, children: list[Child]) -> None:
        """Wait for ``children`` to exit, up to STOP_TIMEOUT_S (or until stop() is asked
        again), then SIGKILL the rest."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and not self._force.is_set():
            if all(c.proc is None or c.proc.poll() is not None for c in children):
                break
            time.sleep(0.02)
        for child in children:
            proc = child.proc
            if proc is None:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            child.proc = None
            child.state = "stopped"

    # -- one rack per namespace, and what a killed one left ------------------------------
    def _lock_namespace(self) -> None:
        path = self.socket_path.with_suffix(".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_pid(path)
            raise RuntimeError(f"a rack already runs in namespace {self.namespace!r}"
                               + (f" (pid {holder})" if holder else "")
                               + "; stop it first, or use another --namespace") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._ns_lock_fd = fd

    def _unlock_namespace(self) -> None:
        if self._ns_lock_fd >= 0:
            os.close(self._ns_lock_fd)  # the lock file stays: unlinking it would race
            self._ns_lock_fd = -1

    def _replace_leftovers(self) -> None:
        """Stop the devices of this namespace that a rack which is gone started (a rack
        killed while a device was stopped, say): SIGTERM, then SIGKILL after
        LEFTOVER_STOP_S; then sweep their slots and segments."""
        pids = _leftover_devices(self.namespace)
        if not pids:
            return
        ids = {}
        registry = Registry.find(self.namespace)
        if registry is not None:
            try:
                ids = {d.pid: d.id for d in registry.scan()}
            finally:
                registry.close()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
            _signal(pid, signal.SIGCONT)
        deadline = time.monotonic() + LEFTOVER_STOP_S
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.02)
        killed = [p for p in pids if pid_alive(p)]
        for pid in killed:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(pid_alive(p) for p in killed):
            time.sleep(0.02)
        sweep_namespace(self.namespace)
        names = ", ".join(f"{ids.get(p, '?')} (pid {p}{', killed' if p in killed else ''})"
                          for p in pids)
        self.log(f"rack {self.config.name}: replaced {len(pids)} device(s) left running in "
                 f"namespace {self.namespace!r} by a rack that is gone: {names}")

    # -- reload ---------------------------------------------------------------------------
    def reload(self) -> str:
        """Re-read the file and apply only what changed; returns a one-line summary. Runs
        in the calling thread (never the supervision loop's, which applies the plan): parse
        and prepare here, hand the plan to the loop, wait for it and for the new devices."""
        if not self._reloading.acquire(blocking=False):
            return "reload rejected: another reload is in progress; try again when it is done"
        try:
            try:
                plan = self._prepare()
            except _Rejected as exc:
                text = str(exc)
                self.log(f"rack {self.config.name}: {text}")
                return text
            self._plans.put(plan)
            while not plan.done.wait(0.1):
                if self._stop.is_set():
                    plan.done.wait(1.0)
                    if not plan.done.is_set():
                        for child in plan.fresh.values():
                            _close(child)
                        return "reload abandoned: the rack is stopping"
            deadline = time.monotonic() + READY_TIMEOUT_S
            while any(c.state == "starting" for c in plan.fresh.values()) and \
                    time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.05)
            self.log(f"rack {self.config.name}: {plan.result}")
            return plan.result
        finally:
            self._reloading.release()

    def _reload_in_thread(self) -> None:
        threading.Thread(target=self.reload, daemon=True, name="rack reload").start()

    def _prepare(self) -> _Plan:
        """Everything a reload does that can fail, before anything changes: parse, check,
        diff, build each new device's command line and open its log."""
        try:
            new = load_rack(self.path, state_dir=self.state_dir_override)
        except ConfigError as exc:
            raise _Rejected(f"reload rejected, the rack is unchanged:\n{exc}") from None
        except (OSError, ValueError, RecursionError, MemoryError) as exc:
            raise _Rejected(f"reload rejected, the rack is unchanged: {self.path}: "
                            f"{type(exc).__name__}: {exc}") from None
        if self.state_dir_override is not None:
            new.state_dir = str(self.state_dir_override)
        if new.namespace != self.namespace:
            raise _Rejected("reload rejected: the namespace can't change while the rack runs")
        if new.state_folder() != self.state_dir:
            raise _Rejected(
                f"reload rejected, the rack is unchanged: it would move the state folder from "
                f"{self.state_dir} to {new.state_folder()} (the rack's name decides the "
                f"default folder), leaving ids and plugin states behind; keep the folder "
                f"with 'state_dir: {self.state_dir}', or stop the rack, move the folder and "
                "start it again")
        with self._lock:
            running = {i: (c.fingerprint, c.device_id) for i, c in self.children.items()}
        wanted = {d.id: d for d in new.devices}
        removed = [i for i in running if i not in wanted]
        prints = {i: device_fingerprint(new, d) for i, d in wanted.items()}
        changed = [i for i in wanted if i in running and prints[i] != running[i][0]]
        fresh: dict[str, Child] = {}
        try:
            for i in [i for i in wanted if i not in running] + changed:
                keep = running[i][1] if i in running else i
                child = fresh[i] = Child(wanted[i], prints[i], keep, argv_id=keep,
                                         argv_json=_argv_json(new, wanted[i], keep))
                log = self.state_dir / f"{i}.log"
                try:
                    child.log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                           | os.O_CLOEXEC, 0o644)
                except OSError as exc:
                    raise _Rejected(f"reload rejected, the rack is unchanged: device {i}: "
                                    f"cannot open its log {log}: {exc.strerror}") from None
        except BaseException:
            for child in fresh.values():
                _close(child)
            raise
        return _Plan(new, wanted, fresh, removed, changed)

    def _advance_reload(self, now: float) -> None:
        """Apply a prepared reload without blocking the loop: stop the devices it removes
        or changes, and once they are gone, swap the configuration and queue the new ones."""
        if self._applying is None:
            try:
                plan = self._plans.get_nowait()
            except queue.Empty:
                return
            plan.stopping = [self.children[i] for i in plan.removed + plan.changed]
            for child in plan.stopping:
                self._terminate(child)
            plan.deadline = now + STOP_TIMEOUT_S
            self._applying = plan
        plan = self._applying
        alive = [c for c in plan.stopping if c.proc is not None and c.proc.poll() is None]
        if alive:
            if now >= plan.deadline:
                for child in alive:
                    child.proc.kill()
            return
        for child in plan.stopping:
            child.proc = None
            child.state = "stopped"
        self.config = plan.config
        for i in plan.removed:
            del self.children[i]
        for i, child in plan.fresh.items():
            if i in self.children:
                child.device_id = self.children[i].device_id
            self.children[i] = child
        for i, child in self.children.items():
            child.config = plan.wanted[i]
        for child in plan.fresh.values():
            self._queue(child)
        self._save_ids()
        added = len(plan.fresh) - len(plan.changed)
        plan.result = (f"reloaded: {added} added, {len(plan.removed)} removed, "
                       f"{len(plan.changed)} restarted, "
                       f"{len(self.children) - len(plan.fresh)} untouched")
        self._applying = None
        plan.done.set()

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
        NaN blocks silenced, restarts, CPU %, and why it last ended."""
        registry = Registry.find(self.namespace)
        infos = {}
        if registry is not None:
            try:
                infos = {d.id: d for d in registry.scan()}
            finally:
                registry.close()
        rows = []
        with self._lock:
            children = list(self.children.values())
            name = self.config.name
        for child in children:
            info = infos.get(child.device_id)
            proc = child.proc
            row = {"name": child.config.id, "id": child.device_id, "kind": child.config.kind,
                   "pid": proc.pid if proc else None, "state": child.state,
                   "claimed_by": info.host_pid if info and info.claimed else None,
                   "link_tag": info.link_tag if info else "", "restarts": child.restarts,
                   "cpu_percent": round(child.cpu_percent, 1), "last_exit": child.last_exit,
                   "last_error": child.last_error,
                   "xruns": info.xruns if info else 0,
                   "nonfinite_blocks": info.nonfinite_blocks if info else 0,
                   "ring_fill": None, "underruns": None}
            if info is not None:
                row.update(_segment_counters(info))
            rows.append(row)
        return {"rack": name, "namespace": self.namespace, "file": str(self.path),
                "state_dir": str(self.state_dir), "devices": rows}

    # -- control socket -------------------------------------------------------------------
    def _open_socket(self) -> None:
        """Bind the control socket; an old one is replaced only once a connect to it is
        refused (nobody listens), never because it merely exists or is slow."""
        path = self.socket_path
        if path.exists() or path.is_symlink():
            alive = _socket_state(path)
            if alive is not False:
                raise RuntimeError(f"a rack already runs in namespace {self.namespace!r} "
                                   f"(control socket {path} {alive or 'answers'})")
            path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)  # owner-only from the start
        try:
            server.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        server.listen(8)
        server.settimeout(0.2)
        self._server = server

    def _close_socket(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass

    def _serve(self) -> None:
        """The control thread: accept, and answer each client in a thread of its own."""
        while not self._stop.is_set():
            server = self._server
            if server is None:
                return
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                time.sleep(0.05)
                continue
            if not self._clients.acquire(blocking=False):
                conn.close()  # too many at once: a flood never starves supervision
                continue
            threading.Thread(target=self._answer_client, args=(conn,), daemon=True,
                             name="rack client").start()

    def _answer_client(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(2.0)
                try:
                    request = conn.makefile("r").readline().strip()
                    reply = self._answer(request)
                except Exception as exc:  # a bad client never takes the rack down
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                conn.settimeout(10.0)
                try:
                    conn.sendall((json.dumps(reply) + "\n").encode())
                except OSError:
                    pass
        finally:
            self._clients.release()

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


class _Rejected(Exception):
    """A reload refused before it changed anything; the message says why."""


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


def _socket_state(path: Path) -> bool | str:
    """False when nobody listens on ``path`` (connect refused, or it is gone); True when a
    rack answers; else why it is unknown (a full backlog, say), which counts as alive."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(str(path))
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        return f"does not refuse connections ({exc.strerror or exc})"
    finally:
        sock.close()


def _argv_json(config: RackConfig, dev: DeviceConfig, device_id: str | None = None) -> bytes:
    """A device's command line as the JSON list rack_child reads from its memfd."""
    return json.dumps(device_argv(config, dev, device_id=device_id)).encode()


def _close(child: Child) -> None:
    if child.log_fd >= 0:
        os.close(child.log_fd)
        child.log_fd = -1


def _last_log_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a device's log (its last word before it ended)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _leftover_devices(namespace: str) -> list[int]:
    """Pids of live devices of ``namespace`` whose rack (RACK_PID_ENV in their environment)
    is gone: a rack started them, and no rack supervises them any more."""
    found = []
    want_ns = f"DISCOLINK_NAMESPACE={namespace}".encode()
    marker = f"{RACK_PID_ENV}=".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rack = next((v[len(marker):] for v in env if v.startswith(marker)), None)
        if rack is None or want_ns not in env or not rack.isdigit():
            continue
        rack_pid = int(rack)
        if rack_pid != os.getpid() and not _is_rack(rack_pid) and pid_alive(int(entry)):
            found.append(int(entry))
    return sorted(found)


def _is_rack(pid: int) -> bool:
    """True if ``pid`` is a live rack (a discolink-bridge process with 'rack' in argv)."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"rack" in argv and any(b"bridge" in a for a in argv)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


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
    """The status table `rack` and `status` print, then why each device that failed last
    ended (its last log line)."""
    head = (f"rack {status['rack']} (namespace {status['namespace']!r}, {status['file']})\n"
            f"{'DEVICE':<14} {'ID':<14} {'KIND':<6} {'PID':>7} {'STATE':<9} {'CLAIMED BY':>10} "
            f"{'LINK TAG':<12} {'FILL':>6} {'UNDERRUNS':>9} {'NAN':>5} {'RESTARTS':>8} "
            f"{'CPU%':>6}")
    lines = [head]
    for d in status["devices"]:
        lines.append(
            f"{d['name']:<14} {d['id']:<14} {d['kind']:<6} {d['pid'] or '-':>7} "
            f"{d['state']:<9} {d['claimed_by'] or '-':>10} {d['link_tag'] or '-':<12} "
            f"{'-' if d['ring_fill'] is None else d['ring_fill']:>6} "
            f"{'-' if d['underruns'] is None else d['underruns']:>9} "
            f"{d.get('nonfinite_blocks', 0):>5} {d['restarts']:>8} "
            f"{d['cpu_percent']:>6.1f}")
    for d in status["devices"]:
        if d.get("last_error"):
            lines.append(f"{d['name']}: last ended with {d['last_exit']}: {d['last_error']}")
    return "\n".join(lines)
