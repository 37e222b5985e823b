"""Transport benchmark: discoLink's shared-memory rings against the IPC a user would otherwise pick.

Run from the repository root:

    .venv/bin/python bench/transport.py            # full run (about 2 min), human table
    .venv/bin/python bench/transport.py --quick    # shorter run, under 40 s
    .venv/bin/python bench/transport.py --json     # one JSON object on stdout (table on stderr)

Device and host always run in separate OS processes; this process is the host (reader) side.
Every comparison is measured in the same run, on the same bytes, so the ratios mean something:

(a) Audio throughput of stereo 512-frame float32 blocks (4096 bytes): the shm ring (a device
    process writes with ``Device.send_audio`` as fast as the ring allows, this process reads
    with ``Host.receive_audio``) vs ``socket.socketpair`` (writer ``sendall``, reader
    ``recv_into``) vs ``multiprocessing.Pipe`` (``send_bytes``/``recv_bytes_into``) vs an
    in-process ``np.copyto`` of the same bytes (copying with no IPC at all: the ceiling).
    Each block carries a sequence number; only full, in-order blocks count.
(b) Command latency, one message in flight: one-way (the host stamps ``time.monotonic_ns()``
    into a Ping; the device process stamps its receipt; CLOCK_MONOTONIC is system-wide) and
    Ping->Pong round trip timed on the host, p50/p99 over at least 10,000 messages each, vs
    the same over UDP on 127.0.0.1. The shm device is a tight ``process_commands()`` loop;
    the real CLI device (``python -m bridge device``, which sleeps ~0.15-0.2 ms per poll) is a
    separate row.
(c) Note-to-sound latency at 48 kHz, 64- and 256-frame blocks, fill 2 and fill 1, through the
    CLI device: the host reads in real time and sends NoteOn at a block boundary; latency is
    the first sample above 1e-4 minus the send position.
(d) A 64-frame, 48 kHz stream through the CLI device (demand clock, fill 2) for 60 s (10 s
    with --quick): underruns, overruns and the device process's CPU %.
(e) Idle CPU % of a CLI device with no host, for 5 s (3 s with --quick).
(f) Full run only: a scheduler probe (how often a process sleeping one 64-frame period is
    stalled for longer than a block on this machine; no discoLink code).

Every section also reports the CPU that other processes used while it ran: the spin-polling
rows need both cores and collapse when something else takes one.

The goals are reported as PASS/FAIL lines; a missed goal never makes the benchmark fail.
Results and their interpretation: docs/performance.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing as mp
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from _common import (
    CliDevice,
    CpuWindow,
    arg_parser,
    connect_in_process,
    fmt,
    goal_lines,
    load_lines,
    log,
    machine,
    note_onsets,
    parse_args,
    ratio,
    run_in_namespace,
    run_sections,
    utc_date,
)

from bridge.transport import Device, Host, cmd
from bridge.transport.clock import DEFAULT_RT_PRIORITY, IDLE_INTERVAL_S, realtime
from bridge.transport.layout import AUDIO_RING_FRAMES, MESSAGE_HEADER_SIZE

RT_PRIORITY = DEFAULT_RT_PRIORITY  # the host loops of (c) and (d), like the CLI host

SR = 48000
THR_CHANNELS, THR_FRAMES = 2, 512
THR_BYTES = THR_CHANNELS * THR_FRAMES * 4
MSG_BYTES = 256  # a discoLink message; the UDP datagrams are the same size
ONSET_THRESHOLD = 1e-4
U64 = struct.Struct("<Q")
PING_SENT_AT = MESSAGE_HEADER_SIZE  # Ping payload: u64 sent_ns
PONG_RECEIVED_AT = MESSAGE_HEADER_SIZE + 8  # Pong payload: u64 ping_sent_ns, u64 received_ns
CHILD_TIMEOUT_S = 120.0  # a child that outlives this has lost its parent: it exits

# fork: a child starts in milliseconds with numpy and bridge already imported (spawn would
# spend ~0.25 s per child re-importing them); every child builds its own Device/sockets.
_ctx = mp.get_context("fork")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How long each part runs; --quick shortens everything except the message counts."""

    quick: bool
    thr_rounds: int  # throughput: interleaved rounds; each transport's median is reported
    thr_warmup_s: float  # per round
    thr_seconds: float  # per round
    messages: int  # measured messages per latency row (10,000 minimum in both modes)
    warmup_messages: int
    notes: int
    stream_s: float
    idle_s: float
    probe_s: float  # (f) scheduler probe; 0 skips it (--quick)
    stream_fill: int = 2  # (d) demand-clock fill; 2 is the measured configuration

    @staticmethod
    def make(quick: bool) -> Plan:
        if quick:
            return Plan(True, 3, 0.15, 0.4, 10_000, 500, 8, 10.0, 3.0, 0.0)
        return Plan(False, 9, 0.2, 0.5, 20_000, 1_000, 20, 60.0, 5.0, 10.0)


# ---- process helpers ------------------------------------------------------------------------


@contextlib.contextmanager
def child(target: Callable[..., None], *args: Any) -> Iterator[mp.process.BaseProcess]:
    """Run ``target(*args)`` in a child process; always joined or killed on the way out."""
    proc = _ctx.Process(target=target, args=args, daemon=True)
    proc.start()
    try:
        yield proc
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def device_cpu(window: CpuWindow) -> dict:
    """``window.finish()`` under this script's names: device_ before the CPU and wakeup keys."""
    renamed = {"cpu_percent": "device_cpu_percent", "wakeups_per_s": "device_wakeups_per_s",
               "cpu_percent_precise": "device_cpu_percent_precise"}
    return {renamed.get(k, k): v for k, v in window.finish().items() if k != "threads"}


