"""Plugin benchmark: the device loop around a plugin (pedalboard's VST3, or LV2 through lilv)
against calling the plugin itself; LV2's per-block binding cost and ``plugin scan`` times.

Run from the repository root (the test plugins come from ``bash plugins/build.sh``):

    .venv/bin/python bench/plugin.py            # full run (about 1 min), human table
    .venv/bin/python bench/plugin.py --quick    # shorter run, under 40 s
    .venv/bin/python bench/plugin.py --json     # one JSON object on stdout (table on stderr)
    .venv/bin/python bench/plugin.py --only a --profile   # (a) with a cProfile of the device

(a) Per-block cost of the device loop around a plugin, against the same plugin called
    directly, in one process (no scheduling in it: this is the CPU cost of the code). The
    device side is a real ``Device`` with ``InstrumentDevice(device, PluginChain(stages))``
    and the chain's command handler, as ``python -m bridge device --plugin`` wires it, driven
    by ``DeviceRunner.step()`` (the demand loop's body: ``process_commands``, the fill check,
    ``InstrumentDevice`` -> ``MidiStream.take`` -> ``PluginChain.render`` -> ``Stage.render``
    -> the plugin call, ``send_audio``), with fill 1 so that each step renders exactly one
    block. A ``Host`` in this process claims it, sends the block's MIDI before each step and
    reads each block after it (both untimed). The baseline is a second instance of the same
    plugin called bare, ``plugin(midi, duration=frames/sr, sample_rate=sr, num_channels=N,
    buffer_size=frames, reset=False)`` (and ``effect.process(y, sr, buffer_size=frames,
    reset=False)`` for a chain), with the same MIDI at the same sample offsets; the two are
    timed alternately, block by block (the order flips every block), so they share the
    noise. Every block the host receives is compared with the direct output: the test
    plugins are deterministic, so they must be identical. Workload: 8 notes held from the
    first block, and a 9th note on every 4th block and off two blocks later. Rows: DLSine at
    64, 256 and 1024 frames, DLSine12 (12 outputs) at 256, and DLSine -> DragonflyPlateReverb
    at 256. Goal: median overhead <= 10% at 256 frames with DLSine. A second, instrumented
    pass splits the device's block into process_commands, the render callback (take + chain
    + stage + plugin) and send_audio.
    LV2 rows: the LV2 build of DLSine (``lv2:DLSine``) at 64 and 256 frames, DLSine12 at
    256, and DLSine -> x42's parametric EQ (fil4) at 256. Their direct side calls each
    instance's ``run()`` through lilv with no chain around it: this block's MIDI written into
    the atom sequence, then the block call (bridge/adapters/_lv2host.c: run, worker
    responses, end_run). Goal: at most 5 us more per 256-frame block than that.
(b) Note-to-sound through a plugin device, ``python -m bridge device --plugin DLSine.vst3``
    in its own process, and the sine device (``python -m bridge device``) in the same run:
    this process is the host, reads in real time (paced by sleep, SCHED_FIFO when granted),
    sends NoteOn at offset 0 at known block boundaries; latency is the first sample above
    1e-4 minus the send position. 64 and 256 frames, fill 2 and 1. Goal, as in
    bench/transport.py: <= fill x block + 1 ms.
    The LV2 DLSine device (``--plugin lv2:DLSine``) is measured the same way, same goal.
(c) CPU of an idle plugin device (no host) from /proc/<pid>/stat utime+stime over 10 s (5 s
    with --quick), with the sine device idling beside it in the same window. Goal: <= 2%.
(d) ``plugin scan --json`` of every LV2 plugin installed (Debian's x42, LSP and swh, and the
    test plugins in build/plugins/lv2), cold (an empty cache: every bundle probed in a child
    that instantiates and runs each plugin) and then cached, as separate CLI processes.
(e) LV2 binding cost per block, in one process, on DL Null Gain (a stereo gain: its run() is
    ~0.1 us of work at 256 frames): the block call through our C module's METH_FASTCALL
    function (what the device uses), the same C function through ctypes, and the plugin's
    ``run`` function pointer called straight through ctypes (the bare binding, no worker).
(f) The autosave snapshot: ``PluginChain.get_state()``, which a device with ``--state`` takes
    on its audio thread after a change (at most once a second; a thread of its own writes
    the file), against one 256-frame block of the same chain, the two alternated. Rows:
    VST3 and LV2 DLSine, x42 fil4 (lilv state, port values only), DL File State (a file made
    through state:makePath and carried in the state: a few bytes, then padded to 4 MiB) and
    x42's convolver with its impulse response (a path, by the worker). No goal: the numbers
    say how long the block that takes the snapshot is late.

Every section reports the CPU other processes used while it ran (``section_load``). Goals are
PASS/FAIL lines; a missed goal never changes the exit status.
"""

from __future__ import annotations

import contextlib
import cProfile
import dataclasses
import gc
import importlib.metadata
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import (
    REPO,
    CliDevice,
    CpuWindow,
    arg_parser,
    connect_in_process,
    fmt,
    goal_lines,
    load_lines,
    log,
    machine,
    median_p95,
    note_onsets,
    parse_args,
    profile_top,
    ratio,
    run_in_namespace,
    run_sections,
    utc_date,
)

from bridge.adapters import _lv2host
from bridge.adapters.instrument import InstrumentDevice
from bridge.adapters.lv2 import Lv2Stage
from bridge.adapters.plugin_device import PluginChain
from bridge.adapters.plugin_scan import captured_stderr
from bridge.adapters.stage import Stage, load_stage
from bridge.midi.event import MidiEvent
from bridge.transport import Device, DeviceRunner, Host, cmd
from bridge.transport.clock import DEFAULT_RT_PRIORITY

