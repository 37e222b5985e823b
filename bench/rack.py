"""Rack benchmark: a full registry of built-in synth devices under `discolink-bridge rack`.

Run from the repository root:

    .venv/bin/python bench/rack.py            # full run (about 3 min), human table
    .venv/bin/python bench/rack.py --quick    # shorter run, about a minute
    .venv/bin/python bench/rack.py --json     # one JSON object on stdout (table on stderr)
    .venv/bin/python bench/rack.py --only b --voices 8   # 16 devices only, 8 voices each

Every rack is the real thing: this script writes a rack file with N built-in synth devices
(``kind: synth``, ids Synth01.., 48 kHz, 256-frame blocks, the defaults' demand clock with
fill 2) into a temporary folder and starts ``python -m bridge --namespace NS rack FILE
--state-dir TMP``, which starts one ``python -m bridge device`` process per device (each at
SCHED_FIFO 10, the device default) and supervises them. Once the rack prints its ready line,
a host reads every device in real time and sends each one NoteOn (``--voices`` notes) so
that every synth renders sounding voices. Then, after a warm-up, one measured window:

- underruns per device, twice: the host's short reads in the window, and the ``underruns``
  counter of the device's transport header as the rack's ``status`` reports it (the same
  request ``discolink-bridge --namespace NS status --json`` sends), read at both ends of
  the window;
- CPU % per process: utime + stime from ``/proc/<pid>/stat`` over the window (10 ms ticks;
  ``sum_exec_runtime`` from ``/proc/<pid>/task/*/sched`` beside it), for every device, the
  rack supervisor, the host process(es) and this process; wake-ups/s (voluntary context
  switches) and preemptions/s (involuntary ones) per device;
- memory per device at the end of the window: VmRSS (``/proc/<pid>/status``) and PSS
  (``/proc/<pid>/smaps_rollup``; RSS counts the Python, numpy and library pages that all
  the devices share once per device, PSS divides them among the sharers, so the PSS column
  adds up to what the rack really costs);
- foreign CPU: the machine's busy time (``/proc/stat``) minus all of the above, in cores.

The host. Sixteen real-time hosts in sixteen processes would add sixteen more processes
(each waking 187.5 times a second) that compete with the devices for two cores, so by
default ONE host process reads all N devices in one paced loop: every block period (5.33 ms)
it calls ``receive_audio`` and ``process_responses`` once per device, then sleeps until the
next period at SCHED_FIFO 10 (``set_realtime_priority``, as ``discolink-bridge host`` does).
That is how a DAW reads its tracks, one audio thread for all of them, and it makes the host
cheap and its cost visible as one number. Its weakness is that one late wake-up delays all N
reads at once; that is why every underrun is classified as the device's (it had a whole
block period since the read that asked for the block) or the host's (it was catching up
after a late wake-up, reading faster than real time). ``--host-procs 2`` splits the devices
between two host processes, for comparison.

Sections:

(a) Scaling: racks of N = 1, 2, 4, 8 devices, 20 s each (5 s with --quick), plus (b)'s
    N = 16: total device CPU and CPU per device against N, a least-squares line through
    total CPU(N), its largest deviation, and CPU(16) / (16 x CPU(1)).
(b) The full registry: 16 devices for 60 s (10 s with --quick), with the per-device table.
(c) Where a streaming device's CPU goes, measured in this process and in a bare sleep loop:
    one ``DeviceRunner.step()`` with nothing to render (the demand clock's poll:
    ``process_commands``, the claim and fill checks), one step that renders a block (MIDI
    take + ``SineSynth.render`` + ``send_audio``) with 1 and with 8 voices, and
    ``python -c 'while True: time.sleep(0.0001)'`` at SCHED_FIFO 10 on its own (the
    wake-up alone). Together they model a device's CPU as wake-ups/s x (wake-up + poll) +
    blocks/s x render, next to what (a) measured.

``--poll-interval S`` is for investigations only: it runs every rack with the demand clock's
claimed poll interval patched to S seconds (through a ``sitecustomize`` module on the
devices' PYTHONPATH; bridge/ is not changed) and says so in every line of the report.

Goals (the issue's): no underruns with 16 devices; cost that grows linearly with N, judged
as CPU(16) within 10% of 16 x CPU(1). They are PASS/FAIL lines; a missed goal never changes
the exit status. After every rack the script stops it with SIGTERM, checks that no device
process, no segment of its namespace in /dev/shm and no control socket is left, reports what
was, and removes it. Results and their interpretation: docs/performance.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import multiprocessing as mp
import os
import platform
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    REPO,
    CpuMeter,
    arg_parser,
    connect_in_process,
    debian_version,
    goal_lines,
    loadavg,
    log,
    machine_busy,
    parse_args,
    proc_cpu_seconds,
    run_in_namespace,
    utc_date,
)

from bridge.adapters.instrument import InstrumentDevice
from bridge.adapters.sine import SineSynth
from bridge.midi.event import MidiEvent
from bridge.rack.supervisor import ask, control_socket_path
from bridge.transport import Device, Host, cmd, shm
from bridge.transport.clock import (
    DEFAULT_RT_PRIORITY,
    POLL_INTERVAL_S,
    DeviceRunner,
    set_realtime_priority,
)

SR = 48000
BLOCK = 256
FILL = 2  # the rack defaults' demand-clock fill
PERIOD = BLOCK / SR
MAX_DEVICES = 16  # the registry's size
RT_PRIORITY = DEFAULT_RT_PRIORITY  # the host loop, like `discolink-bridge host`
RACK_READY_TIMEOUT_S = 120.0
LINEAR_TOLERANCE = 0.10
POLL_ENV = "DLBENCH_POLL_INTERVAL"
SITECUSTOMIZE = f'''\
# Written by bench/rack.py --poll-interval: an investigation, NOT the shipped code.
import os as _os

_value = _os.environ.get("{POLL_ENV}")
if _value:
    from bridge.transport import clock as _clock

    _clock.DeviceRunner.__init__.__kwdefaults__["poll_interval"] = float(_value)
'''

_ctx = mp.get_context("fork")  # host children start in ms with numpy and bridge imported


@dataclasses.dataclass(frozen=True)
class Plan:
    quick: bool
    sizes: tuple[int, ...]  # (a)
    scale_s: float  # (a) window per N
    full_s: float  # (b) window
    warmup_s: float
    probe_s: float  # (c) sleep loop
    steps: int  # (c) timed steps per row
    voices: int = 1
    host_procs: int = 1
    poll_interval: float | None = None  # --poll-interval (patched devices), else shipped

    @staticmethod
    def make(quick: bool) -> Plan:
        if quick:
            return Plan(True, (1, 2, 4, 8), 5.0, 10.0, 1.0, 2.0, 2_000)
        return Plan(False, (1, 2, 4, 8), 20.0, 60.0, 2.0, 5.0, 10_000)


# ---- /proc ----------------------------------------------------------------------------------


def _runtime(pid: int) -> float:
    """sum_exec_runtime of every thread, in seconds (microsecond resolution)."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/sched") as f:
            for line in f:
                if line.startswith("se.sum_exec_runtime"):
                    total += float(line.split(":")[1]) / 1000.0
                    break
    return total