def connect(host: Host, device_id: str, sample_rate: int, block: int) -> None:
    host.set_local_buffer_info(sample_rate, block)
    host.connect(device_id, timeout=5.0)


# ---- statistics -------------------------------------------------------------------------------


def summarize_ns(samples: np.ndarray) -> dict[str, float]:
    """Percentiles (50, 90, 99, 99.9), mean and max of nanosecond samples, in microseconds."""
    us = samples.astype(np.float64) / 1e3
    p50, p90, p99, p999 = np.percentile(us, [50, 90, 99, 99.9])
    return {"n": int(us.size), "p50_us": round(float(p50), 2), "p90_us": round(float(p90), 2),
            "p99_us": round(float(p99), 2), "p999_us": round(float(p999), 2),
            "mean_us": round(float(us.mean()), 2), "max_us": round(float(us.max()), 2)}


# ---- (a) throughput ----------------------------------------------------------------------------


def _thr_block() -> tuple[np.ndarray, np.ndarray]:
    """A stereo 512-frame block and an int32 view of it whose [0, 0] carries a sequence number."""
    block = np.random.default_rng(1).uniform(-0.5, 0.5, (THR_CHANNELS, THR_FRAMES))
    block = np.ascontiguousarray(block, dtype=np.float32)
    return block, block.view(np.int32)


def _shm_writer(namespace: str, name: str, ready: Any, stop: Any) -> None:
    """Device process: write blocks as fast as the ring allows; when it is full, spin."""
    block, stamp = _thr_block()
    with Device(namespace) as dev:
        dev.start(name, THR_CHANNELS, SR, THR_FRAMES)
        ready.put(dev.id)
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not dev.claimed and not stop.is_set() and time.monotonic() < deadline:
            dev.process_commands()
            time.sleep(0.0002)
        fill, send, poll = dev.fill, dev.send_audio, dev.process_commands
        full = AUDIO_RING_FRAMES - THR_FRAMES  # more queued than this: no room for a block
        seq = 0
        while not stop.is_set() and time.monotonic() < deadline:
            for _ in range(256):
                if fill() > full:
                    poll()  # the ring is full: serve commands (handshake, heartbeat) meanwhile
                    continue
                stamp[0, 0] = seq
                if send(block):
                    seq += 1
            poll()


def _counting_writer(send: Callable[[memoryview], Any], close: Callable[[], None],
                     stop: Any) -> None:
    """Send sequence-numbered blocks with ``send`` until ``stop`` is set."""
    block, stamp = _thr_block()
    view = memoryview(block).cast("B")
    seq = 0
    try:
        while not stop.is_set():
            for _ in range(256):
                stamp[0, 0] = seq
                send(view)
                seq += 1
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        close()


def _socket_writer(sock: socket.socket, stop: Any) -> None:
    _counting_writer(sock.sendall, sock.close, stop)


def _pipe_writer(conn: Any, stop: Any) -> None:
    _counting_writer(conn.send_bytes, conn.close, stop)


def _measure_reader(read_block: Callable[[], int], warmup_s: float, seconds: float) -> dict:
    """Call ``read_block`` (returns the block's sequence number, or -1 when nothing arrived)
    through a warm-up and then ``seconds`` of measurement; count full in-order blocks."""
    blocks = gaps = 0
    expected = -1
    start = time.perf_counter_ns()
    measure_at = start + int(warmup_s * 1e9)
    end = measure_at + int(seconds * 1e9)
    t0, b0 = 0, -1
    now = start
    while now < end:
        for _ in range(64):
            seq = read_block()
            if seq < 0:
                continue
            if expected >= 0 and seq != expected:
                gaps += 1
            expected = seq + 1
            blocks += 1
        now = time.perf_counter_ns()
        if b0 < 0 and now >= measure_at:
            t0, b0 = now, blocks
    n, elapsed = blocks - b0, (now - t0) / 1e9
    return {"blocks": n, "seconds": round(elapsed, 3), "blocks_per_s": round(n / elapsed),
            "mb_per_s": round(n * THR_BYTES / elapsed / 1e6, 1), "sequence_gaps": gaps}


def throughput_shm(plan: Plan, namespace: str) -> dict:
    ready, stop = _ctx.Queue(), _ctx.Event()
    out = np.zeros((THR_CHANNELS, THR_FRAMES), np.float32)
    stamp = out.view(np.int32)
    with child(_shm_writer, namespace, "ThrWriter", ready, stop) as proc:
        try:
            device_id = ready.get(timeout=20)
            with Host(namespace) as host:
                connect(host, device_id, SR, THR_FRAMES)
                available, receive = host.available_frames, host.receive_audio

                def read_block() -> int:
                    if available() >= THR_FRAMES and receive(out) == THR_FRAMES:
                        return int(stamp[0, 0])
                    return -1

                result = _measure_reader(read_block, plan.thr_warmup_s, plan.thr_seconds)
                counters = host.counters()
                result["host_underruns"] = host.stats.underruns
                result["device_overruns"] = counters["overruns"]
        finally:
            stop.set()
    result["writer_exit"] = proc.exitcode
    return result