# The LV2 test plugins first on the LV2 path, as tests/conftest.py does.
LV2_PATH = os.pathsep.join([str(REPO / "build" / "plugins" / "lv2"),
                            os.environ.get("LV2_PATH") or os.pathsep.join(
                                [os.path.expanduser("~/.lv2"), "/usr/local/lib/lv2",
                                 "/usr/lib/lv2"])])
os.environ["LV2_PATH"] = LV2_PATH

SR = 48000
DLSINE = "build/plugins/DLSine.vst3"
LV2_DLSINE = "lv2:DLSine"
LV2_DLSINE12 = "lv2:DLSine12"
LV2_FIL4 = "lv2:http://gareus.org/oss/lv2/fil4#stereo"
LV2_GAIN = "lv2:urn:discolink-bridge:lv2test:gain"
LV2_FILE_STATE = "lv2:urn:discolink-bridge:lv2test:file-state"
LV2_ZCONV = "lv2:http://gareus.org/oss/lv2/zeroconvolv#Stereo"
GOAL_LV2_OVERHEAD_US = 5.0  # (a): LV2 device loop at most this much over run(), 256 frames
DLSINE12 = "build/plugins/DLSine12.vst3"
PLATE = "build/plugins/DragonflyPlateReverb.vst3"
GOAL_OVERHEAD = 0.10  # (a): device loop at most 10% over the bare plugin call, 256 frames
GOAL_FRAMES = 256
GOAL_IDLE_PERCENT = 2.0  # (c)
ONSET_THRESHOLD = 1e-4
HELD_NOTES = 8
RT_PRIORITY = DEFAULT_RT_PRIORITY  # (b)'s host loop, like the CLI host

