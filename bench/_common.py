"""Helpers shared by the benchmark scripts in bench/ (not a benchmark: nothing to run here).

The scripts are run as ``.venv/bin/python bench/X.py``, so Python puts bench/ first on
sys.path and ``from _common import ...`` finds this file. Everything here behaves exactly as
the copies it replaces did; what only looks alike between the scripts (``machine()`` of
bench/rack.py, the scripts' result formats) stays in the scripts.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bridge.adapters.session import detect_onset
from bridge.transport import Host, cmd, shm
from bridge.transport.clock import realtime

REPO = Path(__file__).resolve().parent.parent


def log(text: str) -> None:
    """Progress goes to stderr, so that --json leaves stdout to the JSON object alone."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


# ---- formatting and statistics ---------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    """a / b to 3 decimals, or None (JSON null) when b is zero."""
    return round(a / b, 3) if b else None


def fmt(x: float | None, spec: str = ".3f") -> str:
    """``x`` formatted with ``spec``, or "n/a" for None."""
    return "n/a" if x is None else format(x, spec)


_NS_PER = {"us": 1e3, "ms": 1e6}


def median_p95(ns: list[int] | np.ndarray, unit: str, digits: int,
               also: tuple[str, ...] = ("min", "max", "mean")) -> dict[str, float]:
    """n, median and p95 of nanosecond samples in ``unit`` ("us" or "ms"), then the ``also``
    statistics (any of min, max, mean, in that order), each rounded to ``digits``: keys
    ``n``, ``median_<unit>``, ``p95_<unit>``, ``<stat>_<unit>``."""
    x = np.asarray(ns, np.float64) / _NS_PER[unit]
    p50, p95 = np.percentile(x, [50, 95])
    out = {"n": int(x.size), f"median_{unit}": round(float(p50), digits),
           f"p95_{unit}": round(float(p95), digits)}
    for stat in also:
        out[f"{stat}_{unit}"] = round(float(getattr(x, stat)()), digits)
    return out


def profile_top(prof: cProfile.Profile, n: int = 15) -> tuple[float, list[tuple]]:
    """The profiler's total own time (s) and its ``n`` functions with the most own time, as
    (``path:line(function)`` with the path relative to the working directory, calls, own
    seconds, cumulative seconds)."""
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (path, line, func), (_cc, ncalls, tottime, cumtime, _) in sorted(
            st.stats.items(), key=lambda kv: -kv[1][2])[:n]:
        where = f"{os.path.relpath(path) if path.startswith('/') else path}:{line}({func})"
        rows.append((where, ncalls, tottime, cumtime))
    return st.total_tt, rows


# ---- /proc -----------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/<pid>/stat, in seconds (10 ms resolution)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rindex(b")") + 2 :].split()  # fields from the 3rd (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_runtime_seconds(pid: int) -> float | None:
    """Precise CPU time of all of a process's threads (se.sum_exec_runtime from
    /proc/<pid>/task/*/sched, microsecond resolution); None where the kernel lacks it."""
    total = 0.0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/sched") as f:
                for line in f:
                    if line.startswith("se.sum_exec_runtime"):
                        total += float(line.split(":")[1]) / 1000.0  # ms -> s
                        break
    except OSError:
        return None
    return total


def proc_status(pid: int, key: str) -> int:
    """The first number of ``key`` in /proc/<pid>/status (e.g. voluntary_ctxt_switches: one
    per sleep/wakeup of the main thread; Threads), 0 when the key is absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def machine_busy() -> tuple[float, float]:
    """(busy, steal) seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    tck = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tck, steal / tck


class CpuMeter:
    """CPU that other processes used during a section, in cores: the machine's busy time
    (/proc/stat) minus ours (this process and its reaped children, from os.times). A child
    still running at ``report()`` counts as foreign: the scripts reap theirs by then."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float, float]:
        busy, steal = machine_busy()
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), busy, steal, own

    def report(self) -> dict[str, float]:
        """seconds, foreign_cpu_cores and steal_cores since construction."""
        t0, busy0, steal0, own0 = self.start
        t1, busy1, steal1, own1 = self._sample()
        wall = t1 - t0
        return {"seconds": round(wall, 1),
                "foreign_cpu_cores": round(max(0.0, (busy1 - busy0) - (own1 - own0)) / wall, 2),
                "steal_cores": round((steal1 - steal0) / wall, 2)}


def run_sections(results: dict, only: str,
                 sections: dict[str, tuple[str, Callable[[], dict]]]) -> None:
    """Run each section whose letter is in ``only``, in order, into ``results[key]``, with
    the CPU other processes used meanwhile in ``results["section_load"][key]``."""
    for letter, (key, section) in sections.items():
        if letter in only:
            meter = CpuMeter()
            results[key] = section()
            results["section_load"][key] = meter.report()


def debian_version() -> str:
    """/etc/debian_version, or "n/a"."""
    try:
        return Path("/etc/debian_version").read_text().strip()
    except OSError:
        return "n/a"


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, to 2 decimals."""
    return [round(x, 2) for x in os.getloadavg()]