def throughput_socketpair(plan: Plan) -> dict:
    reader, writer = socket.socketpair()
    stop = _ctx.Event()
    out = np.zeros((THR_CHANNELS, THR_FRAMES), np.float32)
    stamp, view = out.view(np.int32), memoryview(out).cast("B")
    recv_into = reader.recv_into

    def read_block() -> int:
        got = recv_into(view, THR_BYTES)
        while got < THR_BYTES:  # a stream socket may hand back part of a block
            n = recv_into(view[got:], THR_BYTES - got)
            if n == 0:
                raise EOFError("socketpair writer went away")
            got += n
        return int(stamp[0, 0])

    try:
        with child(_socket_writer, writer, stop):
            writer.close()  # the child holds its own copy
            try:
                result = _measure_reader(read_block, plan.thr_warmup_s, plan.thr_seconds)
            finally:
                stop.set()
                while recv_into(view, THR_BYTES):  # drain until the writer closes
                    pass
    finally:
        reader.close()
    return result


def throughput_pipe(plan: Plan) -> dict:
    reader, writer = _ctx.Pipe(duplex=False)  # one-way: os.pipe() underneath
    stop = _ctx.Event()
    out = np.zeros((THR_CHANNELS, THR_FRAMES), np.float32)
    stamp, view = out.view(np.int32), memoryview(out).cast("B")
    recv_into = reader.recv_bytes_into

    def read_block() -> int:
        if recv_into(view) != THR_BYTES:
            raise RuntimeError("Pipe delivered a short message")
        return int(stamp[0, 0])

    try:
        with child(_pipe_writer, writer, stop):
            writer.close()
            try:
                result = _measure_reader(read_block, plan.thr_warmup_s, plan.thr_seconds)
            finally:
                stop.set()
                with contextlib.suppress(EOFError):
                    while True:
                        recv_into(view)
    finally:
        reader.close()
    return result


def throughput_memcpy(plan: Plan) -> dict:
    src, src_stamp = _thr_block()
    dst = np.zeros_like(src)
    dst_stamp = dst.view(np.int32)
    seq = [0]

    def read_block() -> int:
        src_stamp[0, 0] = seq[0]
        seq[0] += 1
        np.copyto(dst, src)
        return int(dst_stamp[0, 0])

    return _measure_reader(read_block, plan.thr_warmup_s, plan.thr_seconds)


