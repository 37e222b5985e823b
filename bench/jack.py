"""JACK benchmark: the latency jack-device and jack-host add, and their DSP load in JACK.

Run from the repository root (jackd2 and JACK-Client come with ``./setup.sh``):

    .venv/bin/python bench/jack.py            # full run (2 to 3 min), human table
    .venv/bin/python bench/jack.py --quick    # shorter run, under 40 s
    .venv/bin/python bench/jack.py --json     # one JSON object on stdout (table on stderr)
    .venv/bin/python bench/jack.py --only a   # only the latency section

Every configuration gets a jackd of its own (dummy backend, 48 kHz, ``-n dlbench<pid><x>``),
started by this script with ``-R`` (SCHED_FIFO) and, if the server does not come up real-time,
again with ``--no-realtime``; the table says which. Servers are stopped with SIGTERM, so they
leave JACK's server table (it holds 8).

(a) Latency, at 64- and 256-frame periods. All times are JACK frame times of one server
    (``last_frame_time`` + sample offset, read in the process callbacks of two JACK clients in
    this process: ``dlsrc`` writes, ``dlprobe`` listens). Every 0.1 s ``dlsrc`` writes a
    one-sample click (1.0) on ``dlsrc:click`` at a varying offset k in the period, and on
    ``dlsrc:midi`` a note on (A4, velocity 100) or, every other time, its note off, at the same
    offset. The stamp of an event is the cycle's ``last_frame_time`` T plus k. Rows:
    - ``jack``: dlsrc:click -> dlprobe:direct, the pure JACK baseline (expected 0).
    - ``jack->discoLink``: dlsrc:click -> ``jack-device --id Lat`` -> the ring -> a
      ``bridge.transport.Host`` in this process that polls ``available_frames()`` every
      ~0.1 ms. Measured: the JACK frame time (``dlprobe.frame_time``) when the block holding
      the click becomes readable, minus T (the start of the cycle that carried it, the first
      frame of its block; own latency: the block, one period), and minus the frame time right
      after dlsrc wrote it; and whether the click keeps its offset k within the host's block
      (the device's blocks are JACK's periods).
    - ``discoLink->JACK``: ``device --id SineFn --fill n`` (the built-in sine synth, demand
      clock, in its own process) -> ``jack-host --id SineFn:0 --midi-in dlsrc:midi
      --connect-out dlprobe:sine_fn``. The note on reaches the device through jack-host's
      JACK MIDI input; latency = first sample above 1e-4 on dlprobe minus the stamp, minus 1
      (the sine starts at phase 0, so its first sample is 0). The device's own latency is
      its fill x block (block = the JACK period: the device follows jack-host's handshake).
    - ``loop``: dlsrc:click -> ``jack-device --id Loop`` -> the ring -> ``jack-host --id
      Loop:0 --connect-out dlprobe:loop``: JACK -> discoLink -> JACK in one clock. The
      device's own block is one period; jack-host is restarted several times and each start
      is measured on its own (the latency depends on how many blocks were queued when it
      started reading).
    Goal (the issue): at most one JACK period beyond the device's own block. Events that the
    pure JACK row did not deliver in their own cycle (the machine held the graph up) are left
    out of the other rows and counted; xruns that JACK reports to dlprobe are counted too.
(b) DSP load, at 64- and 256-frame periods, with 2 channels: ``client.cpu_load()`` of an
    observer client (never activated: it adds nothing to the graph; JACK's figure is for the
    whole cycle, from a rolling maximum of the cycle time, smoothed) sampled every 50 ms,
    and each client's own process callback time, for these graphs, one after the other and
    in alternating rounds on the same server:
    - ``idle``: no client.
    - ``bare``: a JACK-Client pass-through (2 inputs from system:capture_*, copied into a
      numpy block and from it to 2 outputs into system:playback_*: the copies the bridges
      make, without discoLink), in its own process.
    - ``jack-device``: ``JackDeviceBridge`` (what ``jack-device --id Load --connect
      system:capture_1 --connect system:capture_2`` runs), in its own process, streaming to a
      Host in this process that reads every block.
    - ``jack-host``: ``JackHostBridge`` (what ``jack-host --id LoadSine:0 --connect-out
      'system:playback_*'`` runs) reading ``device --id LoadSine`` (the sine synth, silent,
      running through all graphs of the period), in its own process.
    Each client runs in a child process of this script (``--child``) that wraps its process
    callback (the bridge's ``_process``, set before ``start()``) with ``time.monotonic_ns``
    and ``time.thread_time_ns``; the same wrapper around all three, so the callback figures
    compare the code inside JACK-Client's callback. Goal: none is given; the ratios to the
    bare client are reported.

Every section reports the CPU other processes used while it ran (``section_load``), and the
exact command behind each row. Goals are PASS/FAIL lines; a missed goal never changes the exit
status. Everything runs in a private discoLink namespace (``bench<pid>``), cleaned up at the
end.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.metadata
import json
import os
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
    arg_parser,
    goal_lines,
    load_lines,
    log,
    machine,
    run_in_namespace,
    run_sections,
    utc_date,
)

from bridge.transport import Host, shm

# This file is bench/jack.py and Python puts bench/ first on sys.path: "import jack" would
# find this file instead of JACK-Client. Drop bench/ before anything imports jack (_common,
# in bench/, is imported above, before this).
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
jack = importlib.import_module("jack")

REPO = _BENCH_DIR.parent
SR = 48000
PERIODS = (64, 256)
CHANNELS = 2  # (b)
EVERY = SR // 10  # (a) an event every 0.1 s
CLICK = 1.0
ONSET = 1e-4  # (a) sine onset threshold
GOAL_BEYOND_PERIODS = 1
FILLS = (1, 2)  # (a) discoLink->JACK rows
TIMER_SLOTS = 1 << 19  # (b) callback timings kept per child (the last ones)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much each section does; --quick shrinks durations."""

    quick: bool
    latency_s: float  # (a) main window, all rows
    loop_starts: int  # (a) jack-host starts measured for the loop row
    loop_s: float  # (a) window per extra jack-host start
    rounds: int  # (b) alternating rounds over the graphs
    load_s: float  # (b) measured seconds per graph and round
    settle_s: float  # (b) after a graph is up, before measuring

    @staticmethod
    def make(quick: bool) -> Plan:
        if quick:
            return Plan(True, 2.0, 2, 0.8, 1, 1.5, 0.3)
        return Plan(False, 8.0, 5, 1.5, 3, 4.0, 0.5)