# (a) rows: key -> (specs, frames)
ROWS: dict[str, tuple[tuple[str, ...], int]] = {
    "dlsine_64": ((DLSINE,), 64),
    "dlsine_256": ((DLSINE,), 256),
    "dlsine_1024": ((DLSINE,), 1024),
    "dlsine12_256": ((DLSINE12,), 256),
    "dlsine_plate_256": ((DLSINE, PLATE), 256),
    "lv2_dlsine_64": ((LV2_DLSINE,), 64),
    "lv2_dlsine_256": ((LV2_DLSINE,), 256),
    "lv2_dlsine12_256": ((LV2_DLSINE12,), 256),
    "lv2_dlsine_fil4_256": ((LV2_DLSINE, LV2_FIL4), 256),
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much each section does; --quick shrinks counts and durations."""

    quick: bool
    blocks: int  # (a) measured blocks per row (each timed twice: device and direct)
    chunks: int  # (a) the blocks are split into this many chunks to show the spread
    warmup: int  # (a) blocks before measuring
    part_blocks: int  # (a) blocks of the instrumented pass
    profile_blocks: int  # --profile
    notes: int  # (b) per row
    idle_s: float  # (c)

    @staticmethod
    def make(quick: bool) -> Plan:
        if quick:
            return Plan(True, 1500, 3, 100, 500, 1000, 8, 5.0)
        return Plan(False, 6000, 6, 300, 2000, 3000, 20, 10.0)


# ---- helpers -------------------------------------------------------------------------------


def stats_us(ns: np.ndarray) -> dict[str, float]:
    """Median, p95, min and mean of nanosecond samples, in microseconds."""
    return median_p95(ns, "us", 2, ("min", "mean"))


def plugin_chatter(lines: list[str]) -> list[str]:
    """Distinct lines a plugin printed, with counts (for the report)."""
    counts: dict[str, int] = {}
    for line in lines:
        line = line.replace("\x1b[31m", "").replace("\x1b[0m", "").strip()
        if line:
            counts[line] = counts.get(line, 0) + 1
    return [f"{n}x {line}" for line, n in counts.items()]


# ---- (a) per-block overhead ----------------------------------------------------------------


def load(spec: str, frames: int) -> Stage:
    """One stage, as ``build_chain`` (the CLI device) loads it."""
    return load_stage(spec, sample_rate=SR, block_size=frames)


def block_midi(k: int, frames: int) -> list[tuple[int, bytes]]:
    """Block ``k``'s events (offset, bytes): 8 notes held from block 0, a 9th on every 4th
    block at a quarter of the block and off two blocks later at half of it."""
    if k == 0:
        return [(0, bytes((0x90, 48 + 3 * i, 100))) for i in range(HELD_NOTES)]
    if k % 4 == 0:
        return [(frames // 4, bytes((0x90, 81, 90)))]
    if k % 4 == 2:
        return [(frames // 2, bytes((0x80, 81, 0)))]
    return []


def as_command(offset: int, data: bytes) -> Any:
    status, ch = data[0] & 0xF0, data[0] & 0x0F
    if status == 0x90:
        return cmd.midi_note_on(ch, data[1], data[2], offset)
    return cmd.midi_note_off(ch, data[1], data[2], offset)


class Rig:
    """One (a) row: the device side (Device + InstrumentDevice(PluginChain), a Host claiming
    it, DeviceRunner with fill 1) and the direct side (second instances of the plugins)."""

    def __init__(self, namespace: str, name: str, specs: tuple[str, ...], frames: int,
                 chatter: list[str]) -> None:
        self.frames = frames
        self.specs = specs
        with captured_stderr() as lines:
            stages = [load(s, frames) for s in specs]
            direct = [load(s, frames) for s in specs]
        chatter.extend(lines)
        self.chain = PluginChain(stages, SR, frames)
        self.channels = self.chain.channels
        self.direct_stages = direct
        self.lv2 = isinstance(direct[0], Lv2Stage)
        self.direct_plugins = [] if self.lv2 else [st.plugin for st in direct]
        self.device = Device(namespace)
        self.host = Host(namespace)
        try:
            with captured_stderr() as lines:  # pedalboard's reset() reloads the component
                self._connect(name)
        except BaseException:
            self.close()
            raise
        finally:
            chatter.extend(lines)
        self.out = np.zeros((self.channels, frames), np.float32)

    def _connect(self, name: str) -> None:
        dev, chain = self.device, self.chain
        dev.start(name, self.channels, SR, self.frames)
        chain.report = dev.report_error
        self.wiring = InstrumentDevice(dev, chain)
        dev.on_command(chain.handle)  # as bridge/cli/device.py wires a plugin device
        self.runner = DeviceRunner(dev, self.wiring, fill=1)
        connect_in_process(self.host, dev.id, SR, self.frames, dev.process_commands,
                           prime_timeout=0.0)
        dev.process_commands()  # the claim: InstrumentDevice resets the chain's plugins
        for p in self.direct_plugins:
            p.reset()  # the same state on the direct side (fresh LV2 instances already are)

    def direct_fn(self) -> Callable[[list], np.ndarray]:
        """The bare call(s) on the second instances, for one block's (bytes, seconds) MIDI;
        for LV2, one block's MidiEvents."""
        frames, channels, dur = self.frames, self.channels, self.frames / SR
        if self.lv2:
            return self._direct_lv2()
        first, *effects = self.direct_plugins
        if not effects:
            def direct(midi: list) -> np.ndarray:
                return first(midi, duration=dur, sample_rate=SR, num_channels=channels,
                             buffer_size=frames, reset=False)
            return direct
        (fx,) = effects

        def direct_chain(midi: list) -> np.ndarray:
            y = first(midi, duration=dur, sample_rate=SR, num_channels=2, buffer_size=frames,
                      reset=False)
            return fx.process(y, SR, buffer_size=frames, reset=False)
        return direct_chain

    def _direct_lv2(self) -> Callable[[list], np.ndarray]:
        """Each instance's run() through lilv, nothing around it: the block's MIDI into the
        instrument's atom sequence, the block call, an effect's input copied in."""
        frames = self.frames
        first, *effects = self.direct_stages
        run = _lv2host.run

        def direct(events: list) -> np.ndarray:
            first._write_midi(events, frames)
            run(first._run_address, frames)
            y = first._audio_out[:first.outputs, :frames]
            for fx in effects:
                np.copyto(fx._audio_in[:y.shape[0], :frames], y)
                run(fx._run_address, frames)
                y = fx._audio_out[:fx.outputs, :frames]
            return y
        return direct

    def schedule(self, start: int, n: int) -> tuple[list[list], list[list]]:
        """Host commands and direct-call MIDI for blocks start .. start + n - 1."""
        commands, midi = [], []
        for k in range(start, start + n):
            evs = block_midi(k, self.frames)
            commands.append([as_command(o, d) for o, d in evs])
            if self.lv2:
                midi.append([MidiEvent(o, d) for o, d in evs])
            else:
                midi.append([(d, (o + 0.5) / SR) for o, d in evs])  # as Stage.render does
        return commands, midi

    def run(self, start: int, n: int, record: bool) -> dict[str, Any]:
        """Blocks start .. start + n - 1, device step and direct call alternately timed."""
        commands, midi = self.schedule(start, n)
        direct = self.direct_fn()
        send, receive, out = self.host.send_command, self.host.receive_audio, self.out
        step = self.runner.step
        ns = time.perf_counter_ns
        dev_ns = np.zeros(n, np.int64)
        dir_ns = np.zeros(n, np.int64)
        mismatches = short = 0
        for i in range(n):
            for m in commands[i]:
                if not send(m):
                    raise RuntimeError(f"send_command failed: {self.host.stats.last_error}")
            events = midi[i]
            if (start + i) & 1:
                t0 = ns()
                y = direct(events)
                t1 = ns()
                rendered = step()
                t2 = ns()
                dir_ns[i], dev_ns[i] = t1 - t0, t2 - t1
            else:
                t0 = ns()
                rendered = step()
                t1 = ns()
                y = direct(events)
                t2 = ns()
                dev_ns[i], dir_ns[i] = t1 - t0, t2 - t1
            if rendered != 1:
                raise RuntimeError(f"DeviceRunner.step rendered {rendered} blocks, not 1")
            if receive(out) != self.frames:
                short += 1
            elif not np.array_equal(out, y):
                mismatches += 1
        if not record:
            return {}
        return {"device_ns": dev_ns, "direct_ns": dir_ns, "mismatches": mismatches,
                "short_reads": short}

    def run_parts(self, start: int, n: int) -> dict[str, np.ndarray]:
        """The instrumented pass: the device's block timed in parts (as DeviceRunner.step
        does them), the direct call alternating with it."""
        commands, midi = self.schedule(start, n)
        direct = self.direct_fn()
        dev, wiring, block = self.device, self.wiring, self.runner._buffer()
        send, receive, out = self.host.send_command, self.host.receive_audio, self.out
        ns = time.perf_counter_ns
        parts = {k: np.zeros(n, np.int64) for k in
                 ("process_commands", "render_callback", "send_audio", "direct")}
        pc, rc, sa, dr = (parts[k] for k in parts)
        for i in range(n):
            for m in commands[i]:
                send(m)
            events = midi[i]
            if (start + i) & 1:
                t0 = ns()
                direct(events)
                dr[i] = ns() - t0
            t0 = ns()
            dev.process_commands()
            t1 = ns()
            wiring(block)
            t2 = ns()
            dev.send_audio(block)
            t3 = ns()
            pc[i], rc[i], sa[i] = t1 - t0, t2 - t1, t3 - t2
            if not (start + i) & 1:
                t0 = ns()
                direct(events)
                dr[i] = ns() - t0
            receive(out)
        return parts

    def profile(self, start: int, n: int) -> dict:
        """cProfile of DeviceRunner.step over ``n`` blocks: top functions by own time."""
        commands, _ = self.schedule(start, n)
        send, receive, out = self.host.send_command, self.host.receive_audio, self.out
        step = self.runner.step
        prof = cProfile.Profile()
        for i in range(n):
            for m in commands[i]:
                send(m)
            prof.enable()
            step()
            prof.disable()
            receive(out)
        total, top = profile_top(prof)
        rows = [{"function": where, "calls_per_block": round(ncalls / n, 2),
                 "own_us_per_block": round(tottime / n * 1e6, 2),
                 "own_share": round(tottime / total, 3),
                 "cumulative_share": round(cumtime / total, 3)}
                for where, ncalls, tottime, cumtime in top]
        return {"profiled_us_per_block": round(total / n * 1e6, 2), "blocks": n, "top": rows}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.host.close()
        with contextlib.suppress(Exception):
            self.device.close()
        if self.chain is not None:
            self.chain.close()
        for st in self.direct_stages:
            st.close()
        self.wiring = self.runner = self.chain = None  # type: ignore[assignment]
        self.direct_plugins = []
        self.direct_stages = []


def command_a(specs: tuple[str, ...], frames: int, channels: int) -> str:
    chain = ", ".join(f"load_stage({s!r})" for s in specs)
    if specs[0].startswith("lv2:"):
        direct = (f"write the block's MIDI into the atom sequence; _lv2host.run(instance, "
                  f"{frames})" + (" -> copy into the effect's inputs; _lv2host.run(effect, "
                                  f"{frames})" if len(specs) > 1 else ""))
        return (f"in-process: DeviceRunner(Device('{channels} ch, {frames} frames'), "
                f"InstrumentDevice(device, PluginChain([{chain}])), fill=1).step() vs "
                f"{direct} on second instances")
    direct = (f"plugin(midi, duration={frames}/{SR}, sample_rate={SR}, "
              f"num_channels={2 if len(specs) > 1 else channels}, buffer_size={frames}, "
              "reset=False)")
    if len(specs) > 1:
        direct += f" -> effect.process(y, {SR}, buffer_size={frames}, reset=False)"
    return (f"in-process: DeviceRunner(Device('{channels} ch, {frames} frames'), "
            f"InstrumentDevice(device, PluginChain([{chain}])), fill=1).step() vs {direct} "
            "on second instances")


def bench_overhead(plan: Plan, namespace: str, profile: bool) -> dict:
    rows: dict[str, dict] = {}
    chatter: list[str] = []
    log(f"(a) device loop vs direct plugin call: {len(ROWS)} rows, {plan.blocks:,} blocks each")
    for key, (specs, frames) in ROWS.items():
        rig = Rig(namespace, f"Bench{key.split('_')[0]}", specs, frames, chatter)
        try:
            gc.freeze()  # as DeviceRunner.enter_realtime does
            rig.run(0, plan.warmup, record=False)
            r = rig.run(plan.warmup, plan.blocks, record=True)
            parts = rig.run_parts(plan.warmup + plan.blocks, plan.part_blocks)
            prof = None
            if profile and frames == GOAL_FRAMES and specs in ((DLSINE,), (LV2_DLSINE,)):
                log(f"(a) profiling DeviceRunner.step, {plan.profile_blocks} blocks")
                prof = rig.profile(plan.warmup + plan.blocks + plan.part_blocks,
                                   plan.profile_blocks)
            errors, last_error = rig.device.errors, rig.device.last_error
            nonfinite = rig.chain.nonfinite_blocks
            channels = rig.channels
        finally:
            with captured_stderr() as lines:  # DPF complains as the instances are freed
                rig.close()
                del rig
                gc.unfreeze()
                gc.collect()
            chatter.extend(lines)
        dev, direct = r["device_ns"], r["direct_ns"]
        per_block = dev / direct  # paired: the two calls of the same block, back to back
        chunk_ratios = [round(float(np.median(c)), 3)
                        for c in np.array_split(per_block, plan.chunks)]
        d, b = stats_us(dev), stats_us(direct)
        overhead = float(np.median(dev - direct)) / 1e3
        med_parts = {k: round(float(np.median(v)) / 1e3, 2) for k, v in parts.items()}
        row = {
            "specs": list(specs), "frames": frames, "channels": channels,
            "block_period_us": round(frames / SR * 1e6, 1),
            "command": command_a(specs, frames, channels),
            "device": d, "direct": b,
            "overhead_us": round(overhead, 2),
            "overhead_ratio": round(float(np.median(per_block)), 3),
            "ratio_of_medians": ratio(d["median_us"], b["median_us"]),
            "p95_ratio": ratio(d["p95_us"], b["p95_us"]),
            "chunk_ratios": chunk_ratios,
            "device_fraction_of_period": round(d["median_us"] / (frames / SR * 1e6), 4),
            "identical_blocks": plan.blocks - r["mismatches"] - r["short_reads"],
            "mismatched_blocks": r["mismatches"], "short_reads": r["short_reads"],
            "device_errors": errors, "device_last_error": last_error,
            "nonfinite_blocks": nonfinite,
            "parts_median_us": {
                **med_parts,
                "callback_minus_direct": round(med_parts["render_callback"]
                                               - med_parts["direct"], 2),
                "blocks": plan.part_blocks}}
        if prof is not None:
            row["profile"] = prof
        rows[key] = row
        log(f"(a) {key}: device {d['median_us']:.1f} us, direct {b['median_us']:.1f} us, "
            f"ratio {fmt(row['overhead_ratio'])}")
    return {"rows": rows, "blocks": plan.blocks, "warmup_blocks": plan.warmup,
            "chunks": plan.chunks, "plugin_stderr": plugin_chatter(chatter)}


# ---- CLI devices: (b) and (c) ------------------------------------------------------------------


DEVICES = {"sine": (), "plugin": ("--plugin", DLSINE), "lv2": ("--plugin", LV2_DLSINE)}


def note_to_sound(plan: Plan, namespace: str, kind: str, block: int, fill: int) -> dict:
    """``note_onsets`` through a CLI device of ``kind`` (DLSine stops dead at its note-off)."""
    dev = CliDevice(namespace, f"N{kind}{block}f{fill}", *DEVICES[kind], "--blocksize",
                    str(block), "--fill", str(fill), capture_stderr=True)
    with dev:
        run = note_onsets(namespace, dev.id, block, plan.notes, sample_rate=SR,
                          rt_priority=RT_PRIORITY, threshold=ONSET_THRESHOLD)
    frames, refused = run["frames"], run["host_rt"]
    missed, noisy, underruns = run["missed"], run["not_silent_before"], run["underruns"]
    goal = fill * block / SR * 1000.0 + 1.0
    f = np.asarray(frames)
    ms = f / SR * 1000.0
    result: dict[str, Any] = {
        "device": kind, "block": block, "fill": fill, "notes": plan.notes,
        "measured": int(f.size), "missed": missed, "not_silent_before": noisy,
        "underruns": underruns, "host_rt": refused or f"SCHED_FIFO {RT_PRIORITY}",
        "fill_x_block_frames": fill * block, "goal_ms": round(goal, 3), "command": dev.shown}
    if f.size:
        result.update(median_frames=int(np.median(f)), min_frames=int(f.min()),
                      max_frames=int(f.max()), median_ms=round(float(np.median(ms)), 3),
                      max_ms=round(float(ms.max()), 3), over_goal=int((ms > goal).sum()))
    result["met"] = bool(f.size == plan.notes and ms.max() <= goal)
    return result


def bench_note_to_sound(plan: Plan, namespace: str) -> dict:
    out: dict[str, dict] = {}
    for block in (64, 256):
        for fill in (2, 1):
            for kind in DEVICES:  # sine first, then the plugin devices, back to back
                log(f"(b) note-to-sound: {kind} device, {block} frames, fill {fill}")
                out.setdefault(str(block), {}).setdefault(f"fill_{fill}", {})[kind] = \
                    note_to_sound(plan, namespace, kind, block, fill)
    return out


def bench_idle(plan: Plan, namespace: str) -> dict:
    """The plugin device and the sine device, both unclaimed, measured in the same window."""
    log(f"(c) idle CPU: plugin device and sine device side by side for {plan.idle_s:.0f} s")
    devs = {kind: CliDevice(namespace, f"Idle{kind}", *args, capture_stderr=True)
            for kind, args in DEVICES.items()}
    with contextlib.ExitStack() as running:
        for d in devs.values():
            running.enter_context(d)
        time.sleep(0.5)  # past start-up
        windows = {kind: CpuWindow(d.pid) for kind, d in devs.items()}
        time.sleep(plan.idle_s)
        rows = {kind: {**w.finish(), "command": devs[kind].shown}
                for kind, w in windows.items()}
    return {"rows": rows, "seconds": plan.idle_s,
            "plugin_stderr": plugin_chatter(devs["plugin"].stderr_lines)}


# ---- report -------------------------------------------------------------------------------


def goals(r: dict) -> list[dict]:
    out = []
    if "overhead" in r:
        row = r["overhead"]["rows"].get(f"dlsine_{GOAL_FRAMES}")
        if row is not None:
            out.append({"goal": f"device loop <= {1 + GOAL_OVERHEAD:.2f}x the direct plugin "
                        f"call, DLSine, {GOAL_FRAMES} frames (median)",
                        "met": row["overhead_ratio"] <= 1 + GOAL_OVERHEAD,
                        "detail": f"{row['device']['median_us']:.1f} vs "
                        f"{row['direct']['median_us']:.1f} us = {row['overhead_ratio']:.3f}x "
                        f"(+{row['overhead_us']:.1f} us); chunks "
                        f"{min(row['chunk_ratios']):.3f}..{max(row['chunk_ratios']):.3f}x"})
        row = r["overhead"]["rows"].get(f"lv2_dlsine_{GOAL_FRAMES}")
        if row is not None:
            out.append({"goal": f"LV2 device loop <= run() + {GOAL_LV2_OVERHEAD_US:g} us, "
                        f"DLSine, {GOAL_FRAMES} frames (median)",
                        "met": row["overhead_us"] <= GOAL_LV2_OVERHEAD_US,
                        "detail": f"{row['device']['median_us']:.1f} vs "
                        f"{row['direct']['median_us']:.1f} us: +{row['overhead_us']:.1f} us "
                        f"({row['overhead_ratio']:.3f}x)"})
    if "note_to_sound" in r:
        for block, fills in r["note_to_sound"].items():
            for fill, kinds in fills.items():
                sine = kinds["sine"]
                for kind in ("plugin", "lv2"):
                    row = kinds[kind]
                    out.append({"goal": f"{'LV2' if kind == 'lv2' else 'VST3'} plugin device "
                                f"note-to-sound, {block} frames {fill.replace('_', ' ')} <= "
                                "fill x block + 1 ms",
                                "met": row["met"],
                                "detail": f"max {fmt(row.get('max_ms'))} ms "
                                f"({row.get('max_frames', 'n/a')} frames; sine device "
                                f"{sine.get('max_frames', 'n/a')}), goal {row['goal_ms']:.3f} "
                                f"ms, {row['measured']}/{row['notes']} notes"})
    if "idle" in r:
        for kind in ("plugin", "lv2"):
            p = r["idle"]["rows"][kind]
            out.append({"goal": f"idle {'LV2' if kind == 'lv2' else 'VST3'} plugin device CPU "
                        f"<= {GOAL_IDLE_PERCENT:.0f}% of a core",
                        "met": p["cpu_percent"] <= GOAL_IDLE_PERCENT,
                        "detail": f"{p['cpu_percent']:.2f}% (sine device "
                        f"{r['idle']['rows']['sine']['cpu_percent']:.2f}%)"})
    return out


# ---- (d) LV2 scan, (e) LV2 binding cost ----------------------------------------------------


def bench_scan(plan: Plan, namespace: str) -> dict:
    """``plugin scan --json`` of every installed LV2 plugin: cold (empty cache), cached."""
    import json
    import subprocess

    out: dict[str, Any] = {"lv2_path": LV2_PATH}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": tmp, "LV2_PATH": LV2_PATH}
        argv = [sys.executable, "-m", "bridge", "plugin", "scan", "--json"]
        for run_name in ("cold", "cached"):
            log(f"(d) plugin scan, {run_name}")
            t0 = time.monotonic()
            r = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO,
                               timeout=1800)
            seconds = time.monotonic() - t0
            entries = [e for e in json.loads(r.stdout) if e["format"] == "LV2"] \
                if r.returncode == 0 else []
            out[run_name] = {"seconds": round(seconds, 2), "exit": r.returncode,
                             "lv2_plugins": len(entries),
                             "failed": sum(1 for e in entries if e["error"]),
                             "probed": sum(1 for e in entries if e.get("probed"))}
    out["command"] = ("XDG_CACHE_HOME=<empty dir> LV2_PATH=build/plugins/lv2:~/.lv2:"
                      "/usr/local/lib/lv2:/usr/lib/lv2 .venv/bin/python -m bridge plugin scan "
                      "--json   (twice: cold, then cached)")
    return out


