"""Cost of the memory-ordering primitives: why the transport uses its own C extension.

Measures, in one run on one shared-memory mapping, the per-call cost of
- an acquire load / release store / CAS through ``bridge.transport._shm`` (ours),
- the same through the PyPI ``atomics`` package (if installed: ``pip install atomics``),
- a plain numpy scalar load / store (no ordering guarantee at all: the floor),
- writing and reading one stereo 256-frame block through our ring (C copy + release/acquire)
  versus the numpy slicing a pure-Python ring would need for the same bytes.

Run: ``.venv/bin/python bench/primitives.py [--json]``. Prints ns per operation and ratios.
"""

from __future__ import annotations

import argparse
import json
import mmap
import platform
import time

import numpy as np

from bridge.transport import _shm
from bridge.transport.layout import RING_CONTROL_SIZE
from bridge.transport.ring import AudioRing


def per_call_ns(fn, n: int = 200_000, repeats: int = 5) -> float:
    """Best-of-``repeats`` mean cost of ``fn()`` in ns, beyond calling an empty Python function."""

    def loop(f, k):
        t = time.perf_counter_ns()
        for _ in range(k):
            f()
        return time.perf_counter_ns() - t

    def noop():
        return None

    best = min(loop(fn, n) for _ in range(repeats))
    base = min(loop(noop, n) for _ in range(repeats))
    return max(0.0, (best - base) / n)


def endpoint_round_trip_ns(block: np.ndarray, out: np.ndarray) -> float:
    """``Device.send_audio`` + ``Host.receive_audio`` of one block, both in this process:
    the ring plus everything the endpoints add (checks, counters, liveness, monitor test)."""
    import os
    import threading

    from bridge.transport import Device, Host, shm

    namespace = f"prim{os.getpid()}"
    device = Device(namespace)
    try:
        device.start("Prim", block.shape[0], 48000, block.shape[1])
        done = threading.Event()

        def answer_handshake() -> None:
            while not done.is_set():
                device.process_commands()
                time.sleep(0.0005)

        helper = threading.Thread(target=answer_handshake)
        helper.start()
        with Host(namespace) as host:
            host.connect(device.id, prime_timeout=0)
            done.set()
            helper.join()

            def both():
                device.send_audio(block)
                host.receive_audio(out)

            return per_call_ns(both, n=50_000)
    finally:
        device.close()
        for name in shm.list_names(shm.namespace_prefix(namespace)):
            shm.unlink(name)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()

    buf = mmap.mmap(-1, 1 << 20)
    scalar = np.frombuffer(buf, dtype=np.uint32, count=16)
    results: dict[str, float] = {}
    results["ours_load_acquire"] = per_call_ns(lambda: _shm.load_u32(buf, 0))
    results["ours_store_release"] = per_call_ns(lambda: _shm.store_u32(buf, 0, 7))
    results["ours_cas"] = per_call_ns(lambda: _shm.cas_u32(buf, 0, 7, 7))
    results["numpy_scalar_load"] = per_call_ns(lambda: scalar[0])
    results["numpy_scalar_store"] = per_call_ns(lambda: scalar.__setitem__(0, 7))
    try:
        import atomics

        view = atomics.atomicview(buffer=memoryview(buf)[64:68], atype=atomics.UINT)
        with view as a:
            results["atomics_load"] = per_call_ns(a.load, n=20_000)
            results["atomics_store"] = per_call_ns(lambda: a.store(7), n=20_000)
            results["atomics_cas"] = per_call_ns(lambda: a.cmpxchg_strong(7, 7), n=20_000)
    except ImportError:
        pass

    # One stereo 256-frame block in and out: our ring vs numpy slicing over the same memory.
    ring = AudioRing(buf, 4096, 2)
    block = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    out = np.zeros_like(block)

    def ring_round_trip():
        ring.write(block)
        ring.read(out)

    data = np.frombuffer(buf, dtype=np.float32, count=2 * 16384,
                         offset=4096 + RING_CONTROL_SIZE).reshape(2, 16384)
    pos = [0]

    def numpy_round_trip():  # the copies alone, without any index publication
        p0 = pos[0]
        data[:, p0 : p0 + 256] = block
        out[:] = data[:, p0 : p0 + 256]
        pos[0] = (p0 + 256) & 16383

    results["ours_ring_block_write_read"] = per_call_ns(ring_round_trip, n=50_000)
    results["numpy_slices_block_write_read"] = per_call_ns(numpy_round_trip, n=50_000)
    results["endpoints_send_audio_receive_audio"] = endpoint_round_trip_ns(block, out)

    report = {
        "machine": f"{platform.machine()} Python {platform.python_version()}",
        "ns_per_op": {k: round(v, 1) for k, v in results.items()},
    }
    if "atomics_load" in results:
        report["atomics_load_vs_ours"] = round(results["atomics_load"] /
                                               max(results["ours_load_acquire"], 1e-9), 1)
    report["ring_vs_numpy_slices"] = round(results["ours_ring_block_write_read"] /
                                           max(results["numpy_slices_block_write_read"], 1e-9),
                                           2)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"primitives on {report['machine']}: ns per call beyond an empty Python call "
          "(best of 5)")
    for k, v in results.items():
        print(f"  {k:<32} {v:10.1f} ns")
    for k in ("atomics_load_vs_ours", "ring_vs_numpy_slices"):
        if k in report:
            print(f"  {k:<32} {report[k]:10}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