def machine(debian: bool = False, **extra: Any) -> dict:
    """The report's machine description: nproc, (debian,) python, kernel, machine, then
    ``extra`` in the order given, then loadavg_at_start."""
    out: dict[str, Any] = {"nproc": len(os.sched_getaffinity(0))}
    if debian:
        out["debian"] = debian_version()
    out.update(python=platform.python_version(), kernel=platform.release(),
               machine=platform.machine(), **extra)
    out["loadavg_at_start"] = loadavg()
    return out


# ---- devices in this process -------------------------------------------------------------------


def connect_in_process(host: Host, device_id: str, sample_rate: int, frames: int,
                       serve: Callable[[], object], **connect_args: Any) -> None:
    """Connect ``host`` to a device living in this process: a thread calls ``serve()`` (the
    device's ``process_commands`` or its runner's ``step``) every 0.2 ms only while
    ``host.connect(device_id, timeout=5.0, **connect_args)`` waits for the handshake; after
    that the caller drives both ends from one thread."""
    serving = threading.Event()

    def loop() -> None:
        while not serving.is_set():
            serve()
            time.sleep(0.0002)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        host.set_local_buffer_info(sample_rate, frames)
        host.connect(device_id, timeout=5.0, **connect_args)
    finally:
        serving.set()
        thread.join()


# ---- report and main() -------------------------------------------------------------------------


def utc_date() -> str:
    """Now, as the reports' ``date``: "YYYY-MM-DD HH:MM UTC"."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def load_lines(loads: dict[str, dict], nproc: int) -> list[str]:
    """The table's paragraph on the CPU other processes used during each section (from
    ``CpuMeter.report()`` per section); nothing when no section ran."""
    if not loads:
        return []
    return ["", f"CPU used by other processes during each section (of {nproc} cores): "
            + ", ".join(f"{k} {v['foreign_cpu_cores']:.2f}" for k, v in loads.items())
            + f"; steal {max(v['steal_cores'] for v in loads.values()):.2f} at most"]


def goal_lines(goals: list[dict]) -> list[str]:
    """One ``[PASS]``/``[FAIL]`` line per goal."""
    return [f"    [{'PASS' if g['met'] else 'FAIL'}] {g['goal']}: {g['detail']}" for g in goals]


def cleanup(namespace: str) -> list[str]:
    """Unlink every segment left in the benchmark's namespace."""
    names = shm.list_names(shm.namespace_prefix(namespace))
    for name in names:
        shm.unlink(name)
    return names


def arg_parser(doc: str, quick_help: str, sections: str, example: str,
               only_note: str = "") -> argparse.ArgumentParser:
    """The options every script has: --quick (help ``quick_help``), --json and --only (the
    letters of ``sections``, all by default; ``example`` and ``only_note`` go into its help).
    The description is the first line of the script's docstring ``doc``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on "
                   "stdout; the table goes to stderr")
    p.add_argument("--only", default=sections, metavar="LETTERS",
                   help=f"run only these sections, e.g. '{example}' (default: "
                   f"{sections}{only_note})")
    return p


def parse_args(p: argparse.ArgumentParser, argv: list[str] | None,
               sections: str) -> argparse.Namespace:
    """``p.parse_args(argv)``, with a usage error when --only has a letter not in
    ``sections``."""
    args = p.parse_args(argv)
    if set(args.only) - set(sections):
        p.error(f"--only takes letters from {sections}")
    return args


def run_in_namespace(run: Callable[[str], dict], table: Callable[[dict], str],
                     as_json: bool) -> int:
    """A script's main() after its arguments: ``run(namespace)`` in a private discoLink
    namespace, ``bench<pid>``, set in this process's environment (so its own Device/Host and
    every child process work in it), with SIGTERM unwinding like Ctrl-C so that every finally
    block stops its children; then every segment left in the namespace is unlinked (and
    logged), and the table is printed, or with ``as_json`` the table goes to stderr and
    exactly one JSON object to stdout. Returns the exit status, 0."""
    namespace = f"bench{os.getpid()}"
    os.environ[shm.NAMESPACE_ENV] = namespace
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        results = run(namespace)
    finally:
        left = cleanup(namespace)
        if left:
            log(f"unlinked {len(left)} leftover segment(s): {', '.join(left)}")
    text = table(results)
    if as_json:
        print(text, file=sys.stderr)
        print(json.dumps(results))
    else:
        print(text)
    return 0


class CliDevice:
    """``python -m bridge device`` in its own process; a context manager that always stops it.
    With ``capture_stderr`` its stderr (plugin chatter included) goes to a temporary file,
    kept in ``stderr_lines`` and quoted when the device fails to start; otherwise it is ours."""

    def __init__(self, namespace: str, name: str, *args: str,
                 capture_stderr: bool = False) -> None:
        self.command = [sys.executable, "-m", "bridge", "--namespace", namespace, "device",
                        "--id", name, *args]
        self.proc: subprocess.Popen[str] | None = None
        self.id = ""
        self.ready_line = ""
        self.stopped_line = ""
        self.stderr_lines: list[str] = []
        self._err = tempfile.TemporaryFile() if capture_stderr else None
        self._stopped = False

    @property
    def shown(self) -> str:
        """The command as a user would type it (namespace from the environment)."""
        return ".venv/bin/python -m bridge " + shlex.join(self.command[5:])  # no --namespace

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> CliDevice:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self._err,
                                     text=True, cwd=REPO)
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], 20.0)
            line = self.proc.stdout.readline() if ready else ""
            if not line.startswith("device "):
                self.stop()
                tail = f"; stderr: {' | '.join(self.stderr_lines[-3:])}" if self._err else ""
                raise RuntimeError(f"CLI device did not start ({shlex.join(self.command[1:])}):"
                                   f" {line!r}, exit code {self.proc.returncode}{tail}")
        except BaseException:
            self.stop()
            raise
        self.ready_line = line.strip()
        self.id = self.ready_line.split()[1]
        return self

    def stop(self) -> None:
        if self.proc is None or self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.stopped_line = (out or "").strip()
        if self._err is not None:
            self._err.seek(0)
            self.stderr_lines = self._err.read().decode(errors="replace").splitlines()
            self._err.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CpuWindow:
    """A process's CPU use between construction and ``finish()``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.ticks0 = proc_cpu_seconds(pid)
        self.runtime0 = proc_runtime_seconds(pid)
        self.switches0 = proc_status(pid, "voluntary_ctxt_switches")

    def finish(self) -> dict:
        wall = time.monotonic() - self.t0
        ticks = proc_cpu_seconds(self.pid) - self.ticks0
        runtime1 = proc_runtime_seconds(self.pid)
        out = {"seconds": round(wall, 2),
               "cpu_percent": round(ticks / wall * 100.0, 2),
               "cpu_resolution_percent": round(100.0 / os.sysconf("SC_CLK_TCK") / wall, 2),
               "wakeups_per_s": round((proc_status(self.pid, "voluntary_ctxt_switches")
                                       - self.switches0) / wall),
               "threads": proc_status(self.pid, "Threads")}
        if runtime1 is not None and self.runtime0 is not None:
            out["cpu_percent_precise"] = round((runtime1 - self.runtime0) / wall * 100, 3)
        return out