def bench_binding(plan: Plan, namespace: str) -> dict:
    """The block call of DL Null Gain three ways, each timed alone over many calls."""
    import ctypes

    from bridge.adapters.lv2 import host_lib

    stage = load(LV2_GAIN, GOAL_FRAMES)
    n = 20000 if plan.quick else 100000
    frames = GOAL_FRAMES
    addr, handle = stage._run_address, stage._handle
    ctypes_call = host_lib().dl_runner_run
    bare = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32)(stage._desc.run)
    fast = _lv2host.run
    ways = {"fastcall_module": lambda: fast(addr, frames),
            "ctypes_runner": lambda: ctypes_call(addr, frames),
            "ctypes_bare_run": lambda: bare(handle, frames)}
    out: dict[str, Any] = {"plugin": LV2_GAIN, "frames": frames, "calls": n}
    ns = time.perf_counter_ns
    try:
        for name, fn in ways.items():
            for _ in range(1000):
                fn()
            samples = np.zeros(50, np.int64)
            per = n // 50
            for k in range(50):  # 50 batches: the median batch, per call
                t0 = ns()
                for _ in range(per):
                    fn()
                samples[k] = (ns() - t0) // per
            out[name] = stats_us(samples)
            log(f"(e) {name}: {out[name]['median_us']:.3f} us per block")
    finally:
        stage.close()
    out["command"] = ("in-process, DL Null Gain at 256 frames: _lv2host.run(runner, 256) | "
                      "ctypes dl_runner_run(runner, 256) | ctypes descriptor->run(handle, 256); "
                      "median of 50 batches, per call")
    return out