def stats(values: list[float] | np.ndarray, digits: int = 1) -> dict[str, Any]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {"n": 0}
    p50, p95 = np.percentile(a, [50, 95])
    return {"n": int(a.size), "median": round(float(p50), digits),
            "p95": round(float(p95), digits), "min": round(float(a.min()), digits),
            "max": round(float(a.max()), digits)}


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


# ---- processes ------------------------------------------------------------------------------

class Jackd:
    """A jackd of our own: dummy backend, real-time if the machine allows it."""

    def __init__(self, period: int, tag: str, tmp: Path) -> None:
        self.period = period
        self.name = f"dlbench{os.getpid()}{tag}"
        self.proc: subprocess.Popen | None = None
        self.mode = ""
        self.command = ""
        self._log = tmp / f"{self.name}.log"

    def env(self, namespace: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1",
                    shm.NAMESPACE_ENV: namespace, "PYTHONUNBUFFERED": "1"})
        return env

    def start(self) -> Jackd:
        why = ""
        for rt in (True, False):
            args = ["jackd", "-n", self.name, "-R" if rt else "--no-realtime", "-d", "dummy",
                    "-r", str(SR), "-p", str(self.period)]
            with open(self._log, "w") as err:
                self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
            client = self._wait_up()
            if client is not None:
                realtime = client.realtime
                client.close()
                if realtime or not rt:
                    self.command = shlex.join(args)
                    self.mode = "realtime (-R, SCHED_FIFO)" if realtime else \
                        f"--no-realtime ({why or 'realtime not asked for'})"
                    return self
                why = "jackd -R came up without real-time scheduling"
            else:
                tail = self._log.read_text(errors="replace").strip().splitlines()[-3:]
                why = f"jackd -R failed: {' / '.join(tail)}"
                if "Too many servers" in "".join(tail):
                    raise RuntimeError("JACK's server table (8 entries in "
                                       "/dev/shm/jack-shm-registry) is full of servers that "
                                       "were killed without cleaning up: " + why)
            self.stop()
            if not rt:
                raise RuntimeError(f"jackd {self.name} did not start: {why}")
        raise AssertionError("unreachable")

    def _wait_up(self, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        jack.set_error_function(lambda _msg: None)  # libjack's 'cannot connect' while it boots
        try:
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    return jack.Client("dlbench-up", servername=self.name, no_start_server=True)
                except jack.JackOpenError:
                    time.sleep(0.1)
        finally:
            jack.set_error_function(None)
        return None

    def client(self, name: str):
        return jack.Client(name, servername=self.name, no_start_server=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: jackd leaves the server table
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class Proc:
    """A child process (bridge CLI or a --child of this script) with its output collected."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.command = shlex.join(["python", *args[1:]]) if args[0] == sys.executable else \
            shlex.join(args)
        self.popen = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=lambda s=stream, k=sink: k.extend(
            iter(s.readline, "")), daemon=True)
            for stream, sink in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))]
        for t in self._readers:
            t.start()

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = next((ln for ln in self.out if text in ln), None)
            if line is not None:
                return line
            if self.popen.poll() is not None:
                time.sleep(0.1)  # let the reader threads finish
                break
            time.sleep(0.02)
        raise RuntimeError(f"{self.command}: no {text!r} (exit {self.popen.poll()}, stdout "
                           f"{self.out[-3:]}, stderr {self.err[-5:]})")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)
        for t in self._readers:
            t.join(timeout=2)

    def last(self, prefix: str) -> str:
        return next((ln.strip() for ln in reversed(self.out) if ln.startswith(prefix)), "")


class Procs:
    """Every child of a section, stopped in reverse order whatever happens."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.all: list[Proc] = []
        self.history: list[Proc] = []  # every child ever started, for the report

    def bridge(self, *args: str) -> Proc:
        p = Proc([sys.executable, "-m", "bridge", *args], self.env)
        self.all.append(p)
        self.history.append(p)
        return p

    def child(self, *args: str) -> Proc:
        p = Proc([sys.executable, str(Path(__file__).resolve()), "--child", *args], self.env)
        p.command = shlex.join(["python", "bench/jack.py", "--child", *args])
        self.all.append(p)
        self.history.append(p)
        return p

    def describe(self) -> str:
        return "; ".join(f"[{p.command}: exit {p.popen.poll()}, stdout {p.out[-2:]}, stderr "
                         f"{p.err[-3:]}]" for p in self.history)

    def stop_all(self) -> None:
        for p in reversed(self.all):
            p.stop()
        self.all.clear()


# ---- (a) latency ----------------------------------------------------------------------------

class ClickRig:
    """Two JACK clients in this process: ``dlsrc`` writes the clicks and MIDI notes, ``dlprobe``
    notes every silence-to-sound onset on its inputs, both in JACK frame time."""

    def __init__(self, server: Jackd, inputs: list[str]) -> None:
        self.src = server.client("dlsrc")
        self.probe = server.client("dlprobe")
        self.click = self.src.outports.register("click")
        self.midi = self.src.midi_outports.register("midi")
        self.ins = [(n, self.probe.inports.register(n)) for n in inputs]
        self.fired: list[tuple[int, int, int, bool]] = []  # (stamp T+k, T, ft written, on)
        self.onsets: dict[str, list[int]] = {n: [] for n in inputs}
        self._silent = dict.fromkeys(inputs, True)
        self.next: int | None = None
        self.xruns = 0  # as JACK reports them to dlprobe: any client's, server-wide
        self.src.set_process_callback(self._emit)
        self.probe.set_process_callback(self._listen)
        self.probe.set_xrun_callback(self._xrun)
        self.src.activate()
        self.probe.activate()

    def _emit(self, frames: int) -> None:
        a = self.click.get_array()
        a.fill(0.0)
        self.midi.clear_buffer()
        t = self.src.last_frame_time
        if self.next is not None and t >= self.next:
            n = len(self.fired)
            k = (n * 37 + 5) % frames
            on = n % 2 == 0
            a[k] = CLICK
            self.midi.write_midi_event(k, b"\x90\x45\x64" if on else b"\x80\x45\x00")
            self.fired.append((t + k, t, self.src.frame_time, on))
            self.next = t + EVERY

    def _listen(self, frames: int) -> None:
        t = self.probe.last_frame_time
        for name, port in self.ins:
            hot = np.flatnonzero(np.abs(port.get_array()) > ONSET)
            if hot.size:
                if self._silent[name]:
                    self.onsets[name].append(t + int(hot[0]))
                self._silent[name] = False
            else:
                self._silent[name] = True

    def _xrun(self, _delay_usecs: float) -> None:
        self.xruns += 1

    def start_events(self) -> None:
        self.next = self.src.last_frame_time + 4 * self.src.blocksize

    def stop_events(self) -> None:
        self.next = None

    def close(self) -> None:
        for c in (self.src, self.probe):
            c.deactivate()
            c.close()


def match(events: list[tuple[int, int, int, bool]], onsets: list[int],
          correction: int = 0) -> tuple[list[int], int]:
    """Latency of each event: the first onset at or after its stamp, within EVERY frames
    (a missing one is counted, not matched to the next event's)."""
    out, missing = [], 0
    on = np.asarray(onsets, np.int64)
    for stamp, *_ in events:
        i = int(np.searchsorted(on, stamp))
        if i < on.size and on[i] - stamp < EVERY:
            out.append(int(on[i] - stamp) - correction)
        else:
            missing += 1
    return out, missing


def undisturbed(events: list, direct: list[int]) -> tuple[list, int]:
    """The events that the pure JACK path (dlsrc:click -> dlprobe:direct) delivered in their
    own cycle: where it did not, the machine held up the JACK graph itself (an xrun in our
    clients or jackd), and the bridges' rows would measure that, not themselves."""
    on = set(direct)
    keep = [e for e in events if e[0] in on]
    return keep, len(events) - len(keep)


class LatReader:
    """The discoLink host of ``jack-device --id Lat``: reads every block as soon as it is
    readable and notes the JACK frame time then, and the click's offset in the block."""

    def __init__(self, host: Host, probe, period: int) -> None:
        self.host, self.probe, self.period = host, probe, period
        self.arrivals: list[tuple[int, int, int]] = []  # (frame time, offset, frames queued)
        self.gaps: list[float] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        block = np.zeros((1, self.period), np.float32)
        host, probe = self.host, self.probe
        last = time.perf_counter()
        while not self._stop.is_set():
            queued = host.available_frames()
            if queued >= self.period:
                ft = probe.frame_time
                host.receive_audio(block)
                hot = np.flatnonzero(block[0] > CLICK / 2)
                if hot.size:
                    self.arrivals.append((ft, int(hot[0]), queued))
            else:
                time.sleep(0.0001)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)


def latency_row(name: str, lat: list[int], missing: int, period: int, own: int,
                command: list[str], **extra) -> dict:
    s = stats(lat, 0)
    row = {"row": name, "period": period, "own_latency_frames": own, "frames": s,
           "missing": missing, "command": command, **extra}
    if lat:
        row["beyond_own_frames"] = int(max(lat)) - own
        row["beyond_own_periods"] = round((max(lat) - own) / period, 2)
        row["met"] = max(lat) - own <= GOAL_BEYOND_PERIODS * period
    return row


def bench_latency(plan: Plan, namespace: str, tmp: Path) -> dict:
    out: dict[str, Any] = {"periods": {}}
    for period in PERIODS:
        log(f"(a) latency, {period}-frame period")
        server = Jackd(period, f"a{period}", tmp).start()
        procs = Procs(server.env(namespace))
        rig = reader = None
        host = Host(namespace)
        try:
            rig = ClickRig(server, ["direct", "loop"] + [f"sine_f{f}" for f in FILLS])
            rig.src.connect("dlsrc:click", "dlprobe:direct")
            lat_dev = procs.bridge("jack-device", "--id", "Lat", "--connect", "dlsrc:click")
            loop_dev = procs.bridge("jack-device", "--id", "Loop", "--connect", "dlsrc:click")
            sines = {f: procs.bridge("device", "--id", f"SineF{f}", "--fill", str(f))
                     for f in FILLS}
            for p in (lat_dev, loop_dev):
                p.wait_for("ready")
            for p in sines.values():
                p.wait_for("ready")
            loop_host = procs.bridge("jack-host", "--id", "Loop:0", "--connect-out",
                                     "dlprobe:loop")
            sine_hosts = {f: procs.bridge("jack-host", "--id", f"SineF{f}:0", "--midi-in",
                                          "dlsrc:midi", "--connect-out", f"dlprobe:sine_f{f}")
                          for f in FILLS}
            host.connect("Lat:0")
            reader = LatReader(host, rig.probe, period)
            for p in (loop_host, *sine_hosts.values()):
                p.wait_for("ready")
            time.sleep(0.3)  # the MIDI and audio connections are made on port registration
            ports = port_latencies(rig.probe)
            rig.start_events()
            time.sleep(plan.latency_s)
            rig.stop_events()
            time.sleep(0.2)
            fired = list(rig.fired)
            xruns = rig.xruns
            reader.stop()
            rows: dict[str, dict] = {}
            lat, missing = match(fired, rig.onsets["direct"])
            rows["jack"] = latency_row("JACK only (dlsrc:click -> dlprobe:direct)", lat,
                                       missing, period, 0, [server.command])
            events, disturbed = undisturbed(fired, rig.onsets["direct"])
            rows["jack_to_discolink"] = jack_to_discolink(events, reader, period,
                                                          [server.command, lat_dev.command])
            for f in FILLS:
                on = [e for e in events if e[3]]
                lat, missing = match(on, rig.onsets[f"sine_f{f}"], correction=1)
                rows[f"discolink_to_jack_fill{f}"] = latency_row(
                    f"discoLink->JACK, sine device fill {f}", lat, missing, period, f * period,
                    [server.command, sines[f].command, sine_hosts[f].command])
            # the loop, once per jack-host start
            starts = []
            lat, missing = match(events, rig.onsets["loop"])
            starts.append({"start": 1, "frames": stats(lat, 0), "missing": missing,
                           "values": sorted(set(lat))})
            all_loop = list(lat)
            for s in range(2, plan.loop_starts + 1):
                loop_host.stop()
                starts[-1]["jack_host_said"] = loop_host.last("jack-host")
                loop_host = procs.bridge("jack-host", "--id", "Loop:0", "--connect-out",
                                         "dlprobe:loop")
                loop_host.wait_for("ready")
                time.sleep(0.3)
                first, x0 = len(rig.fired), rig.xruns
                rig.start_events()
                time.sleep(plan.loop_s)
                rig.stop_events()
                time.sleep(0.2)
                xruns += rig.xruns - x0
                more, dist = undisturbed(rig.fired[first:], rig.onsets["direct"])
                disturbed += dist
                lat, missing = match(more, rig.onsets["loop"])
                starts.append({"start": s, "frames": stats(lat, 0), "missing": missing,
                               "values": sorted(set(lat))})
                all_loop += lat
            rows["loop"] = latency_row(
                "JACK->discoLink->JACK loop", all_loop, sum(x["missing"] for x in starts),
                period, period, [server.command, loop_dev.command, loop_host.command],
                starts=starts)
            procs.stop_all()
            starts[-1]["jack_host_said"] = loop_host.last("jack-host")
            for f in FILLS:
                rows[f"discolink_to_jack_fill{f}"]["jack_host_said"] = \
                    sine_hosts[f].last("jack-host")
            out["periods"][str(period)] = {
                "server": server.mode, "events": len(fired), "disturbed_events": disturbed,
                "xruns": xruns, "rows": rows, "reported_port_latency": ports,
                "stderr": {p.command: p.err[-3:] for p in procs.history if p.err}}
        except Exception as exc:  # reported, and the next period still runs
            log(f"(a) at {period} frames failed: {exc}")
            out["periods"][str(period)] = {"server": server.mode, "error": f"{exc}",
                                           "children": procs.describe()}
        finally:
            if reader is not None:
                reader.stop()
            host.close()
            procs.stop_all()
            if rig is not None:
                rig.close()
            server.stop()
    return out


def jack_to_discolink(events, reader: LatReader, period: int, command: list[str]) -> dict:
    arrivals = list(reader.arrivals)
    after_start, after_write, offset_moved, late_reads, missing = [], [], 0, 0, 0
    for stamp, t, written, _on in events:
        near = [a for a in arrivals if t <= a[0] < t + EVERY]
        same = [a for a in near if a[1] == stamp - t]
        if not same:
            missing += 1
            offset_moved += bool(near)  # a click arrived, at another offset
            continue
        ft, _offset, queued = same[0]
        if queued > period:  # the reader itself was late: the frame time says nothing
            late_reads += 1
            continue
        after_start.append(ft - t)
        after_write.append(ft - written)
    gaps_us = np.asarray(reader.gaps[1000:] or reader.gaps, np.float64) * 1e6
    row = latency_row("JACK->discoLink (a Host in this process)", after_start, missing,
                      period, period, command)
    row.update({"after_write_frames": stats(after_write, 0), "offset_moved": offset_moved,
                "late_reads": late_reads, "poll_gap_us": stats(gaps_us, 0),
                "note": "frames from the start of the JACK cycle that carried the click (the "
                        "first frame of its block) until the host could read the block; the "
                        "device's own block is the period"})
    return row


def port_latencies(probe) -> dict[str, list[int]]:
    """What the bridges report through JACK's latency API."""
    from bridge.adapters.jack_bridge import _CAPTURE, _PLAYBACK, get_latency

    out = {}
    for name, mode in (("discolink-Lat:in_1", _PLAYBACK), ("discolink-Loop:in_1", _PLAYBACK),
                       ("discolink-host-Loop:out_1", _CAPTURE),
                       ("discolink-host-SineF2:out_1", _CAPTURE)):
        try:
            out[f"{name} ({'playback' if mode == _PLAYBACK else 'capture'})"] = list(
                get_latency(probe.get_port_by_name(name), mode))
        except Exception as exc:
            out[name] = [f"{type(exc).__name__}: {exc}"]
    return out


# ---- (b) DSP load ---------------------------------------------------------------------------

class LoadSampler:
    """client.cpu_load() every 50 ms from an observer client that is never activated."""

    def __init__(self, server: Jackd) -> None:
        self.client = server.client("dlobserver")

    def measure(self, seconds: float) -> tuple[list[float], int, int]:
        loads = []
        t0 = time.monotonic_ns()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
            loads.append(self.client.cpu_load())
        return loads, t0, time.monotonic_ns()

    def close(self) -> None:
        self.client.close()


class Drain:
    """Reads every block of a device, as a host would (for the jack-device graph)."""

    def __init__(self, namespace: str, device_id: str, channels: int, period: int) -> None:
        self.host = Host(namespace)
        self.host.connect(device_id)
        self.blocks = 0
        self._stop = threading.Event()
        self._block = np.zeros((channels, period), np.float32)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        period = self._block.shape[1]
        while not self._stop.is_set():
            if self.host.available_frames() >= period:
                self.host.receive_audio(self._block)
                self.blocks += 1
            else:
                time.sleep(period / SR / 4)

    def close(self) -> dict:
        self._stop.set()
        self.thread.join(timeout=5)
        underruns = self.host.stats.underruns
        self.host.close()
        return {"blocks_read": self.blocks, "underruns": underruns}


GRAPHS = ("idle", "bare", "jack-device", "jack-host")


def bench_load(plan: Plan, namespace: str, tmp: Path) -> dict:
    out: dict[str, Any] = {"periods": {}, "channels": CHANNELS}
    for period in PERIODS:
        log(f"(b) DSP load, {period}-frame period")
        server = Jackd(period, f"b{period}", tmp).start()
        procs = Procs(server.env(namespace))
        sampler = LoadSampler(server)
        acc: dict[str, dict[str, list]] = {g: {"load": [], "wall_us": [], "cpu_us": [],
                                              "xruns": [], "extra": []} for g in GRAPHS}
        commands: dict[str, list[str]] = {}
        errors: list[str] = []
        try:
            sine = procs.bridge("device", "--id", "LoadSine", "--channels", str(CHANNELS))
            sine.wait_for("ready")
            for rnd in range(plan.rounds):
                order = GRAPHS if rnd % 2 == 0 else (GRAPHS[0], *reversed(GRAPHS[1:]))
                for graph in order:
                    try:
                        res = load_graph(graph, plan, server, procs, sampler, namespace,
                                         period, tmp, f"{period}_{rnd}")
                    except Exception as exc:  # reported; the other graphs still run
                        log(f"(b) {graph} at {period} frames, round {rnd + 1}: {exc}")
                        errors.append(f"{graph}, round {rnd + 1}: {exc}")
                        continue
                    a = acc[graph]
                    a["load"] += res["load"]
                    a["wall_us"] += res.get("wall_us", [])
                    a["cpu_us"] += res.get("cpu_us", [])
                    a["xruns"].append(res.get("xruns", 0))
                    if res.get("extra"):
                        a["extra"].append(res["extra"])
                    commands[graph] = [server.command, *res["command"]]
        finally:
            sampler.close()
            procs.stop_all()
            server.stop()
        rows = {}
        for graph, a in acc.items():
            row = {"dsp_load_percent": stats(a["load"], 2), "command": commands.get(graph, []),
                   "xruns": int(sum(a["xruns"]))}
            if graph != "idle":
                row["callback_wall_us"] = stats(a["wall_us"], 1)
                row["callback_cpu_us"] = stats(a["cpu_us"], 1)
            if a["extra"]:
                row["reader"] = a["extra"]
            rows[graph] = row
        bare = rows["bare"]
        for graph in ("jack-device", "jack-host"):
            r = rows[graph]
            r["load_ratio_vs_bare"] = ratio(r["dsp_load_percent"].get("median"),
                                            bare["dsp_load_percent"].get("median"))
            r["load_over_idle_ratio_vs_bare"] = ratio(
                over(r, rows["idle"]), over(bare, rows["idle"]))
            r["callback_ratio_vs_bare"] = ratio(r["callback_wall_us"].get("median"),
                                                bare["callback_wall_us"].get("median"))
            r["callback_cpu_ratio_vs_bare"] = ratio(r["callback_cpu_us"].get("median"),
                                                    bare["callback_cpu_us"].get("median"))
        out["periods"][str(period)] = {"server": server.mode, "rows": rows, "errors": errors,
                                       "period_us": round(period / SR * 1e6, 1)}
    return out


def over(row: dict, idle: dict) -> float | None:
    a, b = row["dsp_load_percent"].get("median"), idle["dsp_load_percent"].get("median")
    return None if a is None or b is None else a - b


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def load_graph(graph: str, plan: Plan, server: Jackd, procs: Procs, sampler: LoadSampler,
               namespace: str, period: int, tmp: Path, tag: str) -> dict:
    """Bring one graph up, measure it, take it down."""
    if graph == "idle":
        loads, _, _ = sampler.measure(plan.load_s)
        return {"load": loads, "command": []}
    timings = tmp / f"{graph}_{tag}.npy"  # the child's callback timings
    drain = None
    if graph == "bare":
        child = procs.child("bare", "--channels", str(CHANNELS), "--out", str(timings))
        command = [child.command]
    elif graph == "jack-device":
        child = procs.child("device", "--id", "Load", "--channels", str(CHANNELS),
                            "--out", str(timings))
        command = [child.command, "(as python -m bridge jack-device --id Load --connect "
                   "system:capture_1 --connect system:capture_2), read by a Host here"]
    else:
        child = procs.child("host", "--id", "LoadSine:0", "--out", str(timings))
        command = ["python -m bridge device --id LoadSine --channels 2", child.command,
                   "(as python -m bridge jack-host --id LoadSine:0 --connect-out "
                   "'system:playback_*')"]
    try:
        child.wait_for("child ready")
        if graph == "jack-device":
            drain = Drain(namespace, "Load:0", CHANNELS, period)
        time.sleep(plan.settle_s)
        loads, t0, t1 = sampler.measure(plan.load_s)
    finally:
        extra = drain.close() if drain is not None else None
        child.stop(timeout=20)
        procs.all.remove(child)
    done = next((ln for ln in child.out if ln.startswith("child done")), None)
    if done is None or not timings.exists():
        raise RuntimeError(f"{child.command} wrote no timings (exit {child.popen.returncode}): "
                           f"{child.out[-3:]} {child.err[-5:]}")
    t = np.load(timings)
    t = t[(t[:, 0] >= t0) & (t[:, 0] <= t1)]
    return {"load": loads, "wall_us": (t[:, 1] / 1e3).tolist(), "cpu_us": (t[:, 2] / 1e3).tolist(),
            "xruns": json.loads(done.split(" ", 2)[2])["xruns"], "extra": extra,
            "command": command}


# ---- the timed clients (--child) ------------------------------------------------------------

class CallbackTimer:
    """Wraps a JACK process callback; keeps (start monotonic ns, wall ns, thread CPU ns) of
    the last TIMER_SLOTS calls in a preallocated array."""

    def __init__(self) -> None:
        self.rows = np.zeros((TIMER_SLOTS, 3), np.int64)
        self.n = 0

    def wrap(self, fn):
        rows, mono, cpu = self.rows, time.monotonic_ns, time.thread_time_ns

        def timed(frames: int) -> None:
            t0, c0 = mono(), cpu()
            fn(frames)
            c1, t1 = cpu(), mono()
            i = self.n % TIMER_SLOTS
            rows[i, 0], rows[i, 1], rows[i, 2] = t0, t1 - t0, c1 - c0
            self.n += 1
        return timed

    def save(self, path: str) -> None:
        n = min(self.n, TIMER_SLOTS)
        np.save(path, self.rows[:n] if self.n <= TIMER_SLOTS else self.rows)


def child_main(args: argparse.Namespace) -> int:
    timer = CallbackTimer()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    n = args.channels
    if args.child == "bare":
        client = jack.Client("dlbare", no_start_server=True)
        ins = [client.inports.register(f"in_{i + 1}") for i in range(n)]
        outs = [client.outports.register(f"out_{i + 1}") for i in range(n)]
        block = np.zeros((n, client.blocksize), np.float32)
        xruns = [0]

        def process(frames: int) -> None:  # the copies the bridges make, nothing else
            for i, port in enumerate(ins):
                block[i] = port.get_array()
            for i, port in enumerate(outs):
                port.get_array()[:] = block[i]

        client.set_process_callback(timer.wrap(process))
        client.set_xrun_callback(lambda _usecs: xruns.__setitem__(0, xruns[0] + 1))
        client.activate()
        for i in range(n):
            client.connect(f"system:capture_{i + 1}", ins[i])
            client.connect(outs[i], f"system:playback_{i + 1}")
        print("child ready", flush=True)
        while not stop.wait(0.1):
            pass
        finish(timer, args.out, xruns[0])
        client.deactivate()
        client.close()
    else:
        from bridge.adapters.jack_bridge import JackDeviceBridge, JackHostBridge

        if args.child == "device":
            b = JackDeviceBridge(args.id, [f"system:capture_{i + 1}" for i in range(n)],
                                 channels=n)
        else:
            b = JackHostBridge(args.id, connect_out=["system:playback_*"])
        b._process = timer.wrap(b._process)  # _open() hands self._process to JACK
        b.start()
        print("child ready", flush=True)
        threading.Thread(target=lambda: (stop.wait(), b.stop()), daemon=True).start()
        b.run()
        finish(timer, args.out, b.xruns)
        b.close()
    return 0


def finish(timer: CallbackTimer, path: str, xruns: int) -> None:
    """Save the timings and say so, before closing anything (which may take a while)."""
    timer.save(path)
    print("child done " + json.dumps({"xruns": xruns, "callbacks": timer.n}), flush=True)


# ---- report ---------------------------------------------------------------------------------

def jackd_version() -> str:
    """The first line of ``jackd --version``, or "?"."""
    jackd = subprocess.run(["jackd", "--version"], capture_output=True, text=True)
    return (jackd.stdout.splitlines() or ["?"])[0]


def goals(r: dict) -> list[dict]:
    out = []
    for period, p in r.get("latency", {}).get("periods", {}).items():
        if "error" in p:
            out.append({"goal": f"latency at {period} frames", "met": False,
                        "detail": f"the run failed: {p['error'][:300]}"})
            continue
        for key in ("jack_to_discolink", "discolink_to_jack_fill1", "discolink_to_jack_fill2",
                    "loop"):
            row = p["rows"][key]
            if "met" not in row:
                out.append({"goal": f"{row['row']}, {period} frames: <= own + "
                            f"{GOAL_BEYOND_PERIODS} period", "met": False,
                            "detail": f"nothing measured ({row['missing']} missing)"})
                continue
            out.append({"goal": f"{row['row']}, {period} frames: at most "
                        f"{GOAL_BEYOND_PERIODS} period beyond the device's own "
                        f"{row['own_latency_frames']} frames",
                        "met": row["met"] and row["missing"] == 0,
                        "detail": f"max {row['frames']['max']:.0f} frames (median "
                        f"{row['frames']['median']:.0f}) = own {row['beyond_own_frames']:+d} "
                        f"({row['beyond_own_periods']} periods), {row['missing']} missing"})
    return out


def table(r: dict) -> str:
    m = r["machine"]
    lines = [f"discoLink JACK benchmark ({'quick' if r['quick'] else 'full'} run, {r['date']}):"
             f" {m['nproc']} cores, Python {m['python']}, {m['jackd']}, JACK-Client "
             f"{m['jack_client']}, load {m['loadavg_at_start']}",
             f"command: {r['command']}"]
    if "latency" in r:
        lines += ["", f"(a) Latency in frames at {SR} Hz, JACK frame time of one server "
                  "(stamp = cycle start + offset of the click / note on); own = the device's "
                  "own block latency; goal: max <= own + 1 period"]
        for period, p in r["latency"]["periods"].items():
            if "error" in p:
                lines.append(f"  {period}-frame period, jackd {p['server']}: FAILED: "
                             f"{p['error']}")
                lines.append(f"    children: {p['children']}")
                continue
            lines.append(f"  {period}-frame period, jackd {p['server']}, {p['events']} events, "
                         f"{p['disturbed_events']} left out of the bridge rows (the pure JACK "
                         f"path missed its cycle), {p['xruns']} xruns reported to dlprobe")
            lines.append(f"    {'row':<44}{'median':>7}{'min':>6}{'max':>6}{'own':>6}"
                         f"{'beyond':>8}{'miss':>6}")
            for row in p["rows"].values():
                f = row["frames"]
                lines.append(f"    {row['row']:<44}{fmt(f.get('median'), '.0f'):>7}"
                             f"{fmt(f.get('min'), '.0f'):>6}{fmt(f.get('max'), '.0f'):>6}"
                             f"{row['own_latency_frames']:>6}"
                             f"{fmt(row.get('beyond_own_frames'), '+.0f'):>8}{row['missing']:>6}")
            j = p["rows"]["jack_to_discolink"]
            lines.append(f"    JACK->discoLink: frames from the click's cycle start until the "
                         f"block is readable (above); after the write: median "
                         f"{fmt(j['after_write_frames'].get('median'), '.0f')}, max "
                         f"{fmt(j['after_write_frames'].get('max'), '.0f')}; clicks at "
                         f"another offset: {j['offset_moved']}; host poll gap median "
                         f"{fmt(j['poll_gap_us'].get('median'), '.0f')} us, p95 "
                         f"{fmt(j['poll_gap_us'].get('p95'), '.0f')} us; {j['late_reads']} "
                         "late reads left out")
            starts = p["rows"]["loop"]["starts"]
            lines.append("    loop, frames per jack-host start (distinct values): " + "; ".join(
                f"#{s['start']}: {'/'.join(str(v) for v in s['values']) or 'n/a'}"
                for s in starts))
            for s in starts:
                lines.append(f"      #{s['start']} {s.get('jack_host_said', '')}")
            lines.append("    reported by the bridges through JACK's latency API: " + ", ".join(
                f"{k} {v}" for k, v in p["reported_port_latency"].items()))
            for row in p["rows"].values():
                lines.append(f"    {row['row']}: " + " ; ".join(row["command"]))
    if "load" in r:
        lines += ["", f"(b) DSP load as JACK reports it (observer client, cpu_load() every "
                  f"50 ms) and per-callback time of each client, {r['load']['channels']} "
                  "channels; medians (p95)"]
        for period, p in r["load"]["periods"].items():
            lines.append(f"  {period}-frame period ({p['period_us']} us), jackd {p['server']}")
            lines.append(f"    {'graph':<13}{'DSP load %':>16}{'callback us':>18}"
                         f"{'cpu us':>16}{'xruns':>7}{'load/bare':>10}{'cb/bare':>9}")
            for graph, row in p["rows"].items():
                d = row["dsp_load_percent"]
                cb = row.get("callback_wall_us", {})
                cpu = row.get("callback_cpu_us", {})
                lines.append(
                    f"    {graph:<13}{fmt(d.get('median'), '.2f'):>8} ({fmt(d.get('p95'), '.2f')})"
                    f"{fmt(cb.get('median')):>10} ({fmt(cb.get('p95'))})"
                    f"{fmt(cpu.get('median')):>8} ({fmt(cpu.get('p95'))})"
                    f"{row['xruns']:>7}{fmt(row.get('load_ratio_vs_bare'), '.2f'):>10}"
                    f"{fmt(row.get('callback_ratio_vs_bare'), '.2f'):>9}")
            for graph, row in p["rows"].items():
                if row["command"]:
                    lines.append(f"    {graph}: " + " ; ".join(row["command"]))
            for e in p["errors"]:
                lines.append(f"    FAILED: {e}")
    lines += load_lines(r.get("section_load", {}), m["nproc"])
    if r["goals"]:
        lines += ["", "Goals", *goal_lines(r["goals"])]
        if "load" in r:
            lines.append("    DSP load: no threshold in the issue; see the ratios to the bare "
                         "client in (b)")
    return "\n".join(lines)


def headline(r: dict) -> dict:
    out: dict[str, Any] = {}
    if "latency" in r:
        out["latency_frames"] = {
            period: {k: {"median": row["frames"].get("median"), "max": row["frames"].get("max"),
                         "own": row["own_latency_frames"],
                         "beyond": row.get("beyond_own_frames")}
                     for k, row in p["rows"].items()}
            for period, p in r["latency"]["periods"].items() if "rows" in p}
    if "load" in r:
        out["dsp_load_percent"] = {
            period: {g: row["dsp_load_percent"].get("median") for g, row in p["rows"].items()}
            for period, p in r["load"]["periods"].items()}
        out["callback_us"] = {
            period: {g: row["callback_wall_us"].get("median") for g, row in p["rows"].items()
                     if "callback_wall_us" in row}
            for period, p in r["load"]["periods"].items()}
    return out


SECTIONS = {"a": "latency", "b": "load"}


def run(plan: Plan, namespace: str, only: str, command: str, tmp: Path) -> dict:
    results: dict[str, Any] = {
        "quick": plan.quick, "namespace": namespace, "command": command,
        "machine": machine(jackd=jackd_version(),
                           jack_client=importlib.metadata.version("JACK-Client"),
                           numpy=np.__version__),
        "date": utc_date(),
        "section_load": {}}
    t0 = time.monotonic()
    sections = {"latency": bench_latency, "load": bench_load}
    run_sections(results, only, {letter: (key, functools.partial(sections[key], plan,
                                                                 namespace, tmp))
                                 for letter, key in SECTIONS.items()})
    results["goals"] = goals(results)
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    return {**headline(results), **results}


def main(argv: list[str] | None = None) -> int:
    p = arg_parser(__doc__, "short run (under 40 s)", "".join(SECTIONS), "a")
    p.add_argument("--child", choices=("bare", "device", "host"), help=argparse.SUPPRESS)
    p.add_argument("--id", help=argparse.SUPPRESS)
    p.add_argument("--channels", type=int, default=CHANNELS, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)
    if set(args.only) - set(SECTIONS):
        p.error(f"--only takes letters from {''.join(SECTIONS)}")
    sys.setswitchinterval(0.0005)  # JACK callbacks in this process wait for the GIL
    command = ".venv/bin/python bench/jack.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    plan = Plan.make(args.quick)

    def run_in_tmp(namespace: str) -> dict:
        with tempfile.TemporaryDirectory(prefix="dlbench-jack-") as tmp:
            return run(plan, namespace, args.only, command.strip(), Path(tmp))

    return run_in_namespace(run_in_tmp, table, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
