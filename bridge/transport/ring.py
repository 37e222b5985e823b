"""Lock-free single-producer single-consumer rings over shared memory.

Each ring is a 128-byte control block (write_index at +0, read_index at +64; see
``layout.RING_CONTROL``) followed by its data. Indices are free-running uint32 counts;
the capacity is a power of two and the position is ``index & (capacity - 1)``.

Memory ordering (C11, valid on x86-64 and arm64; implemented in ``_shm.c``):
- producer: copy data, then store write_index with RELEASE; load read_index with ACQUIRE
  before reusing space.
- consumer: load write_index with ACQUIRE before reading data; store read_index with
  RELEASE after the data has been copied out.

All methods here are real-time safe: they copy into or out of caller-provided buffers,
allocate nothing beyond Python's small-int boxes, and never block.
"""

from __future__ import annotations

import mmap

import numpy as np

from . import _shm
from .layout import (
    AUDIO_RING_FRAMES,
    MESSAGE_RING_SLOTS,
    MESSAGE_SIZE,
    RING_CONTROL_SIZE,
    RING_READ_INDEX_OFFSET,
)

CORRUPT = -1  # returned when a ring's indices are impossible (fill > capacity)


class AudioRing:
    """Planar float32 audio ring: ``channels`` regions of ``frames`` samples each."""

    __slots__ = ("_buf", "_ctl", "_data", "capacity", "channels")

    def __init__(self, buf: mmap.mmap, offset: int, channels: int,
                 capacity: int = AUDIO_RING_FRAMES) -> None:
        self._buf = buf
        self._ctl = offset
        self._data = offset + RING_CONTROL_SIZE
        self.channels = channels
        self.capacity = capacity

    def write(self, block: np.ndarray, written_counter: int = -1) -> int:
        """Producer: append a C-contiguous float32 (channels, frames) block, all or nothing.

        Returns frames written, 0 when the block does not fit, CORRUPT on bad indices.
        ``written_counter``: offset of a u64 counter to bump on success (-1: none).
        """
        return _shm.audio_write(self._buf, self._ctl, self._data, self.channels,
                                self.capacity, block, written_counter)

    def read(self, out: np.ndarray, read_counter: int = -1, short_counter: int = -1) -> int:
        """Consumer: fill a C-contiguous float32 (channels, frames) array.

        Reads what is available up to the array's length and zero-fills the rest.
        Returns frames read, or CORRUPT (with ``out`` zeroed). Optional u64 counters
        (offsets, -1: none) are bumped per read and per short read.
        """
        return _shm.audio_read(self._buf, self._ctl, self._data, self.channels,
                               self.capacity, out, read_counter, short_counter)

    def fill(self) -> int:
        """Frames queued (written and not yet read)."""
        return _shm.ring_fill(self._buf, self._ctl)

    def discard(self) -> int:
        """Consumer: drop everything queued; returns frames dropped."""
        return _shm.ring_discard(self._buf, self._ctl)

    def write_index(self) -> int:
        """The producer's free-running write index (acquire load)."""
        return _shm.load_u32(self._buf, self._ctl)

    def discard_to(self, index: int) -> int:
        """Consumer: drop what was queued before ``index`` (a write index the producer
        published), keeping what came after it; everything when ``index`` is not between
        the read and write indices (a stale or absent marker). Returns frames dropped."""
        read = _shm.load_u32(self._buf, self._ctl + RING_READ_INDEX_OFFSET)
        queued = (_shm.load_u32(self._buf, self._ctl) - read) & 0xFFFFFFFF
        drop = (index - read) & 0xFFFFFFFF
        if drop > queued:
            return self.discard()
        _shm.store_u32(self._buf, self._ctl + RING_READ_INDEX_OFFSET, index & 0xFFFFFFFF)
        return drop


class MessageRing:
    """Ring of fixed 256-byte messages."""

    __slots__ = ("_buf", "_ctl", "_data", "slots")

    def __init__(self, buf: mmap.mmap, offset: int, slots: int = MESSAGE_RING_SLOTS) -> None:
        self._buf = buf
        self._ctl = offset
        self._data = offset + RING_CONTROL_SIZE
        self.slots = slots

    def push(self, message: bytes | bytearray | memoryview) -> int:
        """Producer: 1 pushed, 0 full, CORRUPT on bad indices."""
        return _shm.msg_write(self._buf, self._ctl, self._data, self.slots, message)

    def pop(self, into: bytearray | memoryview) -> int:
        """Consumer: copy the oldest message into ``into``. 1 popped, 0 empty, CORRUPT."""
        return _shm.msg_read(self._buf, self._ctl, self._data, self.slots, into)

    def pop_many(self, into: bytearray | memoryview, max_count: int) -> int:
        """Consumer: copy up to ``max_count`` messages (as many as ``into`` holds, 256 bytes
        each) in order and release them with one index store. Count popped, or CORRUPT."""
        return _shm.msg_read_many(self._buf, self._ctl, self._data, self.slots, into, max_count)

    def fill(self) -> int:
        return _shm.ring_fill(self._buf, self._ctl)

    def discard(self) -> int:
        return _shm.ring_discard(self._buf, self._ctl)


assert MESSAGE_SIZE == 256  # _shm.c hard-codes the slot size
