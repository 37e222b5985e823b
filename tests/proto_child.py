"""Child processes for the protocol tests: the other side of a cross-process exchange.

Usage: python tests/proto_child.py COMMAND ARGS...

  audio-writer SEGMENT TOTAL SEED CHANNELS
      Producer of an AudioRing at offset 0 of SEGMENT: writes frames 0..TOTAL-1, channel c of
      frame i holding the value i + c / 4, in random block sizes. Prints "done" and exits 0.
  msg-writer SEGMENT COUNT
      Producer of a MessageRing at offset 0 of SEGMENT: pushes COUNT messages, message i
      carrying seq i + 1 and a payload derived from i. Prints "done" and exits 0.
  sysex DEVICE_ID SEED
      A host: connects to DEVICE_ID (namespace from $DISCOLINK_NAMESPACE), sends the SysEx
      messages of proto_helpers.sysex_payloads(SEED) as fragments, the two largest with their
      fragments interleaved, then pings (FIFO: the Pong means all was processed). Prints
      "sent N" and exits 0.
  churn COUNT HOLD_MS
      Starts and stops an in-process device "Churn" COUNT times, keeping it registered for
      HOLD_MS each time. Prints "done" and exits 0.
  flaky-render DEVICE_ID
      A device on the demand clock whose render callback fills block k with k + 1 and
      raises on every third block (k = 2, 5, 8, ...). Prints "ready", runs until stdin
      closes, then prints "errors N render_failures M last_error TEXT" and exits 0.
  c-call FUNCTION CHANNELS FLOATS
      Calls _shm.FUNCTION (audio_write or audio_read) on a 1 MiB mapping with CHANNELS
      channels and a FLOATS-long float32 array; prints the result or the exception type.
"""

from __future__ import annotations

import mmap
import sys
import time

import numpy as np

DEADLINE_S = 120.0


def audio_writer(segment: str, total: int, seed: int, channels: int) -> int:
    from bridge.transport.ring import AudioRing
    from bridge.transport.shm import Segment

    seg = Segment.attach(segment)
    ring = AudioRing(seg.buf, 0, channels)
    rng = np.random.default_rng(seed)
    offsets = (np.arange(channels, dtype=np.float64) / 4)[:, None]
    pos = 0
    deadline = time.monotonic() + DEADLINE_S
    while pos < total:
        n = int(min(rng.integers(1, 601), total - pos))
        block = np.ascontiguousarray(np.arange(pos, pos + n, dtype=np.float64) + offsets,
                                     dtype=np.float32)
        while True:
            got = ring.write(block)
            if got == n:
                break
            if got != 0:
                print(f"write returned {got} at frame {pos}", flush=True)
                return 3
            if time.monotonic() > deadline:
                print(f"ring stayed full at frame {pos}", flush=True)
                return 4
            time.sleep(0)
        pos += n
    print("done", flush=True)
    return 0


def message_payload(i: int) -> bytes:
    return bytes((i + k) & 0xFF for k in range(224))


def msg_writer(segment: str, count: int) -> int:
    from bridge.transport import Message
    from bridge.transport.ring import MessageRing
    from bridge.transport.shm import Segment

    seg = Segment.attach(segment)
    ring = MessageRing(seg.buf, 0)
    patterns = [message_payload(i) for i in range(256)]
    m = Message()
    m.type = 0x0100
    deadline = time.monotonic() + DEADLINE_S
    for i in range(count):
        m.seq = i + 1
        m.set_payload(patterns[i & 0xFF])
        while True:
            got = ring.push(m.buf)
            if got == 1:
                break
            if got != 0:
                print(f"push returned {got} at message {i}", flush=True)
                return 3
            if time.monotonic() > deadline:
                print(f"ring stayed full at message {i}", flush=True)
                return 4
            time.sleep(0)
    print("done", flush=True)
    return 0


def sysex_sender(device_id: str, seed: int) -> int:
    from proto_helpers import sysex_payloads

    from bridge.transport import Host, cmd

    payloads = sysex_payloads(seed)
    *small, big1, big2 = [cmd.sysex(p) for p in payloads]
    order = [m for msgs in small for m in msgs]
    # Interleave the fragments of the two largest transfers: 1 of big1, then 3 of big2, ...
    i = j = 0
    while i < len(big1) or j < len(big2):
        order.extend(big1[i : i + 1])
        order.extend(big2[j : j + 3])
        i, j = i + 1, j + 3
    with Host() as host:
        host.connect(device_id, timeout=10.0)
        deadline = time.monotonic() + DEADLINE_S
        for m in order:
            while not host.send_command(m):  # never drop a fragment: wait for room
                if time.monotonic() > deadline or not host.connected:
                    print(f"could not send: {host.stats.last_error}", flush=True)
                    return 3
                host.process_responses()
                time.sleep(0.0005)
        host.ping(timeout=30.0)
        print(f"sent {len(order)}", flush=True)
    return 0


def churn(count: int, hold_ms: float) -> int:
    from bridge.transport import Device

    with Device() as dev:
        for _ in range(count):
            dev.start("Churn", 1, 48000, 256)
            time.sleep(hold_ms / 1000)
            dev.stop()
    print("done", flush=True)
    return 0


def flaky_render(device_id: str) -> int:
    import threading

    from bridge.transport import Device, DeviceRunner

    count = [0]

    def render(block: np.ndarray) -> None:
        k = count[0]
        count[0] += 1
        if k % 3 == 2:
            raise RuntimeError(f"render of block {k} failed")
        block.fill(k + 1)

    with Device() as dev:
        dev.start(device_id, 1, 48000, 256)
        runner = DeviceRunner(dev, render, fill=1)
        loop = threading.Thread(target=runner.run)
        loop.start()
        print("ready", flush=True)
        sys.stdin.read()  # until the test closes our stdin
        runner.stop_event.set()
        loop.join(timeout=5)
        print(f"errors {dev.errors} render_failures {runner.render_failures} last_error "
              f"{dev.last_error}", flush=True)
    return 0


def c_call(function: str, channels: int, floats: int) -> int:
    from bridge.transport import _shm

    buf = mmap.mmap(-1, 1 << 20)
    arr = np.zeros(floats, np.float32)
    try:
        print(f"returned {getattr(_shm, function)(buf, 0, 128, channels, 16384, arr)}",
              flush=True)
    except Exception as exc:
        print(f"raised {type(exc).__name__}: {exc}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "audio-writer":
        return audio_writer(args[0], int(args[1]), int(args[2]), int(args[3]))
    if command == "msg-writer":
        return msg_writer(args[0], int(args[1]))
    if command == "sysex":
        return sysex_sender(args[0], int(args[1]))
    if command == "churn":
        return churn(int(args[0]), float(args[1]))
    if command == "flaky-render":
        return flaky_render(args[0])
    if command == "c-call":
        return c_call(args[0], int(args[1]), int(args[2]))
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
