"""The clocks that drive a device process: demand-driven (default) and real time.

Latency here is counted in frames of the received stream, not in wall time: the demand
clock's promise is that exactly ``fill`` blocks are queued ahead of the host, so a note sent
just before a read sounds exactly ``fill x block`` frames later, however slow the machine.
"""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
from helpers_ipc import read_realtime, wait_until
from proto_helpers import start_child

from bridge.adapters.session import detect_onset
from bridge.transport import Host, cmd


def read_block_when_ready(host: Host, out: np.ndarray) -> None:
    """Read one block, waiting until the device has queued it (so nothing underruns)."""
    wait_until(lambda: host.available_frames() >= out.shape[1], 5, "the next block")
    assert host.receive_audio(out) == out.shape[1]


@pytest.mark.parametrize(("fill", "block"), [(1, 64), (2, 128), (3, 256)])
def test_demand_clock_keeps_exactly_fill_blocks_queued(spawn, fill, block):
    dev = spawn.device("--fill", str(fill), "--blocksize", str(block))
    with Host() as host:
        host.set_local_buffer_info(48000, block)
        host.connect(dev.id)
        wait_until(lambda: host.available_frames() == fill * block, 5, f"{fill} blocks queued")
        time.sleep(0.1)  # the host does not read: the device must not render ahead
        assert host.available_frames() == fill * block
        out = np.zeros((2, block), np.float32)
        host.receive_audio(out)
        wait_until(lambda: host.available_frames() == fill * block, 5, "the ring refilled")
        assert host.counters()["overruns"] == 0


@pytest.mark.parametrize(("fill", "block"), [(1, 64), (2, 256), (4, 128)])
def test_a_note_sounds_exactly_fill_blocks_after_it_is_sent(spawn, fill, block):
    dev = spawn.device("--fill", str(fill), "--blocksize", str(block))
    with Host() as host:
        host.set_local_buffer_info(48000, block)
        host.connect(dev.id)
        wait_until(lambda: host.available_frames() == fill * block, 5, "the queue to fill")
        out = np.zeros((2, block), np.float32)
        blocks = []
        assert host.send_command(cmd.midi_note_on(0, 69, 100))
        for _ in range(fill + 2):
            read_block_when_ready(host, out)
            blocks.append(out[0].copy())
        assert host.stats.underruns == 0
    stream = np.concatenate(blocks)
    onset = detect_onset(stream, 0, 1e-6)
    # The sine starts at phase 0: its first sample is 0.0, the next one is the first above 0.
    assert onset == fill * block + 1, f"onset at frame {onset}, expected {fill * block + 1}"
    assert not stream[: fill * block].any(), "sound before the note was due"


def test_realtime_clock_renders_at_the_block_rate_with_no_host(spawn):
    dev = spawn.device("--clock", "realtime", "--blocksize", "256")
    with Host() as host:
        host.connect(dev.id)
        host.send_command(cmd.midi_note_on(0, 69, 100))
        first = host.counters()["blocks_written"]
        start = time.monotonic()
        audio = read_realtime(host, 1.0)  # a listener, so the ring never fills up
        per_second = (host.counters()["blocks_written"] - first) / (time.monotonic() - start)
        # 48000 / 256 = 187.5 blocks a second; the bounds only say "it ticks at audio rate".
        assert 90 < per_second < 300, f"{per_second:.0f} blocks per second"
        assert np.abs(audio).max() > 0.1, "the note did not sound"


def test_an_unclaimed_realtime_device_counts_no_overruns(spawn):
    dev = spawn.device("--clock", "realtime", "--blocksize", "1024")
    # 16384 frames fill in 16 blocks (~0.34 s); the clock keeps ticking with nobody reading.
    time.sleep(0.8)
    with Host() as host:
        host.connect(dev.id)
        counters = host.counters()
        assert counters["blocks_written"] >= 16
        assert counters["overruns"] == 0


def test_a_render_callback_that_raises_costs_one_silent_block_not_the_device(namespace):
    """A device process whose renderer raises on every third block: the host in this process
    gets those blocks as silence and every other block as rendered, the device keeps
    running, and each failure is counted and reported as the device's error."""
    child = start_child("flaky-render", "Flaky", stdin=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        with Host() as host:
            host.set_local_buffer_info(48000, 256)
            host.connect("Flaky:0")
            out = np.zeros((1, 256), np.float32)
            firsts = []
            for _ in range(9):
                read_block_when_ready(host, out)
                assert (out == out[0, 0]).all()  # one value per block
                firsts.append(float(out[0, 0]))
        out_text, err = child.communicate("", timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    # Blocks rendered before the handshake ack are discarded by the host (protocol §8.1
    # step 7), so the run starts at some block n: every block after it in order, and each
    # third one silent.
    n = int(firsts[0] or firsts[1] - 1)
    assert n >= 1 and firsts == [0 if k % 3 == 0 else k for k in range(n, n + 9)], firsts
    fields = out_text.split()
    failures = int(fields[fields.index("render_failures") + 1])
    assert failures >= 3 and int(fields[fields.index("errors") + 1]) >= failures, out_text
    assert "last_error render: RuntimeError: render of block" in out_text, out_text