def bench_snapshot(plan: Plan, namespace: str) -> dict:
    """The autosave snapshot (``PluginChain.get_state``, which the device takes on its audio
    thread after a change, at most once a second) against one 256-frame block of the same
    chain, alternated, and against the block period."""
    from bridge.adapters.plugin_device import PluginChain, state_json

    frames, n = GOAL_FRAMES, 30 if plan.quick else 200
    rows = {"vst3_dlsine": ((DLSINE,), {}), "lv2_dlsine": ((LV2_DLSINE,), {}),
            "lv2_fil4": ((LV2_FIL4,), {}),
            "lv2_file_state": ((LV2_FILE_STATE,), {"mark": 5.0}),
            "lv2_file_state_4mib": ((LV2_FILE_STATE,), {"mark": 5.0, "pad_mib": 4.0}),
            "lv2_zeroconvolv": ((LV2_ZCONV,), {})}
    out: dict[str, Any] = {"frames": frames, "snapshots": n, "rows": {}}
    ns = time.perf_counter_ns
    for key, (specs, params) in rows.items():
        stages = [load(spec, frames) for spec in specs]
        try:
            if key == "lv2_zeroconvolv":
                stages[0].load_preset("No-OP Stereo")  # an impulse response, by the worker
            for name, value in params.items():
                stages[0].set(name, value)
            chain = PluginChain(stages, SR, frames)
            block = np.zeros((chain.channels, frames), np.float32)
            noise = np.random.default_rng(0).standard_normal(block.shape).astype(np.float32)
            for _ in range(20):
                chain.render(block, [], noise)
            snap, render, dump = (np.zeros(n, np.int64) for _ in range(3))
            size = 0
            for k in range(n):
                t0 = ns()
                chain.render(block, [], noise)
                t1 = ns()
                state = chain.get_state()
                t2 = ns()
                size = len(state_json(state))
                dump[k] = ns() - t2
                render[k], snap[k] = t1 - t0, t2 - t1
            row = {"snapshot": stats_us(snap), "block": stats_us(render),
                   "json_writer": stats_us(dump), "json_bytes": size}
            row["ratio_to_block"] = round(row["snapshot"]["median_us"]
                                          / max(row["block"]["median_us"], 1e-3), 2)
            row["fraction_of_period"] = round(row["snapshot"]["median_us"] * 1e-6 * SR
                                              / frames, 4)
            out["rows"][key] = {"chain": " -> ".join(specs), "params": params, **row}
            log(f"(f) {key}: snapshot {row['snapshot']['median_us']:.1f} us, block "
                f"{row['block']['median_us']:.1f} us, {size:,} bytes")
        finally:
            for st in stages:
                st.close()
    out["command"] = ("in-process: PluginChain([load_stage(spec)], 48000, 256); per row, "
                      f"{n} times: chain.render(one block) then chain.get_state(), each timed")
    return out


