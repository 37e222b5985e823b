"""A DAW in a process of its own, for the discoLink plugin tests and bench/native.py:
pedalboard loads one VST3 and runs it block by block, paced to real time like a DAW's audio
callback (pedalboard alone would render as fast as it can, which no device can follow).

    python tests/pedalboard_daw.py PLUGIN.vst3 --seconds 2 --block 256 --record out.raw \
        [--note 69 --note-on 0.0 --note-off 1.9] [--input in.wav] [--state-in F] [--state-out F]

- An instrument gets --note at --note-on seconds (and its NoteOff at --note-off, if given),
  or --repeat notes --every seconds apart (bench/native.py's note-to-sound);
  an effect gets --input (a WAV, mono or stereo), zeros after its end.
- The output is appended to --record (raw float32, interleaved) block by block as it is
  rendered, so a killed DAW leaves what it rendered.
- --state-in sets the plugin's raw_state before the first block (a reloaded project);
  --state-out writes raw_state after the last (a saved one).
- Its stdout: "rendering t0=<CLOCK_MONOTONIC s>" when the first block starts, then one JSON
  line at the end: blocks, late_blocks (a block that started more than one block period
  late), reported_latency_samples, note_block (the block that carried the NoteOn).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plugin", type=Path)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rate", type=int, default=48000)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--note", type=int, default=69)
    parser.add_argument("--velocity", type=int, default=100)
    parser.add_argument("--note-on", type=float, default=0.0)
    parser.add_argument("--note-off", type=float, default=None)
    parser.add_argument("--bend", type=float, default=None,
                        help="a full pitch bend up on channel 1 at this time (seconds)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="play the note this many times, --every seconds apart; each ends "
                             "half-way to the next, with All Notes Off at three quarters")
    parser.add_argument("--every", type=float, default=0.25)
    parser.add_argument("--rt-priority", type=int, default=0,
                        help="SCHED_FIFO priority of the render loop (0: normal), as a DAW's "
                             "audio thread")
    parser.add_argument("--input", type=Path, default=None)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--state-in", type=Path, default=None)
    parser.add_argument("--state-out", type=Path, default=None)
    args = parser.parse_args()

    import pedalboard  # late: argument errors come first and fast

    # a DAW does not play a note into a new instrument and wait up to 10 s for it to sound
    plugin = pedalboard.load_plugin(str(args.plugin), initialization_timeout=0.5)
    if args.state_in is not None:
        plugin.raw_state = args.state_in.read_bytes()
    period = args.block / args.rate
    blocks = round(args.seconds * args.rate / args.block)
    source = None
    if args.input is not None:
        import soundfile as sf

        data, _ = sf.read(str(args.input), dtype="float32", always_2d=True)
        source = np.zeros((args.channels, blocks * args.block), dtype=np.float32)
        n = min(data.shape[0], source.shape[1])
        for c in range(args.channels):
            source[c, :n] = data[:n, c % data.shape[1]]

    schedule = [(args.note_on, bytes([0x90, args.note, args.velocity]))]
    if args.note_off is not None:
        schedule.append((args.note_off, bytes([0x80, args.note, 0])))
    if args.bend is not None:
        schedule.append((args.bend, bytes([0xE0, 0x7F, 0x7F])))
    for i in range(1, args.repeat):
        at = args.note_on + i * args.every
        schedule += [(at - args.every / 2, bytes([0x80, args.note, 0])),
                     (at - args.every / 4, bytes([0xB0, 123, 0])),
                     (at, bytes([0x90, args.note, args.velocity]))]

    def midi_for(block: int) -> list[tuple[bytes, float]]:
        start, end = block * args.block, (block + 1) * args.block
        events = []
        for at, message in schedule:
            frame = round(at * args.rate)
            if start <= frame < end:
                events.append((message, (frame - start) / args.rate))
        return events

    note_block = round(args.note_on * args.rate) // args.block
    late = 0
    from bridge.transport.clock import realtime

    with open(args.record, "wb") as out, realtime(args.rt_priority):
        t0 = time.monotonic()
        print(f"rendering t0={t0:.6f}", flush=True)
        for k in range(blocks):
            due = t0 + k * period
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            elif now - due > period:
                late += 1
            if source is None:
                audio = plugin.process(midi_for(k), duration=period, sample_rate=args.rate,
                                       num_channels=args.channels, buffer_size=args.block,
                                       reset=False)
            else:
                chunk = source[:, k * args.block:(k + 1) * args.block]
                audio = plugin.process(chunk, sample_rate=args.rate, buffer_size=args.block,
                                       reset=False)
            out.write(np.ascontiguousarray(audio.T, dtype="<f4").tobytes())
            out.flush()
    if args.state_out is not None:
        args.state_out.write_bytes(plugin.raw_state)
    print(json.dumps({"blocks": blocks, "late_blocks": late, "note_block": note_block,
                      "reported_latency_samples": int(plugin.reported_latency_samples)}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
