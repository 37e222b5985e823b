"""A long fuzz run of real device processes (tests/fuzz_traffic.py), for 100k messages and
more; the suite runs the same for about 25 s (tests/test_fuzz.py). Prints one line per
device program: messages, seconds, rate, and what it found. Exit 1 on the first failure,
with the last messages sent.

    .venv/bin/python tests/fuzz_long.py --messages 100000 [--targets sine,reverb] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import conftest  # noqa: F401  (the LV2 test plugins on LV2_PATH)
import fuzz_traffic

from bridge.transport import shm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000,
                        help="messages per device program (default 100000)")
    parser.add_argument("--targets", default=",".join(fuzz_traffic.TARGETS),
                        help=f"comma-separated, of {', '.join(fuzz_traffic.TARGETS)}")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    names = args.targets.split(",")
    unknown = [n for n in names if n not in fuzz_traffic.TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}")
    namespace = f"fuzz{uuid.uuid4().hex[:8]}"
    total = seconds = 0.0
    try:
        for name in names:
            try:
                r = fuzz_traffic.fuzz(fuzz_traffic.TARGETS[name],
                                      fuzz_traffic.environment(namespace),
                                      messages=args.messages, seed=args.seed)
            except fuzz_traffic.FuzzFailure as exc:
                print(f"FAILED {exc}", flush=True)
                return 1
            total += r.messages
            seconds += r.seconds
            print(f"{name:13} {r.messages:8d} messages in {r.seconds:6.1f} s = "
                  f"{r.messages / r.seconds:7.0f}/s, {r.batches} batches checked; "
                  f"{r.bad_messages} counted bad, {r.errors_received} Error answers; "
                  "no crash, no hang, no handler failure", flush=True)
    finally:
        for segment in shm.list_names(shm.namespace_prefix(namespace)):
            shm.unlink(segment)
    print(f"all          {int(total):8d} messages in {seconds:6.1f} s = "
          f"{total / seconds:7.0f}/s, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