NAMES = {"dlsine_64": "DLSine, 64 frames", "dlsine_256": "DLSine, 256 frames",
         "dlsine_1024": "DLSine, 1024 frames", "dlsine12_256": "DLSine12 (12 ch), 256",
         "dlsine_plate_256": "DLSine -> PlateReverb, 256",
         "lv2_dlsine_64": "LV2 DLSine, 64 frames", "lv2_dlsine_256": "LV2 DLSine, 256 frames",
         "lv2_dlsine12_256": "LV2 DLSine12, 256", "lv2_dlsine_fil4_256": "LV2 DLSine -> fil4, 256"}


def table(r: dict) -> str:
    m = r["machine"]
    lines = [f"discoLink plugin benchmark ({'quick' if r['quick'] else 'full'} run, "
             f"{r['date']}): {m['nproc']} cores, Python {m['python']}, pedalboard "
             f"{m['pedalboard']}, load {m['loadavg_at_start']}",
             f"command: {r['command']}"]
    if "overhead" in r:
        o = r["overhead"]
        lines += ["", f"(a) Per-block cost, device loop vs direct plugin call, ONE process, "
                  f"{o['blocks']:,} blocks per row (after {o['warmup_blocks']} warm-up), "
                  f"interleaved; {HELD_NOTES} notes held + a note on/off every 4 blocks; us",
                  f"    {'row':<28}{'device':>8}{'p95':>8}{'direct':>8}{'p95':>8}{'over':>7}"
                  f"{'ratio':>7}{'chunks':>14}{'% period':>9}{'same':>7}"]
        for key, row in o["rows"].items():
            d, b = row["device"], row["direct"]
            ch = row["chunk_ratios"]
            same = "yes" if row["mismatched_blocks"] == row["short_reads"] == 0 else \
                f"{row['mismatched_blocks'] + row['short_reads']} no"
            lines.append(f"    {NAMES[key]:<28}{d['median_us']:>8.1f}{d['p95_us']:>8.1f}"
                         f"{b['median_us']:>8.1f}{b['p95_us']:>8.1f}{row['overhead_us']:>7.1f}"
                         f"{row['overhead_ratio']:>7.3f}{min(ch):>7.3f}-{max(ch):.3f}"
                         f"{row['device_fraction_of_period'] * 100:>8.1f}%{same:>7}")
        lines += ["    device: DeviceRunner.step() (one block); direct: the bare plugin call on "
                  "a second instance; over and ratio: medians of the per-block (device - "
                  "direct) and device/direct, the two timed back to back; chunks: the ratio in "
                  "each of "
                  f"{o['chunks']} consecutive chunks; same: every received block equal to "
                  "the direct output",
                  "    instrumented pass, medians in us: process_commands / render callback "
                  "(take + chain + plugin) / send_audio | direct | callback - direct"]
        for key, row in o["rows"].items():
            p = row["parts_median_us"]
            lines.append(f"    {NAMES[key]:<28}{p['process_commands']:>6.1f} /"
                         f"{p['render_callback']:>7.1f} /{p['send_audio']:>5.1f}  |"
                         f"{p['direct']:>7.1f}  |{p['callback_minus_direct']:>6.1f}")
        lines.append("    commands:")
        for key, row in o["rows"].items():
            lines.append(f"      {NAMES[key]}: {row['command']}")
        for key, row in o["rows"].items():
            if "profile" in row:
                pr = row["profile"]
                lines.append(f"    cProfile of DeviceRunner.step, {NAMES[key]} "
                             f"({pr['profiled_us_per_block']:.1f} us per block under the "
                             "profiler): own share, own us/block, calls/block, function")
                for t in pr["top"][:12]:
                    lines.append(f"      {t['own_share']:>6.1%}{t['own_us_per_block']:>7.1f}"
                                 f"{t['calls_per_block']:>6.1f}  {t['function']}")
        if o["plugin_stderr"]:
            lines.append("    plugin stderr while loading (hidden): " + "; ".join(
                o["plugin_stderr"][:3]))
    if "note_to_sound" in r:
        lines += ["", f"(b) Note-to-sound at {SR} Hz, CLI devices (demand clock), this process "
                  "the real-time host; frames from the NoteOn's block boundary to the first "
                  f"sample above {ONSET_THRESHOLD:g}",
                  f"    {'block':>5}{'fill':>5}{'device':>8}{'notes':>7}{'median':>8}{'min':>6}"
                  f"{'max':>6}{'= ms':>8}{'fill x block':>13}{'goal ms':>9}{'underruns':>10}"]
        cmds = {}
        for fills in r["note_to_sound"].values():
            for kinds in fills.values():
                for kind, row in kinds.items():
                    def g(key: str, row: dict = row) -> str:
                        return str(row[key]) if key in row else "n/a"
                    lines.append(f"    {row['block']:>5}{row['fill']:>5}{kind:>8}"
                                 f"{row['measured']:>4}/{row['notes']:<2}{g('median_frames'):>8}"
                                 f"{g('min_frames'):>6}{g('max_frames'):>6}"
                                 f"{fmt(row.get('max_ms')):>8}{row['fill_x_block_frames']:>13}"
                                 f"{row['goal_ms']:>9.3f}{row['underruns']:>10}")
                    cmds.setdefault(kind, row["command"])
        first = next(iter(next(iter(r["note_to_sound"].values())).values()))["plugin"]
        lines.append(f"    host: {first['host_rt']}; commands (--blocksize and --fill as in "
                     "the row): " + "; ".join(f"{k}: {v}" for k, v in cmds.items()))
    if "idle" in r:
        i = r["idle"]
        lines += ["", f"(c) Idle CLI devices, no host, side by side for {i['seconds']:.0f} s "
                  "(utime+stime from /proc/<pid>/stat; precise = se.sum_exec_runtime)"]
        for kind, row in i["rows"].items():
            lines.append(f"    {kind:<7} CPU {row['cpu_percent']:.2f}% (resolution "
                         f"{row['cpu_resolution_percent']}%, precise "
                         f"{fmt(row.get('cpu_percent_precise'))}%), {row['wakeups_per_s']} "
                         f"wakeups/s, {row['threads']} threads: {row['command']}")
    if "scan" in r:
        s = r["scan"]
        lines += ["", "(d) plugin scan of every installed LV2 plugin (a CLI process each)"]
        for run_name in ("cold", "cached"):
            row = s[run_name]
            lines.append(f"    {run_name:<7}{row['seconds']:>7.2f} s  {row['lv2_plugins']} LV2 "
                         f"plugins, {row['probed']} probed, {row['failed']} failed to load")
        lines.append(f"    command: {s['command']}")
    if "binding" in r:
        b = r["binding"]
        lines += ["", f"(e) LV2 block call, DL Null Gain at {b['frames']} frames, "
                  f"{b['calls']:,} calls each; us per block (median of 50 batches)"]
        for name in ("fastcall_module", "ctypes_runner", "ctypes_bare_run"):
            lines.append(f"    {name:<18}{b[name]['median_us']:>7.3f}")
        lines.append(f"    command: {b['command']}")
    if "snapshot" in r:
        f = r["snapshot"]
        lines += ["", f"(f) Autosave snapshot (PluginChain.get_state, on the audio thread after a "
                  f"change, at most once a second) vs one {f['frames']}-frame block of the same "
                  f"chain, {f['snapshots']} each, alternated; us",
                  f"    {'row':<22}{'snapshot':>9}{'p95':>9}{'block':>8}{'ratio':>8}"
                  f"{'% period':>10}{'JSON bytes':>12}{'JSON us':>10}"]
        for key, row in f["rows"].items():
            lines.append(f"    {key:<22}{row['snapshot']['median_us']:>9.1f}"
                         f"{row['snapshot']['p95_us']:>9.1f}{row['block']['median_us']:>8.1f}"
                         f"{row['ratio_to_block']:>8.1f}{row['fraction_of_period'] * 100:>9.1f}%"
                         f"{row['json_bytes']:>12,}{row['json_writer']['median_us']:>10.1f}")
        lines.append("    snapshot: on the device's audio thread (in its idle moment, the ring "
                     "full); JSON us: state_json, on the state saver's thread")
        lines.append(f"    command: {f['command']}")
    lines += load_lines(r.get("section_load", {}), m["nproc"])
    if r["goals"]:
        lines += ["", "Goals", *goal_lines(r["goals"])]
    return "\n".join(lines)


