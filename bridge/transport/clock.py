"""Clocks that drive a device when no DAW calls it: demand-driven (default) or real time.

Demand clock: the device renders whenever the host's read position leaves less than
``fill`` blocks queued in the ring, so latency stays at most ``fill`` blocks and nothing
drifts: the host's reads are the clock. Real-time clock: one block per block period from
the device's own monotonic clock, for devices with no host (or a host that only listens).
A MIDI-only device on the real-time clock still calls its renderer once per block period,
with a zero-channel block, so that a MIDI consumer sees each block's events.

Waiting is by polling with ``time.sleep``: while a host holds a claim, a fifth of the block
period (1.07 ms at 256 frames, 0.27 ms at 64), but at least ``poll_interval`` (0.1 ms),
and every ``poll_interval`` for a few periods after a host took several blocks at once (it
is catching up, and the rest of its burst must find audio); ``idle_interval`` (20 ms) while
none does. A fifth of a period leaves the demand clock most
of a period to render the next block in, and costs a streaming device a few percent of a
core instead of the ~20% that polling every 0.1 ms costs (bench/rack.py measured both). The cost of
both is measured in docs/performance.md. With ``rt_priority`` the loop asks the OS for
SCHED_FIFO scheduling, as JACK does for its audio threads, so that other processes cannot
delay a wake-up past the block deadline.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterator

import numpy as np

from .device import BLOCK_SIZE_RANGE, Device
from .layout import FILL_DEFAULT, FILL_MAX, FILL_MIN, Mode


class StopFlag:
    """A stop request that a signal handler may set. ``threading.Event.set`` takes a lock: a
    second signal arriving while the first handler holds it runs a handler that waits for it
    for ever (a double SIGTERM deadlocked a device). Here setting is one attribute store, and
    ``wait`` polls in short sleeps, which a signal cuts short anyway."""

    __slots__ = ("_set",)
    POLL_S = 0.01

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep until set or ``timeout`` s have passed; returns whether it is set."""
        deadline = time.monotonic() + timeout
        while not self._set:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(self.POLL_S, left))
        return self._set


RenderFn = Callable[[np.ndarray], None]  # fills a (channels, frames) float32 array in place
DEFAULT_RT_PRIORITY = 10  # SCHED_FIFO priority for audio loops (JACK's default is 10 too)
POLL_INTERVAL_S = 0.0001  # demand clock, claimed: the shortest sleep between polls
POLL_FRACTION = 0.2  # demand clock, claimed: sleep this fraction of a block period per poll
FAST_PERIODS = 8  # after a host read several blocks at once, poll fast for this many periods
IDLE_INTERVAL_S = 0.020  # unclaimed: sleep between polls (below the 50 ms heartbeat limit)


@contextlib.contextmanager
def realtime(priority: int = DEFAULT_RT_PRIORITY) -> Iterator[str]:
    """SCHED_FIFO for the calling thread inside the block, normal scheduling after it.

    Yields "" when granted, else the reason it was refused.
    """
    refused = set_realtime_priority(priority) if priority else "off"
    gc.freeze()  # see DeviceRunner.enter_realtime
    try:
        yield refused
    finally:
        if not refused:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def set_realtime_priority(priority: int) -> str:
    """Ask for SCHED_FIFO at ``priority`` (1..99) for the calling thread (Linux semantics).

    Returns "" on success, else the reason it was not granted (the caller carries on at
    normal priority). The kernel's RT throttling (95% by default) keeps a runaway loop from
    locking up the machine.
    """
    if not hasattr(os, "sched_setscheduler"):
        return "real-time scheduling is not available on this platform"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as exc:
        return f"SCHED_FIFO priority {priority} refused: {exc.strerror or exc}"
    return ""

CLOCKS = ("demand", "realtime")


