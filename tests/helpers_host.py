"""A host in its own OS process, for tests that need a host whose pid is not the test's.

Usage: python tests/helpers_host.py DEVICE_ID LINK_TAG MAX_SECONDS [--force]

Connects (namespace from $DISCOLINK_NAMESPACE), prints "connected <pid>", then reads audio
paced in real time. When the link drops it prints "disconnected: <reason>" and exits 0; if
it is still connected after MAX_SECONDS it prints "still connected" and exits 3.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from bridge.transport import Host


def main(argv: list[str]) -> int:
    device_id, link_tag, max_seconds = argv[0], argv[1], float(argv[2])
    force = "--force" in argv[3:]
    with Host() as host:
        host.set_local_buffer_info(48000, 256)
        conn = host.connect(device_id, link_tag, force=force)
        print(f"connected {os.getpid()}", flush=True)
        out = np.zeros((max(conn.channels, 1), conn.block_size), np.float32)
        period = conn.block_size / conn.sample_rate
        start = time.monotonic()
        k = 0
        while time.monotonic() - start < max_seconds:
            host.receive_audio(out)
            if not host.connected:
                print(f"disconnected: {host.disconnect_reason}", flush=True)
                return 0
            k += 1
            delay = start + k * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        print("still connected", flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
