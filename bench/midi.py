"""MIDI benchmark: MIDI events through discoLink's command ring, against mido on the same bytes.

Run from the repository root:

    .venv/bin/python bench/midi.py            # full run (about 1.5 min), human table
    .venv/bin/python bench/midi.py --quick    # shorter run, under 30 s
    .venv/bin/python bench/midi.py --json     # one JSON object on stdout (table on stderr)
    .venv/bin/python bench/midi.py --only c --profile   # (c) with a cProfile of the device

Every event stream is a fixed-seed mix of what a sequencer sends: 30% note on, 30% note off,
25% control change (mod wheel, volume, pan, expression, sustain, CC 74), 15% pitch bend, all
three-byte messages, sample offsets spread evenly over 256-frame blocks. mido's rows parse the
same MIDI bytes (the events' ``data`` concatenated, no running status).

(a) Events per second in one process. discoLink rows: the host encodes every event
    (``ipc.encode_all``, one NoteOn/NoteOff/ControlChange/PitchBend command each, or packed
    MidiRaw commands), pushes the commands into the command ring of a real segment
    (``Host.send_command``), and the device pops and decodes them (``Device.process_commands``
    with ``MidiStream.handle`` registered through ``InstrumentDevice``) and takes the block's
    events (``MidiStream.take``), 1,024 commands (the ring's size) at a time. Device and Host
    live in this one process: no scheduling, no cache-line transfers between cores; this row
    is the CPU cost of the code. Baselines on the same bytes: ``mido.Parser().feed(raw)`` and
    iterating it, ``mido.parse_all(raw)``, and the bridge's own ``MidiParser`` (what the device
    runs on a MidiRaw payload).
(b) Events per second across processes: a device process (spawned, ``Device`` in midi mode +
    ``InstrumentDevice(device, None)`` counting each block's events into shared memory) and
    this process as the host, encoding and sending N events as fast as the ring takes them
    (spinning when it is full). The time runs from the first encode until the device has
    *taken* all N events (``MidiStream.take`` inside its loop); the Ping sent behind the
    events, answered once every earlier command was handled (the ring is FIFO), is reported
    too. Device loops: ``real`` is ``DeviceRunner(clock="realtime")``, the loop of
    ``python -m bridge midi-monitor`` (process_commands, take every 256-frame block period,
    sleeps of up to 0.5 ms); ``tight`` polls ``process_commands()`` with no sleep and takes
    after every batch (the ceiling of the device side).
(c) Dense stream: 1,000 events for one 256-frame block at 48 kHz (5.333 ms). With the events
    queued in the command ring, the device's cost is ``process_commands()`` (all of them)
    plus ``take(256)``; the goal is < 20% of the block period (1.067 ms), judged on the p95.
    Three ways to send the same 1,000 events: one command per event (1,000 commands);
    MidiRaw, one command per sample offset (256 commands, every offset kept); MidiRaw packed
    full (74 three-byte messages per 224-byte payload, 14 commands; each command has one
    offset, so an event plays at the offset of the first event of its command). The cost is
    broken down by timing the parts alone: bare ring pops (a MessageRing over private
    memory), ``process_commands`` on a device whose only handler takes every MIDI command
    and does nothing (pop + the Device's dispatch), ``MidiStream.handle`` on the same messages
    with no ring or Device (the decode; ``MpeZoneTracker.feed`` of every event, a part of it,
    is shown on its own), and ``take``.
(d) Informative, no goal: ``SineSynth.render`` of one 256-frame block with the 1,000 events
    against the same block with none (8 voices sounding before the block in both).

Every section reports the CPU other processes used while it ran (``section_load``). gc is
frozen after set-up as ``DeviceRunner`` does. Goals are PASS/FAIL lines; a missed goal never
changes the exit status. Results and their interpretation: docs/performance.md.
"""

from __future__ import annotations

import contextlib
import cProfile
import dataclasses
import gc
import importlib.metadata
import mmap
import multiprocessing as mp
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import mido
import numpy as np
from _common import (
    CpuMeter,
    arg_parser,
    connect_in_process,
    fmt,
    goal_lines,
    load_lines,
    log,
    machine,
    median_p95,
    parse_args,
    profile_top,
    ratio,
    run_in_namespace,
    utc_date,
)

from bridge.adapters.instrument import InstrumentDevice
from bridge.adapters.sine import SineSynth
from bridge.midi import ipc
from bridge.midi.event import MidiEvent
from bridge.midi.parser import MidiParser
from bridge.midi.stream import MAX_EVENTS_PER_BLOCK, SMALL_TYPES, MidiStream
from bridge.transport import Device, Host, cmd
from bridge.transport.clock import DeviceRunner
from bridge.transport.device import BATCH_MESSAGES
from bridge.transport.layout import MESSAGE_PAYLOAD_SIZE, MESSAGE_RING_SLOTS, MESSAGE_SIZE, Mode
from bridge.transport.message import Message
from bridge.transport.ring import MessageRing