def _status_fields(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "voluntary_ctxt_switches",
                       "nonvoluntary_ctxt_switches"):
                out[key] = int(value.split()[0])
    return out


def _pss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@dataclasses.dataclass
class ProcSample:
    ticks: float
    runtime: float
    voluntary: int
    involuntary: int


def sample_proc(pid: int) -> ProcSample | None:
    try:
        st = _status_fields(pid)
        return ProcSample(proc_cpu_seconds(pid), _runtime(pid), st["voluntary_ctxt_switches"],
                          st["nonvoluntary_ctxt_switches"])
    except (OSError, KeyError, ValueError):
        return None


def foreign_rt(ours: set[int]) -> list[str]:
    """Other processes running at a real-time policy (SCHED_FIFO/RR): they compete with the
    devices and the host at the same or higher priority, and count against RT throttling."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
            fields = raw[raw.rindex(b")") + 2 :].split()
            policy, prio = int(fields[38]), int(fields[37])
            if policy not in (1, 2):  # SCHED_FIFO, SCHED_RR
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if not f.read(1):
                    continue  # a kernel thread (migration, irq/N, watchdogd): always there
            name = raw[raw.index(b"(") + 1 : raw.rindex(b")")].decode(errors="replace")
            out.append(f"{entry} {name} rt{prio}")
        except (OSError, ValueError, IndexError):
            continue
    return out


def cpu_row(a: ProcSample | None, b: ProcSample | None, wall: float) -> dict:
    if a is None or b is None:
        return {"cpu_percent": None}
    return {"cpu_percent": round((b.ticks - a.ticks) / wall * 100, 2),
            "cpu_percent_precise": round((b.runtime - a.runtime) / wall * 100, 2),
            "wakeups_per_s": round((b.voluntary - a.voluntary) / wall),
            "preemptions_per_s": round((b.involuntary - a.involuntary) / wall)}


# ---- the rack -------------------------------------------------------------------------------


def rack_yaml(n: int) -> str:
    lines = [f"# bench/rack.py: {n} built-in synth device(s)", f"name: rackbench{n}", "",
             "defaults:", f"  sample_rate: {SR}", f"  block_size: {BLOCK}", "", "devices:"]
    for i in range(1, n + 1):
        lines += [f"  - id: Synth{i:02d}", "    kind: synth"]
    return "\n".join(lines) + "\n"


class Rack:
    """``python -m bridge --namespace NS rack FILE --state-dir DIR``; always stopped on exit."""

    def __init__(self, namespace: str, n: int, folder: Path, env: dict[str, str]) -> None:
        self.namespace, self.n = namespace, n
        self.file = folder / f"rack{n}.yaml"
        self.file.write_text(rack_yaml(n))
        self.state_dir = folder / f"state{n}"
        self.command = [sys.executable, "-m", "bridge", "--namespace", namespace, "rack",
                        str(self.file), "--state-dir", str(self.state_dir)]
        self.env = env
        # the command as a user would type it, the temporary folder written as $TMP
        self.user_command = ".venv/bin/python " + shlex.join(
            ["-m", "bridge", "--namespace", namespace, "rack", f"$TMP/{self.file.name}",
             "--state-dir", f"$TMP/{self.state_dir.name}"]).replace("'", "")
        self.err_path = folder / f"rack{n}.stderr"
        self.proc: subprocess.Popen[str] | None = None
        self.startup_s = 0.0
        self.stop_report: dict = {}
        self.output: list[str] = []
        self._ready: queue.Queue[str] = queue.Queue()

    def __enter__(self) -> Rack:
        t0 = time.monotonic()
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=err,
                                         stdin=subprocess.DEVNULL, text=True, cwd=REPO,
                                         env=self.env)
        # A thread reads stdout: the status table and the ready line arrive in one write, so
        # select() on the pipe cannot tell that a buffered line is waiting.
        threading.Thread(target=self._read_stdout, daemon=True).start()
        try:
            try:
                line = self._ready.get(timeout=RACK_READY_TIMEOUT_S)
            except queue.Empty:
                line = ""
            if not line:
                raise RuntimeError(f"the rack did not start ({shlex.join(self.command)}): "
                                   f"exit code {self.proc.poll()}; stderr: "
                                   f"{self.err_path.read_text()[-2000:]}")
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _read_stdout(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line.rstrip("\n"))
            if line.startswith("rack ") and " ready: " in line:
                self._ready.put(line)
        self._ready.put("")  # EOF: the rack has exited

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, device_pids: list[int] | tuple = ()) -> dict:
        """SIGTERM, wait, then check what of the namespace is left (and remove it)."""
        if self.proc is None:
            return self.stop_report
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(queue.Empty):
            while self._ready.get(timeout=2):  # until the reader has seen EOF
                pass
        stop_s = time.monotonic() - t0
        alive = []
        for pid in device_pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
            except PermissionError:
                alive.append(pid)
        left = shm.list_names(shm.namespace_prefix(self.namespace))
        for name in left:
            shm.unlink(name)
        sock = control_socket_path(self.namespace)
        sock_left = sock.exists()
        if sock_left:
            sock.unlink()
        for pid in alive:  # a device the rack did not stop: ours to end
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        last = self.output
        self.stop_report = {"exit_code": self.proc.returncode, "stop_s": round(stop_s, 2),
                            "last_line": last[-1] if last else "",
                            "devices_left": alive, "shm_left": left,
                            "control_socket_left": sock_left}
        self.proc = None
        return self.stop_report

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- the host -------------------------------------------------------------------------------


def _host_main(namespace: str, device_ids: list[str], voices: int, max_blocks: int,
               ctl: Any, results: Any) -> None:
    """A host process: connect every device, send NoteOn, read all of them each block period
    at SCHED_FIFO until ``ctl[2]`` is set; report short reads inside [ctl[0], ctl[1])."""
    hosts: list[Host] = []
    try:
        for device_id in device_ids:
            host = Host(namespace)
            hosts.append(host)
            host.set_local_buffer_info(SR, BLOCK)
            host.connect(device_id, timeout=10.0)
        for i, host in enumerate(hosts):
            for v in range(voices):  # a distinct chord per device: 1..8 sounding voices
                host.send_command(cmd.midi_note_on(0, 48 + (i % 12) + 3 * v, 100))
        n = len(hosts)
        bufs = [np.zeros((h.connection.channels, BLOCK), np.float32) for h in hosts]
        receive = [h.receive_audio for h in hosts]
        poll = [h.process_responses for h in hosts]
        read_at = np.zeros(max_blocks)
        short = np.zeros((max_blocks, n), bool)
        refused = set_realtime_priority(RT_PRIORITY)
        gc.freeze()
        results.put(("ready", os.getpid(), refused or f"SCHED_FIFO {RT_PRIORITY}"))
        start = time.monotonic()
        k = 0
        while k < max_blocks and not ctl[2]:
            read_at[k] = time.monotonic()
            row = short[k]
            for j in range(n):
                row[j] = receive[j](bufs[j]) < BLOCK
                poll[j]()
            k += 1
            wait = start + k * PERIOD - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if not refused:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        t0, t1 = ctl[0], ctl[1]
        read_at, short = read_at[:k], short[:k]
        window = (read_at >= t0) & (read_at < t1)
        late = read_at - (start + np.arange(k) * PERIOD)
        # Block i is asked for when the host reads block i - FILL (the ring drops below FILL
        # blocks). With a whole period between that read and this one the device had its
        # chance: a short read then is the device's. With less, the host was catching up.
        given = np.full(k, np.inf)
        given[FILL:] = read_at[FILL:] - read_at[:-FILL]
        device_fault = short & (given >= PERIOD)[:, None]
        w_late = late[window] if window.any() else np.zeros(1)
        out = {
            "pid": os.getpid(), "rt": refused or f"SCHED_FIFO {RT_PRIORITY}",
            "devices": device_ids, "blocks_in_window": int(window.sum()),
            "short_reads": [int(x) for x in short[window].sum(axis=0)],
            "short_reads_device_had_a_period": [int(x) for x in
                                                device_fault[window].sum(axis=0)],
            "late_p99_ms": round(float(np.percentile(w_late, 99)) * 1000, 3),
            "late_max_ms": round(float(w_late.max()) * 1000, 3),
            "late_1_block_or_more": int((w_late >= PERIOD).sum()),
            "late_2_blocks_or_more": int((w_late >= 2 * PERIOD).sum()),
            "connected_at_end": [h.connected for h in hosts],
            "overruns": [h.counters().get("overruns", 0) for h in hosts]}
        for host in hosts:
            host.send_command(cmd.midi_cc(0, 123, 0))
        results.put(("done", out))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        for host in hosts:
            with contextlib.suppress(Exception):
                host.close()


class HostGroup:
    """``procs`` host processes sharing the devices; a context manager that always ends them."""

    def __init__(self, namespace: str, device_ids: list[str], voices: int, procs: int,
                 max_blocks: int) -> None:
        self.ctl = _ctx.Array("d", [float("inf"), float("inf"), 0.0], lock=False)
        self.results = _ctx.Queue()
        groups = [list(g) for g in np.array_split(np.asarray(device_ids), procs) if len(g)]
        self.procs = [_ctx.Process(target=_host_main, args=(namespace, g, voices, max_blocks,
                                                           self.ctl, self.results),
                                   daemon=True) for g in groups]
        self.rt: list[str] = []

    def __enter__(self) -> HostGroup:
        for p in self.procs:
            p.start()
        try:
            for _ in self.procs:
                kind, *rest = self.results.get(timeout=60)
                if kind != "ready":
                    raise RuntimeError(f"host process failed: {rest[0]}")
                self.rt.append(rest[1])
        except BaseException:
            self.close()
            raise
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def window(self, t0: float, t1: float) -> None:
        self.ctl[0], self.ctl[1] = t0, t1

    def finish(self) -> list[dict]:
        self.ctl[2] = 1.0
        out = []
        for _ in self.procs:
            kind, payload = self.results.get(timeout=30)
            if kind != "done":
                raise RuntimeError(f"host process failed: {payload}")
            out.append(payload)
        return out

    def close(self) -> None:
        self.ctl[2] = 1.0
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- one measured rack ----------------------------------------------------------------------


def measure_rack(plan: Plan, namespace: str, n: int, seconds: float, folder: Path,
                 env: dict[str, str]) -> dict:
    """Start a rack of ``n`` synths, read them all, measure one window, stop it."""
    log(f"rack of {n} synth device(s): {seconds:.0f} s window after {plan.warmup_s:.0f} s "
        f"warm-up, {plan.voices} voice(s) each, {plan.host_procs} host process(es)")
    rack = Rack(namespace, n, folder, env)
    device_pids: list[int] = []
    with rack:
        status = ask(namespace, "status")
        devs = status["devices"]
        device_pids = [d["pid"] for d in devs]
        bad = [d for d in devs if d["state"] != "running" or not d["pid"]]
        if bad:
            raise RuntimeError(f"rack devices not running: {bad}")
        ids = [d["id"] for d in devs]
        max_blocks = int((plan.warmup_s + seconds + 30) / PERIOD)
        with HostGroup(namespace, ids, plan.voices, plan.host_procs, max_blocks) as hosts:
            t0 = time.monotonic() + plan.warmup_s
            t1 = t0 + seconds
            hosts.window(t0, t1)
            pids = {"rack": [rack.pid], "devices": device_pids, "hosts": hosts.pids}
            time.sleep(max(0.0, t0 - time.monotonic()))
            a = {k: [sample_proc(p) for p in v] for k, v in pids.items()}
            busy0, steal0, own0, w0 = *machine_busy(), time.process_time(), time.monotonic()
            ours = {os.getpid(), *pids["rack"], *pids["devices"], *pids["hosts"]}
            rt0 = foreign_rt(ours)
            q0 = time.monotonic()
            status0 = ask(namespace, "status")
            q0 = time.monotonic() - q0
            time.sleep(max(0.0, t1 - time.monotonic()))
            b = {k: [sample_proc(p) for p in v] for k, v in pids.items()}
            busy1, steal1, own1, w1 = *machine_busy(), time.process_time(), time.monotonic()
            q1 = time.monotonic()
            status1 = ask(namespace, "status")
            q1 = time.monotonic() - q1
            memory = [(_status_fields(p), _pss_kb(p)) for p in device_pids]
            rt1 = foreign_rt(ours)
            host_results = hosts.finish()
        stop = rack.stop(device_pids)  # the hosts have let go; SIGTERM, then the checks
    wall = w1 - w0
    rows = {k: [cpu_row(x, y, wall) for x, y in zip(a[k], b[k], strict=True)] for k in a}
    # host-side results, in device order
    short: dict[str, int] = {}
    short_dev: dict[str, int] = {}
    for h in host_results:
        for i, dev in enumerate(h["devices"]):
            short[dev] = h["short_reads"][i]
            short_dev[dev] = h["short_reads_device_had_a_period"][i]
    u0 = {d["id"]: d.get("underruns") for d in status0["devices"]}
    devices = []
    for i, d in enumerate(status1["devices"]):
        st, pss = memory[i]
        u1 = d.get("underruns")
        devices.append({
            "name": d["name"], "id": d["id"], "pid": d["pid"], "state": d["state"],
            "restarts": d["restarts"], **rows["devices"][i],
            "rss_mb": round(st.get("VmRSS", 0) / 1024, 1),
            "rss_peak_mb": round(st.get("VmHWM", 0) / 1024, 1),
            "pss_mb": None if pss is None else round(pss / 1024, 1),
            "host_short_reads": short.get(d["id"]),
            "host_short_reads_device_had_a_period": short_dev.get(d["id"]),
            "header_underruns": None if u1 is None or u0.get(d["id"]) is None
            else u1 - u0[d["id"]],
            "rack_reported_cpu_percent": d["cpu_percent"]})
    dev_cpu = [x["cpu_percent"] for x in devices if x["cpu_percent"] is not None]
    rack_cpu = rows["rack"][0]["cpu_percent"] or 0.0
    host_cpu = sum(x["cpu_percent"] or 0.0 for x in rows["hosts"])
    own_cpu = (own1 - own0) / wall * 100
    ours = sum(dev_cpu) + rack_cpu + host_cpu + own_cpu
    busy = (busy1 - busy0) / wall * 100
    return {
        "devices_n": n, "seconds": round(wall, 2), "warmup_s": plan.warmup_s,
        "voices": plan.voices, "host_procs": plan.host_procs,
        "command": rack.user_command, "rack_file": rack_yaml(n),
        "rack_startup_s": round(rack.startup_s, 2),
        "status_reply_ms": [round(q0 * 1000, 1), round(q1 * 1000, 1)],
        "total_device_cpu_percent": round(sum(dev_cpu), 1),
        "cpu_per_device_percent": round(sum(dev_cpu) / len(dev_cpu), 2) if dev_cpu else None,
        "cpu_per_device_median": round(float(np.median(dev_cpu)), 2) if dev_cpu else None,
        "cpu_per_device_min": min(dev_cpu, default=None),
        "cpu_per_device_max": max(dev_cpu, default=None),
        "supervisor_cpu_percent": rack_cpu,
        "host_cpu_percent": round(host_cpu, 2),
        "host_cpu_per_device_percent": round(host_cpu / n, 3),
        "bench_cpu_percent": round(own_cpu, 2),
        "total_cpu_percent": round(ours, 1),
        "machine_busy_percent": round(busy, 1),
        "foreign_cpu_cores": round(max(0.0, busy - ours) / 100, 2),
        "steal_cores": round((steal1 - steal0) / wall, 2),
        "foreign_rt_processes": sorted(set(rt0) | set(rt1)),
        "underruns": sum(x["host_short_reads"] or 0 for x in devices),
        "underruns_device_had_a_period": sum(x["host_short_reads_device_had_a_period"] or 0
                                             for x in devices),
        "header_underruns": sum(x["header_underruns"] or 0 for x in devices),
        "overruns": sum(sum(h["overruns"]) for h in host_results),
        "rss_mb_median": round(float(np.median([x["rss_mb"] for x in devices])), 1),
        "pss_mb_total": round(sum(x["pss_mb"] or 0 for x in devices), 1),
        "rss_mb_total": round(sum(x["rss_mb"] for x in devices), 1),
        "wakeups_per_s_median": float(np.median([x.get("wakeups_per_s", 0)
                                                 for x in devices])),
        "preemptions_per_s_median": float(np.median([x.get("preemptions_per_s", 0)
                                                     for x in devices])),
        "hosts": [{k: v for k, v in h.items() if k not in ("short_reads", "overruns",
                                                          "short_reads_device_had_a_period")}
                  | {"cpu_percent": rows["hosts"][i]["cpu_percent"]}
                  for i, h in enumerate(host_results)],
        "host_rt": hosts.rt,
        "devices": devices, "stop": stop}


# ---- (a), (b) ---------------------------------------------------------------------------------


def linearity(points: dict[int, float]) -> dict:
    """Least-squares line through total CPU(N); its largest deviation; CPU(16)/(16 CPU(1))."""
    ns = np.array(sorted(points), float)
    ys = np.array([points[int(k)] for k in ns])
    out: dict[str, Any] = {"n": [int(x) for x in ns], "total_cpu_percent": ys.tolist()}
    if len(ns) >= 2:
        slope, intercept = np.polyfit(ns, ys, 1)
        fit = slope * ns + intercept
        resid = ys - fit
        ss = float(((ys - ys.mean()) ** 2).sum())
        out.update(slope_percent_per_device=round(float(slope), 2),
                   intercept_percent=round(float(intercept), 2),
                   r2=round(1 - float((resid ** 2).sum()) / ss, 4) if ss else None,
                   max_deviation_percent_points=round(float(np.abs(resid).max()), 2),
                   max_deviation_of_top=round(float(np.abs(resid).max() / ys[-1]), 3)
                   if ys[-1] else None)
    if 1 in points and MAX_DEVICES in points and points[1]:
        out["ratio_16_vs_16x1"] = round(points[MAX_DEVICES] / (MAX_DEVICES * points[1]), 3)
    return out


def bench_scaling(plan: Plan, namespace: str, folder: Path, env: dict[str, str]) -> dict:
    runs = {str(n): measure_rack(plan, namespace, n, plan.scale_s, folder, env)
            for n in plan.sizes}
    return {"runs": runs}


def bench_full(plan: Plan, namespace: str, folder: Path, env: dict[str, str]) -> dict:
    return measure_rack(plan, namespace, MAX_DEVICES, plan.full_s, folder, env)


def scaling_summary(r: dict) -> dict | None:
    runs = dict(r.get("scaling", {}).get("runs", {}))
    if "full" in r:
        runs[str(MAX_DEVICES)] = r["full"]
    if not runs:
        return None
    rows = {n: {"total_device_cpu_percent": x["total_device_cpu_percent"],
                "cpu_per_device_percent": x["cpu_per_device_percent"],
                "total_cpu_percent": x["total_cpu_percent"],
                "supervisor_cpu_percent": x["supervisor_cpu_percent"],
                "host_cpu_percent": x["host_cpu_percent"],
                "machine_busy_percent": x["machine_busy_percent"],
                "foreign_cpu_cores": x["foreign_cpu_cores"],
                "underruns": x["underruns"], "seconds": x["seconds"],
                "rss_mb_median": x["rss_mb_median"], "pss_mb_total": x["pss_mb_total"],
                "wakeups_per_s_median": x["wakeups_per_s_median"],
                "rack_startup_s": x["rack_startup_s"]}
            for n, x in sorted(runs.items(), key=lambda kv: int(kv[0]))}
    lin = linearity({int(n): x["total_device_cpu_percent"] for n, x in rows.items()})
    return {"rows": rows, "linearity": lin}


# ---- (c) where a device's CPU goes -------------------------------------------------------------


def _time_steps(runner: DeviceRunner, host: Host, steps: int, render: bool) -> np.ndarray:
    buf = np.zeros((2, BLOCK), np.float32)
    out = np.empty(steps, np.int64)
    step = runner.step
    for i in range(steps):
        if render:
            host.receive_audio(buf)  # take one block: the next step renders one
        t = time.perf_counter_ns()
        got = step()
        out[i] = time.perf_counter_ns() - t
        if got != (1 if render else 0):
            raise RuntimeError(f"step rendered {got} block(s), expected {int(render)}")
    return out


def bench_breakdown(plan: Plan, namespace: str) -> dict:
    log("(c) where a device's CPU goes: DeviceRunner.step() in this process, then a bare "
        f"time.sleep({POLL_INTERVAL_S}) loop at SCHED_FIFO {RT_PRIORITY} for "
        f"{plan.probe_s:.0f} s")
    rows: dict[str, Any] = {}
    with Device(namespace) as dev, Host(namespace) as host:
        dev.start("Probe", 2, SR, BLOCK)
        wiring = InstrumentDevice(dev, SineSynth(SR))
        runner = DeviceRunner(dev, wiring, fill=FILL)
        # the runner answers the handshake and primes the ring meanwhile
        connect_in_process(host, dev.id, SR, BLOCK, runner.step)
        while runner.step():  # top the ring up to FILL blocks
            pass
        idle = _time_steps(runner, host, plan.steps, render=False)
        rows["poll_step_us"] = round(float(np.median(idle)) / 1e3, 2)
        sounding = 0
        for voices in (1, 8):
            while sounding < voices:  # 1 voice, then 7 more
                host.send_command(cmd.midi_note_on(0, 48 + 3 * sounding, 100))
                sounding += 1
            _time_steps(runner, host, 50, render=True)  # the note-ons land, warm up
            t = _time_steps(runner, host, plan.steps, render=True)
            rows[f"render_step_us_{voices}_voice{'s' if voices > 1 else ''}"] = \
                round(float(np.median(t)) / 1e3, 2)
        synth = SineSynth(SR)
        block = np.zeros((2, BLOCK), np.float32)
        synth.render(block, [MidiEvent(0, bytes([0x90, 60, 100]))])
        t = np.empty(plan.steps, np.int64)
        for i in range(plan.steps):
            t0 = time.perf_counter_ns()
            synth.render(block)
            t[i] = time.perf_counter_ns() - t0
        rows["synth_render_1_voice_us"] = round(float(np.median(t)) / 1e3, 2)
    code = ("import os, time\n"
            f"os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param({RT_PRIORITY}))\n"
            f"while True:\n    time.sleep({POLL_INTERVAL_S})")
    loop = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)
        w0, a = time.monotonic(), sample_proc(loop.pid)
        time.sleep(plan.probe_s)
        w1, b = time.monotonic(), sample_proc(loop.pid)
    finally:
        loop.kill()
        loop.wait()
    sleep_row = cpu_row(a, b, w1 - w0)
    sleep_row["what"] = f"python -c 'while True: time.sleep({POLL_INTERVAL_S})' at SCHED_FIFO " \
                        f"{RT_PRIORITY}, alone"
    wk = sleep_row.get("wakeups_per_s") or 0
    sleep_row["cpu_us_per_wakeup"] = round(sleep_row["cpu_percent_precise"] / 100 / wk * 1e6, 2) \
        if wk else None
    rows["sleep_loop"] = sleep_row
    return rows


def model(r: dict) -> dict | None:
    """Model one streaming device's CPU from (c): wake-ups/s x (wake-up + poll step) +
    blocks/s x (render step - poll step), at the wake-up rate (a)/(b) measured."""
    c = r.get("breakdown")
    runs = dict(r.get("scaling", {}).get("runs", {}))
    if "full" in r:
        runs[str(MAX_DEVICES)] = r["full"]
    if c is None or not runs or not c["sleep_loop"].get("cpu_us_per_wakeup"):
        return None
    first = runs[min(runs, key=int)]
    wakeups = first["wakeups_per_s_median"]
    blocks = SR / BLOCK
    wake_us = c["sleep_loop"]["cpu_us_per_wakeup"]
    poll_us = c["poll_step_us"]
    key = "render_step_us_8_voices" if r["voices"] >= 8 else "render_step_us_1_voice"
    render_us = c[key] - poll_us
    parts = {"wakeups_percent": wakeups * wake_us / 1e4, "poll_steps_percent":
             wakeups * poll_us / 1e4, "rendering_percent": blocks * render_us / 1e4}
    total = sum(parts.values())
    return {"at_n": int(first["devices_n"]), "wakeups_per_s": wakeups, "blocks_per_s": blocks,
            **{k: round(v, 2) for k, v in parts.items()}, "model_percent": round(total, 2),
            "measured_percent": first["cpu_per_device_percent"]}


# ---- report ----------------------------------------------------------------------------------


def machine() -> dict:
    """Its own, not _common.machine(): the CPU model and RT throttling, no "machine" key."""
    debian = debian_version()
    try:
        rt = int(Path("/proc/sys/kernel/sched_rt_runtime_us").read_text())
    except (OSError, ValueError):
        rt = None
    cpu = "n/a"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        rt_period = int(Path("/proc/sys/kernel/sched_rt_period_us").read_text())
    except (OSError, ValueError):
        rt_period = None
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "debian": debian,
            "python": platform.python_version(), "kernel": platform.release(),
            "sched_rt_runtime_us": rt, "sched_rt_period_us": rt_period,
            "loadavg_at_start": loadavg()}


def goals(r: dict) -> list[dict]:
    out = []
    if "full" in r:
        f = r["full"]
        out.append({"goal": f"no underruns with {MAX_DEVICES} devices", "met":
                    f["underruns"] == 0 and f["header_underruns"] == 0,
                    "detail": f"{f['underruns']} host short reads "
                              f"({f['underruns_device_had_a_period']} where the device had a "
                              f"period), {f['header_underruns']} by the headers, in "
                              f"{f['seconds']} s x {MAX_DEVICES} devices"})
    s = r.get("scaling_summary")
    if s and "ratio_16_vs_16x1" in s["linearity"]:
        x = s["linearity"]["ratio_16_vs_16x1"]
        out.append({"goal": f"linear growth: CPU(16) within {LINEAR_TOLERANCE:.0%} of 16 x "
                            "CPU(1)", "met": abs(x - 1) <= LINEAR_TOLERANCE,
                    "detail": f"CPU(16) / (16 x CPU(1)) = {x:.3f}"})
    return out


def _runs(r: dict) -> dict[str, dict]:
    runs = dict(r.get("scaling", {}).get("runs", {}))
    if "full" in r:
        runs[str(MAX_DEVICES)] = r["full"]
    return runs


def _rack_line(x: dict) -> str:
    return (f"    N={x['devices_n']:<3} devices {x['total_device_cpu_percent']:>6.1f}%  "
            f"per device {x['cpu_per_device_percent']:>5.2f}%  supervisor "
            f"{x['supervisor_cpu_percent']:>4.2f}%  host {x['host_cpu_percent']:>5.2f}%  total "
            f"{x['total_cpu_percent']:>6.1f}%  machine {x['machine_busy_percent']:>6.1f}%  "
            f"foreign {x['foreign_cpu_cores']:.2f} ({len(x['foreign_rt_processes'])} RT)  "
            f"wakeups/s per device "
            f"{x['wakeups_per_s_median']:.0f}  underruns {x['underruns']}")


def table(r: dict) -> str:
    m = r["machine"]
    patched = r.get("poll_interval_patched")
    tag = f" [PATCHED: poll interval {patched} s, not the shipped code]" if patched else ""
    lines = [f"discoLink rack benchmark ({'quick' if r['quick'] else 'full'} run, {r['date']})"
             f"{tag}: {m['nproc']} cores ({m['cpu']}), Debian {m['debian']}, Python "
             f"{m['python']}, load {m['loadavg_at_start']}, RT throttling "
             f"{m['sched_rt_runtime_us']}/{m['sched_rt_period_us']} us",
             f"command: {r['bench_command']}",
             f"{r['voices']} voice(s) per synth, {SR} Hz, {BLOCK}-frame blocks, demand clock "
             f"fill {FILL}; {r['host_procs']} host process(es) at SCHED_FIFO {RT_PRIORITY}; "
             "CPU in % of one core"]
    s = r.get("scaling_summary")
    if s:
        lines += ["", "(a) Scaling (rack of N synths; devices = sum over device processes; "
                  "total = devices + supervisor + host + this process)",
                  f"    each row: {r['rack_command']} (N x {{id: SynthNN, kind: synth}}, "
                  f"sample_rate {SR}, block_size {BLOCK})"]
        runs = dict(r.get("scaling", {}).get("runs", {}))
        if "full" in r:
            runs[str(MAX_DEVICES)] = r["full"]
        for _, x in sorted(runs.items(), key=lambda kv: int(kv[0])):
            lines.append(_rack_line(x) + f"  ({x['seconds']:.0f} s)")
        lin = s["linearity"]
        if "slope_percent_per_device" in lin:
            lines.append(f"    fit: devices CPU = {lin['intercept_percent']:.2f} + "
                         f"{lin['slope_percent_per_device']:.2f} x N (R^2 {lin['r2']}); "
                         f"largest deviation {lin['max_deviation_percent_points']:.2f} points "
                         f"({lin['max_deviation_of_top']:.1%} of CPU({lin['n'][-1]}))"
                         + (f"; CPU(16)/(16 x CPU(1)) = {lin['ratio_16_vs_16x1']:.3f}"
                            if "ratio_16_vs_16x1" in lin else ""))
    if "full" in r:
        f = r["full"]
        h = f["hosts"]
        lines += ["", f"(b) Full registry: {MAX_DEVICES} devices, {f['seconds']} s; rack "
                  f"started in {f['rack_startup_s']} s; status answered in "
                  f"{max(f['status_reply_ms']):.0f} ms at most (header counters are read "
                  "then: their window is shifted by that much)",
                  f"    {'device':<10}{'pid':>7}{'CPU%':>7}{'precise':>8}{'rack%':>7}"
                  f"{'wakeups/s':>10}{'preempt/s':>10}{'RSS MB':>8}{'PSS MB':>8}"
                  f"{'short':>7}{'header':>7}"]
        for d in f["devices"]:
            lines.append(f"    {d['name']:<10}{d['pid']:>7}{d['cpu_percent']:>7.2f}"
                         f"{d.get('cpu_percent_precise', 0):>8.2f}"
                         f"{d['rack_reported_cpu_percent']:>7.1f}{d.get('wakeups_per_s', 0):>10}"
                         f"{d.get('preemptions_per_s', 0):>10}{d['rss_mb']:>8.1f}"
                         f"{d['pss_mb'] or 0:>8.1f}{d['host_short_reads']:>7}"
                         f"{d['header_underruns']:>7}")
        lines += [f"    devices {f['total_device_cpu_percent']:.1f}% (median "
                  f"{f['cpu_per_device_median']:.2f}%, {f['cpu_per_device_min']:.2f}.."
                  f"{f['cpu_per_device_max']:.2f}), supervisor {f['supervisor_cpu_percent']:.2f}"
                  f"%, host {f['host_cpu_percent']:.2f}% ({f['host_cpu_per_device_percent']:.3f}"
                  f"% per device read), this process {f['bench_cpu_percent']:.2f}%; total "
                  f"{f['total_cpu_percent']:.1f}% of {m['nproc'] * 100}%",
                  f"    memory: RSS {f['rss_mb_total']:.0f} MB summed ({f['rss_mb_median']:.1f} "
                  f"MB median), PSS {f['pss_mb_total']:.0f} MB summed",
                  f"    underruns: host short reads {f['underruns']} "
                  f"({f['underruns_device_had_a_period']} where the device had a period), "
                  f"header counters {f['header_underruns']}; overruns {f['overruns']}; host "
                  f"late >= 1 block {sum(x['late_1_block_or_more'] for x in h)}, >= 2 blocks "
                  f"{sum(x['late_2_blocks_or_more'] for x in h)}, at worst "
                  f"{max(x['late_max_ms'] for x in h):.2f} ms; host {', '.join(f['host_rt'])}"]
    if "breakdown" in r:
        c = r["breakdown"]
        sl = c["sleep_loop"]
        lines += ["", "(c) Where a streaming device's CPU goes (median per call, this process)",
                  f"    DeviceRunner.step() with nothing to render {c['poll_step_us']:.2f} us; "
                  f"rendering one block {c['render_step_us_1_voice']:.2f} us (1 voice), "
                  f"{c['render_step_us_8_voices']:.2f} us (8 voices); SineSynth.render alone "
                  f"{c['synth_render_1_voice_us']:.2f} us",
                  f"    {sl['what']}: {sl['cpu_percent']:.2f}% ({sl['cpu_percent_precise']:.2f}% "
                  f"precise), {sl['wakeups_per_s']} wakeups/s, "
                  f"{sl['cpu_us_per_wakeup']} us CPU per wakeup"]
        mdl = r.get("model")
        if mdl:
            lines.append(f"    model at N={mdl['at_n']} ({mdl['wakeups_per_s']:.0f} wakeups/s, "
                         f"{mdl['blocks_per_s']} blocks/s): wake-ups {mdl['wakeups_percent']:.2f}"
                         f"% + poll steps {mdl['poll_steps_percent']:.2f}% + rendering "
                         f"{mdl['rendering_percent']:.2f}% = {mdl['model_percent']:.2f}%; "
                         f"measured {mdl['measured_percent']:.2f}%")
    rt = sorted({p for x in _runs(r).values() for p in x["foreign_rt_processes"]})
    if rt:
        lines += ["", f"Other processes at SCHED_FIFO/RR during the windows ('RT' above): "
                  f"{', '.join(rt[:8])}{' ...' if len(rt) > 8 else ''}"]
    cleanup = r.get("cleanup", [])
    if cleanup:
        dirty = [c for c in cleanup if c["shm_left"] or c["devices_left"]
                 or c["control_socket_left"]]
        lines += ["", f"Cleanup after SIGTERM: {len(cleanup)} rack(s) stopped in "
                  f"{max(c['stop_s'] for c in cleanup):.2f} s at most, exit codes "
                  f"{sorted({c['exit_code'] for c in cleanup})}; "
                  + ("nothing of the namespace left in /dev/shm, no device process, no "
                     "control socket" if not dirty else
                     "LEFT: " + "; ".join(f"N={c['n']}: shm {c['shm_left']}, devices "
                                          f"{c['devices_left']}, socket "
                                          f"{c['control_socket_left']}" for c in dirty))]
    lines += ["", "Goals" + tag]
    if not r["goals"]:
        lines.append("    (none judged by these sections)")
    lines += goal_lines(r["goals"])
    return "\n".join(lines)


def headline(r: dict) -> dict:
    out: dict[str, Any] = {}
    if "full" in r:
        f = r["full"]
        out.update(underruns=f["underruns"], header_underruns=f["header_underruns"],
                   device_cpu_percent_median=f["cpu_per_device_median"],
                   rss_mb_median=f["rss_mb_median"], supervisor_cpu_percent=
                   f["supervisor_cpu_percent"], host_cpu_percent=f["host_cpu_percent"],
                   total_cpu_percent=f["total_cpu_percent"])
    s = r.get("scaling_summary")
    if s:
        out["total_device_cpu_percent"] = {n: x["total_device_cpu_percent"]
                                           for n, x in s["rows"].items()}
        out["cpu_per_device_percent"] = {n: x["cpu_per_device_percent"]
                                         for n, x in s["rows"].items()}
        out["linearity"] = s["linearity"]
    return out


SECTIONS = {"a": "scaling", "b": "full", "c": "breakdown"}


def run(plan: Plan, namespace: str, only: str) -> dict:
    results: dict[str, Any] = {
        "quick": plan.quick, "namespace": namespace, "machine": machine(),
        "date": utc_date(),
        "bench_command": ".venv/bin/python bench/rack.py " + shlex.join(sys.argv[1:]),
        "voices": plan.voices, "host_procs": plan.host_procs,
        "poll_interval_patched": plan.poll_interval, "section_load": {}}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop(shm.NAMESPACE_ENV, None)  # the rack gets --namespace
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="discolink-rackbench-") as tmp:
        folder = Path(tmp)
        if plan.poll_interval is not None:
            (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
            env[POLL_ENV] = repr(plan.poll_interval)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
        if "a" in only:
            results["scaling"] = bench_scaling(plan, namespace, folder, env)
            results["section_load"]["scaling"] = {
                n: x["foreign_cpu_cores"] for n, x in results["scaling"]["runs"].items()}
        if "b" in only:
            results["full"] = bench_full(plan, namespace, folder, env)
            results["section_load"]["full"] = results["full"]["foreign_cpu_cores"]
    if "c" in only:
        meter = CpuMeter()
        results["breakdown"] = bench_breakdown(plan, namespace)
        results["section_load"]["breakdown"] = meter.report()["foreign_cpu_cores"]
    results["rack_command"] = (f".venv/bin/python -m bridge --namespace {namespace} rack "
                               "$TMP/rackN.yaml --state-dir $TMP/stateN")
    results["scaling_summary"] = scaling_summary(results)
    results["model"] = model(results)
    runs = list(results.get("scaling", {}).get("runs", {}).values())
    if "full" in results:
        runs.append(results["full"])
    results["cleanup"] = [{"n": x["devices_n"], **x["stop"]} for x in runs]
    results["goals"] = goals(results)
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    return {**headline(results), **results}


def main(argv: list[str] | None = None) -> int:
    sections = "".join(SECTIONS)
    p = arg_parser(__doc__, "short run (about a minute): 5 s per N in (a), 10 s for the 16 "
                   "devices", sections, "b")
    p.add_argument("--voices", type=int, default=1, choices=[1, 8],
                   help="notes held per synth device (default 1)")
    p.add_argument("--host-procs", type=int, default=1, choices=[1, 2],
                   help="host processes sharing the devices (default 1)")
    p.add_argument("--poll-interval", type=float, metavar="S",
                   help="investigation only: patch the devices' demand-clock poll interval "
                   f"(shipped: {POLL_INTERVAL_S} s); the report says PATCHED")
    args = parse_args(p, argv, sections)
    if args.poll_interval is not None and not 0 < args.poll_interval < PERIOD:
        p.error(f"--poll-interval must be between 0 and one block period ({PERIOD:.5f} s)")
    plan = dataclasses.replace(Plan.make(args.quick), voices=args.voices,
                               host_procs=args.host_procs, poll_interval=args.poll_interval)
    # the namespace is for this process's own Device/Host in (c); the racks get --namespace
    return run_in_namespace(lambda namespace: run(plan, namespace, args.only), table,
                            args.json)


if __name__ == "__main__":
    raise SystemExit(main())