def note_onsets(namespace: str, device_id: str, block: int, notes: int, *, sample_rate: int,
                rt_priority: int, threshold: float) -> dict:
    """Note-to-sound through a device, from a real-time host loop (paced by sleep, at
    ``rt_priority`` when granted, as a DAW's audio callback would run): NoteOn at offset 0 at
    known block boundaries ~100 ms apart, note-off half-way to the next, All Sound Off a
    quarter later; the recording is scanned for each note's first sample above
    ``threshold``. Returns ``frames`` (onset minus send position, one per measured note),
    ``missed``, ``not_silent_before`` (the previous note had not died away: not measured),
    ``underruns`` and ``host_rt`` (why SCHED_FIFO was refused, "" when granted)."""
    spacing = max(8, round(0.1 * sample_rate / block))  # blocks between notes
    lead = round(0.15 * sample_rate / block)  # blocks before the first note
    note_blocks = [lead + i * spacing for i in range(notes)]
    total = note_blocks[-1] + spacing
    events: dict[int, list] = {}
    for k in note_blocks:
        events.setdefault(k, []).append(cmd.midi_note_on(0, 69, 100, 0))
        events.setdefault(k + spacing // 2, []).append(cmd.midi_note_off(0, 69))
        events.setdefault(k + 3 * spacing // 4, []).append(cmd.midi_cc(0, 123, 0))
    rec = np.zeros(total * block, np.float32)
    buf = np.zeros((2, block), np.float32)
    period = block / sample_rate
    with Host(namespace) as host:
        host.set_local_buffer_info(sample_rate, block)
        host.connect(device_id, timeout=5.0)
        send, receive, poll = host.send_command, host.receive_audio, host.process_responses
        with realtime(rt_priority) as refused:
            start = time.monotonic()
            for k in range(total):
                for msg in events.get(k, ()):
                    if not send(msg):
                        raise RuntimeError(f"send_command failed: {host.stats.last_error}")
                receive(buf)
                rec[k * block : (k + 1) * block] = buf[0]
                poll()
                wait = start + (k + 1) * period - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        underruns = host.stats.underruns
    return {**scan_onsets(rec, [k * block for k in note_blocks], block, spacing * block // 2,
                          threshold), "underruns": underruns, "host_rt": refused}


def scan_onsets(rec: np.ndarray, positions: list[int], block: int, window: int,
                threshold: float) -> dict:
    """Each note's onset in a mono recording: the first sample above ``threshold`` within
    ``window`` frames of its NoteOn at ``positions``. Returns ``frames`` (onset minus
    position), ``missed`` and ``not_silent_before`` (the block before it was not silent:
    the previous note had not died away; not measured)."""
    frames, missed, noisy = [], 0, 0
    for pos in positions:
        if np.abs(rec[max(0, pos - block) : pos]).max() > threshold:
            noisy += 1
            continue
        onset = detect_onset(rec[: pos + window], pos, threshold)
        if onset is None:
            missed += 1
            continue
        frames.append(onset - pos)
    return {"frames": frames, "missed": missed, "not_silent_before": noisy}