SR = 48000
FRAMES = 256
BLOCK_MS = FRAMES / SR * 1000.0
GOAL_FRACTION = 0.20  # (c): the device's cost for 1,000 events < 20% of the block period
DENSE_EVENTS = 1000
CHILD_TIMEOUT_S = 120.0  # a child that outlives this has lost its parent: it exits
CONTROLLERS = (1, 7, 10, 11, 64, 74)  # no RPN/NRPN or data entry: MPE state stays put
RAW_BATCH = MAX_EVENTS_PER_BLOCK // (MESSAGE_PAYLOAD_SIZE // 3)  # packed MidiRaw per take

# spawn: each device child is a fresh interpreter with nothing of this process's heap or gc
# state; its ~0.3 s start-up is outside every measurement.
_ctx = mp.get_context("spawn")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much each section does; --quick shrinks repetitions, not the dense block."""

    quick: bool
    thr_events: int  # (a) events per round
    thr_rounds: int
    xp_events: int  # (b) events per round
    xp_rounds: int
    dense_reps: int  # (c) measured repetitions per variant
    dense_warmup: int
    synth_reps: int  # (d)
    profile_reps: int  # --profile

    @staticmethod
    def make(quick: bool) -> Plan:
        if quick:
            return Plan(True, 10_000, 3, 20_000, 2, 300, 30, 10, 100)
        return Plan(False, 20_000, 7, 50_000, 5, 2000, 100, 40, 300)


# ---- events --------------------------------------------------------------------------------


def make_events(n: int, seed: int = 1) -> list[MidiEvent]:
    """``n`` events of the sequencer mix, offsets spread evenly over 256-frame blocks."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ch = rng.randrange(16)
        r = rng.random()
        if r < 0.30:
            data = bytes((0x90 | ch, rng.randrange(128), 1 + rng.randrange(127)))
        elif r < 0.60:
            data = bytes((0x80 | ch, rng.randrange(128), rng.randrange(128)))
        elif r < 0.85:
            data = bytes((0xB0 | ch, rng.choice(CONTROLLERS), rng.randrange(128)))
        else:
            v = rng.randrange(16384)
            data = bytes((0xE0 | ch, v & 0x7F, v >> 7))
        events.append(MidiEvent(i * FRAMES // min(n, DENSE_EVENTS) % FRAMES, data))
    return events


def pack_raw(events: list[MidiEvent], per_offset: bool = False) -> list[Message]:
    """MidiRaw commands carrying the events' bytes: as many messages as fit in one payload
    (each command at its first event's offset), or with ``per_offset`` one command per run of
    events at the same offset (every offset kept)."""
    out: list[Message] = []
    chunk = bytearray()
    offset = -1
    for e in events:
        if chunk and (len(chunk) + len(e.data) > MESSAGE_PAYLOAD_SIZE
                      or (per_offset and e.offset != offset)):
            out.append(cmd.midi_raw(bytes(chunk), offset))
            chunk.clear()
        if not chunk:
            offset = e.offset
        chunk += e.data
    if chunk:
        out.append(cmd.midi_raw(bytes(chunk), offset))
    return out


# ---- helpers -------------------------------------------------------------------------------


def stats_ms(ns: list[int] | np.ndarray) -> dict[str, float]:
    """Median, p95, min, max and mean of nanosecond samples, in milliseconds."""
    return median_p95(ns, "ms", 4)


@contextlib.contextmanager
def in_process_pair(namespace: str, name: str,
                    wire: Callable[[Device], Any]) -> Iterator[tuple[Device, Host, Any]]:
    """A midi-mode Device (wired by ``wire``) and a Host connected to it, in this process.

    A thread serves the device only while ``connect`` waits for the handshake; after that
    the caller drives both ends from one thread."""
    with Device(namespace) as dev, Host(namespace) as host:
        dev.start(name, 0, SR, FRAMES, mode=Mode.MIDI)
        wiring = wire(dev)
        connect_in_process(host, dev.id, SR, FRAMES, dev.process_commands, prime_timeout=0.0)
        dev.process_commands()  # anything the handshake left behind
        yield dev, host, wiring


def _send_all(host: Host, messages: list[Message]) -> None:
    send = host.send_command
    for m in messages:
        if not send(m):
            raise RuntimeError(f"send_command failed: {host.stats.last_error}")


# ---- (a) events per second, one process ----------------------------------------------------


def _mido_parser(raw: bytes) -> int:
    p = mido.Parser()
    p.feed(raw)
    n = 0
    for _ in p:
        n += 1
    return n


def _mido_parse_all(raw: bytes) -> int:
    return len(mido.parse_all(raw))


def _bridge_parser(raw: bytes) -> int:
    out: list[bytes] = []
    return MidiParser().feed(raw, out)


def _timed(fn: Callable[[], int], expected: int) -> tuple[int, int]:
    t0 = time.perf_counter_ns()
    n = fn()
    elapsed = time.perf_counter_ns() - t0
    if n != expected:
        raise RuntimeError(f"parsed {n} messages, expected {expected}")
    return elapsed, n


def mido_baseline(plan: Plan) -> int:
    """mido.Parser's events/s alone (when (a) is not run), median of the rounds."""
    raw = b"".join(e.data for e in make_events(plan.thr_events))
    _mido_parser(raw)
    elapsed = [_timed(lambda: _mido_parser(raw), plan.thr_events)[0]
               for _ in range(plan.thr_rounds)]
    return round(plan.thr_events / float(np.median(elapsed)) * 1e9)


def _ring_round(dev: Device, host: Host, stream: MidiStream, events: list[MidiEvent],
                packed: bool) -> dict[str, int]:
    """Encode every event, push, process and take, in batches the device never overflows."""
    ns = time.perf_counter_ns
    t0 = ns()
    messages = pack_raw(events) if packed else ipc.encode_all(events)
    t_encoded = ns()
    batch = RAW_BATCH if packed else MESSAGE_RING_SLOTS
    push_ns = device_ns = taken = 0
    for start in range(0, len(messages), batch):
        t1 = ns()
        _send_all(host, messages[start : start + batch])
        t2 = ns()
        dev.process_commands()
        taken += len(stream.take(FRAMES))
        device_ns += ns() - t2
        push_ns += t2 - t1
    return {"total_ns": ns() - t0, "encode_ns": t_encoded - t0, "push_ns": push_ns,
            "device_ns": device_ns, "events": taken, "commands": len(messages)}


def bench_throughput(plan: Plan, namespace: str) -> dict:
    n = plan.thr_events
    events = make_events(n)
    raw = b"".join(e.data for e in events)
    log(f"(a) events/s in one process: {plan.thr_rounds} rounds of {n:,} events")
    parsers = {"mido_parser": _mido_parser, "mido_parse_all": _mido_parse_all,
               "bridge_midiparser": _bridge_parser}
    samples: dict[str, list[dict]] = {k: [] for k in (*parsers, "discolink_commands",
                                                      "discolink_midiraw_packed")}
    with in_process_pair(namespace, "MidiThr", lambda d: InstrumentDevice(d, None)) as \
            (dev, host, wiring):
        gc.freeze()
        for fn in parsers.values():  # warm-up
            fn(raw[: 3 * 1000])
        _ring_round(dev, host, wiring.stream, events[:2000], False)
        _ring_round(dev, host, wiring.stream, events[:2000], True)
        for _ in range(plan.thr_rounds):  # interleaved rounds: a load burst hits every row
            for name, fn in parsers.items():
                elapsed, got = _timed(lambda fn=fn: fn(raw), n)
                samples[name].append({"total_ns": elapsed, "events": got})
            for name, packed in (("discolink_commands", False),
                                 ("discolink_midiraw_packed", True)):
                r = _ring_round(dev, host, wiring.stream, events, packed)
                if r["events"] != n:
                    raise RuntimeError(f"{name}: the device took {r['events']} of {n} events")
                samples[name].append(r)
        errors = dev.errors
    rows = {}
    for name, rounds in samples.items():
        total = float(np.median([r["total_ns"] for r in rounds]))
        row: dict[str, Any] = {"events_per_s": round(n / total * 1e9),
                               "us_per_event": round(total / n / 1e3, 3),
                               "rounds_events_per_s": [round(n / r["total_ns"] * 1e9)
                                                       for r in rounds]}
        if "encode_ns" in rounds[0]:
            for part in ("encode_ns", "push_ns", "device_ns"):
                med = float(np.median([r[part] for r in rounds]))
                row[part.replace("_ns", "_us_per_event")] = round(med / n / 1e3, 3)
            row["commands"] = rounds[0]["commands"]
        rows[name] = row
    base = rows["mido_parser"]["events_per_s"]
    for row in rows.values():
        row["ratio_vs_mido_parser"] = ratio(row["events_per_s"], base)
    return {"events": n, "rounds": plan.thr_rounds, "bytes": len(raw), "rows": rows,
            "device_errors": errors,
            "ratio_vs_mido_parser": rows["discolink_commands"]["ratio_vs_mido_parser"]}


# ---- (b) events per second across processes -------------------------------------------------


def _device_child(namespace: str, name: str, loop: str, taken: Any, ready: Any,
                  results: Any) -> None:
    """Device process: midi mode, InstrumentDevice(device, None), each block's events added
    to ``taken`` (shared memory). Stops on the host's Disconnect."""
    device = Device(namespace)
    device.start(name, 0, SR, FRAMES, Mode.MIDI)

    def on_events(_block: int, events: list[MidiEvent]) -> None:
        taken.value += len(events)

    wiring = InstrumentDevice(device, None, on_events=on_events)
    runner = DeviceRunner(device, wiring, clock="realtime")
    stop = runner.stop_event

    def on_command(msg: Message, _device: Device) -> bool:
        if msg.type == cmd.T.Disconnect:
            stop.set()
        return False

    device.on_command(on_command)
    timer = threading.Timer(CHILD_TIMEOUT_S, stop.set)
    timer.daemon = True
    timer.start()
    ready.put(device.id)
    try:
        if loop == "real":
            runner.run()
        else:  # tight: no sleep, a take after every batch that brought commands
            gc.freeze()
            block = np.zeros((0, FRAMES), np.float32)
            poll = device.process_commands
            batch = RAW_BATCH if loop == "tight_raw" else MESSAGE_RING_SLOTS
            while not stop.is_set():
                if poll(batch):
                    wiring(block)
        results.put({"stream": wiring.stream.counters(), "blocks": wiring.blocks,
                     "commands_received": device.commands_received,
                     "device_errors": device.errors, "last_error": device.last_error})
    finally:
        timer.cancel()
        wiring.close()
        device.close()


class _PongWatch:
    """A response handler that stamps the arrival of the Pong answering ``ping``."""

    def __init__(self, host: Host) -> None:
        self.ping = cmd.ping(0)
        self.at = 0
        host.on_response(self)

    def arm(self) -> Message:
        self.ping = cmd.ping(0)
        self.at = 0
        return self.ping

    def __call__(self, msg: Message, _host: Host) -> None:
        if msg.type == cmd.T.Pong and msg.request_seq == self.ping.seq:
            self.at = time.perf_counter_ns()


def _blast(host: Host, watch: _PongWatch, events: list[MidiEvent], taken: Any,
           packed: bool) -> dict:
    """Encode and send every event, spinning while the ring is full; then a Ping; then wait
    until the device has taken every event. Times in ns from the first encode."""
    n = len(events)
    send, poll = host.send_command, host.process_responses
    ping = watch.arm()
    base = taken.value
    full = 0
    t0 = time.perf_counter_ns()
    if packed:
        batches = (events[i : i + MESSAGE_PAYLOAD_SIZE // 3]
                   for i in range(0, n, MESSAGE_PAYLOAD_SIZE // 3))
        messages: Iterator[Message] = (m for b in batches for m in pack_raw(b))
    else:
        encode = ipc.encode
        messages = (m for e in events for m in encode(e))
    room = host.free_command_slots
    for m in messages:
        while not room():
            full += 1
        send(m)
    t_sent = time.perf_counter_ns()
    while not room():
        full += 1
    send(ping)
    deadline = t0 + 60 * 10**9
    while not watch.at:
        poll()
        if time.perf_counter_ns() > deadline:
            raise RuntimeError("no Pong behind the events within 60 s")
    while taken.value - base < n:
        if time.perf_counter_ns() > deadline:
            raise RuntimeError(f"the device took {taken.value - base} of {n} events in 60 s")
    t_taken = time.perf_counter_ns()
    return {"sent_ns": t_sent - t0, "pong_ns": watch.at - t0, "taken_ns": t_taken - t0,
            "ring_full_spins": full, "events": taken.value - base}


def cross_process(plan: Plan, namespace: str, loop: str, events: list[MidiEvent]) -> dict:
    packed = loop == "tight_raw"
    taken = _ctx.Value("q", 0, lock=False)
    ready, results = _ctx.Queue(), _ctx.Queue()
    proc = _ctx.Process(target=_device_child, daemon=True,
                        args=(namespace, f"MidiXp{loop.title().replace('_', '')}", loop, taken,
                              ready, results))
    proc.start()
    try:
        device_id = ready.get(timeout=30)
        rounds = []
        with Host(namespace) as host:
            host.set_local_buffer_info(SR, FRAMES)
            host.connect(device_id, timeout=5.0, prime_timeout=0.0)
            watch = _PongWatch(host)
            _blast(host, watch, events[:2000], taken, packed)  # warm-up
            for _ in range(plan.xp_rounds):
                rounds.append(_blast(host, watch, events, taken, packed))
            host_dropped = host.counters()["commands_dropped"]
            host.disconnect()
        child = results.get(timeout=30)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
    n = len(events)
    taken_ns = float(np.median([r["taken_ns"] for r in rounds]))
    return {"loop": loop, "events_per_s": round(n / taken_ns * 1e9),
            "rounds_events_per_s": [round(n / r["taken_ns"] * 1e9) for r in rounds],
            "median_sent_ms": round(float(np.median([r["sent_ns"] for r in rounds])) / 1e6, 1),
            "median_pong_ms": round(float(np.median([r["pong_ns"] for r in rounds])) / 1e6, 1),
            "median_taken_ms": round(taken_ns / 1e6, 1),
            "ring_full_spins": sum(r["ring_full_spins"] for r in rounds),
            "commands_dropped_counter": host_dropped,
            "events_lost": sum(n - r["events"] for r in rounds),
            "device": {"blocks": child["blocks"],
                       "commands_received": child["commands_received"],
                       "errors": child["device_errors"], "last_error": child["last_error"],
                       **{k: child["stream"][k] for k in ("ipc_events", "dropped", "late",
                                                          "invalid")}},
            "device_exit": proc.exitcode}


def bench_cross_process(plan: Plan, namespace: str, mido_rate: int) -> dict:
    n = plan.xp_events
    events = make_events(n)
    rows = {}
    for loop in ("real", "tight", "tight_raw"):
        log(f"(b) events/s across processes: {loop} device loop, {plan.xp_rounds} rounds of "
            f"{n:,} events")
        rows[loop] = cross_process(plan, namespace, loop, events)
        rows[loop]["ratio_vs_mido_parser"] = ratio(rows[loop]["events_per_s"], mido_rate)
    return {"events": n, "rounds": plan.xp_rounds, "mido_parser_events_per_s": mido_rate,
            "rows": rows, "ratio_vs_mido_parser": rows["real"]["ratio_vs_mido_parser"]}


# ---- (c) dense stream --------------------------------------------------------------------------


_MIDI_TYPES = cmd.MIDI_TYPES


def _accept_midi(msg: Message, _device: Device) -> bool:
    """Takes every MIDI command and does nothing with it (the rest goes to the Device)."""
    return msg.type in _MIDI_TYPES


def _noop_wiring(dev: Device) -> None:
    dev.on_command(_accept_midi)
    dev.on_small_command(lambda *_: True, list(SMALL_TYPES))
    dev.on_raw_command(lambda *_: True, [cmd.T.MidiRaw])


class _DenseRig:
    """Everything (c) times, set up once: the real device, a device whose only handler
    accepts every MIDI command, a bare ring over private memory, and a standalone MidiStream."""

    def __init__(self, real: tuple[Device, Host, Any], noop: tuple[Device, Host, Any]) -> None:
        self.dev, self.host, wiring = real
        self.stream = wiring.stream
        self.noop_dev, self.noop_host, _ = noop
        self.mem = mmap.mmap(-1, 1 << 20)
        self.ring = MessageRing(self.mem, 0)
        self.batch = bytearray(BATCH_MESSAGES * MESSAGE_SIZE)

    def total(self, messages: list[Message]) -> tuple[int, int, int]:
        """(process_commands ns, take ns, events taken) of the real device."""
        _send_all(self.host, messages)
        t0 = time.perf_counter_ns()
        handled = self.dev.process_commands()
        t1 = time.perf_counter_ns()
        events = self.stream.take(FRAMES)
        t2 = time.perf_counter_ns()
        if handled != len(messages):
            raise RuntimeError(f"process_commands handled {handled} of {len(messages)}")
        return t1 - t0, t2 - t1, len(events)

    def parts(self, messages: list[Message]) -> dict[str, int]:
        """The device's layers timed alone: the bare batch pops, and a device whose handlers
        (the small-command fast path and on_command) take every MIDI command and do nothing."""
        ns = time.perf_counter_ns
        _send_all(self.noop_host, messages)
        t0 = ns()
        self.noop_dev.process_commands()
        noop = ns() - t0
        push, pop_many, batch = self.ring.push, self.ring.pop_many, self.batch
        for m in messages:
            push(m.buf)
        left = len(messages)
        t0 = ns()
        while left:
            left -= pop_many(batch, min(BATCH_MESSAGES, left))
        bare = ns() - t0
        return {"ring_pop": bare, "pop_and_dispatch": noop}


def _dense_variants(events: list[MidiEvent]) -> dict[str, list[Message]]:
    return {"commands": ipc.encode_all(events),
            "midiraw_per_offset": pack_raw(events, per_offset=True),
            "midiraw_packed": pack_raw(events)}


def bench_dense(plan: Plan, namespace: str, profile: bool = False) -> dict:
    events = make_events(DENSE_EVENTS)
    variants = _dense_variants(events)
    budget_ms = GOAL_FRACTION * BLOCK_MS
    log(f"(c) dense stream: {DENSE_EVENTS} events in one {FRAMES}-frame block, "
        f"{plan.dense_reps} repetitions per variant ({', '.join(variants)})")
    samples: dict[str, dict[str, list[int]]] = {v: {} for v in variants}
    with in_process_pair(namespace, "MidiDense", lambda d: InstrumentDevice(d, None)) as real, \
            in_process_pair(namespace, "MidiNoop", _noop_wiring) as noop:
        rig = _DenseRig(real, noop)
        gc.freeze()
        for rep in range(plan.dense_warmup + plan.dense_reps):
            for name, messages in variants.items():  # interleaved: drift hits all alike
                proc_ns, take_ns, n = rig.total(messages)
                if n != DENSE_EVENTS:
                    raise RuntimeError(f"{name}: take returned {n} of {DENSE_EVENTS} events")
                parts = rig.parts(messages)
                if rep >= plan.dense_warmup:
                    s = samples[name]
                    for key, value in (("total", proc_ns + take_ns),
                                       ("process_commands", proc_ns), ("take", take_ns),
                                       *parts.items()):
                        s.setdefault(key, []).append(value)
        prof = _profile(rig, variants, plan.profile_reps) if profile else None
        errors, last_error = rig.dev.errors, rig.dev.last_error
        rig.mem.close()
    rows = {}
    for name, s in samples.items():
        total = stats_ms(s["total"])
        med = {k: float(np.median(v)) / 1e6 for k, v in s.items()}
        rows[name] = {
            "commands": len(variants[name]), "total": total,
            "median_fraction_of_block": round(total["median_ms"] / BLOCK_MS, 4),
            "p95_fraction_of_block": round(total["p95_ms"] / BLOCK_MS, 4),
            "us_per_event_median": round(total["median_ms"] * 1e3 / DENSE_EVENTS, 3),
            "met": total["p95_ms"] < budget_ms,
            "process_commands": stats_ms(s["process_commands"]), "take": stats_ms(s["take"]),
            "breakdown_median_ms": {
                "ring_pop_bare": round(med["ring_pop"], 4),
                "device_dispatch": round(med["pop_and_dispatch"] - med["ring_pop"], 4),
                "midi_decode": round(med["process_commands"] - med["pop_and_dispatch"], 4),
                "take": round(med["take"], 4),
                "measured_total": round(med["total"], 4)}}
    out = {"events": DENSE_EVENTS, "frames": FRAMES, "sample_rate": SR,
           "block_ms": round(BLOCK_MS, 4), "budget_ms": round(budget_ms, 4),
           "repetitions": plan.dense_reps, "rows": rows, "device_errors": errors,
           "device_last_error": last_error}
    if prof is not None:
        out["profile"] = prof
    return out


def _profile(rig: _DenseRig, variants: dict[str, list[Message]], reps: int) -> dict:
    """cProfile of the device's part (process_commands + take) for each variant: top 15 by
    own time. cProfile's per-call overhead inflates call-heavy code; read it for shares."""
    log(f"(c) profiling process_commands + take, {reps} repetitions per variant")
    out = {}
    for name, messages in variants.items():
        prof = cProfile.Profile()
        for _ in range(reps):
            _send_all(rig.host, messages)
            prof.enable()
            rig.dev.process_commands()
            rig.stream.take(FRAMES)
            prof.disable()
        total, top = profile_top(prof)
        rows = [{"function": where, "calls_per_block": round(ncalls / reps, 1),
                 "own_share": round(tottime / total, 3),
                 "cumulative_share": round(cumtime / total, 3)}
                for where, ncalls, tottime, cumtime in top]
        out[name] = {"profiled_ms_per_block": round(total / reps * 1e3, 3), "top": rows}
    return out


# ---- (d) sine synth ---------------------------------------------------------------------------


def bench_synth(plan: Plan, namespace: str) -> dict:
    events = make_events(DENSE_EVENTS)
    stream = MidiStream(SR)
    for m in ipc.encode_all(events):
        stream.handle(m)
    events = stream.take(FRAMES)  # what the synth gets: MidiStream's ordered list
    prime = [MidiEvent(0, bytes((0x90, 48 + 3 * i, 100))) for i in range(8)]
    log(f"(d) SineSynth.render with {DENSE_EVENTS} events vs none, {plan.synth_reps} each")
    out = np.zeros((2, FRAMES), np.float32)
    samples: dict[str, list[int]] = {"none": [], "events": []}
    gc.freeze()
    for rep in range(plan.synth_reps + 3):
        for name, evs in (("none", []), ("events", events)):
            synth = SineSynth(SR)
            synth.render(out, prime)
            t0 = time.perf_counter_ns()
            synth.render(out, evs)
            if rep >= 3:
                samples[name].append(time.perf_counter_ns() - t0)
    rows = {k: stats_ms(v) for k, v in samples.items()}
    return {"rows": rows, "events": DENSE_EVENTS, "voices_before": len(prime),
            "events_over_none": ratio(rows["events"]["median_ms"], rows["none"]["median_ms"]),
            "events_median_fraction_of_block": round(rows["events"]["median_ms"] / BLOCK_MS, 3)}


# ---- report ------------------------------------------------------------------------------------


def goals(r: dict) -> list[dict]:
    out = []
    if "dense" in r:
        d = r["dense"]
        for name, row in d["rows"].items():
            t = row["total"]
            out.append({"goal": f"1,000 events as {name} ({row['commands']} commands): device "
                        f"cost p95 < {GOAL_FRACTION:.0%} of a {FRAMES}-frame block",
                        "met": bool(row["met"]),
                        "detail": f"median {t['median_ms']:.3f} ms "
                        f"({row['median_fraction_of_block']:.1%}), p95 {t['p95_ms']:.3f} ms "
                        f"({row['p95_fraction_of_block']:.1%}); budget {d['budget_ms']:.3f} ms"})
    return out


NAMES = {"mido_parser": "mido.Parser().feed(raw) + iterate",
         "mido_parse_all": "mido.parse_all(raw)",
         "bridge_midiparser": "bridge MidiParser.feed(raw) (no IPC)",
         "discolink_commands": "discoLink, one command per event",
         "discolink_midiraw_packed": "discoLink, packed MidiRaw",
         "real": "real loop (DeviceRunner realtime)",
         "tight": "tight loop, one command per event",
         "tight_raw": "tight loop, packed MidiRaw",
         "commands": "one command per event",
         "midiraw_per_offset": "MidiRaw, one per sample offset",
         "midiraw_packed": "MidiRaw, packed (74 per command)"}


def table(r: dict) -> str:
    m = r["machine"]
    lines = [f"discoLink MIDI benchmark ({'quick' if r['quick'] else 'full'} run, {r['date']}): "
             f"{m['nproc']} cores, Python {m['python']}, mido {m['mido']}, load "
             f"{m['loadavg_at_start']}"]
    if "throughput" in r:
        t = r["throughput"]
        lines += ["", f"(a) Events/s in ONE process (Device and Host in this process, a real "
                  f"segment), {t['events']:,} events ({t['bytes']:,} B of MIDI), median of "
                  f"{t['rounds']} rounds",
                  f"    {'path':<44}{'events/s':>11}{'us/event':>10}{'x mido':>8}"
                  f"   host encode / ring push / device, us/event"]
        for key, row in t["rows"].items():
            split = ""
            if "encode_us_per_event" in row:
                split = (f"   {row['encode_us_per_event']:.2f} / {row['push_us_per_event']:.2f}"
                         f" / {row['device_us_per_event']:.2f} ({row['commands']:,} commands)")
            lines.append(f"    {NAMES[key]:<44}{row['events_per_s']:>11,}"
                         f"{row['us_per_event']:>10.2f}"
                         f"{fmt(row['ratio_vs_mido_parser'], '.2f'):>8}{split}")
    if "cross_process" in r:
        x = r["cross_process"]
        lines += ["", f"(b) Events/s ACROSS processes (spawned device process, this process "
                  f"encodes and sends), {x['events']:,} events, median of {x['rounds']} rounds",
                  f"    {'device loop':<38}{'events/s':>10}{'x mido':>8}{'sent':>9}"
                  f"{'Pong':>9}{'taken':>9}{'full':>10}{'lost':>6}"]
        for key, row in x["rows"].items():
            lines.append(f"    {NAMES[key]:<38}{row['events_per_s']:>10,}"
                         f"{fmt(row['ratio_vs_mido_parser'], '.2f'):>8}"
                         f"{row['median_sent_ms']:>7.1f}ms"
                         f"{row['median_pong_ms']:>7.1f}ms{row['median_taken_ms']:>7.1f}ms"
                         f"{row['ring_full_spins']:>10,}{row['events_lost']:>6}")
        lines.append(f"    x mido: against mido.Parser's {x['mido_parser_events_per_s']:,} "
                     "events/s from (a); sent/Pong/taken: ms from the first encode until the "
                     "last send, the Pong behind the events, the device's take of the last")
        lines.append("    full: polls of Host.free_command_slots that found the ring full "
                     "(the sender waited; nothing is dropped)")
    if "dense" in r:
        d = r["dense"]
        lines += ["", f"(c) Dense stream: {d['events']:,} events for one {d['frames']}-frame "
                  f"block at {d['sample_rate']} Hz ({d['block_ms']:.3f} ms; goal < "
                  f"{GOAL_FRACTION:.0%} = {d['budget_ms']:.3f} ms), device cost = "
                  f"process_commands() + take(), {d['repetitions']:,} repetitions",
                  f"    {'sent as':<34}{'cmds':>5}{'median':>9}{'p95':>9}{'max':>9}"
                  f"{'med %':>7}{'p95 %':>7}{'us/ev':>7}"]
        for key, row in d["rows"].items():
            t = row["total"]
            lines.append(f"    {NAMES[key]:<34}{row['commands']:>5}{t['median_ms']:>9.3f}"
                         f"{t['p95_ms']:>9.3f}{t['max_ms']:>9.3f}"
                         f"{row['median_fraction_of_block'] * 100:>7.1f}"
                         f"{row['p95_fraction_of_block'] * 100:>7.1f}"
                         f"{row['us_per_event_median']:>7.2f}")
        lines += ["    where the time goes, medians in ms:",
                  f"    {'sent as':<34}{'ring pop':>9}{'dispatch':>9}{'decode':>9}"
                  f"{'take':>8}{'total':>8}"]
        for key, row in d["rows"].items():
            b = row["breakdown_median_ms"]
            lines.append(f"    {NAMES[key]:<34}{b['ring_pop_bare']:>9.3f}"
                         f"{b['device_dispatch']:>9.3f}{b['midi_decode']:>9.3f}"
                         f"{b['take']:>8.3f}{b['measured_total']:>8.3f}")
        lines.append("    ring pop: bare MessageRing.pop_many batches; dispatch: "
                     "Device.process_commands with do-nothing MIDI handlers (fast path and "
                     "on_command), minus the bare pops; decode: the real device's "
                     "process_commands minus that (MidiStream building events)")
        for name, p in d.get("profile", {}).items():
            lines += [f"    cProfile, {NAMES[name]} ({p['profiled_ms_per_block']:.2f} ms per "
                      "block under the profiler): own share, calls per block, function"]
            for row in p["top"][:10]:
                lines.append(f"      {row['own_share']:>6.1%} {row['calls_per_block']:>8.0f}  "
                             f"{row['function']}")
    if "synth" in r:
        s = r["synth"]
        lines += ["", f"(d) SineSynth.render, one {FRAMES}-frame block, {s['voices_before']} "
                  "voices sounding before it (informative)",
                  f"    no events: median {s['rows']['none']['median_ms']:.3f} ms, p95 "
                  f"{s['rows']['none']['p95_ms']:.3f}; {s['events']:,} events: median "
                  f"{s['rows']['events']['median_ms']:.3f} ms, p95 "
                  f"{s['rows']['events']['p95_ms']:.3f} ({fmt(s['events_over_none'], '.1f')}x; "
                  f"{s['events_median_fraction_of_block']:.0%} of the block period)"]
    lines += load_lines(r.get("section_load", {}), m["nproc"])
    if r["goals"]:
        lines += ["", "Goals", *goal_lines(r["goals"])]
    return "\n".join(lines)


SECTIONS = {"a": "throughput", "b": "cross_process", "c": "dense", "d": "synth"}


def run(plan: Plan, namespace: str, only: str = "abcd", profile: bool = False) -> dict:
    results: dict[str, Any] = {
        "quick": plan.quick, "namespace": namespace,
        "machine": machine(mido=importlib.metadata.version("mido"), numpy=np.__version__),
        "date": utc_date(),
        "section_load": {}}
    t0 = time.monotonic()
    mido_rate = 0
    for letter, key in SECTIONS.items():
        if letter not in only:
            continue
        meter = CpuMeter()
        if key == "throughput":
            results[key] = bench_throughput(plan, namespace)
            mido_rate = results[key]["rows"]["mido_parser"]["events_per_s"]
        elif key == "cross_process":
            if not mido_rate:  # (a) was skipped: the baseline alone
                mido_rate = mido_baseline(plan)
            results[key] = bench_cross_process(plan, namespace, mido_rate)
        elif key == "dense":
            results[key] = bench_dense(plan, namespace, profile)
        else:
            results[key] = bench_synth(plan, namespace)
        results["section_load"][key] = meter.report()
    results["goals"] = goals(results)
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    headline: dict[str, Any] = {}
    if "throughput" in results:
        headline["events_per_s_in_process"] = \
            results["throughput"]["rows"]["discolink_commands"]["events_per_s"]
        headline["in_process_ratio_vs_mido_parser"] = results["throughput"]["ratio_vs_mido_parser"]
    if "cross_process" in results:
        x = results["cross_process"]["rows"]["real"]
        headline["events_per_s_cross_process"] = x["events_per_s"]
        headline["cross_process_ratio_vs_mido_parser"] = x["ratio_vs_mido_parser"]
    if "dense" in results:
        headline["dense_fraction_of_block"] = {
            k: {"median": v["median_fraction_of_block"], "p95": v["p95_fraction_of_block"],
                "met": v["met"]} for k, v in results["dense"]["rows"].items()}
    return {**headline, **results}


def main(argv: list[str] | None = None) -> int:
    sections = "".join(SECTIONS)
    p = arg_parser(__doc__, "short run (under 30 s)", sections, "c")
    p.add_argument("--profile", action="store_true", help="(c): also run cProfile over the "
                   "device's part and report the top functions by own time")
    args = parse_args(p, argv, sections)
    plan = Plan.make(args.quick)
    return run_in_namespace(lambda namespace: run(plan, namespace, args.only, args.profile),
                            table, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