SECTIONS = {"a": "overhead", "b": "note_to_sound", "c": "idle", "d": "scan", "e": "binding",
            "f": "snapshot"}


def headline(r: dict) -> dict:
    out: dict[str, Any] = {}
    if "overhead" in r:
        rows = r["overhead"]["rows"]
        out["overhead_ratio"] = {k: v["overhead_ratio"] for k, v in rows.items()}
        out["overhead_us"] = {k: v["overhead_us"] for k, v in rows.items()}
    if "note_to_sound" in r:
        out["note_to_sound_frames"] = {
            block: {fill: {kind: row.get("max_frames") for kind, row in kinds.items()}
                    for fill, kinds in fills.items()}
            for block, fills in r["note_to_sound"].items()}
    if "idle" in r:
        out["idle_cpu_percent"] = {k: v["cpu_percent"] for k, v in r["idle"]["rows"].items()}
    if "scan" in r:
        out["lv2_scan_s"] = {k: r["scan"][k]["seconds"] for k in ("cold", "cached")}
    if "binding" in r:
        out["lv2_block_call_us"] = {k: r["binding"][k]["median_us"] for k in
                                    ("fastcall_module", "ctypes_runner", "ctypes_bare_run")}
    if "snapshot" in r:
        out["snapshot_us"] = {k: v["snapshot"]["median_us"]
                              for k, v in r["snapshot"]["rows"].items()}
    return out


