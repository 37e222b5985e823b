"""bench/native.py (d), in a process of its own: the DAW thread's cost of discoLink Host per
block, against DLEmpty (the same DPF plugin with an empty run()).

    python bench/_dpf_cost.py HOST.vst3 EMPTY.vst3 --blocks N --block 256

pedalboard loads both; the plugin finds its device through $DISCOLINK_DEVICE. Once the link
is up (the plugin reports its latency) and a note sounds, both plugins render one block each
per block period, in alternating order, paced to real time like a DAW's callback; the
thread's CPU time (CLOCK_THREAD_CPUTIME_ID) around each process call is the cost. Prints one
JSON object: median and p95 of each, the difference of the medians, and the per-block
differences (paired, order-balanced), in microseconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("empty")
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--rate", type=int, default=48000)
    args = parser.parse_args()

    import pedalboard

    plugins = {"host": pedalboard.load_plugin(args.host, initialization_timeout=0.5),
               "empty": pedalboard.load_plugin(args.empty, initialization_timeout=0.5)}
    period = args.block / args.rate

    def render(name: str, midi: list) -> np.ndarray:
        return plugins[name].process(midi, duration=period, sample_rate=args.rate,
                                     num_channels=2, buffer_size=args.block, reset=False)

    note = [(bytes([0x90, 69, 100]), 0.0)]
    deadline = time.monotonic() + 10.0
    sounding = False
    while time.monotonic() < deadline and not sounding:  # link up, note sounding
        render("empty", [])
        if plugins["host"].reported_latency_samples:
            sounding = bool(np.abs(render("host", note)).max() > 0) or sounding
            note = []
        else:
            render("host", [])
        time.sleep(period)
    if not sounding:
        print(json.dumps({"error": "discoLink Host did not connect and sound within 10 s"}))
        return 1
    cost = {"host": np.zeros(args.blocks, np.int64), "empty": np.zeros(args.blocks, np.int64)}
    silent = 0
    clock = time.thread_time_ns
    start = time.monotonic()
    for k in range(args.blocks):
        for name in (("host", "empty") if k % 2 == 0 else ("empty", "host")):
            t0 = clock()
            out = render(name, [])
            cost[name][k] = clock() - t0
            if name == "host" and not out.any():
                silent += 1
        wait = start + (k + 1) * period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    result = {"blocks": args.blocks, "block": args.block, "silent_host_blocks": silent}
    for name, ns in cost.items():
        result[name] = {"median_us": round(float(np.median(ns)) / 1000, 3),
                        "p95_us": round(float(np.percentile(ns, 95)) / 1000, 3)}
    result["extra_us"] = round(result["host"]["median_us"] - result["empty"]["median_us"], 3)
    # the same, paired: each block's Host cost minus the Empty cost of the same block period.
    # The first call after the sleep pays for the wake-up (caches), so the pairs where the
    # Host went first and those where it went second are taken apart, and their medians
    # averaged: the order's share cancels.
    diff = cost["host"] - cost["empty"]
    by_order = [float(np.median(diff[0::2])), float(np.median(diff[1::2]))]
    result["paired_extra_us"] = round(sum(by_order) / 2 / 1000, 3)
    result["paired_extra_us_host_first_second"] = [round(x / 1000, 3) for x in by_order]
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