def bench_throughput(plan: Plan, namespace: str) -> dict:
    """Interleaved rounds of every transport (a fresh writer process each time); the median
    round of each is reported, so a burst of foreign load cannot decide a ratio alone."""
    runs: dict[str, Callable[[], dict]] = {
        "shm": lambda: throughput_shm(plan, namespace),
        "socketpair": lambda: throughput_socketpair(plan),
        "pipe": lambda: throughput_pipe(plan),
        "memcpy": lambda: throughput_memcpy(plan)}
    names = list(runs)
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    log(f"(a) throughput: {plan.thr_rounds} rounds of {', '.join(names)}")
    for r in range(plan.thr_rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order
            rounds[name].append(runs[name]())
    rows = {}
    for name, results in rounds.items():
        rates = sorted(x["blocks_per_s"] for x in results)
        median = float(np.median(rates))
        rows[name] = {"blocks_per_s": round(median), "mb_per_s": round(median * THR_BYTES / 1e6),
                      "rounds_blocks_per_s": [x["blocks_per_s"] for x in results],
                      "sequence_gaps": sum(x["sequence_gaps"] for x in results)}
        for key in ("host_underruns", "device_overruns"):
            if key in results[0]:
                rows[name][key] = sum(x[key] for x in results)
    shm_rate = rows["shm"]["blocks_per_s"]
    return {"block": {"channels": THR_CHANNELS, "frames": THR_FRAMES, "bytes": THR_BYTES},
            "rounds": plan.thr_rounds, "seconds_per_round": plan.thr_seconds, "rows": rows,
            "ratio_vs_socketpair": ratio(shm_rate, rows["socketpair"]["blocks_per_s"]),
            "ratio_vs_pipe": ratio(shm_rate, rows["pipe"]["blocks_per_s"]),
            "ratio_vs_memcpy": ratio(shm_rate, rows["memcpy"]["blocks_per_s"]),
            "five_x_socketpair_blocks_per_s": 5 * rows["socketpair"]["blocks_per_s"],
            # Reference point: the in-process copy loop over socketpair. The shm reader makes
            # one Python call per block too, so it cannot run much faster than that loop:
            "ceiling_ratio_memcpy_vs_socketpair": ratio(rows["memcpy"]["blocks_per_s"],
                                                        rows["socketpair"]["blocks_per_s"])}


# ---- (b) command latency ------------------------------------------------------------------------


def _latency_device(namespace: str, name: str, record: int, ready: Any, results: Any) -> None:
    """Device process: a tight process_commands() loop (no sleep). Stamps the receipt of the
    first ``record`` Pings (before its own Ping handling answers them: the stamp and two array
    stores add ~0.3 us to each round trip); stops on the host's Disconnect."""
    recv_ns = np.zeros(record, np.int64)
    sent_ns = np.zeros(record, np.int64)
    state = {"n": 0, "done": False}
    ping, disconnect = cmd.T.Ping, cmd.T.Disconnect
    unpack_from = U64.unpack_from

    def on_command(msg: Any, device: Device) -> bool:
        t = time.monotonic_ns()
        if msg.type == ping:
            n = state["n"]
            if n < record:
                recv_ns[n] = t
                sent_ns[n] = unpack_from(msg.buf, PING_SENT_AT)[0]
                state["n"] = n + 1
        elif msg.type == disconnect:
            state["done"] = True
        return False  # fall through: the device's own Ping handling answers the Pong

    with Device(namespace) as dev:
        dev.on_command(on_command)
        dev.start(name, 2, SR, 256, mode="midi")  # the command rings are the same in any mode
        ready.put(dev.id)
        poll = dev.process_commands
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not state["done"]:
            for _ in range(4096):
                poll()
            if time.monotonic() > deadline:
                break
    n = state["n"]
    results.put((recv_ns[:n] - sent_ns[:n]).tolist())


def _ping_loop(host: Host, count: int, pong_received: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``count`` Pings, one in flight, each awaited by spinning on process_responses().

    Returns (round trips timed on the host, one-way from the Pong's received_ns), in ns.
    """
    rtt = np.empty(count, np.int64)
    pong_one_way = np.empty(count, np.int64)
    send, poll = host.send_command, host.process_responses
    pack_into = U64.pack_into
    for i in range(count):
        msg = cmd.ping(0)
        t0 = time.perf_counter_ns()
        sent = time.monotonic_ns()
        pack_into(msg.buf, PING_SENT_AT, sent)
        if not send(msg):
            raise RuntimeError(f"send_command failed: {host.stats.last_error}")
        spins = 0
        while poll() == 0:
            spins += 1
            if spins & 0xFFFF == 0 and time.perf_counter_ns() - t0 > 2e9:
                raise RuntimeError("no Pong within 2 s")
        rtt[i] = time.perf_counter_ns() - t0
        pong_one_way[i] = pong_received[0] - sent
    return rtt, pong_one_way


def _pong_recorder(host: Host) -> list[int]:
    received = [0]

    def on_response(msg: Any, _host: Host) -> None:
        if msg.type == cmd.T.Pong:
            received[0] = U64.unpack_from(msg.buf, PONG_RECEIVED_AT)[0]

    host.on_response(on_response)
    return received


def latency_shm(plan: Plan, namespace: str) -> dict:
    warm, n = plan.warmup_messages, plan.messages
    ready, results = _ctx.Queue(), _ctx.Queue()
    with child(_latency_device, namespace, "LatDevice", warm + n, ready, results):
        device_id = ready.get(timeout=20)
        with Host(namespace) as host:
            connect(host, device_id, SR, 256)
            # The same pings give both: the device stamps each receipt, the host times
            # each round trip.
            rtt, _ = _ping_loop(host, warm + n, _pong_recorder(host))
        one_way = np.asarray(results.get(timeout=20), np.int64)  # sent after the Disconnect
    return {"one_way": summarize_ns(one_way[warm:]), "rtt": summarize_ns(rtt[warm:])}


def latency_cli(plan: Plan, namespace: str) -> dict:
    warm, n = plan.warmup_messages, plan.messages
    with CliDevice(namespace, "LatCli", "--blocksize", "256") as dev, Host(namespace) as host:
        connect(host, dev.id, SR, 256)
        pong = _pong_recorder(host)
        rtt, pong_one_way = _ping_loop(host, warm + n, pong)
    return {"one_way": summarize_ns(pong_one_way[warm:]), "rtt": summarize_ns(rtt[warm:]),
            "one_way_source": "Pong received_ns (stamped in the device's Ping handler)"}


def _set_recv_timeout(sock: socket.socket, seconds: int) -> None:
    """A kernel receive timeout (SO_RCVTIMEO): keeps blocking recv a single syscall."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, 0))


def _udp_echo(busy: bool, record: int, ready: Any, results: Any) -> None:
    """UDP echo on 127.0.0.1: stamps the receipt of the first ``record`` datagrams, echoes
    every datagram back, stops on one whose stamp is 0."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    ready.put(sock.getsockname()[1])
    buf = bytearray(MSG_BYTES)
    one_way = np.zeros(record, np.int64)
    n = 0
    if busy:
        sock.setblocking(False)
    else:
        _set_recv_timeout(sock, 30)
    recvfrom_into, sendto = sock.recvfrom_into, sock.sendto
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    spins = 0
    try:
        while True:
            try:
                _, addr = recvfrom_into(buf)
            except BlockingIOError:
                spins += 1
                if spins & 0xFFFF == 0 and time.monotonic() > deadline:
                    break
                continue
            t = time.monotonic_ns()
            sent = U64.unpack_from(buf, 0)[0]
            if sent == 0:
                break
            if n < record:
                one_way[n] = t - sent
                n += 1
            sendto(buf, addr)
    finally:
        sock.close()
        results.put(one_way[:n].tolist())


def latency_udp(plan: Plan, busy: bool) -> dict:
    warm, n = plan.warmup_messages, plan.messages
    ready, results = _ctx.Queue(), _ctx.Queue()
    with child(_udp_echo, busy, warm + n, ready, results):
        port = ready.get(timeout=20)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.connect(("127.0.0.1", port))
            if busy:
                sock.setblocking(False)
            else:
                _set_recv_timeout(sock, 5)
            buf, rbuf = bytearray(MSG_BYTES), bytearray(MSG_BYTES)
            send, recv_into, pack_into = sock.send, sock.recv_into, U64.pack_into

            def round_trips(count: int) -> np.ndarray:
                rtt = np.empty(count, np.int64)
                for i in range(count):
                    t0 = time.perf_counter_ns()
                    pack_into(buf, 0, time.monotonic_ns())
                    send(buf)
                    if busy:
                        spins = 0
                        while True:
                            try:
                                recv_into(rbuf)
                                break
                            except BlockingIOError:
                                spins += 1
                                if spins & 0xFFFF == 0 and time.perf_counter_ns() - t0 > 2e9:
                                    raise RuntimeError("no UDP echo within 2 s") from None
                    else:
                        recv_into(rbuf)
                    rtt[i] = time.perf_counter_ns() - t0
                return rtt

            rtt = round_trips(warm + n)  # the echo process stamps each receipt
            U64.pack_into(buf, 0, 0)
            send(buf)  # stop the echo process
        finally:
            sock.close()
        one_way = np.asarray(results.get(timeout=20), np.int64)
    return {"one_way": summarize_ns(one_way[warm:]), "rtt": summarize_ns(rtt[warm:])}


def latency_in_process(plan: Plan, namespace: str) -> dict:
    """No IPC: the same Ping/Pong code with Device and Host in one process, one thread, so
    the Python protocol work per round trip is separated from transport and scheduling."""
    import mmap

    from bridge.transport.ring import MessageRing

    n = plan.messages
    with Device(namespace) as dev, Host(namespace) as host:
        dev.start("InProc", 2, SR, 256, mode="midi")
        connect_in_process(host, dev.id, SR, 256, dev.process_commands)
        send, serve_one, poll = host.send_command, dev.process_commands, host.process_responses
        rounds = np.empty(n, np.int64)
        for i in range(n):
            msg = cmd.ping(0)
            t0 = time.perf_counter_ns()
            U64.pack_into(msg.buf, PING_SENT_AT, time.monotonic_ns())
            send(msg)
            serve_one()
            poll()
            rounds[i] = time.perf_counter_ns() - t0
    # The bare ring: push and pop one 256-byte message, nothing else.
    buf = mmap.mmap(-1, 1 << 20)
    ring, msg, rx = MessageRing(buf, 0), bytearray(MSG_BYTES), bytearray(MSG_BYTES)
    ring_ns = np.empty(n, np.int64)
    for i in range(n):
        t0 = time.perf_counter_ns()
        ring.push(msg)
        ring.pop(rx)
        ring_ns[i] = time.perf_counter_ns() - t0
    buf.close()
    return {"protocol_round_trip": summarize_ns(rounds),
            "ring_push_pop": summarize_ns(ring_ns)}


def bench_latency(plan: Plan, namespace: str) -> dict:
    rows = {}
    for name, fn in (("shm", lambda: latency_shm(plan, namespace)),
                     ("shm_cli_device", lambda: latency_cli(plan, namespace)),
                     ("udp", lambda: latency_udp(plan, busy=False)),
                     ("udp_busy_poll", lambda: latency_udp(plan, busy=True))):
        log(f"(b) latency: {name}")
        rows[name] = fn()
    shm_p99 = rows["shm"]["rtt"]["p99_us"]
    return {"messages": plan.messages, "warmup_messages": plan.warmup_messages, "rows": rows,
            "in_process": latency_in_process(plan, namespace),
            "rtt_p99_ratio_vs_udp": ratio(shm_p99, rows["udp"]["rtt"]["p99_us"]),
            "rtt_p99_ratio_vs_udp_busy_poll": ratio(shm_p99,
                                                    rows["udp_busy_poll"]["rtt"]["p99_us"]),
            "cli_rtt_p99_ratio_vs_udp": ratio(rows["shm_cli_device"]["rtt"]["p99_us"],
                                              rows["udp"]["rtt"]["p99_us"])}


# ---- (c) note-to-sound --------------------------------------------------------------------------


def note_to_sound(plan: Plan, namespace: str, block: int, fill: int) -> dict:
    """``note_onsets`` through the CLI sine device, in ms."""
    with CliDevice(namespace, f"Note{block}f{fill}", "--blocksize", str(block), "--fill",
                   str(fill)) as dev:
        run = note_onsets(namespace, dev.id, block, plan.notes, sample_rate=SR,
                          rt_priority=RT_PRIORITY, threshold=ONSET_THRESHOLD)
    latencies = [f / SR * 1000.0 for f in run["frames"]]
    missed, noisy, underruns = run["missed"], run["not_silent_before"], run["underruns"]
    goal = fill * block / SR * 1000.0 + 1.0
    lat = np.asarray(latencies)
    result = {"fill": fill, "block": block, "notes": plan.notes, "measured": int(lat.size),
              "missed": missed, "not_silent_before": noisy, "underruns": underruns,
              "fill_x_block_ms": round(fill * block / SR * 1000.0, 3),
              "goal_ms": round(goal, 3)}
    if lat.size:
        result.update(median_ms=round(float(np.median(lat)), 3),
                      min_ms=round(float(lat.min()), 3), max_ms=round(float(lat.max()), 3),
                      over_goal=int((lat > goal).sum()),
                      latencies_ms=[round(float(x), 3) for x in lat])
    result["met"] = bool(lat.size == plan.notes and lat.max() <= goal)
    return result


def bench_note_to_sound(plan: Plan, namespace: str) -> dict:
    out: dict[str, dict] = {}
    for block in (64, 256):
        for fill in (2, 1):
            log(f"(c) note-to-sound: {block} frames, fill {fill}")
            out.setdefault(str(block), {})[f"fill_{fill}"] = note_to_sound(plan, namespace,
                                                                          block, fill)
    return out


# ---- (d) stream and (e) idle --------------------------------------------------------------------


def bench_stream(plan: Plan, namespace: str) -> dict:
    block = 64
    fill = plan.stream_fill
    log(f"(d) stream: {block} frames at {SR} Hz, demand clock, fill {fill}, "
        f"{plan.stream_s:.0f} s")
    n_blocks = int(plan.stream_s * SR / block)
    period = block / SR
    buf = np.zeros((2, block), np.float32)
    read_at = np.zeros(n_blocks)  # when each read happened (monotonic s)
    short = np.zeros(n_blocks, bool)  # the read came up short: an underrun
    with CliDevice(namespace, "Stream", "--blocksize", str(block), "--fill", str(fill),
                   "--clock", "demand") as dev, Host(namespace) as host:
        connect(host, dev.id, SR, block)
        host.send_command(cmd.midi_note_on(0, 69, 100))  # keep a voice sounding: real work
        cpu = CpuWindow(dev.pid)
        host_cpu0 = time.process_time()
        receive, poll = host.receive_audio, host.process_responses
        with realtime(RT_PRIORITY):  # the host loop runs as a DAW's audio callback would
            start = time.monotonic()
            for k in range(n_blocks):
                read_at[k] = time.monotonic()
                short[k] = receive(buf) < block
                poll()
                wait = start + (k + 1) * period - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        result = device_cpu(cpu)
        host_cpu = time.process_time() - host_cpu0
        host.send_command(cmd.midi_cc(0, 123, 0))
        underruns, overruns = host.stats.underruns, host.counters()["overruns"]
        blocks_read = host.stats.blocks_read
    late = read_at - (start + np.arange(n_blocks) * period)
    late_blocks = late / period
    # Block k is requested when the host reads block k - fill (the ring drops below fill
    # blocks). If at least one block period passed between that read and this one, the
    # device had a whole period to render it: an underrun then is the device missing its
    # deadline. If less passed, the host was catching up after a late wakeup, reading faster
    # than real time, and no device polling at any rate could have kept up.
    given = np.full(n_blocks, np.inf)
    given[fill:] = read_at[fill:] - read_at[:-fill]
    result.update(
        block=block, fill=fill, blocks_read=blocks_read, underruns=underruns,
        overruns=overruns,
        underruns_device_had_a_period=int((short & (given >= period)).sum()),
        underruns_host_catching_up=int((short & (given < period)).sum()),
        host_cpu_percent=round(host_cpu / result["seconds"] * 100.0, 2),
        host_late_p99_ms=round(float(np.percentile(late, 99)) * 1000, 3),
        host_late_max_ms=round(float(late.max()) * 1000, 3),
        host_reads_late_1_block_or_more=int((late_blocks >= 1).sum()),
        host_reads_late_2_blocks_or_more=int((late_blocks >= 2).sum()),
        device_stopped_line=dev.stopped_line)
    return result


def bench_idle(plan: Plan, namespace: str) -> dict:
    """An unclaimed CLI device, and beside it, measured over the same window, a bare Python
    loop of the same idle wait (``time.sleep(IDLE_INTERVAL_S)``): the cost of waking up."""
    log(f"(e) idle device CPU for {plan.idle_s:.0f} s")
    baseline = subprocess.Popen([sys.executable, "-c",
                                 f"import time\nwhile True:\n    time.sleep({IDLE_INTERVAL_S})"])
    try:
        with CliDevice(namespace, "Idle") as dev:
            time.sleep(0.2)  # past start-up
            cpu, base = CpuWindow(dev.pid), CpuWindow(baseline.pid)
            time.sleep(plan.idle_s)
            result, base_result = device_cpu(cpu), device_cpu(base)
    finally:
        baseline.kill()
        baseline.wait()
    result["baseline_sleep_loop"] = {
        "what": f"python -c 'while True: time.sleep({IDLE_INTERVAL_S})', same window",
        **{k: v for k, v in base_result.items() if k != "seconds"}}
    return result


def bench_probe(plan: Plan, namespace: str) -> dict:
    """How often this machine stalls a process that sleeps one 64-frame period: the same
    wait, at the same SCHED_FIFO priority, as the host in (c) and (d). No discoLink code."""
    period = 64 / SR
    log(f"(f) scheduler probe: time.sleep({period * 1000:.3f} ms) for {plan.probe_s:.0f} s "
        f"at SCHED_FIFO {RT_PRIORITY}")
    over = []
    end = time.monotonic() + plan.probe_s
    with realtime(RT_PRIORITY):
        while (t := time.monotonic()) < end:
            time.sleep(period)
            over.append(time.monotonic() - t - period)
    ms = np.asarray(over) * 1000.0
    p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
    stalls = int((ms > period * 1000).sum())
    return {"sleep_ms": round(period * 1000, 3), "sleeps": int(ms.size),
            "overshoot_p50_ms": round(float(p50), 3), "overshoot_p99_ms": round(float(p99), 3),
            "overshoot_p999_ms": round(float(p999), 3),
            "overshoot_max_ms": round(float(ms.max()), 3), "stalls_over_1_block": stalls,
            "stalls_over_1_block_per_10s": round(stalls / plan.probe_s * 10, 1)}


# ---- report -------------------------------------------------------------------------------------


def goals(r: dict) -> list[dict]:
    out = []

    def goal(name: str, met: bool, detail: str) -> None:
        out.append({"goal": name, "met": bool(met), "detail": detail})

    if "throughput" in r:
        x = r["throughput"]["ratio_vs_socketpair"]
        goal("throughput >= 5x socketpair", x is not None and x >= 5.0, f"{fmt(x, '.2f')}x")
    if "latency" in r:
        x = r["latency"]["rtt_p99_ratio_vs_udp"]
        goal("RTT p99 <= 1/5 of UDP", x is not None and x <= 0.2,
             f"shm/UDP p99 = {fmt(x)} (needs <= 0.200)")
    if "note_to_sound" in r:
        for block, fills in r["note_to_sound"].items():
            for row in fills.values():
                worst = row.get("max_ms", float("nan"))
                goal(f"note-to-sound {block} frames fill {row['fill']} <= fill x block + 1 ms",
                     row["met"], f"max {worst:.3f} ms, goal {row['goal_ms']:.3f} ms, "
                     f"{row['measured']}/{row['notes']} notes")
    if "stream" in r:
        s = r["stream"]
        goal(f"no underruns in the 64-frame stream (fill {s['fill']})", s["underruns"] == 0,
             f"{s['underruns']} underruns, {s['overruns']} overruns in {s['seconds']} s")
    if "idle" in r:
        x = r["idle"]["device_cpu_percent"]
        goal("idle device CPU <= 2%", x <= 2.0, f"{x:.2f}%")
    return out


def _precise(row: dict) -> str:
    x = row.get("device_cpu_percent_precise")
    return "" if x is None else f" ({x:.2f}% by sum_exec_runtime)"


def table(r: dict) -> str:
    m = r["machine"]
    lines = [f"discoLink transport benchmark ({'quick' if r['quick'] else 'full'} run, "
             f"{r['date']}): {m['nproc']} cores, Debian {m['debian']}, Python {m['python']}, "
             f"load {m['loadavg_at_start']}"]
    if "throughput" in r:
        t = r["throughput"]
        lines += ["", f"(a) Throughput, stereo {THR_FRAMES}-frame float32 blocks "
                  f"({THR_BYTES} B), device/writer and host/reader in separate processes",
                  f"    {'transport':<34}{'blocks/s':>11}{'MB/s':>9}{'shm is':>10}"]
        names = {"shm": "discoLink shm ring", "socketpair": "socket.socketpair",
                 "pipe": "multiprocessing.Pipe", "memcpy": "np.copyto, in-process (ceiling)"}
        shm_rate = t["rows"]["shm"]["blocks_per_s"]
        for key, row in t["rows"].items():
            rel = "" if key == "shm" else f"{fmt(ratio(shm_rate, row['blocks_per_s']), '.2f')}x"
            lines.append(f"    {names[key]:<34}{row['blocks_per_s']:>11,}{row['mb_per_s']:>9,}"
                         f"{rel:>10}")
        gaps = sum(row["sequence_gaps"] for row in t["rows"].values())
        lines.append(f"    median of {t['rounds']} interleaved rounds of "
                     f"{t['seconds_per_round']} s; sequence gaps {gaps}; 5x socketpair would "
                     f"be {t['five_x_socketpair_blocks_per_s']:,} blocks/s, the np.copyto loop "
                     f"is {fmt(t['ceiling_ratio_memcpy_vs_socketpair'], '.2f')}x socketpair")
        for key, row in t["rows"].items():
            spread = ", ".join(f"{x:,}" for x in row["rounds_blocks_per_s"])
            lines.append(f"      {names[key]:<32} rounds: {spread}")
    if "latency" in r:
        lat = r["latency"]
        lines += ["", f"(b) Command latency, one message in flight, microseconds "
                  f"({lat['messages']:,} messages per column, after {lat['warmup_messages']} "
                  "warm-up)",
                  f"    {'transport':<40}{'one-way p50':>12}{'p99':>9}{'RTT p50':>10}{'p99':>9}"]
        names = {"shm": "shm, device polling process_commands()",
                 "shm_cli_device": "shm, CLI device (sleeping poll)",
                 "udp": "UDP 127.0.0.1, blocking sockets",
                 "udp_busy_poll": "UDP 127.0.0.1, busy-polling sockets"}
        for key, row in lat["rows"].items():
            ow, rt = row["one_way"], row["rtt"]
            lines.append(f"    {names[key]:<40}{ow['p50_us']:>12.1f}{ow['p99_us']:>9.1f}"
                         f"{rt['p50_us']:>10.1f}{rt['p99_us']:>9.1f}")
        ip = lat["in_process"]
        lines.append(f"    no IPC, one process: Ping->Pong through Host and Device code p50 "
                     f"{ip['protocol_round_trip']['p50_us']:.1f}, p99 "
                     f"{ip['protocol_round_trip']['p99_us']:.1f}; bare ring push+pop p50 "
                     f"{ip['ring_push_pop']['p50_us']:.2f}")
        lines.append(f"    shm RTT tail: p90 {lat['rows']['shm']['rtt']['p90_us']:.1f}, p99.9 "
                     f"{lat['rows']['shm']['rtt']['p999_us']:.1f}, max "
                     f"{lat['rows']['shm']['rtt']['max_us']:.1f}; UDP p90 "
                     f"{lat['rows']['udp']['rtt']['p90_us']:.1f}, p99.9 "
                     f"{lat['rows']['udp']['rtt']['p999_us']:.1f}")
        lines.append(f"    RTT p99 shm/UDP = {fmt(lat['rtt_p99_ratio_vs_udp'])}, shm/UDP busy-poll "
                     f"= {fmt(lat['rtt_p99_ratio_vs_udp_busy_poll'])}, CLI device/UDP = "
                     f"{fmt(lat['cli_rtt_p99_ratio_vs_udp'])}")
    if "note_to_sound" in r:
        lines += ["", f"(c) Note-to-sound at {SR} Hz through the CLI device (demand clock), ms",
                  f"    {'block':>5}{'fill':>5}{'notes':>7}{'median':>9}{'min':>8}{'max':>8}"
                  f"{'fill x block':>14}{'goal':>8}{'over goal':>11}{'underruns':>11}"]
        for fills in r["note_to_sound"].values():
            for row in fills.values():
                def f(key: str, row: dict = row) -> str:
                    return f"{row[key]:.3f}" if key in row else "n/a"
                lines.append(f"    {row['block']:>5}{row['fill']:>5}"
                             f"{row['measured']:>4}/{row['notes']:<2}{f('median_ms'):>9}"
                             f"{f('min_ms'):>8}{f('max_ms'):>8}{row['fill_x_block_ms']:>14.3f}"
                             f"{row['goal_ms']:>8.3f}{row.get('over_goal', 0):>11}"
                             f"{row['underruns']:>11}")
    if "stream" in r:
        s = r["stream"]
        lines += ["", f"(d) Stream: {s['block']} frames at {SR} Hz, demand clock, fill "
                  f"{s['fill']}, {s['seconds']} s ({s['blocks_read']:,} blocks)",
                  f"    underruns {s['underruns']}, overruns {s['overruns']}; device CPU "
                  f"{s['device_cpu_percent']:.1f}% of a core{_precise(s)}, "
                  f"{s['device_wakeups_per_s']:,} wakeups/s; host CPU "
                  f"{s['host_cpu_percent']:.1f}%",
                  f"    underruns where the device had >= 1 block period to render the block "
                  f"{s['underruns_device_had_a_period']}; where the host was catching up "
                  f"{s['underruns_host_catching_up']}",
                  f"    host reads late by >= 1 block {s['host_reads_late_1_block_or_more']}, "
                  f">= 2 blocks {s['host_reads_late_2_blocks_or_more']}; lateness p99 "
                  f"{s['host_late_p99_ms']:.3f} ms, max {s['host_late_max_ms']:.3f} ms"]
    if "idle" in r:
        i = r["idle"]
        b = i["baseline_sleep_loop"]
        lines += ["", f"(e) Idle CLI device, no host, {i['seconds']} s: CPU "
                  f"{i['device_cpu_percent']:.2f}% (tick resolution "
                  f"{i['cpu_resolution_percent']}%){_precise(i)}, "
                  f"{i['device_wakeups_per_s']} wakeups/s",
                  f"    same window, a bare Python time.sleep({IDLE_INTERVAL_S}) loop: CPU "
                  f"{b['device_cpu_percent']:.2f}%{_precise(b)}, "
                  f"{b['device_wakeups_per_s']} wakeups/s"]
    if "scheduler_probe" in r:
        q = r["scheduler_probe"]
        lines += ["", f"(f) Scheduler probe, no discoLink code: time.sleep({q['sleep_ms']} ms) "
                  f"x {q['sleeps']:,}: overshoot p50 {q['overshoot_p50_ms']:.3f} ms, p99 "
                  f"{q['overshoot_p99_ms']:.3f}, p99.9 {q['overshoot_p999_ms']:.3f}, max "
                  f"{q['overshoot_max_ms']:.3f}; {q['stalls_over_1_block']} stalls longer than "
                  f"a block ({q['stalls_over_1_block_per_10s']} per 10 s)"]
    lines += load_lines(r.get("section_load", {}), m["nproc"])
    lines += ["", "Goals", *goal_lines(r["goals"])]
    return "\n".join(lines)


def headline(r: dict) -> dict:
    """The issue's required top-level keys."""
    out: dict[str, Any] = {}
    if "throughput" in r:
        out["throughput_ratio_vs_socketpair"] = r["throughput"]["ratio_vs_socketpair"]
        out["throughput_ratio_vs_memcpy"] = r["throughput"]["ratio_vs_memcpy"]
    if "latency" in r:
        out["rtt_p99_ratio_vs_udp"] = r["latency"]["rtt_p99_ratio_vs_udp"]
    if "note_to_sound" in r:
        out["note_to_sound_ms"] = r["note_to_sound"]
    if "stream" in r:
        out["underruns"] = r["stream"]["underruns"]
        out["overruns"] = r["stream"]["overruns"]
        out["device_cpu_percent"] = r["stream"]["device_cpu_percent"]
    if "idle" in r:
        out["idle_device_cpu_percent"] = r["idle"]["device_cpu_percent"]
    return out


SECTIONS = {"a": ("throughput", bench_throughput), "b": ("latency", bench_latency),
            "c": ("note_to_sound", bench_note_to_sound), "d": ("stream", bench_stream),
            "e": ("idle", bench_idle), "f": ("scheduler_probe", bench_probe)}


def run(plan: Plan, namespace: str, only: str = "abcdef") -> dict:
    """Run the selected sections; returns the full result dict (headline keys first)."""
    results: dict[str, Any] = {
        "quick": plan.quick, "namespace": namespace, "machine": machine(debian=True),
        "date": utc_date(),
        "section_load": {}}
    t0 = time.monotonic()
    run_sections(results, only, {
        letter: (key, functools.partial(section, plan, namespace))
        for letter, (key, section) in SECTIONS.items()
        if not (key == "scheduler_probe" and not plan.probe_s)})
    results["goals"] = goals(results)
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    return {**headline(results), **results}


def main(argv: list[str] | None = None) -> int:
    sections = "".join(SECTIONS)
    p = arg_parser(__doc__, "short run (under 40 s); message counts stay at 10,000", sections,
                   "ab", "; f, the scheduler probe, is skipped with --quick")
    p.add_argument("--stream-fill", type=int, default=2, choices=[1, 2, 3, 4], metavar="N",
                   help="(d) only, for investigations: the device's fill in blocks (default 2, "
                   "the configuration the goal is about)")
    args = parse_args(p, argv, sections)
    plan = dataclasses.replace(Plan.make(args.quick), stream_fill=args.stream_fill)
    # every child process works in the namespace; SIGTERM unwinds like Ctrl-C, so every
    # finally block stops its children and the namespace is cleaned up
    return run_in_namespace(lambda namespace: run(plan, namespace, args.only), table,
                            args.json)


if __name__ == "__main__":
    raise SystemExit(main())