def run(plan: Plan, namespace: str, only: str, profile: bool, command: str) -> dict:
    results: dict[str, Any] = {
        "quick": plan.quick, "namespace": namespace, "command": command,
        "machine": machine(pedalboard=importlib.metadata.version("pedalboard"),
                           numpy=np.__version__),
        "date": utc_date(),
        "section_load": {}}
    t0 = time.monotonic()
    sections = {"overhead": lambda: bench_overhead(plan, namespace, profile),
                "note_to_sound": lambda: bench_note_to_sound(plan, namespace),
                "idle": lambda: bench_idle(plan, namespace),
                "scan": lambda: bench_scan(plan, namespace),
                "binding": lambda: bench_binding(plan, namespace),
                "snapshot": lambda: bench_snapshot(plan, namespace)}
    run_sections(results, only, {letter: (key, sections[key])
                                 for letter, key in SECTIONS.items()})
    results["goals"] = goals(results)
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    return {**headline(results), **results}


def main(argv: list[str] | None = None) -> int:
    sections = "".join(SECTIONS)
    p = arg_parser(__doc__, "short run (under 40 s)", sections, "a")
    p.add_argument("--profile", action="store_true", help="(a): also run cProfile over "
                   "DeviceRunner.step for DLSine at 256 frames and report the top functions")
    args = parse_args(p, argv, sections)
    missing = [s for s in (DLSINE, DLSINE12, PLATE) if not (REPO / s).exists()]
    if missing:
        p.error(f"missing {', '.join(missing)}: run bash plugins/build.sh first")
    os.chdir(REPO)  # the plugin specs are relative to the repository root
    command = ".venv/bin/python bench/plugin.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    plan = Plan.make(args.quick)
    return run_in_namespace(
        lambda namespace: run(plan, namespace, args.only, args.profile, command.strip()),
        table, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