class DeviceRunner:
    """Runs a device's loop: commands, then rendering when the clock says so."""

    def __init__(self, device: Device, render: RenderFn, *, clock: str = "demand",
                 fill: int = FILL_DEFAULT, poll_interval: float = POLL_INTERVAL_S,
                 idle_interval: float = IDLE_INTERVAL_S,
                 on_block: Callable[[np.ndarray], None] | None = None,
                 on_idle: Callable[[], None] | None = None,
                 rt_priority: int = 0) -> None:
        if clock not in CLOCKS:
            raise ValueError(f"unknown clock {clock!r}; choose demand or realtime")
        if not FILL_MIN <= fill <= FILL_MAX:
            raise ValueError(f"fill must be {FILL_MIN}..{FILL_MAX} blocks, got {fill}")
        self.device = device
        self.render = render
        self.clock = clock
        self.fill = fill
        device.set_fill_blocks(fill if clock == "demand" else 0)  # hosts read it (§12)
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        self.on_block = on_block
        # called from the loop's thread when a pass rendered nothing (demand clock) or before
        # it sleeps until the next block (realtime clock)
        self.on_idle = on_idle
        self.rt_priority = rt_priority
        self.rt_status = "off"  # after run(): "SCHED_FIFO N", "off", or why it was refused
        self.stop_event = StopFlag()  # set from signal handlers (install_stop)
        self.blocks_rendered = 0
        self.render_failures = 0  # blocks whose render callback raised (sent as silence)
        self._block = np.zeros((max(device.channels, 1), device.block_size), np.float32)
        self._midi_block = np.zeros((0, BLOCK_SIZE_RANGE[1]), np.float32)

    def enter_realtime(self) -> str:
        """Apply ``rt_priority`` to the calling thread, once; returns ``rt_status``.

        ``run`` calls it; call it earlier from the same thread to learn the outcome first.
        """
        if self.rt_priority and self.rt_status == "off":
            refused = set_realtime_priority(self.rt_priority)
            self.rt_status = refused or f"SCHED_FIFO {self.rt_priority}"
        # Move everything allocated so far (imports, plugin state) out of the collector's
        # reach: a full collection over it would stall the loop for milliseconds, and the
        # loop itself allocates almost nothing for the collector to find.
        gc.freeze()
        return self.rt_status

    def _buffer(self) -> np.ndarray:
        """The render buffer, reallocated only when the handshake changed the block size."""
        d = self.device
        if self._block.shape != (max(d.channels, 1), d.block_size):
            self._block = np.zeros((max(d.channels, 1), d.block_size), np.float32)
        return self._block

    def _call_render(self, block: np.ndarray) -> None:
        """The render callback, which must never take the loop down: a failure gives a
        silent block, counted and reported as the device's error (``errors``, last_error,
        the debug monitor)."""
        try:
            self.render(block)
        except Exception as exc:
            block.fill(0.0)
            self.render_failures += 1
            self.device.report_error("render", f"{type(exc).__name__}: {exc}")

    def _render_one(self) -> bool:
        block = self._buffer()
        self._call_render(block)
        self.blocks_rendered += 1
        ok = self.device.send_audio(block)
        if self.on_block is not None:
            self.on_block(block)
        return ok

    def step(self) -> int:
        """One pass of the demand loop; returns blocks rendered."""
        d = self.device
        d.process_commands()
        if d.mode == Mode.MIDI or not d.claimed:
            return 0
        target = self.fill * d.block_size
        rendered = 0
        while d.fill() < target and rendered <= self.fill:
            if not self._render_one():
                break
            rendered += 1
        return rendered

    def run(self) -> None:
        """Loop in the calling thread until ``stop_event`` is set, or the device has lost its
        registry slot (``device.registered`` turns False; the device's last_error says why)."""
        self.enter_realtime()
        if self.clock == "demand":
            self._run_demand()
        else:
            self._run_realtime()
        if self.device.registered:
            self.device.process_commands()  # what came before the stop (a Disconnect, say)

    def _run_demand(self) -> None:
        d, stop = self.device, self.stop_event
        fast_until = 0.0
        while not stop.is_set() and d.registered:
            rendered = self.step()
            if rendered == 0:
                if self.on_idle is not None:
                    self.on_idle()
                if not d.claimed:
                    time.sleep(self.idle_interval)
                elif time.monotonic() < fast_until:
                    time.sleep(self.poll_interval)
                else:
                    time.sleep(max(self.poll_interval,
                                   POLL_FRACTION * d.block_size / d.sample_rate))
            elif rendered >= 2:
                # The host took several blocks at once (catching up after a stall of its
                # own): poll fast for a few periods so that the rest of its burst finds audio.
                fast_until = time.monotonic() + FAST_PERIODS * d.block_size / d.sample_rate

    def _run_realtime(self) -> None:
        d, stop = self.device, self.stop_event
        next_block = time.monotonic()
        while not stop.is_set() and d.registered:
            d.process_commands()
            now = time.monotonic()
            if now >= next_block:
                if d.mode != Mode.MIDI:
                    self._render_one()
                else:  # no audio, but a MIDI-only renderer still sees every block's events
                    self._call_render(self._midi_block[:, : d.block_size])
                next_block += d.block_size / d.sample_rate
                if now - next_block > 0.25:  # fell far behind (suspended?): resynchronise
                    next_block = now
            else:
                if self.on_idle is not None:
                    self.on_idle()
                    now = time.monotonic()
                if now < next_block:
                    time.sleep(min(self.poll_interval * 5, next_block - now))
